package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// adoptConfigs are the virtual-address configs (virtual_test.go) with the
// road warrior's uplink networks as address sets (RFC 3554 §1: a set may
// be a prefix) where they named its single addresses: any address its
// uplinks get is then its own to the SAs, and the gateway routes its
// replies to the primary network through the host-to-host SA.
func adoptConfigs(t *testing.T) (gw, rw string) {
	keys := make([]any, 4)
	for i := range keys {
		k := make([]byte, 36)
		rand.Read(k)
		keys[i] = hex.EncodeToString(k)
	}
	rwText := fmt.Sprintf(virtualRW, keys...)
	gwText := fmt.Sprintf(virtualGW, keys...)
	for _, r := range []struct {
		text *string
		old  string
		new  string
		n    int
	}{
		{&rwText, "local_addrs: [192.0.2.2, 198.51.100.2]", "local_addrs: [192.0.2.0/24, 198.51.100.0/24]", 2},
		{&rwText, `selector: "local 192.0.2.2,198.51.100.2 remote 192.0.2.1,198.51.100.1"`, `selector: "local 192.0.2.0/24,198.51.100.0/24 remote 192.0.2.1,198.51.100.1"`, 1},
		{&gwText, "- {dst: 192.0.2.2/32, src: 192.0.2.1}", "- {dst: 192.0.2.0/24, src: 192.0.2.1}", 1},
		{&gwText, `remote 192.0.2.2,198.51.100.2"`, `remote 192.0.2.0/24,198.51.100.0/24"`, 1},
	} {
		if c := strings.Count(*r.text, r.old); c != r.n {
			t.Fatalf("virtual-mode config changed: %d of %q, want %d", c, r.old, r.n)
		}
		*r.text = strings.ReplaceAll(*r.text, r.old, r.new)
	}
	// Control sockets of their own (other tests may run daemons meanwhile).
	dir := t.TempDir()
	gwText = "control_socket: " + filepath.Join(dir, "gateway.sock") + "\n" + gwText
	rwText = "control_socket: " + filepath.Join(dir, "roadwarrior.sock") + "\n" + rwText
	gw, err := rig.WriteFile(dir, "gateway.yaml", gwText)
	if err != nil {
		t.Fatal(err)
	}
	if rw, err = rig.WriteFile(dir, "roadwarrior.yaml", rwText); err != nil {
		t.Fatal(err)
	}
	return gw, rw
}

// A new address on the primary uplink (the old one deleted, as when a
// DHCP lease changes) is adopted: the primary path takes it, heartbeats
// from it confirm it, traffic returns to the primary from the new address,
// and our gateway learns it from authenticated ESP (follow_peer). The SAs
// stay (same SPIs). The outages are reported.
func TestAddressAdoptedOnPrimaryUplink(t *testing.T) {
	bed := netns.New(t)
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	gwCfg, rwCfg := adoptConfigs(t)
	gw, rw := up(t, bed, gwCfg, rwCfg)
	s, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(time.Time{}).IsZero() }) {
		t.Fatalf("no traffic through the tunnel\n%s\n%s", rw.Log(), netState(bed))
	}
	if !rig.WaitFor(10*time.Second, func() bool {
		m := status(t, "roadwarrior", rwCfg).Mobility
		return m != nil && len(m.Paths) == 2 && m.Paths[0].State == "active" && m.Paths[1].State == "active"
	}) {
		t.Fatalf("the paths never both answered\n%s", rw.Log())
	}
	spisBefore := spisOf(status(t, "roadwarrior", rwCfg))

	const newAddr = "192.0.2.77"
	changed := renumberPrimary(t, bed, newAddr)
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(changed).IsZero() }) {
		t.Fatalf("no traffic after the address change\n%s\n%s", rw.Log(), netState(bed))
	}
	resumed := s.FirstReplyAfter(changed).Sub(changed)
	var back time.Duration
	if !rig.WaitFor(15*time.Second, func() bool {
		m := status(t, "roadwarrior", rwCfg).Mobility
		back = time.Since(changed)
		return m != nil && m.Paths[0].Local == newAddr && m.Paths[0].State == "active" && m.Paths[0].InUse
	}) {
		t.Fatalf("the primary path did not adopt %s and carry traffic again: %+v\n%s\n%s", newAddr, status(t, "roadwarrior", rwCfg).Mobility, rw.Log(), netState(bed))
	}
	t1 := time.Now()
	if !rig.WaitFor(5*time.Second, func() bool { return !s.FirstReplyAfter(t1).IsZero() }) {
		t.Fatalf("no traffic over the primary on its new address\n%s", rw.Log())
	}
	// The gateway sends to the new address: it learned it from ESP.
	var outers []string
	if !rig.WaitFor(5*time.Second, func() bool {
		outers = outers[:0]
		for _, sa := range status(t, "gateway", gwCfg).SAs {
			if sa.Dir == "out" {
				outers = append(outers, sa.Outer)
			}
		}
		return strings.Contains(strings.Join(outers, " "), "following="+newAddr)
	}) {
		t.Fatalf("the gateway does not follow %s: %v\n%s", newAddr, outers, gw.Log())
	}
	if after := spisOf(status(t, "roadwarrior", rwCfg)); after != spisBefore {
		t.Fatalf("SPIs changed: %s -> %s", spisBefore, after)
	}
	if !strings.Contains(rw.Log(), `msg="path address"`) || !strings.Contains(rw.Log(), "new="+newAddr) {
		t.Fatalf("no path address line in the log:\n%s", rw.Log())
	}
	sent, answered := s.Counts()
	t.Logf("address change on the primary uplink: traffic resumed after %v (over the secondary), back on the primary from %s after %v (switch_back 1s); UDP stream %d/%d answered",
		resumed.Round(time.Millisecond), newAddr, back.Round(time.Millisecond), answered, sent)
}

// renumberPrimary gives the road warrior's primary uplink addr/24 in place
// of its address, as a new DHCP lease would, and returns when it began.
// Old address first: deleting an IPv4 primary address also deletes the
// secondaries of its subnet (unless promote_secondaries is set), so a
// lease change is a delete and then an add.
func renumberPrimary(t *testing.T, bed *netns.Bed, addr string) time.Time {
	t.Helper()
	changed := time.Now()
	if out, err := bed.RW.Run("ip", "addr", "del", netns.RWPrimary4.String()+"/24", "dev", netns.IfPrimary); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := bed.RW.Run("ip", "addr", "add", addr+"/24", "dev", netns.IfPrimary); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return changed
}
