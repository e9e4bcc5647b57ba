package mobility

import (
	"net/netip"
	"testing"

	"github.com/roamsec/roamsec/tunnel"
)

// What a switch does to each kind of outer rule (RFC 3554 §2 cases).
func TestMoveRule(t *testing.T) {
	a := netip.MustParseAddr
	gw1, gw6 := a("192.0.2.1"), a("2001:db8:1::1")
	cases := []struct {
		name    string
		r       tunnel.OuterRule
		want    tunnel.OuterRule
		changed bool
	}{
		{"host-to-host: outer = inner, untouched (each heartbeat tests its own path)",
			tunnel.HostToHost(), tunnel.HostToHost(), false},
		{"gateway to road warrior: destination follows the inner packet, untouched",
			tunnel.GatewayToRoadWarrior(gw1), tunnel.GatewayToRoadWarrior(gw1), false},
		{"road warrior, RFC 3554 mode: the gateway address of the new path",
			tunnel.RoadWarriorToGateway(gw1, gw6), tunnel.RoadWarriorToGateway(sec.Peer, gw6), true},
		{"virtual-address mode: source and destination of the new path",
			tunnel.OuterRule{Src: []netip.Addr{pri.Local}, Dst: []netip.Addr{gw1}},
			tunnel.OuterRule{Src: []netip.Addr{sec.Local}, Dst: []netip.Addr{sec.Peer}}, true},
		{"already on the path",
			tunnel.RoadWarriorToGateway(sec.Peer), tunnel.RoadWarriorToGateway(sec.Peer), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, changed := MoveRule(c.r, sec)
			if changed != c.changed || got.SrcFromInner != c.want.SrcFromInner || got.DstFromInner != c.want.DstFromInner ||
				!equalAddrs(got.Src, c.want.Src) || !equalAddrs(got.Dst, c.want.Dst) {
				t.Fatalf("got %+v (changed %v), want %+v", got, changed, c.want)
			}
		})
	}
}
