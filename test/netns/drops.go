package netns

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Drops collects where packets get lost on the bed: UDP receive- and
// send-buffer overflows and UDP errors per namespace (/proc/net/snmp),
// and every interface's rx/tx drop counters, keyed "ROLE udp NAME" and
// "ROLE IFNAME rx_dropped". A counter that cannot be read is left out.
func (b *Bed) Drops() map[string]uint64 {
	m := map[string]uint64{}
	for _, ns := range []*NS{b.RW, b.GW, b.Srv} {
		role := ns.Name[strings.LastIndexByte(ns.Name, '-')+1:]
		if udp, err := ns.SNMP("Udp"); err == nil {
			for _, k := range []string{"RcvbufErrors", "SndbufErrors", "InErrors"} {
				if v, ok := udp[k]; ok {
					m[role+" udp "+k] = v
				}
			}
		}
		linkDrops(ns, role, m)
	}
	return m
}

// SNMP returns the counters of one protocol's lines in the namespace's
// /proc/net/snmp ("Udp", "Tcp", "Ip", ...), by name.
func (ns *NS) SNMP(proto string) (map[string]uint64, error) {
	var snmp []byte
	if err := ns.Do(func() (err error) {
		snmp, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	}); err != nil {
		return nil, err
	}
	var hdr []string
	for _, l := range strings.Split(string(snmp), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if hdr == nil {
			hdr = f
			continue
		}
		m := map[string]uint64{}
		for i, k := range hdr[1:] {
			if i+1 < len(f) {
				if v, err := strconv.ParseUint(f[i+1], 10, 64); err == nil {
					m[k] = v
				}
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("no %s: line in /proc/net/snmp", proto)
}

// linkDrops adds the interfaces' drop counters (ip -s -j link).
func linkDrops(ns *NS, role string, m map[string]uint64) {
	out, err := exec.Command("ip", "-n", ns.Name, "-s", "-j", "link", "show").Output()
	if err != nil {
		return
	}
	var links []struct {
		Ifname string `json:"ifname"`
		Stats  struct {
			RX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"rx"`
			TX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if json.Unmarshal(out, &links) != nil {
		return
	}
	for _, l := range links {
		m[role+" "+l.Ifname+" rx_dropped"] = l.Stats.RX.Dropped
		m[role+" "+l.Ifname+" tx_dropped"] = l.Stats.TX.Dropped
	}
}

// DropsSince is the counters of after that grew since before, "KEY +N",
// sorted; "none" if none did.
func DropsSince(before, after map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if d := after[k] - before[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s +%d", k, d))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
