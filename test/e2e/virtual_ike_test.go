package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// IKEv2 virtual-address mode with failover (issue 16 item 2): the road
// warrior gets 100.64.0.x from the gateway's pool; the protected network
// 203.0.113.0/24 sits on its own link behind the gateway. The path
// monitoring rides the negotiated host-to-host Child SA (outer = inner,
// the road warrior's uplink addresses <=> the gateway's), so both paths
// answer from connect on, whatever the routes, and a dead primary is left
// for the secondary.

const virtualIKERW = `role: roadwarrior
log: {level: debug}
control_socket: %[1]s/rw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 192.0.2.2}
    - {dst: 192.0.2.1/32, src: 192.0.2.2}
    - {dst: 198.51.100.1/32, src: 198.51.100.2}
transport:
  listen: [192.0.2.2, 198.51.100.2]
ike:
  id: rw1@roamsec.example
  gateway: 192.0.2.1
  gateway_id: gw.roamsec.example
  mode: virtual
  remote_ts: [203.0.113.0/24]
  psk_file: psk
  dpd: 10s
mobility:
  paths:
    - {name: primary, local: 192.0.2.2, peer: 192.0.2.1, link: rsb-pri}
    - {name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec}
  switch_back: 1s
  detector: sctp
`

// The gateway serves both modes with the shipped example's routes; rw1
// has a pool and no addresses of its own (RFC 3554 §4 authority): its
// path-monitoring SA is authorized by the outer addresses of its IKE SA.
const virtualIKEGW = `role: gateway
log: {level: debug}
control_socket: %[1]s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 192.0.2.0/24, src: 192.0.2.1}
    - {dst: 198.51.100.0/24, src: 198.51.100.1}
    - {dst: 100.64.0.0/24}
transport:
  listen: [192.0.2.1, 198.51.100.1]
ike:
  id: gw.roamsec.example
  local_ts: [203.0.113.0/24]
  dpd: 10s
  peers:
    - {id: rw1@roamsec.example, psk_file: psk, virtual_pool: 100.64.0.0/24}
mobility:
  sctp_listen: [192.0.2.1, 198.51.100.1]
`

func virtualIKEConfigs(t *testing.T) (gwCfg, rwCfg string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "psk"), []byte(testPSK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if gwCfg, err = rig.WriteFile(dir, "gw.yaml", fmt.Sprintf(virtualIKEGW, dir)); err != nil {
		t.Fatal(err)
	}
	if rwCfg, err = rig.WriteFile(dir, "rw.yaml", fmt.Sprintf(virtualIKERW, dir)); err != nil {
		t.Fatal(err)
	}
	return gwCfg, rwCfg
}

// TestVirtualIKEFailover: silent drop on the gateway side, then link down
// on the road warrior's side, each with a UDP stream and an established
// TCP connection (data checked) through it. ROAMSEC_BENCH_VIRTUAL=N runs N
// trials of each and logs the median outage.
func TestVirtualIKEFailover(t *testing.T) {
	trials := envTrials("ROAMSEC_BENCH_VIRTUAL", 1)
	bed := netns.New(t)
	gwCfg, rwCfg := virtualIKEConfigs(t)
	gw, rw := up(t, bed, gwCfg, rwCfg)
	c := &reconnectCase{bed: bed, gw: gw, rw: rw, gwCfg: gwCfg, rwCfg: rwCfg}
	waitOneConnection(t, c, 20*time.Second)
	// Both paths are monitored, and answer, from connect on.
	if !rig.WaitFor(15*time.Second, func() bool { return pathsActive(t, rwCfg) == 2 }) {
		t.Fatalf("paths not both active: %+v\nrw:\n%s\ngw:\n%s", status(t, "roadwarrior", rwCfg).Mobility, rw.Log(), gw.Log())
	}
	vip := status(t, "roadwarrior", rwCfg).IKE.VirtualIP
	if len(vip) != 1 || !strings.HasPrefix(vip[0], "100.64.0.") {
		t.Fatalf("virtual address %v, want one from 100.64.0.0/24", vip)
	}
	// The host routes to the gateway's path addresses keep their uplink
	// source; the protected network's route takes the virtual address.
	routes, _ := bed.RW.Run("ip", "-4", "route", "show", "table", "220")
	for _, want := range []string{"192.0.2.1 dev roamsec0 .*src 192.0.2.2", "198.51.100.1 dev roamsec0 .*src 198.51.100.2", "203.0.113.0/24 dev roamsec0 .*src " + vip[0]} {
		if !matchLine(routes, want) {
			t.Errorf("route table 220 lacks %q:\n%s", want, routes)
		}
	}
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	tcp, err := rig.DialTCPEcho(bed, netns.Srv4, 5203)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if err := tcp.Check(64<<10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	deaths := []rig.Death{
		{Name: "silent drop on the gateway side", Kill: func() error { return bed.GW.BlockIngress(netns.IfPrimary) }, Restore: func() error { return bed.GW.UnblockIngress(netns.IfPrimary) }},
		{Name: "link down on the road warrior's side", Kill: func() error { return bed.RW.LinkDown(netns.IfPrimary) }, Restore: func() error { return bed.RW.LinkUp(netns.IfPrimary) }},
	}
	for _, d := range deaths {
		var outages []time.Duration
		for i := range trials {
			outage, err := virtualTrial(t, c, d, tcp)
			if err != nil {
				t.Fatalf("%s, trial %d: %v\nrw:\n%s\ngw:\n%s", d.Name, i+1, err, rw.Log(), gw.Log())
			}
			outages = append(outages, outage)
			t.Logf("%s, trial %d: traffic on the secondary %v after the death", d.Name, i+1, outage.Round(time.Millisecond))
		}
		if trials > 1 {
			slices.Sort(outages)
			t.Logf("%s: outage median of %d: %v (min %v, max %v)", d.Name, trials, outages[len(outages)/2].Round(time.Millisecond),
				outages[0].Round(time.Millisecond), outages[len(outages)-1].Round(time.Millisecond))
		}
	}
	if n := strings.Count(rw.Log(), "IKE SA established"); n != 1 {
		t.Errorf("the failovers renegotiated: %d IKE SAs established", n)
	}
	waitOneConnection(t, c, 10*time.Second)
}

// virtualTrial kills the primary while a stream runs, waits for the
// traffic on the secondary and checks the established TCP connection
// there, restores the primary and waits for the road warrior to use it
// again, then checks the TCP connection once more.
func virtualTrial(t *testing.T, c *reconnectCase, d rig.Death, tcp *rig.TCPEcho) (time.Duration, error) {
	if !rig.WaitFor(20*time.Second, func() bool { return pathsActive(t, c.rwCfg) == 2 && primaryInUse(t, c.rwCfg) }) {
		return 0, fmt.Errorf("not on an active primary with both paths active before the trial: %+v", status(t, "roadwarrior", c.rwCfg).Mobility)
	}
	s, err := rig.StartStream(c.bed, 10*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if !rig.WaitFor(5*time.Second, func() bool { return !s.FirstReplyAfter(time.Time{}).IsZero() }) {
		return 0, fmt.Errorf("no traffic before the death")
	}
	time.Sleep(300 * time.Millisecond)
	if err := d.Kill(); err != nil {
		return 0, err
	}
	dead := time.Now()
	if !rig.WaitFor(15*time.Second, func() bool { return !s.FirstReplyAfter(dead).IsZero() }) {
		d.Restore()
		return 0, fmt.Errorf("no traffic within 15 s of the death")
	}
	outage := s.FirstReplyAfter(dead).Sub(dead)
	if err := tcp.Check(64<<10, 30*time.Second); err != nil {
		d.Restore()
		return outage, fmt.Errorf("on the secondary: %w", err)
	}
	if err := d.Restore(); err != nil {
		return outage, err
	}
	if !rig.WaitFor(20*time.Second, func() bool { return primaryInUse(t, c.rwCfg) }) {
		return outage, fmt.Errorf("no return to the primary")
	}
	if err := tcp.Check(64<<10, 30*time.Second); err != nil {
		return outage, fmt.Errorf("back on the primary: %w", err)
	}
	return outage, nil
}

func pathsActive(t *testing.T, rwCfg string) int {
	n := 0
	if m := status(t, "roadwarrior", rwCfg).Mobility; m != nil {
		for _, p := range m.Paths {
			if p.State == "active" {
				n++
			}
		}
	}
	return n
}

func primaryInUse(t *testing.T, rwCfg string) bool {
	if m := status(t, "roadwarrior", rwCfg).Mobility; m != nil {
		for _, p := range m.Paths {
			if p.Primary {
				return p.InUse && p.State == "active"
			}
		}
	}
	return false
}

func matchLine(text, pattern string) bool {
	for _, l := range strings.Split(text, "\n") {
		if ok, _ := regexp.MatchString(pattern, l); ok {
			return true
		}
	}
	return false
}
