package tunnel

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

func flowOf(t *testing.T, pkt []byte) Flow {
	t.Helper()
	f, _, err := ParseFlow(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// RFC 4301 §4.4.1: the SPD is ordered, the first match decides, and
// traffic no entry names is discarded.
func TestRFC4301_4_4_1_OrderedFirstMatch(t *testing.T) {
	var spd SPD
	mustSel := func(s string) Selector {
		sel, err := ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return sel
	}
	bypassDNS := &Policy{Name: "dns", Action: Bypass, Selector: mustSel("local any remote 203.0.113.53 proto udp rport 53")}
	drop := &Policy{Name: "no-telnet", Action: Discard, Selector: mustSel("remote 203.0.113.0/24 proto tcp rport 23")}
	protect := &Policy{Name: "vpn", Action: Protect, Selector: mustSel("local 192.0.2.2,198.51.100.2 remote 203.0.113.0/24")}
	spd.Append(protect)
	spd.Insert(0, drop)
	spd.Insert(0, bypassDNS)
	cases := []struct {
		name string
		pkt  []byte
		want *Policy
	}{
		{"DNS bypasses although the VPN covers it (first match)", ipv4Packet(rwAddr, netip.MustParseAddr("203.0.113.53"), ProtoUDP, 3333, 53, 10), bypassDNS},
		{"telnet discarded before the VPN sees it", ipv4Packet(rwAddr, srvAddr, ProtoTCP, 3333, 23, 10), drop},
		{"other TCP protected", ipv4Packet(rwAddr, srvAddr, ProtoTCP, 3333, 80, 10), protect},
		{"from the secondary address: same policy", ipv4Packet(rwAddr2, srvAddr, ProtoICMP, 0, 0, 10), protect},
		{"no entry: nil, which means DISCARD", ipv4Packet(rwAddr, netip.MustParseAddr("198.51.100.77"), ProtoTCP, 1, 2, 10), nil},
	}
	for _, c := range cases {
		f := flowOf(t, c.pkt)
		if got := spd.LookupOutbound(&f); got != c.want {
			t.Errorf("%s: got %v", c.name, got)
		}
	}
	if !spd.Remove(drop) || spd.Remove(drop) || len(spd.Policies()) != 2 {
		t.Fatal("remove")
	}
}

// RFC 4960 §3.1 / RFC 3554: SCTP (132) ports sit where TCP and UDP ports
// do, so the same port selectors apply.
func TestRFC3554_SCTPPortSelectors(t *testing.T) {
	sel, err := ParseSelector("local 192.0.2.2 remote 192.0.2.1 proto sctp lport 5000 rport 9899")
	if err != nil {
		t.Fatal(err)
	}
	gw := netip.MustParseAddr("192.0.2.1")
	cases := []struct {
		name string
		pkt  []byte
		out  bool
	}{
		{"SCTP with the right ports", ipv4Packet(rwAddr, gw, ProtoSCTP, 5000, 9899, 16), true},
		{"SCTP wrong source port", ipv4Packet(rwAddr, gw, ProtoSCTP, 5001, 9899, 16), false},
		{"UDP with the same ports is not SCTP", ipv4Packet(rwAddr, gw, ProtoUDP, 5000, 9899, 16), false},
	}
	for _, c := range cases {
		f := flowOf(t, c.pkt)
		if sel.MatchOutbound(&f) != c.out {
			t.Errorf("%s: outbound %v", c.name, !c.out)
		}
	}
	// The reply direction matches inbound with the ports swapped.
	f := flowOf(t, ipv4Packet(gw, rwAddr, ProtoSCTP, 9899, 5000, 16))
	if !sel.MatchInbound(&f) || sel.MatchOutbound(&f) {
		t.Fatal("inbound SCTP reply")
	}
}

// RFC 4301 §4.4.1.1 and §7: non-initial fragments carry no ports (OPAQUE);
// a selector naming ports must not match them, one with ANY ports may.
func TestRFC4301_7_NonInitialFragmentsArePortOpaque(t *testing.T) {
	frag := ipv4Packet(rwAddr, srvAddr, ProtoTCP, 1, 80, 40)
	binary.BigEndian.PutUint16(frag[6:8], 100) // fragment offset 100*8
	f := flowOf(t, frag)
	if f.HasPorts {
		t.Fatal("ports read from a non-initial fragment")
	}
	withPorts, _ := ParseSelector("proto tcp rport 80")
	anyPorts, _ := ParseSelector("proto tcp")
	if withPorts.MatchOutbound(&f) || !anyPorts.MatchOutbound(&f) {
		t.Fatal("fragment matching")
	}
	// IPv6: a fragment header with a non-zero offset.
	p := ipv6Packet(rwAddr6, srv6, 44, 0, 0, 16)
	p[40] = ProtoTCP
	binary.BigEndian.PutUint16(p[42:44], 8<<3)
	f = flowOf(t, p)
	if f.HasPorts || f.Proto != ProtoTCP {
		t.Fatalf("v6 fragment %+v", f)
	}
}

func TestParseFlowIPv6ExtensionHeaders(t *testing.T) {
	p := ipv6Packet(rwAddr6, srv6, 0, 0, 0, 16) // hop-by-hop first
	p[40] = 60                                  // then destination options
	p[41] = 0
	p[48] = ProtoUDP
	binary.BigEndian.PutUint16(p[4:6], 8+16)
	p = append(p[:56], make([]byte, 8)...)
	binary.BigEndian.PutUint16(p[4:6], uint16(len(p)-40))
	binary.BigEndian.PutUint16(p[56:58], 1111)
	binary.BigEndian.PutUint16(p[58:60], 53)
	f := flowOf(t, p)
	if f.Proto != ProtoUDP || !f.HasPorts || f.SrcPort != 1111 || f.DstPort != 53 {
		t.Fatalf("%+v", f)
	}
}

func TestParseSelector(t *testing.T) {
	good := map[string]string{
		"":                                       "local 0.0.0.0/0,::/0 remote 0.0.0.0/0,::/0",
		"local 192.0.2.0/24 remote 203.0.113.5":  "local 192.0.2.0/24 remote 203.0.113.5",
		"proto sctp lport 5000 rport 1024-65535": "local 0.0.0.0/0,::/0 remote 0.0.0.0/0,::/0 proto sctp lport 5000 rport 1024-65535",
		"proto 132":                              "local 0.0.0.0/0,::/0 remote 0.0.0.0/0,::/0 proto sctp",
		"remote 2001:db8::/32 proto icmpv6":      "local 0.0.0.0/0,::/0 remote 2001:db8::/32 proto icmpv6",
	}
	for in, want := range good {
		s, err := ParseSelector(in)
		if err != nil || s.String() != want {
			t.Errorf("%q: %q %v", in, s.String(), err)
		}
	}
	bad := []string{"local", "proto", "proto 256", "proto sctpp", "lport 5 proto tcp lport 6", "proto icmp rport 5",
		"rport 80", "proto tcp rport 90-80", "proto tcp rport 65536", "colour red", "local 192.0.2.300"}
	for _, in := range bad {
		if _, err := ParseSelector(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// The outbound path: SPD decides, the SA seals, RFC 3554 picks outer
// addresses, and the receiver gets the packet back.
func TestSPDEncapsulate(t *testing.T) {
	var spd SPD
	out, in := saPair(t, AESGCM128, func(c *SAConfig) {
		c.Outer = RoadWarriorToGateway(gwAddr)
		c.Selector = Selector{Local: MustAddrSet("192.0.2.2", "198.51.100.2"), Remote: MustAddrSet("203.0.113.0/24")}
	})
	p := &Policy{Name: "vpn", Action: Protect, Selector: out.Selector}
	spd.Append(p)
	spd.Append(&Policy{Name: "lan", Action: Bypass, Selector: Selector{Local: AnyAddr, Remote: MustAddrSet("192.0.2.0/24")}})
	var c Counters
	buf := make([]byte, 2048)

	inner := ipv4Packet(rwAddr2, srvAddr, ProtoTCP, 1, 2, 100)
	copy(buf[HeaderLen:], inner)
	if _, act, err := spd.Encapsulate(buf, len(inner), &c); act != Protect || !errors.Is(err, DropNoSA) {
		t.Fatalf("no SA yet: %v %v", act, err)
	}
	p.SA.Store(out)
	copy(buf[HeaderLen:], inner)
	s, act, err := spd.Encapsulate(buf, len(inner), &c)
	if err != nil || act != Protect || s.SA != out {
		t.Fatal(act, err)
	}
	// RFC 3554 road warrior rule: outer source = inner source (the
	// secondary uplink here), outer destination = the gateway.
	if s.Src != rwAddr2 || s.Dst != gwAddr {
		t.Fatalf("outer %v -> %v", s.Src, s.Dst)
	}
	if got, err := in.Open(s.Src, s.ESP); err != nil || string(got) != string(inner) {
		t.Fatal(err)
	}
	lan := ipv4Packet(rwAddr, gwAddr, ProtoTCP, 1, 2, 10)
	copy(buf[HeaderLen:], lan)
	if _, act, err := spd.Encapsulate(buf, len(lan), &c); act != Bypass || err != nil {
		t.Fatal(act, err)
	}
	other := ipv4Packet(rwAddr, netip.MustParseAddr("198.51.100.200"), ProtoTCP, 1, 2, 10)
	copy(buf[HeaderLen:], other)
	if _, act, err := spd.Encapsulate(buf, len(other), &c); act != Discard || !errors.Is(err, DropPolicy) {
		t.Fatal(act, err)
	}
	if c.Drops[DropNoSA].Load() != 1 || c.Drops[DropPolicy].Load() != 1 {
		t.Fatalf("%+v", c.Snapshot())
	}
}
