package netns

import "testing"

// SNMP reads the namespace's own /proc/net/snmp by protocol and counter
// name; a protocol without a line is an error, not an empty map.
func TestSNMPReadsCountersByName(t *testing.T) {
	ns := NewNS(t)
	udp, err := ns.SNMP("Udp")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors"} {
		if _, ok := udp[k]; !ok {
			t.Errorf("Udp counters %v lack %s", udp, k)
		}
	}
	if tcp, err := ns.SNMP("Tcp"); err != nil || tcp["InSegs"] != 0 {
		t.Errorf("Tcp in a new namespace: %v, %v; want InSegs 0", tcp, err)
	}
	if _, err := ns.SNMP("Nope"); err == nil {
		t.Error("a protocol without a line read without an error")
	}
}
