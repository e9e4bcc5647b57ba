package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// A new address on the primary uplink with IKEv2 (virtual-address mode,
// our gateway): the primary path adopts it, its heartbeats (in the
// negotiated host-to-host SA) confirm it, and traffic returns to the
// primary from the new address.
func TestAddressAdoptedOnPrimaryUplinkIKEv2(t *testing.T) {
	bed := netns.New(t)
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	gwCfg, rwCfg := virtualIKEConfigs(t)
	gw, rw := up(t, bed, gwCfg, rwCfg)
	c := &reconnectCase{bed: bed, gw: gw, rw: rw, gwCfg: gwCfg, rwCfg: rwCfg}
	waitOneConnection(t, c, 30*time.Second)
	s, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if !rig.WaitFor(20*time.Second, func() bool { return pathsActive(t, rwCfg) == 2 && primaryInUse(t, rwCfg) }) {
		t.Fatalf("paths never both active\n%s", rw.Log())
	}
	const newAddr = "192.0.2.77"
	changed := renumberPrimary(t, bed, newAddr)
	if !rig.WaitFor(15*time.Second, func() bool { return !s.FirstReplyAfter(changed).IsZero() }) {
		t.Fatalf("no traffic after the address change\n%s", rw.Log())
	}
	t.Logf("traffic resumed %v after the change", s.FirstReplyAfter(changed).Sub(changed).Round(time.Millisecond))
	if !rig.WaitFor(20*time.Second, func() bool {
		m := status(t, "roadwarrior", rwCfg).Mobility
		return m != nil && m.Paths[0].Local == newAddr && m.Paths[0].State == "active" && m.Paths[0].InUse
	}) {
		rwSt, _, _ := rig.Run(context.Background(), nil, filepath.Join(bin, "roadwarrior"), "status", "-config", rwCfg)
		gwSt, _, _ := rig.Run(context.Background(), nil, filepath.Join(bin, "gateway"), "status", "-config", gwCfg)
		t.Fatalf("the primary path did not adopt %s and carry traffic again: %+v\nrw:\n%s\ngw:\n%s\nrw status:\n%s\ngw status:\n%s", newAddr, status(t, "roadwarrior", rwCfg).Mobility, rw.Log(), gw.Log(), rwSt, gwSt)
	}
	t1 := time.Now()
	if !rig.WaitFor(5*time.Second, func() bool { return !s.FirstReplyAfter(t1).IsZero() }) {
		t.Fatalf("no traffic over the primary on its new address\n%s", rw.Log())
	}
	if !strings.Contains(rw.Log(), "new="+newAddr) {
		t.Errorf("no path address line")
	}
}
