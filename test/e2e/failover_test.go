package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

var spiRe = regexp.MustCompile(`spi=(0x[0-9a-f]+)`)

// One SA across an interface switch, for both kinds of path death: the
// link goes down (netlink sees it), and the link stays up while the path
// silently drops everything (an nftables rule; only heartbeats see it).
// The road warrior runs the shipped example config (probe detector).
// Traffic resumes over the secondary uplink with the same SAs (same SPIs,
// no renegotiation: the daemons have no IKE at all), and returns to the
// primary when it recovers. Timings are reported, not asserted.
func TestFailoverKeepsTheSA(t *testing.T) {
	cases := []struct {
		name          string
		kill, restore func(*netns.Bed) error
	}{
		{"link down", func(b *netns.Bed) error { return b.RW.LinkDown(netns.IfPrimary) },
			func(b *netns.Bed) error { return b.RW.LinkUp(netns.IfPrimary) }},
		{"silent drop, link up", func(b *netns.Bed) error { return b.Blackhole(netns.IfPrimary) },
			func(b *netns.Bed) error { return b.Unblackhole(netns.IfPrimary) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bed := netns.New(t)
			if err := rig.EchoServer(bed); err != nil {
				t.Fatal(err)
			}
			rwText, err := os.ReadFile(rig.ExampleConfig("roadwarrior.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(rwText), "switch_back: 10s") {
				t.Fatal("example config changed: no switch_back: 10s")
			}
			rwCfg, err := rig.WriteFile(t.TempDir(), "roadwarrior.yaml", strings.Replace(string(rwText), "switch_back: 10s", "switch_back: 1s", 1))
			if err != nil {
				t.Fatal(err)
			}
			gw, rw := up(t, bed, rig.ExampleConfig("gateway.yaml"), rwCfg)
			// Watch both uplinks from the gateway's side for the whole test.
			stopCapture, err := rig.Capture(bed.GW, t.TempDir(), netns.IfPrimary, netns.IfSecondary)
			if err != nil {
				t.Fatal(err)
			}
			defer stopCapture()
			s, err := rig.StartStream(bed, 10*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			if !rig.WaitFor(5*time.Second, func() bool { return !s.FirstReplyAfter(time.Time{}).IsZero() }) {
				t.Fatalf("no traffic through the tunnel before the failover\n%s\n%s", rw.Log(), netState(bed))
			}
			// Give the heartbeats a moment to confirm the secondary path: a
			// path nobody has heard from is never a failover destination.
			time.Sleep(500 * time.Millisecond)
			spisBefore := spiRe.FindAllString(rw.Log(), -1)
			stBefore := status(t, "roadwarrior", rwCfg)

			// The path is dead once kill returns (nft takes a few ms; what
			// was sent before then may still get through).
			if err := c.kill(bed); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(killed).IsZero() }) {
				t.Fatalf("no traffic after the primary path died\nrw:\n%s\n%s", rw.Log(), netState(bed))
			}
			resumed := s.FirstReplyAfter(killed).Sub(killed)
			if !strings.Contains(rw.Log(), "path switch") || !strings.Contains(rw.Log(), "to=\"secondary") {
				t.Fatalf("no path switch logged:\n%s", rw.Log())
			}
			if src, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String()); !strings.Contains(src, "src "+netns.RWSecondary4.String()) {
				t.Fatalf("new flows do not start from the secondary address (RFC 3554 mode): %s", src)
			}

			if err := c.restore(bed); err != nil {
				t.Fatal(err)
			}
			restored := time.Now()
			if !rig.WaitFor(10*time.Second, func() bool {
				out, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String())
				return strings.Contains(out, "src "+netns.RWPrimary4.String())
			}) {
				t.Fatalf("did not switch back to the primary:\n%s", rw.Log())
			}
			back := time.Since(restored)
			t0 := time.Now()
			if !rig.WaitFor(5*time.Second, func() bool { return !s.FirstReplyAfter(t0).IsZero() }) {
				t.Fatalf("no traffic after switching back:\n%s", rw.Log())
			}
			s.Close()

			// Status tells the same story: the same SPIs, the detector in
			// use (and plainly that this kernel has no SCTP), the failover.
			stAfter := status(t, "roadwarrior", rwCfg)
			if spisOf(stBefore) != spisOf(stAfter) || len(stAfter.SAs) != 4 {
				t.Fatalf("SPIs in status: %s before, %s after", spisOf(stBefore), spisOf(stAfter))
			}
			m := stAfter.Mobility
			if m == nil || m.KernelSCTP != "no" || !strings.Contains(m.Detector, "ESP-level probes") || m.LastSwitch == nil || m.Switches < 2 || len(m.Paths) != 2 {
				t.Fatalf("mobility status %+v", m)
			}
			var human strings.Builder
			daemon.PrintStatus(&human, stAfter)
			t.Logf("roadwarrior status:\n%s", human.String())

			// On the wire, on both links, before and after the switch: only
			// ESP in UDP 4500 with the configured SPIs, and no IKE at all (no
			// renegotiation); ESP on the secondary link after the switch.
			checkWire(t, stopCapture())

			// The same SAs all along: the SPIs logged at start are the only
			// ones, and both daemons stop cleanly with their counters.
			for _, p := range []*rig.Proc{rw, gw} {
				if err := p.Stop(10 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			seen := map[string]bool{}
			for _, x := range spisBefore {
				seen[x] = true
			}
			for _, x := range spiRe.FindAllString(rw.Log(), -1) {
				if !seen[x] {
					t.Fatalf("a new SPI appeared: %s (before: %v)", x, spisBefore)
				}
			}
			for _, l := range strings.Split(gw.Log(), "\n") {
				if strings.Contains(l, "SA counters") && strings.Contains(l, "not_in_pool") {
					t.Errorf("gateway accepted traffic from outside the pool? %s", l)
				}
			}
			t.Logf("%s: traffic on the secondary %v after the death; back on the primary %v after recovery (switch_back 1s)",
				c.name, resumed.Round(time.Millisecond), back.Round(time.Millisecond))
		})
	}
}

// checkWire reads the capture with tshark: every IP packet between road
// warrior and gateway must be ESP in UDP 4500 with one of the example
// configs' SPIs, none may be IKE, and both links must have carried ESP.
func checkWire(t *testing.T, file string) {
	t.Helper()
	out, err := exec.Command("tshark", "-n", "-r", file, "-Y", "ip and not icmp", "-T", "fields", "-E", "separator=|",
		"-e", "ip.src", "-e", "ip.dst", "-e", "udp.dstport", "-e", "udp.srcport", "-e", "esp.spi", "-e", "isakmp.ispi").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	spis := map[string]bool{"0xc0de0001": true, "0xc0de0002": true, "0xc0de0003": true, "0xc0de0004": true}
	links := map[string]int{}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "|")
		src, dst, dport, sport, spi, ike := f[0], f[1], f[2], f[3], f[4], f[5]
		if ike != "" || dport == "500" || sport == "500" {
			t.Fatalf("an IKE packet on the wire: %q", l)
		}
		if dport != "4500" || !spis[spi] {
			t.Fatalf("not ESP with a configured SPI: %q", l)
		}
		n++
		for _, a := range []string{src, dst} {
			switch {
			case strings.HasPrefix(a, "192.0.2."):
				links["primary"]++
			case strings.HasPrefix(a, "198.51.100."):
				links["secondary"]++
			}
		}
	}
	if n == 0 || links["primary"] == 0 || links["secondary"] == 0 {
		t.Fatalf("ESP on the wire: %d packets, per link %v", n, links)
	}
	t.Logf("wire: %d ESP packets, all with the configured SPIs, none IKE; addresses per link %v", n, links)
}

// status runs `<role> status -json` against the running daemon.
func status(t *testing.T, role, cfg string) daemon.Status {
	t.Helper()
	out, code, err := rig.Run(context.Background(), nil, filepath.Join(bin, role), "status", "-config", cfg, "-json")
	if err != nil || code != 0 {
		t.Fatalf("%s status: exit %d %v\n%s", role, code, err, out)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s status: %v\n%s", role, err, out)
	}
	return st
}

func spisOf(st daemon.Status) string {
	var s []string
	for _, sa := range st.SAs {
		s = append(s, sa.SPI+"/"+sa.Dir)
	}
	return strings.Join(s, " ")
}

// Dual stack: IPv4 and IPv6 each have their own path set, so when the
// primary uplink dies both families move to the secondary, each with its
// own SA addresses, and neither waits for the other.
func TestFailoverDualStack(t *testing.T) {
	bed := netns.New(t)
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	rwText, err := os.ReadFile(rig.ExampleConfig("roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	v4paths := "    - { name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec }\n"
	if !strings.Contains(string(rwText), v4paths) {
		t.Fatal("example config changed: no secondary path line")
	}
	text := strings.Replace(string(rwText), v4paths, v4paths+
		"    - { name: primary6, local: \"2001:db8:1::2\", peer: \"2001:db8:1::1\", link: rsb-pri }\n"+
		"    - { name: secondary6, local: \"2001:db8:2::2\", peer: \"2001:db8:2::1\", link: rsb-sec }\n", 1)
	rwCfg, err := rig.WriteFile(t.TempDir(), "roadwarrior.yaml", text)
	if err != nil {
		t.Fatal(err)
	}
	_, rw := up(t, bed, rig.ExampleConfig("gateway.yaml"), rwCfg)
	s4, err := rig.StartStreamTo(bed, netns.Srv4, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s4.Close)
	s6, err := rig.StartStreamTo(bed, netns.Srv6, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s6.Close)
	for name, s := range map[string]*rig.Stream{"IPv4": s4, "IPv6": s6} {
		if !rig.WaitFor(5*time.Second, func() bool { return !s.FirstReplyAfter(time.Time{}).IsZero() }) {
			t.Fatalf("%s: no traffic before the failover\n%s\n%s", name, rw.Log(), netState(bed))
		}
	}
	time.Sleep(500 * time.Millisecond)
	if err := bed.Blackhole(netns.IfPrimary); err != nil {
		t.Fatal(err)
	}
	dead := time.Now()
	for name, s := range map[string]*rig.Stream{"IPv4": s4, "IPv6": s6} {
		if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(dead).IsZero() }) {
			t.Fatalf("%s: no traffic after the silent death of the primary\n%s\n%s", name, rw.Log(), netState(bed))
		}
		t.Logf("%s: traffic on the secondary %v after the death", name, s.FirstReplyAfter(dead).Sub(dead).Round(time.Millisecond))
	}
	for _, want := range []string{`to="secondary (198.51.100.2`, `to="secondary6 (2001:db8:2::2`} {
		if !strings.Contains(rw.Log(), want) {
			t.Fatalf("no switch %s:\n%s", want, rw.Log())
		}
	}
	st := status(t, "roadwarrior", rwCfg)
	if len(st.Mobility.Paths) != 4 {
		t.Fatalf("status shows %d paths, want 4", len(st.Mobility.Paths))
	}
	for _, sa := range st.SAs {
		if sa.SPI == "0xc0de0001" && (!strings.Contains(sa.Outer, "198.51.100.1") || !strings.Contains(sa.Outer, "2001:db8:2::1")) {
			t.Fatalf("outbound SA not moved in both families: %s", sa.Outer)
		}
	}
}
