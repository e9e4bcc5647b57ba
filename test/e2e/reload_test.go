package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// A second road warrior in a namespace of its own, on a link of its own
// to the gateway (100.64.7.0/24), so the two road warriors' TUN devices,
// tables and rules do not meet.
const (
	reloadRW2Net = "100.64.7.0/24"
	reloadGWAddr = "100.64.7.1"
	reloadRW2    = "100.64.7.2"
	reloadLink   = "rsb-rw2"
)

const reloadGW = `role: gateway
log: {level: debug}
control_socket: %[1]s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 192.0.2.2/32, src: 192.0.2.1}
    - {dst: 198.51.100.2/32, src: 198.51.100.1}
    - {dst: 100.64.7.2/32, src: 100.64.7.1}
transport:
  listen: [192.0.2.1, 198.51.100.1, 100.64.7.1]
ike:
  id: gw.roamsec.example
  local_ts: [203.0.113.0/24]
  dpd: 2s
  peers:
%[2]s`

const (
	reloadPeer1 = "    - {id: rw1@roamsec.example, psk_file: psk, addresses: [192.0.2.0/24, 198.51.100.0/24]}\n"
	reloadPeer2 = "    - {id: rw2@roamsec.example, psk_file: psk, addresses: [100.64.7.0/24]}\n"
)

const reloadRW2Cfg = `role: roadwarrior
log: {level: debug}
control_socket: %[1]s/rw2.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 100.64.7.2}
transport:
  listen: [100.64.7.2]
ike:
  id: rw2@roamsec.example
  gateway: 100.64.7.1
  gateway_id: gw.roamsec.example
  local_ts: [100.64.7.2]
  remote_ts: [203.0.113.0/24]
  psk_file: psk
  dpd: 2s
`

// rw2Link puts a namespace on a veth link of its own to the gateway.
func rw2Link(t *testing.T, bed *netns.Bed) *netns.NS {
	t.Helper()
	rw2 := netns.NewNS(t)
	for _, args := range [][]string{
		{"ip", "-n", bed.GW.Name, "link", "add", reloadLink, "type", "veth", "peer", "name", reloadLink, "netns", rw2.Name},
		{"ip", "-n", bed.GW.Name, "addr", "add", reloadGWAddr + "/24", "dev", reloadLink},
		{"ip", "-n", rw2.Name, "addr", "add", reloadRW2 + "/24", "dev", reloadLink},
		{"ip", "-n", bed.GW.Name, "link", "set", reloadLink, "up"},
		{"ip", "-n", rw2.Name, "link", "set", reloadLink, "up"},
	} {
		if out, err := bed.GW.Run(args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	return rw2
}

// childrenOf is the gateway's log lines installing or rekeying the Child
// SAs of identity id: the same lines, the same SPIs.
func childrenOf(log, id string) []string {
	var out []string
	for _, m := range childRE.FindAllStringSubmatch(log, -1) {
		if strings.Contains(m[1], id) {
			out = append(out, m[1]+" "+m[2]+" "+m[3])
		}
	}
	return out
}

// TestReloadAppliesPeers: `systemctl reload` (SIGHUP) of a running gateway
// applies ike.peers without a restart. A road warrior is up; a second
// identity is added to the file and the gateway reloaded: the second road
// warrior connects and carries traffic while the first keeps its Child
// SAs (same SPIs, no new IKE SA). Then the first identity is removed and
// the gateway reloaded: its IKE SA is deleted (RFC 7296 §1.4.1 DELETE,
// the road warrior hears it), and the second's stays. Last, only the PSK
// file changes: the second's IKE SA, authenticated with the old key, is
// deleted as well.
func TestReloadAppliesPeers(t *testing.T) {
	start := time.Now()
	bed := netns.New(t)
	rw2ns := rw2Link(t, bed)
	_, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	dir := filepath.Dir(rwCfg) // holds psk
	gwCfg, err := rig.WriteFile(dir, "gw-reload.yaml", fmt.Sprintf(reloadGW, dir, reloadPeer1))
	if err != nil {
		t.Fatal(err)
	}
	rw2Cfg, err := rig.WriteFile(dir, "rw2.yaml", fmt.Sprintf(reloadRW2Cfg, dir))
	if err != nil {
		t.Fatal(err)
	}
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(15*time.Second, func() bool { return len(childrenOf(gw.Log(), "rw1@")) >= 2 }) {
		t.Fatalf("rw1: no Child SAs\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	rw1Before := childrenOf(gw.Log(), "rw1@")

	// Not yet a peer: refused (a refused road warrior gives up: exit).
	refused, err := rig.Launch(rw2ns, filepath.Join(bin, "roadwarrior"), "-config", rw2Cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(15*time.Second, func() bool { return refused.Exited() && strings.Contains(gw.Log(), "no policy for identity rw2@") }) {
		refused.Kill()
		t.Fatalf("rw2 not refused before the reload\nrw2:\n%s\ngw:\n%s", refused.Log(), gw.Log())
	}

	// Reload 1: rw2 added.
	os.WriteFile(gwCfg, []byte(fmt.Sprintf(reloadGW, dir, reloadPeer1+reloadPeer2)), 0o600)
	if err := gw.Send(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(10*time.Second, func() bool {
		return regexp.MustCompile(`ike.peers applied.* peers=2 ike_sas_kept=1 ike_sas_deleted=\[\]`).MatchString(gw.Log())
	}) {
		t.Fatalf("reload 1 not applied\ngw:\n%s", gw.Log())
	}
	reloaded := time.Now()
	rw2, err := rig.Start(rw2ns, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", rw2Cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw2.Stop(5 * time.Second) })
	if !rig.WaitFor(30*time.Second, func() bool { return len(childrenOf(gw.Log(), "rw2@")) >= 1 }) {
		t.Fatalf("rw2 not connected after the reload\nrw2:\n%s\ngw:\n%s", rw2.Log(), gw.Log())
	}
	t.Logf("rw2's Child SA installed %v after its start, with no gateway restart", time.Since(reloaded).Round(time.Millisecond))
	if strings.Contains(gw.Log(), "take effect at the next restart") {
		t.Errorf("a peers-only change named as waiting for a restart\ngw:\n%s", gw.Log())
	}
	if after := childrenOf(gw.Log(), "rw1@"); strings.Join(after, "|") != strings.Join(rw1Before, "|") || strings.Count(gw.Log(), "IKE SA down") != 0 {
		t.Fatalf("rw1's SAs changed across the reload: before %v, after %v\ngw:\n%s", rw1Before, after, gw.Log())
	}
	for _, n := range []*netns.NS{bed.RW, rw2ns} {
		if out, err := n.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", netns.Srv4.String()); err != nil {
			t.Fatalf("ping from %s through the tunnel after the reload: %v\n%s\ngw:\n%s", n.Name, err, out, gw.Log())
		}
	}

	// Reload 2: rw1 removed: its IKE SA is deleted, rw2's stays.
	os.WriteFile(gwCfg, []byte(fmt.Sprintf(reloadGW, dir, reloadPeer2)), 0o600)
	if err := gw.Send(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(10*time.Second, func() bool {
		return regexp.MustCompile(`ike.peers applied.* peers=1 ike_sas_kept=1 ike_sas_deleted=\[rw1@roamsec.example#\d+\]`).MatchString(gw.Log())
	}) {
		t.Fatalf("reload 2 not applied\ngw:\n%s", gw.Log())
	}
	if !rig.WaitFor(10*time.Second, func() bool {
		return regexp.MustCompile(`IKE SA down.*ike=rw1@\S+ why="peer policy removed or changed \(reload\)"`).MatchString(gw.Log()) &&
			strings.Contains(rw.Log(), "deleted by the peer")
	}) {
		t.Fatalf("rw1's IKE SA not deleted\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	if regexp.MustCompile(`IKE SA down.*ike=rw2@`).MatchString(gw.Log()) {
		t.Fatalf("rw2's IKE SA went down\ngw:\n%s", gw.Log())
	}
	if out, err := rw2ns.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", netns.Srv4.String()); err != nil {
		t.Fatalf("ping from rw2 after rw1's removal: %v\n%s", err, out)
	}

	// Reload 3: only the PSK file changes (the YAML is the same): rw2
	// authenticated with the old key, so its IKE SA is deleted too.
	if err := os.WriteFile(filepath.Join(dir, "psk"), []byte("a-new-key-after-a-rotation-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := gw.Send(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(10*time.Second, func() bool {
		return regexp.MustCompile(`ike.peers applied.* peers=1 ike_sas_kept=0 ike_sas_deleted=\[rw2@roamsec.example#\d+\]`).MatchString(gw.Log()) &&
			regexp.MustCompile(`IKE SA down.*ike=rw2@\S+ why="peer policy removed or changed \(reload\)"`).MatchString(gw.Log())
	}) {
		t.Fatalf("rw2's IKE SA not deleted after its PSK changed\nrw2:\n%s\ngw:\n%s", rw2.Log(), gw.Log())
	}
	t.Logf("test took %v", time.Since(start).Round(time.Millisecond))
}
