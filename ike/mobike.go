package ike

import (
	"bytes"
	"net/netip"
	"slices"
	"time"

	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// MOBIKE (RFC 4555) as the responder: the original initiator (a road
// warrior) decides where the SAs go (§3.1); we follow, after checking it
// can receive at its new address.

// mobikeRequest handles the MOBIKE part of an INFORMATIONAL request from
// remote: COOKIE2 (§4.2.5), the peer's address list (§3.6), and
// UPDATE_SA_ADDRESSES with its NAT detection (§3.5). It returns the
// payloads for our response and what to do once the response is sent
// (a return-routability check, §3.7), or nil.
func (s *ikeSA) mobikeRequest(ps []message.Payload, remote netip.AddrPort) ([]message.Payload, func()) {
	var out []message.Payload
	// §4.2.5: "the responder MUST copy the COOKIE2 notification ... to
	// the response"; strongSwan closes the IKE SA when it does not come
	// back ("COOKIE2 mismatch").
	for _, c := range filterNotify(ps, message.COOKIE2) {
		out = append(out, notify(message.COOKIE2, c.Data))
	}
	s.updatePeerAddrs(ps)
	if len(filterNotify(ps, message.UPDATE_SA_ADDRESSES)) == 0 {
		return out, nil
	}
	cfg := &s.e.cfg
	if s.initiator || !s.peerMOBIKE {
		// §3.1: only the original initiator moves the SAs, and only once
		// both sides said MOBIKE_SUPPORTED.
		cfg.Log.Warn("MOBIKE: UPDATE_SA_ADDRESSES ignored", "ike", s.name(), "from", remote,
			"why", map[bool]string{true: "we are the original initiator", false: "MOBIKE was not negotiated"}[s.initiator])
		return out, nil
	}
	// §3.5: "Update the IP addresses in the IKE_SA with the values from
	// the IP header" (this request passed the integrity check).
	from := s.remote
	s.remote = remote
	s.changed(ChangeMoved)
	natBefore := s.natHere || s.natThere
	s.natDetect(ps, remote)
	cfg.Log.Info("MOBIKE: peer moved", "ike", s.name(), "from", from, "to", remote, "nat", s.natHere || s.natThere,
		"proven", s.isProven(remote), "peer_addrs", s.peerAddrs)
	if s.out != nil && !s.out.to.IsValid() {
		// A request of ours in flight (a Child SA rekey, say) went to the
		// old address: send it again to the new one now rather than
		// after its retransmission timer.
		s.transmit(s.out)
	}
	if natBefore != (s.natHere || s.natThere) {
		s.reencapChildren()
	}
	if s.isProven(remote) {
		s.moveChildren(remote)
		return out, nil
	}
	return out, func() { s.checkReturnRoutability(remote) }
}

// updatePeerAddrs keeps the peer's address list (§3.6): a message with
// ADDITIONAL_IP4/6_ADDRESS replaces it, NO_ADDITIONAL_ADDRESSES clears
// it, a message with neither leaves it.
func (s *ikeSA) updatePeerAddrs(ps []message.Payload) {
	if len(filterNotify(ps, message.NO_ADDITIONAL_ADDRESSES)) > 0 {
		s.peerAddrs = nil
		return
	}
	if as := readAddrNotifies(ps); len(as) > 0 {
		s.peerAddrs = as
	}
}

// natDetect recomputes the NAT state from the NAT_DETECTION notifies of
// an UPDATE_SA_ADDRESSES request (§3.5, RFC 7296 §2.23: a NAT in front of
// the peer if no SOURCE_IP hash matches the address and port the request
// came from; in front of us if no DESTINATION_IP hash matches ours). A
// request without them leaves the state.
func (s *ikeSA) natDetect(ps []message.Payload, remote netip.AddrPort) {
	src := filterNotify(ps, message.NAT_DETECTION_SOURCE_IP)
	dst := filterNotify(ps, message.NAT_DETECTION_DESTINATION_IP)
	if len(src) == 0 || len(dst) == 0 {
		return
	}
	matches := func(ns []*message.Notify, ap netip.AddrPort) bool {
		h := natHash(s.spiI, s.spiR, ap)
		return slices.ContainsFunc(ns, func(n *message.Notify) bool { return bytes.Equal(n.Data, h) })
	}
	s.natThere = !matches(src, remote)
	s.natHere = !matches(dst, netip.AddrPortFrom(s.local, s.localPort()))
	if s.natHere || s.natThere {
		s.natT = true // IKE stays on 4500 (RFC 7296 §2.23)
	}
}

// isProven: the peer has shown it receives IKE at ap: the address the IKE
// SA was set up on, or one a return-routability check reached.
func (s *ikeSA) isProven(ap netip.AddrPort) bool { return slices.Contains(s.proven, ap) }

// checkReturnRoutability is §3.7's check: an INFORMATIONAL request with a
// fresh COOKIE2 sent to the new address; the ESP SAs move there only when
// the answer carries the same COOKIE2 (§3.5: "the responder MAY ...
// perform a return routability check ... before updating the IPsec SAs").
// No answer ends the IKE SA like any unanswered request (§3.11, RFC 7296
// §2.4): the peer claimed an address it does not receive at.
func (s *ikeSA) checkReturnRoutability(to netip.AddrPort) {
	cookie := randomBytes(16)
	s.e.cfg.Log.Info("MOBIKE: return-routability check", "ike", s.name(), "to", to)
	s.start(&request{exch: message.INFORMATIONAL, to: to,
		payloads: []message.Payload{notify(message.COOKIE2, cookie)},
		onReply: func(_ *message.Message, rps []message.Payload) {
			if !slices.ContainsFunc(filterNotify(rps, message.COOKIE2), func(n *message.Notify) bool { return bytes.Equal(n.Data, cookie) }) {
				s.e.cfg.Log.Warn("MOBIKE: return-routability check failed: COOKIE2 not echoed", "ike", s.name(), "to", to)
				return
			}
			s.proven = append(s.proven, to)
			if s.remote != to {
				return // it moved again meanwhile: that move decides
			}
			s.moveChildren(to)
		},
		onFail: s.failed})
}

// moveChildren points the ESP SAs at the peer's proven IKE endpoint. It
// is the one place the IKE side tells the Child SAs where the peer is:
// the outbound SAs' outer destination of that family (tunnel.OuterRule.Dst;
// a FollowPeer tracker, where there is one, still overrides it with where
// authenticated ESP comes from).
func (s *ikeSA) moveChildren(to netip.AddrPort) {
	s.espPeer = to
	for _, c := range s.children {
		s.aimChild(c)
	}
	s.e.cfg.Log.Info("MOBIKE: ESP SAs moved", "ike", s.name(), "to", to, "child_sas", len(s.children))
	s.afterLocked(poolGrace, s.refreshPools)
}

// poolGrace is how long after a move the peer has to replace Child SAs
// whose inbound address pool lacks its new address (strongSwan with
// kernel-libipsec rekeys them at once) before we rekey them ourselves.
var poolGrace = 2 * time.Second

// refreshPools rekeys the Child SAs whose inbound SA would drop ESP from
// the peer's current address: a tunnel SA's peer pool (RFC 3554 §2's
// seed 000 set, checked before the ICV) is fixed when it is made, and a
// peer that moves its SAs without rekeying them (RFC 4555 §3.5: the
// IPsec SAs' addresses are updated) sends from its new address on the old
// SAs. The new ones are built with its current address.
func (s *ikeSA) refreshPools() {
	if s.state != stEstablished || !s.espPeer.IsValid() {
		return
	}
	for _, c := range slices.Clone(s.children) {
		if !c.HostToHost && !c.rekeying && !c.replaced && !c.In.PeerAddrs.IsEmpty() && !c.In.PeerAddrs.Contains(s.espPeer.Addr()) {
			s.e.cfg.Log.Info("MOBIKE: rekeying a Child SA whose peer pool lacks the new address", "ike", s.name(), "child", c.Name, "addr", s.espPeer.Addr())
			s.rekeyChild(c)
		}
	}
}

// aimChild sets one Child SA's outbound destination to espPeer (a
// responder's; host-to-host SAs keep outer = inner).
func (s *ikeSA) aimChild(c *Child) {
	if s.initiator || c.HostToHost || !s.espPeer.IsValid() {
		return
	}
	// Dst is the fallback the outer rule uses until the peer's
	// authenticated ESP shows more (tunnel/outer.go); the NAT state of the
	// move decides whether an inner address may be an outer one.
	r := withDst(c.Out.Outer(), s.espPeer.Addr())
	r.NAT = s.natHere || s.natThere
	c.Out.SetOuter(r)
}

// withDst replaces r's destination of a's family with a.
func withDst(r tunnel.OuterRule, a netip.Addr) tunnel.OuterRule {
	dst := []netip.Addr{a}
	for _, d := range r.Dst {
		if d.Is4() != a.Is4() {
			dst = append(dst, d)
		}
	}
	r.Dst = dst
	return r
}

// reencapChildren: the NAT state changed (§3.5: a NAT appeared or went),
// so ESP moves onto UDP 4500 or off it (RFC 3948). A tunnel SA's
// encapsulation is fixed when it is made, so the Child SAs whose
// encapsulation no longer fits are rekeyed; the new ones are built with
// the new state.
func (s *ikeSA) reencapChildren() {
	want := s.e.cfg.UDPEncap || s.natHere || s.natThere
	for _, c := range slices.Clone(s.children) {
		if c.Out.UDPEncap != want {
			s.e.cfg.Log.Info("MOBIKE: NAT state changed, rekeying the Child SA onto the new encapsulation", "ike", s.name(), "child", c.Name, "udp_encap", want)
			s.rekeyChild(c)
		}
	}
}
