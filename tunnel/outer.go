package tunnel

import (
	"fmt"
	"net/netip"
	"sync/atomic"
)

// OuterRule says how a tunnel-mode SA picks the outer (tunnel header)
// addresses. This file is the one place RFC 3554 §2's three cases live.
//
// RFC 3554 §2 suggests that "if, during SA setup, the inner and outer
// address of either side is the same, rather than explicitly store the
// corresponding address of the tunnel, it sets a flag that marks the SA to
// use the same address in the tunnel header as in the inner header": that
// flag is SrcFromInner / DstFromInner.
//
// When a flag is set the inner packet decides the outer family, so an SA
// carrying IPv4 and IPv6 holds a configured address per family; the one
// of the inner packet's family is used.
type OuterRule struct {
	SrcFromInner bool         // outer source = inner source
	DstFromInner bool         // outer destination = inner destination
	Src          []netip.Addr // configured outer sources, when !SrcFromInner (at most one per family)
	Dst          []netip.Addr // configured outer destinations, when !DstFromInner
	// FollowPeer, when set, overrides Dst with the address the peer last
	// sent authenticated ESP from (of the same family), once there is one.
	// It is how a gateway follows a road warrior in virtual-address mode,
	// where the inner address says nothing about the path. Not an RFC 3554
	// case: mobility's.
	FollowPeer *PeerTracker
}

// PeerTracker holds the outer address a peer was last seen at, per
// family. Only an inbound SA writes it, after the ICV verified.
type PeerTracker struct{ v4, v6 atomic.Pointer[netip.Addr] }

func (p *PeerTracker) seen(a netip.Addr) {
	slot := &p.v6
	if a.Is4() {
		slot = &p.v4
	}
	// Compare first: the common case (no move) must not write a shared
	// cache line on every packet.
	if cur := slot.Load(); cur == nil || *cur != a {
		slot.Store(&a)
	}
}

// Addr returns the last address seen of one family (IPv4 if v4).
func (p *PeerTracker) Addr(v4 bool) netip.Addr {
	slot := &p.v6
	if v4 {
		slot = &p.v4
	}
	if a := slot.Load(); a != nil {
		return *a
	}
	return netip.Addr{}
}

// HostToHost: "where the end hosts are also the tunnel endpoints ... the
// outer addresses MUST be the same as the inner addresses of the tunnel."
func HostToHost() OuterRule { return OuterRule{SrcFromInner: true, DstFromInner: true} }

// GatewayToGateway: "(security gateways) there is no special processing;
// address selection proceeds as it would for two distinct sets of end
// hosts": the gateways' configured addresses.
func GatewayToGateway(local, peer netip.Addr) OuterRule {
	return OuterRule{Src: []netip.Addr{local}, Dst: []netip.Addr{peer}}
}

// RoadWarriorToGateway: "the `road warrior' uses the security gateway's
// address as the tunnel destination address, and MUST use the same source
// address as that of the inner packet."
func RoadWarriorToGateway(gateway ...netip.Addr) OuterRule {
	return OuterRule{SrcFromInner: true, Dst: gateway}
}

// GatewayToRoadWarrior: "the security gateway uses its own address as the
// source address of the tunnel, and MUST use the same destination address
// in the outer header as that of the inner packet."
func GatewayToRoadWarrior(own ...netip.Addr) OuterRule {
	return OuterRule{Src: own, DstFromInner: true}
}

// OuterAddrs returns the outer source and destination for an inner packet
// from innerSrc to innerDst. It is pure: the same inputs always give the
// same outputs. The outer family must be one family; mixing is refused
// because ESP over raw IP cannot carry a v6 header from a v4 source.
func OuterAddrs(r OuterRule, innerSrc, innerDst netip.Addr) (src, dst netip.Addr, err error) {
	return r.addrs(innerSrc, innerDst)
}

func (r *OuterRule) addrs(innerSrc, innerDst netip.Addr) (src, dst netip.Addr, err error) {
	// The family: the inner packet's when a flag ties outer to inner,
	// else the first configured source's (two gateways pick their own).
	v4 := innerSrc.Is4()
	if !r.SrcFromInner && !r.DstFromInner && len(r.Src) > 0 {
		v4 = r.Src[0].Is4()
	}
	src, dst = ofFamily(r.Src, v4), ofFamily(r.Dst, v4)
	if r.SrcFromInner {
		src = innerSrc
	}
	if r.DstFromInner {
		dst = innerDst
	}
	if r.FollowPeer != nil {
		if a := r.FollowPeer.Addr(v4); a.IsValid() {
			dst = a
		}
	}
	if !src.IsValid() || !dst.IsValid() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("outer address not set (src %v, dst %v)", src, dst)
	}
	if src.Is4() != dst.Is4() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("outer addresses of different families: %v -> %v", src, dst)
	}
	return src, dst, nil
}

func ofFamily(as []netip.Addr, v4 bool) netip.Addr {
	for _, a := range as {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}
