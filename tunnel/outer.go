package tunnel

import (
	"fmt"
	"net/netip"
)

// OuterRule says how a tunnel-mode SA picks the outer (tunnel header)
// addresses. This file is the one place RFC 3554 §2's three cases live,
// and where they meet RFC 3948's NAT-mapped endpoints (see addrs).
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
	// Dst are the configured outer destinations. With DstFromInner and
	// FollowPeer, the peer's IKE endpoint: where ESP goes before the peer
	// has sent any.
	Dst []netip.Addr
	// FollowPeer, when set, is what the peer has shown, by authenticated
	// ESP only, about where it receives (see PeerTracker). It is how a
	// gateway reaches a road warrior that moves, sits behind a NAT, or
	// claims inner addresses it does not receive ESP on. The rules that
	// use it are at addrs.
	FollowPeer *PeerTracker
	// NAT: IKE detected a NAT between the peers (RFC 7296 §2.23). An
	// inner address is then never an outer one: ESP in UDP (RFC 3948)
	// goes to the NAT-mapped endpoint, address and port.
	NAT bool
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
// from innerSrc to innerDst. Without a FollowPeer tracker it is pure: the
// same inputs always give the same outputs. The outer family must be one
// family; mixing is refused because ESP over raw IP cannot carry a v6
// header from a v4 source.
func OuterAddrs(r OuterRule, innerSrc, innerDst netip.Addr) (src, dst netip.Addr, err error) {
	src, dst, _, err = r.addrs(innerSrc, innerDst)
	return src, dst, err
}

// addrs also returns the UDP port to send to when the peer's endpoint was
// learned from authenticated ESP in UDP (0: the SA's PeerPort).
//
// With a FollowPeer tracker, RFC 3554 §2 and RFC 3948 meet here:
//
//  1. Proven and live: RFC 3554 §2's gateway rule ("MUST use the same
//     destination address in the outer header as that of the inner
//     packet") only towards an address the peer has sent authenticated
//     ESP from, so that it is known to receive ESP there (our own road
//     warrior's path-monitoring SA has outer = inner on every uplink), and
//     only while that address's path lives (PeerTracker.live: not silent
//     while another address of the peer kept talking). The port is the
//     one that address sent from. A path is also not live once the
//     monitored peer moved its own traffic off it (PeerTracker.left): its
//     detector hears both directions, our evidence only one, so a path
//     dead only from us to the peer still brings us the peer's probes.
//     Then ESP goes over the path the peer moved to (PeerTracker.chosen).
//  2. NAT detected: never the inner address. ESP in UDP goes to the
//     NAT-mapped endpoint the peer was last heard from, address and port
//     (RFC 3948 §2.1: the NAT chose them). A NAT rebinding is followed
//     the same way, on packets whose ICV verified only: a forged source
//     must not redirect the tunnel (RFC 3948 §6's concern).
//  3. Not proven (a peer that claims an address in its traffic selectors
//     but never sent from it, as a strongSwan road warrior with two
//     addresses in TSi, whose libipsec SA lives on its IKE address), or
//     that address's path is dead: the address the peer was heard from
//     most recently, with its port.
//  4. Nothing heard yet: the configured destination (the peer's IKE
//     endpoint), else the inner destination.
//
// The source, when not the inner source, is our address the chosen
// endpoint's packets arrived at, so the answer takes the path the peer
// uses.
func (r *OuterRule) addrs(innerSrc, innerDst netip.Addr) (src, dst netip.Addr, port uint16, err error) {
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
	if r.DstFromInner && (r.FollowPeer == nil || !dst.IsValid()) {
		dst = innerDst
	}
	if t := r.FollowPeer; t != nil {
		var e peerEndpoint
		ok := false
		if r.DstFromInner && !r.NAT {
			e, ok = t.live(innerDst) // rule 1
		}
		if !ok && r.DstFromInner && !r.NAT {
			e, ok = t.chosen(v4) // rule 1's exception: the path the peer moved to
		}
		if !ok {
			e, ok = t.reachable(v4) // rules 2 and 3
		}
		if ok && (e.peer.Addr().Is4() == v4 || !r.SrcFromInner && e.local.IsValid()) {
			dst, port = e.peer.Addr(), e.peer.Port()
			if !r.SrcFromInner && e.local.IsValid() && (e.local.Is4() == v4 || e.peer.Addr().Is4() != v4) {
				src = e.local
			}
		}
	}
	if !src.IsValid() || !dst.IsValid() {
		return netip.Addr{}, netip.Addr{}, 0, fmt.Errorf("outer address not set (src %v, dst %v)", src, dst)
	}
	if src.Is4() != dst.Is4() {
		return netip.Addr{}, netip.Addr{}, 0, fmt.Errorf("outer addresses of different families: %v -> %v", src, dst)
	}
	return src, dst, port, nil
}

func ofFamily(as []netip.Addr, v4 bool) netip.Addr {
	for _, a := range as {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}
