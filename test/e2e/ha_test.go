package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// Issue 12, part B: a hot-standby pair of gateway daemons on the HA bed
// (test/netns/ha.go): leadership, the service addresses moving with
// gratuitous ARP / unsolicited NA, IKE SA records replicated over the
// sealed sync channel, kill -9 and the takeover, the killed one rejoining
// as standby, a planned switchover. The road warrior's SAs carrying
// traffic through all of it: hawire_test.go.

const haGWConfig = `role: gateway
log: {level: debug}
control_socket: %[1]s/%[2]s.sock
tun:
  name: roamsec0
ike:
  id: gw.roamsec.example
  local_ts: [203.0.113.0/24]
  dpd: 2s
  peers:
    - {id: rw1@roamsec.example, psk_file: psk, addresses: [192.0.2.0/24]}
ha:
  listen: %[3]s
  peer: %[4]s
  cluster_key: cluster.key
  priority: %[5]d
  heartbeat: 50ms
  service_addresses:
    - {prefix: 192.0.2.100/24, interface: rsb-lan}
    - {prefix: "2001:db8:1::100/64", interface: rsb-lan}
`

const haRWConfig = `role: roadwarrior
log: {level: debug}
control_socket: %[1]s/rw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 192.0.2.2}
transport:
  listen: [192.0.2.2]
ike:
  id: rw1@roamsec.example
  gateway: 192.0.2.100
  gateway_id: gw.roamsec.example
  local_ts: [192.0.2.2]
  remote_ts: [203.0.113.0/24]
  psk_file: psk
  dpd: 1s
`

type haPair struct {
	bed          *netns.HABed
	dir          string
	cfgA, cfgB   string
	cfgRW        string
	gwA, gwB, rw *rig.Proc
}

func newHAPair(t *testing.T) *haPair {
	t.Helper()
	p := &haPair{bed: netns.NewHA(t), dir: t.TempDir()}
	files := map[string]string{
		"psk":         testPSK + "\n",
		"cluster.key": "5f0e6c1b9d2a7348e1c05b6a9f3d2e71c48a0b9e6d3f1a27c5e8b04d9a6f3c12\n",
		"a.yaml":      fmt.Sprintf(haGWConfig, p.dir, "a", netns.HASyncGA, netns.HASyncGB, 200),
		"b.yaml":      fmt.Sprintf(haGWConfig, p.dir, "b", netns.HASyncGB, netns.HASyncGA, 100),
		"rw.yaml":     fmt.Sprintf(haRWConfig, p.dir),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(p.dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.cfgA, p.cfgB, p.cfgRW = filepath.Join(p.dir, "a.yaml"), filepath.Join(p.dir, "b.yaml"), filepath.Join(p.dir, "rw.yaml")
	return p
}

func (p *haPair) start(t *testing.T, ns *netns.NS, cfg string) *rig.Proc {
	t.Helper()
	g, err := rig.Start(ns, filepath.Join(bin, "gateway"), 15*time.Second, "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop(5 * time.Second) })
	return g
}

// haStatus is the gateway's status, or nil if it does not answer.
func haStatus(cfg string) *daemon.Status {
	out, code, err := rig.Run(context.Background(), nil, filepath.Join(bin, "gateway"), "status", "-config", cfg, "-json")
	if err != nil || code != 0 {
		return nil
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.HA == nil {
		return nil
	}
	return &st
}

func waitHA(t *testing.T, what string, timeout time.Duration, cond func() bool, logs ...*rig.Proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, l := range logs {
				if l != nil {
					fmt.Fprintf(&b, "--- %s:\n%s\n", l.Name, tail(l.Log(), 40))
				}
			}
			t.Fatalf("timed out (%v) waiting for %s\n%s", timeout, what, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func roleOf(cfg string) string {
	if st := haStatus(cfg); st != nil {
		return st.HA.Role
	}
	return "down"
}

// holds reports whether ns has the service addresses on its LAN link.
func holds(t *testing.T, ns *netns.NS) bool {
	t.Helper()
	out, err := ns.Run("ip", "-o", "addr", "show", "dev", netns.IfLAN)
	if err != nil {
		t.Fatal(err)
	}
	v4 := strings.Contains(out, netns.HAService4.String())
	v6 := strings.Contains(out, netns.HAService6.String())
	if v4 != v6 {
		t.Fatalf("%s holds one service address of two:\n%s", ns.Name, out)
	}
	return v4
}

func macOf(t *testing.T, ns *netns.NS) string {
	t.Helper()
	out, err := ns.Run("cat", "/sys/class/net/"+netns.IfLAN+"/address")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// neighMAC is the client's neighbour entry for a service address.
func neighMAC(t *testing.T, cl *netns.NS, a netip.Addr) string {
	t.Helper()
	out, _ := cl.Run("ip", "neigh", "show", a.String(), "dev", netns.IfLAN)
	if f := strings.Fields(out); len(f) >= 3 && f[1] == "lladdr" {
		return f[2]
	}
	return ""
}

// takeoverAfter waits until the gateway's status shows a takeover decided
// after since, done (addresses up and announced), and returns when it
// announced them and whether it was planned.
func takeoverAfter(t *testing.T, what, cfg string, since time.Time, procs ...*rig.Proc) (time.Time, bool) {
	t.Helper()
	var to *daemon.Status
	waitHA(t, what, 5*time.Second, func() bool {
		st := haStatus(cfg)
		if st == nil || st.HA.LastTakeover == nil || !st.HA.LastTakeover.At.After(since) || st.HA.Role != "active" {
			return false
		}
		to = st
		return true
	}, procs...)
	lt := to.HA.LastTakeover
	return lt.At.Add(time.Duration(lt.AnnouncedMs * float64(time.Millisecond))), lt.Planned
}

func TestHAPairTakeoverRejoinAndSwitchover(t *testing.T) {
	p := newHAPair(t)
	bed := p.bed
	// -check validates the ha section against the host: A's file is
	// right in A's namespace, wrong in B's (the sync address is A's).
	if out, code, err := rig.Run(context.Background(), bed.GA, filepath.Join(bin, "gateway"), "-check", "-config", p.cfgA); err != nil || code != 0 {
		t.Fatalf("-check in A: exit %d %v\n%s", code, err, out)
	}
	if out, _, _ := rig.Run(context.Background(), bed.GB, filepath.Join(bin, "gateway"), "-check", "-config", p.cfgA); !strings.Contains(out, "a.yaml:") ||
		!strings.Contains(out, "ha.listen: 198.51.100.11 is not an address of this host") {
		t.Fatalf("-check of A's file in B:\n%s", out)
	}
	p.gwA = p.start(t, bed.GA, p.cfgA)
	waitHA(t, "gateway A active", 10*time.Second, func() bool { return roleOf(p.cfgA) == "active" }, p.gwA)
	p.gwB = p.start(t, bed.GB, p.cfgB)
	waitHA(t, "gateway B standby, synced", 10*time.Second, func() bool {
		st := haStatus(p.cfgB)
		return st != nil && st.HA.Role == "standby" && st.HA.Connected && st.HA.PeerRole == "active"
	}, p.gwA, p.gwB)
	if !holds(t, bed.GA) || holds(t, bed.GB) {
		t.Fatal("the active must hold the service addresses, the standby not")
	}
	for _, a := range []netip.Addr{netns.HAService4.Addr(), netns.HAService6.Addr()} {
		if err := bed.CL.Ping(a, 5*time.Second); err != nil {
			t.Fatalf("ping the service address %s: %v", a, err)
		}
	}
	macA, macB := macOf(t, bed.GA), macOf(t, bed.GB)
	if m := neighMAC(t, bed.CL, netns.HAService4.Addr()); m != macA {
		t.Fatalf("client's ARP entry for the service address: %q, want A's %s", m, macA)
	}

	// A road warrior's IKE SA on the active is replicated to the standby.
	rw, err := rig.Start(bed.CL, filepath.Join(bin, "roadwarrior"), 20*time.Second, "-config", p.cfgRW)
	if err != nil {
		t.Fatalf("%v\n--- A:\n%s", err, tail(p.gwA.Log(), 30))
	}
	p.rw = rw
	t.Cleanup(func() { rw.Stop(5 * time.Second) })
	waitHA(t, "the IKE SA's record on the standby", 15*time.Second, func() bool {
		st := haStatus(p.cfgB)
		return st != nil && st.HA.Records == 1
	}, p.gwA, p.gwB, rw)
	stA, stB := haStatus(p.cfgA), haStatus(p.cfgB)
	if stA == nil || stB == nil || len(stA.IKE.SAs) != 1 || stA.HA.SentBytes == 0 || stB.HA.ReceivedBytes == 0 {
		t.Fatalf("status A %+v\nB %+v", stA, stB)
	}
	t.Logf("replicated: 1 IKE SA, record %d bytes; sync so far: A sent %d bytes, B received %d, lag %d frames",
		stB.HA.RecordBytes, stA.HA.SentBytes, stB.HA.ReceivedBytes, stA.HA.SyncLagFrames)
	time.Sleep(time.Second) // steady state: heartbeats, and checkpoints of SAs that moved
	if st := haStatus(p.cfgA); st != nil {
		t.Logf("steady-state sync, active to standby, one idle road warrior: %d bytes/s", st.HA.SentBytes-stA.HA.SentBytes)
	}

	// kill -9 the active: the standby takes the addresses and announces
	// them; the client's neighbour entries follow without a new lookup.
	killed := time.Now()
	p.gwA.Kill()
	if at, planned := takeoverAfter(t, "B's takeover after A's kill", p.cfgB, killed, p.gwB); planned {
		t.Fatal("B's takeover after a kill -9 says planned")
	} else {
		t.Logf("kill -9 to addresses up and GARP/NA sent: %v", at.Sub(killed).Round(time.Millisecond))
	}
	if !holds(t, bed.GB) {
		t.Fatal("B active without the service addresses")
	}
	waitHA(t, "the client's neighbour entries on B's MAC (GARP/NA)", 3*time.Second, func() bool {
		return neighMAC(t, bed.CL, netns.HAService4.Addr()) == macB && neighMAC(t, bed.CL, netns.HAService6.Addr()) == macB
	}, p.gwB)
	if st := haStatus(p.cfgB); st.HA.LastTakeover == nil || st.HA.Takeovers != 1 || st.HA.LastTakeover.Planned {
		t.Fatalf("B's takeover in status: %+v", st.HA)
	}

	// A comes back: it joins as standby (higher priority, no preemption),
	// never takes the addresses, and receives B's state: the road
	// warrior's new IKE SA (restarted here: without part A's import, B
	// does not know the old one, and the road warrior's DPD would take its
	// retransmissions to find out).
	p.gwA = p.start(t, bed.GA, p.cfgA)
	waitHA(t, "A back as standby", 10*time.Second, func() bool {
		st := haStatus(p.cfgA)
		return st != nil && st.HA.Role == "standby" && st.HA.Connected
	}, p.gwA, p.gwB)
	if holds(t, bed.GA) || !holds(t, bed.GB) {
		t.Fatal("the rejoining node took the service addresses")
	}
	rw.Stop(5 * time.Second)
	if rw, err = rig.Start(bed.CL, filepath.Join(bin, "roadwarrior"), 20*time.Second, "-config", p.cfgRW); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Stop(5 * time.Second) })
	waitHA(t, "the road warrior's IKE SA on B replicated to A", 30*time.Second, func() bool {
		stB := haStatus(p.cfgB)
		stA := haStatus(p.cfgA)
		return stA != nil && stB != nil && stB.IKE != nil && len(stB.IKE.SAs) == 1 && stA.HA.Records == 1
	}, p.gwA, p.gwB, rw)

	// Planned switchover back to A.
	switched := time.Now()
	out, code, err := rig.Run(context.Background(), nil, filepath.Join(bin, "gateway"), "ha", "switchover", "-config", p.cfgB)
	if err != nil || code != 0 {
		t.Fatalf("gateway ha switchover: exit %d %v\n%s", code, err, out)
	}
	if !strings.Contains(out, "this gateway is now standby") {
		t.Fatalf("switchover said: %s", out)
	}
	if _, planned := takeoverAfter(t, "A's takeover on the switchover", p.cfgA, switched, p.gwA, p.gwB); !planned {
		t.Fatal("A's takeover on a switchover is not planned")
	}
	if roleOf(p.cfgB) != "standby" || !holds(t, bed.GA) || holds(t, bed.GB) {
		t.Fatal("after the switchover A must hold the addresses, B be standby without them")
	}
	waitHA(t, "the client's neighbour entry back on A's MAC", 3*time.Second, func() bool {
		return neighMAC(t, bed.CL, netns.HAService4.Addr()) == macA
	}, p.gwA)
	// Switchover asked of the standby is refused.
	if out, code, _ := rig.Run(context.Background(), nil, filepath.Join(bin, "gateway"), "ha", "switchover", "-config", p.cfgB); code == 0 || !strings.Contains(out, "not active") {
		t.Fatalf("switchover on the standby: exit %d: %s", code, out)
	}

	// SIGTERM of the active hands over like a switchover.
	stopped := time.Now()
	if err := p.gwA.Stop(10 * time.Second); err != nil {
		t.Fatalf("A: %v\n%s", err, tail(p.gwA.Log(), 20))
	}
	at, planned := takeoverAfter(t, "B's takeover after A's SIGTERM", p.cfgB, stopped, p.gwB)
	if !planned || !holds(t, bed.GB) {
		t.Fatalf("B's takeover after A's SIGTERM: planned %v, holds %v\n%s", planned, holds(t, bed.GB), tail(p.gwB.Log(), 20))
	}
	t.Logf("SIGTERM of the active to the standby's addresses up and announced: %v", at.Sub(stopped).Round(time.Millisecond))
}

// A split sync link: heartbeats stop both ways, but the active still
// answers for the service address on the LAN, so the standby stays
// standby (one holder), and the link's return changes nothing.
func TestHASplitSyncLinkKeepsOneActive(t *testing.T) {
	p := newHAPair(t)
	bed := p.bed
	p.gwA = p.start(t, bed.GA, p.cfgA)
	waitHA(t, "gateway A active", 10*time.Second, func() bool { return roleOf(p.cfgA) == "active" }, p.gwA)
	p.gwB = p.start(t, bed.GB, p.cfgB)
	waitHA(t, "gateway B standby", 10*time.Second, func() bool {
		st := haStatus(p.cfgB)
		return st != nil && st.HA.Role == "standby" && st.HA.Connected
	}, p.gwA, p.gwB)
	if err := bed.GB.LinkDown(netns.IfSync); err != nil {
		t.Fatal(err)
	}
	waitHA(t, "B isolated (probe answered by A)", 5*time.Second, func() bool {
		st := haStatus(p.cfgB)
		return st != nil && st.HA.Isolated
	}, p.gwA, p.gwB)
	for range 20 { // a second, 20 heartbeats' worth of probes
		if !holds(t, bed.GA) || holds(t, bed.GB) || roleOf(p.cfgB) != "standby" {
			t.Fatalf("split sync link: A holds %v, B holds %v, B is %s\n%s", holds(t, bed.GA), holds(t, bed.GB), roleOf(p.cfgB), tail(p.gwB.Log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	up := time.Now()
	if err := bed.GB.LinkUp(netns.IfSync); err != nil {
		t.Fatal(err)
	}

	waitHA(t, "B synced again", 10*time.Second, func() bool {
		st := haStatus(p.cfgB)
		return st != nil && st.HA.Connected && !st.HA.Isolated && st.HA.Role == "standby"
	}, p.gwA, p.gwB)
	t.Logf("sync link back to B synced again: %v", time.Since(up).Round(time.Millisecond))
	if roleOf(p.cfgA) != "active" || !holds(t, bed.GA) {
		t.Fatal("A lost the service after the sync link came back")
	}
}

// TestHATakeoverTimes measures kill -9 to addresses up and GARP/NA sent
// at 50 ms heartbeats (dead after 150 ms), HA_TRIALS times (default 2;
// the figure in the issue is the median of 10), alternating the killed
// side. It asserts the behaviour (the other takes over), not the time.
func TestHATakeoverTimes(t *testing.T) {
	trials := envInt("HA_TRIALS", 2)
	p := newHAPair(t)
	bed := p.bed
	procs := map[string]*rig.Proc{"a": p.start(t, bed.GA, p.cfgA)}
	waitHA(t, "gateway A active", 10*time.Second, func() bool { return roleOf(p.cfgA) == "active" }, procs["a"])
	procs["b"] = p.start(t, bed.GB, p.cfgB)
	side := map[string]struct {
		ns  *netns.NS
		cfg string
	}{"a": {bed.GA, p.cfgA}, "b": {bed.GB, p.cfgB}}
	active, standby := "a", "b"
	var times []time.Duration
	for i := range trials {
		waitHA(t, "standby synced", 10*time.Second, func() bool {
			st := haStatus(side[standby].cfg)
			return st != nil && st.HA.Role == "standby" && st.HA.Connected && st.HA.PeerRole == "active"
		}, procs["a"], procs["b"])
		time.Sleep(200 * time.Millisecond) // a few heartbeats in the steady state
		killed := time.Now()
		procs[active].Kill()
		at, planned := takeoverAfter(t, "takeover", side[standby].cfg, killed, procs[standby])
		if planned {
			t.Fatal("a takeover after kill -9 says planned")
		}
		times = append(times, at.Sub(killed))
		t.Logf("trial %d: kill -9 %s, %s announced after %v", i+1, active, standby, at.Sub(killed).Round(time.Millisecond))
		procs[active] = p.start(t, side[active].ns, side[active].cfg)
		active, standby = standby, active
	}
	slices.Sort(times)
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("takeover (kill -9 to GARP/NA sent), %d trials: median %v, min %v, max %v; load %s", len(times),
		times[len(times)/2].Round(time.Millisecond), times[0].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), strings.TrimSpace(string(load)))
}
