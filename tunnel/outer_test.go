package tunnel

import (
	"net/netip"
	"testing"
)

// RFC 3554 §2, tunnel mode: the three cases of outer addresses, one row per
// sentence of the RFC.
func TestRFC3554_2_OuterAddresses(t *testing.T) {
	a := netip.MustParseAddr
	rw1, rw2 := a("192.0.2.2"), a("198.51.100.2") // road warrior's two uplinks
	gw := a("192.0.2.1")
	srv := a("203.0.113.2")
	gwA, gwB := a("198.51.100.1"), a("203.0.113.1")
	cases := []struct {
		rule               string
		r                  OuterRule
		innerSrc, innerDst netip.Addr
		wantSrc, wantDst   netip.Addr
	}{
		{"end hosts are the tunnel endpoints: \"the outer addresses MUST be the same as the inner addresses\"",
			HostToHost(), rw1, srv, rw1, srv},
		{"end hosts, other address of the set: outer still = inner",
			HostToHost(), rw2, srv, rw2, srv},
		{"security gateways: \"no special processing\" — their own configured addresses",
			GatewayToGateway(gwA, gwB), rw1, srv, gwA, gwB},
		{"road warrior: \"uses the security gateway's address as the tunnel destination\" and \"MUST use the same source address as that of the inner packet\"",
			RoadWarriorToGateway(gw), rw1, srv, rw1, gw},
		{"road warrior on its secondary uplink: the outer source follows the inner source",
			RoadWarriorToGateway(gw), rw2, srv, rw2, gw},
		{"gateway: \"uses its own address as the source address of the tunnel, and MUST use the same destination address in the outer header as that of the inner packet\"",
			GatewayToRoadWarrior(gw), srv, rw1, gw, rw1},
		{"gateway to the road warrior's secondary address",
			GatewayToRoadWarrior(gw), srv, rw2, gw, rw2},
		{"IPv6 road warrior",
			RoadWarriorToGateway(a("2001:db8:1::1")), a("2001:db8:1::2"), a("2001:db8:3::2"), a("2001:db8:1::2"), a("2001:db8:1::1")},
		{"dual-stack road warrior: the outer family follows the inner source, v6",
			RoadWarriorToGateway(gw, a("2001:db8:1::1")), a("2001:db8:2::2"), a("2001:db8:3::2"), a("2001:db8:2::2"), a("2001:db8:1::1")},
		{"dual-stack road warrior: v4",
			RoadWarriorToGateway(gw, a("2001:db8:1::1")), rw2, srv, rw2, gw},
		{"dual-stack gateway: own address of the inner destination's family",
			GatewayToRoadWarrior(gw, a("2001:db8:1::1")), a("2001:db8:3::2"), a("2001:db8:2::2"), a("2001:db8:1::1"), a("2001:db8:2::2")},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			src, dst, err := OuterAddrs(c.r, c.innerSrc, c.innerDst)
			if err != nil || src != c.wantSrc || dst != c.wantDst {
				t.Fatalf("got %v -> %v (%v), want %v -> %v", src, dst, err, c.wantSrc, c.wantDst)
			}
		})
	}
}

func TestOuterAddrsRefusesMixedFamilies(t *testing.T) {
	_, _, err := OuterAddrs(RoadWarriorToGateway(netip.MustParseAddr("192.0.2.1")),
		netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8:3::2"))
	if err == nil {
		t.Fatal("IPv6 inner source with an IPv4 gateway accepted")
	}
	if _, _, err := OuterAddrs(OuterRule{}, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")); err == nil {
		t.Fatal("rule without addresses accepted")
	}
}
