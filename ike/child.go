package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// Child is a Child SA pair as the data path sees it.
type Child struct {
	// Name is stable across rekeys: the data path swaps the SAs of the
	// policy with this name.
	Name string
	// Peer is the peer's identity.
	Peer     string
	In, Out  *tunnel.SA
	Selector tunnel.Selector
	// VirtualIP: on an initiator the addresses the gateway assigned us
	// (install them on the TUN device); on a responder the peer's.
	VirtualIP []netip.Addr
	DNS       []netip.Addr
	Created   time.Time
	Proposal  string
	// AAA (gateway) is what the AAA server authorized for the peer's IKE
	// SA line, nil without EAP; the same pointer for all its Child SAs.
	AAA *Authorization

	ike      *ikeSA
	localTS  []message.TrafficSelector
	remoteTS []message.TrafficSelector
	rekeying bool
	replaced bool
	ours     bool // created by an exchange we initiated
	// HostToHost: outer = inner (RFC 3554 §2 case 1).
	HostToHost bool
	nonceMin   []byte // the lowest nonce of the exchange that created it (§2.8.1)
	// importedTop: an imported inbound SA's replay edge at the import,
	// which RFC 6311's replay counter sync raises the floor past.
	importedTop uint64
	timer       *time.Timer
	rekeyAt     time.Duration // when timer fires, after Created (ExportSA)
	esp         espSuite      // what was negotiated (ExportSA)
}

// Sibling is, while Remove runs for c, another Child SA of the same name
// that stays: after a rekey collision (RFC 7296 §2.8.1) two new pairs
// share the name until the redundant one is deleted, and the data path
// must then carry on with the other. Nil if there is none. Only for use
// inside Config.Remove (it reads state guarded by the endpoint's lock).
func (c *Child) Sibling() *Child {
	if c.ike == nil {
		return nil
	}
	for i := len(c.ike.children) - 1; i >= 0; i-- {
		if x := c.ike.children[i]; x != c && x.Name == c.Name && !x.replaced {
			return x
		}
	}
	return nil
}

// childErr carries the notify a refused Child SA answers with.
type childErr struct {
	t   message.NotifyType
	msg string
}

func (e *childErr) Error() string { return fmt.Sprintf("%v: %s", e.t, e.msg) }

// invalidKEErr refuses a CREATE_CHILD_SA with INVALID_KE_PAYLOAD naming
// the group to use (RFC 7296 §1.3).
type invalidKEErr struct {
	group dhGroup
	msg   string
}

func (e *invalidKEErr) Error() string {
	return fmt.Sprintf("INVALID_KE_PAYLOAD (want %v): %s", e.group, e.msg)
}

func childError(err error) message.Payload {
	var ke *invalidKEErr
	if errors.As(err, &ke) {
		return notify(message.INVALID_KE_PAYLOAD, binary.BigEndian.AppendUint16(nil, uint16(ke.group)))
	}
	var ce *childErr
	if errors.As(err, &ce) {
		return notify(ce.t, nil)
	}
	return notify(message.NO_PROPOSAL_CHOSEN, nil)
}

// childOffer is an initiator's Child SA request in flight.
type childOffer struct {
	spi        uint32
	hostToHost bool
	ni         []byte
	dh         *dhKey
	rekeys     *Child
	// readdresses: the path-monitoring Child SA this one replaces after
	// our addresses changed (Readdress); deleted once this one is in.
	readdresses *Child
	// The offered TSi (our side) and TSr.
	ltsi, ltsr []message.TrafficSelector
}

func (c *childOffer) tsi() *message.TS { return &message.TS{Selectors: c.ltsi} }
func (c *childOffer) tsr() *message.TS { return &message.TS{Responder: true, Selectors: c.ltsr} }

// allocSPI picks a free inbound ESP SPI (RFC 4303 §2.1: 1-255 are
// reserved).
func (e *Endpoint) allocSPI() uint32 {
	for {
		spi := binary.BigEndian.Uint32(randomBytes(4))
		if spi < 256 || e.spiTaken(spi) {
			continue
		}
		return spi
	}
}

// spiTaken reports whether an installed Child SA has spi inbound: a map
// lookup, not a walk over every IKE SA (a gateway with 10,000 road
// warriors spent a quarter of each handshake there).
func (e *Endpoint) spiTaken(spi uint32) bool {
	_, ok := e.spisIn[spi]
	return ok
}

func hostTS(addrs []netip.Addr) []message.TrafficSelector {
	var out []message.TrafficSelector
	for _, a := range addrs {
		if a.IsValid() && !a.IsUnspecified() {
			out = append(out, message.TrafficSelector{Start: a, End: a, EndPort: 65535})
		}
	}
	return out
}

func (s *ikeSA) peerOuterAddrs() []netip.Addr {
	out := []netip.Addr{s.remote.Addr()}
	for _, a := range s.peerAddrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func (s *ikeSA) ourOuterAddrs() []netip.Addr {
	out := []netip.Addr{s.local}
	for _, a := range s.e.cfg.LocalAddrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// newChildOffer is what an initiator asks for: RFC 3554 mode offers its
// own addresses and pools (§3: the address set), virtual-address mode the
// whole range for the gateway to narrow to the assigned address (§2.9).
func (s *ikeSA) newChildOffer(hostToHost bool) *childOffer {
	cfg := &s.e.cfg
	c := &childOffer{spi: s.e.allocSPI(), hostToHost: hostToHost}
	switch {
	case hostToHost:
		c.ltsi, c.ltsr = hostTS(s.ourOuterAddrs()), hostTS(s.peerOuterAddrs())
	case cfg.Mode == ModeVirtual:
		v6 := slices.ContainsFunc(cfg.RemoteTS, func(p netip.Prefix) bool { return p.Addr().Is6() })
		ps := []netip.Prefix{allOf(true)}
		if v6 {
			ps = append(ps, allOf(false))
		}
		c.ltsi, c.ltsr = toTS(ps, 0, tunnel.AnyPort), toTS(cfg.RemoteTS, 0, tunnel.AnyPort)
	default:
		c.ltsi, c.ltsr = toTS(cfg.LocalTS, 0, tunnel.AnyPort), toTS(cfg.RemoteTS, 0, tunnel.AnyPort)
	}
	return c
}

func (s *ikeSA) offerSA(c *childOffer) *message.SA {
	var g dhGroup
	if c.dh != nil {
		g = c.dh.group
	}
	return espSAPayload(s.espProposals(), c.spi, g)
}

// outerRule is where RFC 3554 §2's three cases meet the negotiated Child
// SA: host-to-host SAs use outer = inner; a road warrior sends from the
// inner source (RFC 3554 mode) or its current uplink (virtual mode) to the
// gateway. A gateway follows what the road warrior has proven by
// authenticated ESP (tunnel.OuterRule.addrs has the rules): in RFC 3554
// mode the inner destination only where the peer receives and while that
// path lives, never through a NAT, else the NAT-mapped or freshest
// endpoint; in virtual mode the freshest endpoint. Until the peer has sent
// ESP, its IKE endpoint.
func (s *ikeSA) outerRule(hostToHost, virtual bool, tracker *tunnel.PeerTracker) tunnel.OuterRule {
	switch {
	case hostToHost:
		return tunnel.HostToHost()
	case s.initiator && !virtual:
		return tunnel.RoadWarriorToGateway(onePerFamily(s.peerOuterAddrs())...)
	case s.initiator:
		return tunnel.GatewayToGateway(s.local, s.remote.Addr())
	case !virtual:
		r := tunnel.GatewayToRoadWarrior(onePerFamily(s.ourOuterAddrs())...)
		r.Dst = []netip.Addr{s.remote.Addr()}
		r.FollowPeer, r.NAT = tracker, s.natHere || s.natThere
		return r
	}
	r := tunnel.GatewayToGateway(s.local, s.remote.Addr())
	r.FollowPeer, r.NAT = tracker, s.natHere || s.natThere
	return r
}

func onePerFamily(as []netip.Addr) []netip.Addr {
	var out []netip.Addr
	var v4, v6 bool
	for _, a := range as {
		if a.Is4() && !v4 || a.Is6() && !v6 {
			out = append(out, a)
			v4, v6 = v4 || a.Is4(), v6 || a.Is6()
		}
	}
	return out
}

// buildChild creates the two tunnel SAs of a negotiated Child SA.
func (s *ikeSA) buildChild(esp espSuite, spiIn, spiOut uint32, i2r, r2i []byte, weInitiated bool,
	localTS, remoteTS []message.TrafficSelector, hostToHost bool, vip []netip.Addr) (*Child, error) {
	cfg := &s.e.cfg
	defer clear(i2r)
	defer clear(r2i)
	inKey, outKey := i2r, r2i
	if weInitiated {
		inKey, outKey = r2i, i2r
	}
	sel, err := selectorOf(localTS, remoteTS)
	if err != nil {
		return nil, err
	}
	// The peer's outer pool (seed 000): its IKE address and announced
	// addresses, and on a gateway in RFC 3554 mode every address the
	// road warrior has authority for, so it may move inside them.
	var pool []netip.Prefix
	for _, a := range s.peerOuterAddrs() {
		pool = append(pool, netip.PrefixFrom(a, a.BitLen()))
	}
	virtual := len(vip) > 0
	if !s.initiator && !virtual {
		pool = append(pool, s.authority...)
	}
	if hostToHost {
		// Outer = inner (RFC 3554 §2, end hosts): the peer's addresses its
		// selectors name, also when its IKE address and announced ones no
		// longer list them all (after a move, or our own readdress).
		pool = append(pool, tsPrefixes(remoteTS)...)
	}
	if s.natThere {
		// Behind a NAT the outer source is the NAT's, which the peer
		// neither knows nor controls, and a NAT rebinding moves it
		// anywhere (RFC 3948 §2.1): no pool; the ICV is the check.
		pool = nil
	}
	peerSet, err := tunnel.NewAddrSet(pool...)
	if err != nil {
		return nil, err
	}
	// A gateway learns where the road warrior receives from every Child
	// SA of the IKE SA, the path-monitoring one included (its packets,
	// outer = inner, say which paths live), across Child SA rekeys.
	var tracker *tunnel.PeerTracker
	if !s.initiator {
		if s.peerTrack == nil {
			s.peerTrack = new(tunnel.PeerTracker)
		}
		tracker = s.peerTrack
	}
	peerPort := uint16(4500)
	if s.natT {
		peerPort = s.remote.Port()
	}
	base := tunnel.SAConfig{
		Transform:    esp.transform(),
		ESN:          esp.esn,
		ReplayWindow: cfg.ReplayWindow,
		PeerAddrs:    peerSet,
		Selector:     sel,
		UDPEncap:     cfg.UDPEncap || s.natHere || s.natThere,
		PeerPort:     peerPort,
		OnLifetime:   cfg.OnLifetime,
	}
	in, out := base, base
	in.Dir, in.SPI, in.Key, in.Peer, in.PeerMonitor = tunnel.Inbound, spiIn, inKey, tracker, hostToHost
	out.Dir, out.SPI, out.Key, out.Outer = tunnel.Outbound, spiOut, outKey, s.outerRule(hostToHost, virtual, tracker)
	c := &Child{Peer: s.peerID.String(), Selector: sel, VirtualIP: vip, DNS: s.dns, HostToHost: hostToHost,
		Created: time.Now(), Proposal: esp.String(), ike: s, localTS: localTS, remoteTS: remoteTS, ours: weInitiated, AAA: s.aaa, esp: esp}
	if c.In, err = tunnel.NewSA(in); err != nil {
		return nil, err
	}
	if c.Out, err = tunnel.NewSA(out); err != nil {
		c.In.Close()
		return nil, err
	}
	return c, nil
}

// install hands a new Child SA to the data path and arms its rekey.
func (s *ikeSA) install(c *Child, rekeyOf *Child) error {
	cfg := &s.e.cfg
	switch {
	case rekeyOf != nil:
		c.Name = rekeyOf.Name
	case c.HostToHost:
		c.Name = fmt.Sprintf("%s/hosts", s.name())
	default:
		c.Name = fmt.Sprintf("%s/net", s.name())
	}
	s.aimChild(c) // a Child SA made while a MOBIKE move awaits its check goes to the proven address
	var d time.Duration
	if cfg.ChildLifetime > 0 {
		d = jitter(cfg.ChildLifetime)
	}
	return s.put(c, rekeyOf != nil, d)
}

// put hands a named Child SA to the data path and arms its rekey after
// rekeyIn (0: none); install and ImportSA share it.
func (s *ikeSA) put(c *Child, rekey bool, rekeyIn time.Duration) error {
	cfg := &s.e.cfg
	if err := cfg.Install(c); err != nil {
		c.In.Close()
		c.Out.Close()
		return err
	}
	s.children = append(s.children, c)
	s.e.spisIn[c.In.SPI] = struct{}{}
	if rekeyIn > 0 {
		c.rekeyAt = time.Since(c.Created) + rekeyIn
		c.timer = s.afterLocked(rekeyIn, func() { s.rekeyChild(c) })
	}
	verb := "Child SA installed"
	if rekey {
		verb = "Child SA rekeyed"
	}
	cfg.Log.Info(verb, "ike", s.name(), "child", c.Name, "spi_in", fmt.Sprintf("%#08x", c.In.SPI), "spi_out", fmt.Sprintf("%#08x", c.Out.SPI),
		"proposal", c.Proposal, "local_ts", tsString(c.localTS), "remote_ts", tsString(c.remoteTS), "encap", c.Out.UDPEncap, "vip", c.VirtualIP)
	s.emit(Progress{Kind: EvChildInstalled, Child: &ChildEvent{Name: c.Name, SPIIn: c.In.SPI, SPIOut: c.Out.SPI,
		LocalTS: tsString(c.localTS), RemoteTS: tsString(c.remoteTS), HostToHost: c.HostToHost, Rekey: rekey}})
	s.changed(ChangeChild)
	return nil
}

// removeChild takes a Child SA out of the data path and zeroes its keys.
func (s *ikeSA) removeChild(c *Child) {
	if c.timer != nil {
		c.timer.Stop()
	}
	s.children = slices.DeleteFunc(s.children, func(x *Child) bool { return x == c })
	delete(s.e.spisIn, c.In.SPI)
	s.e.cfg.Remove(c)
	c.In.Close()
	c.Out.Close()
	s.changed(ChangeChild)
}

// acceptChild is the responder's Child SA negotiation (IKE_AUTH or
// CREATE_CHILD_SA): proposal, PFS, traffic selectors narrowed (§2.9) and
// authorized (RFC 3554 §4), configuration payload. It returns the
// response payloads that describe the Child SA.
func (s *ikeSA) acceptChild(ps []message.Payload, ni, nr []byte, ke *message.KE, pre *dhDone, rekeyOf *Child, inAuth bool) ([]message.Payload, error) {
	cfg := &s.e.cfg
	sa := message.Find[*message.SA](ps)
	var tsi, tsr *message.TS
	for _, t := range message.FindAll[*message.TS](ps) {
		if t.Responder {
			tsr = t
		} else {
			tsi = t
		}
	}
	if sa == nil || tsi == nil || tsr == nil {
		return nil, &childErr{message.INVALID_SYNTAX, "no SA, TSi or TSr"}
	}
	if len(filterNotify(ps, message.USE_TRANSPORT_MODE)) > 0 {
		return nil, &childErr{message.NO_PROPOSAL_CHOSEN, "transport mode asked for; tunnel mode only"}
	}
	esp, chosen, err := s.chooseChildProposal(sa, ke, inAuth)
	if err != nil {
		return nil, err
	}
	dh := esp.dh
	var out []message.Payload
	var vip []netip.Addr
	var tsiN, tsrN []message.TrafficSelector
	cp := message.Find[*message.CP](ps)
	hostToHost := false
	switch {
	case rekeyOf != nil:
		// A rekey keeps what the old Child SA covered (§2.8); TSi is the
		// side of whoever started this exchange.
		vip, hostToHost = rekeyOf.VirtualIP, rekeyOf.HostToHost
		tsiN = narrow(tsi.Selectors, tsPrefixes(rekeyOf.remoteTS))
		tsrN = narrow(tsr.Selectors, tsPrefixes(rekeyOf.localTS))
	case s.initiator:
		// The gateway (re)creates a Child SA, e.g. after one expired: we
		// take it inside what we asked for ourselves.
		remote := append(slices.Clone(cfg.RemoteTS), prefixesOf(s.peerOuterAddrs())...)
		local := append(slices.Clone(cfg.LocalTS), prefixesOf(s.ourOuterAddrs())...)
		if cfg.Mode == ModeVirtual {
			vip, local = s.vip, prefixesOf(s.vip)
		}
		tsiN, tsrN = narrow(tsi.Selectors, remote), narrow(tsr.Selectors, local)
		hostToHost = len(vip) == 0 && sameHosts(tsiN, s.peerOuterAddrs()) && sameHosts(tsrN, s.ourOuterAddrs())
	case inAuth && cp != nil && cp.CfgType == 1:
		reply := &message.CP{CfgType: 2}
		for _, want := range cp.Attrs {
			var pool netip.Prefix
			switch want.Type {
			case message.INTERNAL_IP4_ADDRESS:
				pool = s.peer.VirtualPool
				if s.aaa != nil && s.aaa.VirtualIP4.IsValid() {
					// RADIUS Framed-IP-Address: the AAA server's choice,
					// leased to its user (whatever IKE identity it comes
					// with), so the pool never hands it to another.
					a, owner := s.aaa.VirtualIP4, "user "+s.aaa.User
					if who, taken := s.e.leased[a]; taken && who != owner {
						return nil, &childErr{message.INTERNAL_ADDRESS_FAILURE, fmt.Sprintf("Framed-IP-Address %v is leased to %s", a, who)}
					}
					s.e.leased[a] = owner
					reply.Attrs = append(reply.Attrs, message.CPAttr{Type: want.Type, Value: a.AsSlice()})
					vip = append(vip, a)
					continue
				}
			case message.INTERNAL_IP6_ADDRESS:
				pool = s.peer.VirtualPool6
			case message.INTERNAL_IP4_DNS, message.INTERNAL_IP6_DNS:
				for _, d := range s.peer.DNS {
					if d.Is4() == (want.Type == message.INTERNAL_IP4_DNS) {
						reply.Attrs = append(reply.Attrs, message.CPAttr{Type: want.Type, Value: d.AsSlice()})
					}
				}
				continue
			default:
				continue
			}
			if !pool.IsValid() {
				continue
			}
			a, err := s.e.lease(s.peerID.String(), pool, askedFor(want))
			if err != nil {
				return nil, &childErr{message.INTERNAL_ADDRESS_FAILURE, err.Error()}
			}
			v := a.AsSlice()
			if a.Is6() {
				v = append(v, 128)
			}
			reply.Attrs = append(reply.Attrs, message.CPAttr{Type: want.Type, Value: v})
			vip = append(vip, a)
		}
		if len(vip) == 0 {
			return nil, &childErr{message.INTERNAL_ADDRESS_FAILURE, fmt.Sprintf("no virtual address pool for %v", s.peerID)}
		}
		tsiN = narrow(tsi.Selectors, prefixesOf(vip))
		s.vip = vip // the peer's: it is in virtual-address mode
		out = append(out, reply)
	default:
		// RFC 3554 §4: every claimed address must be the peer's.
		tsiN = uniform(tsi.Selectors)
		if u := unauthorized(tsiN, s.hostAuthority(tsiN, tsr.Selectors)); u != nil {
			return nil, &childErr{message.TS_UNACCEPTABLE, fmt.Sprintf("%v claims %s, which it has no authority for (RFC 3554 §4)", s.peerID, tsString([]message.TrafficSelector{*u}))}
		}
	}
	if rekeyOf == nil && !s.initiator {
		allowed := append(slices.Clone(cfg.LocalTS), prefixesOf(s.ourOuterAddrs())...)
		tsrN = narrow(tsr.Selectors, allowed)
		hostToHost = len(vip) == 0 && sameHosts(tsiN, s.peerOuterAddrs()) && sameHosts(tsrN, s.ourOuterAddrs())
	}
	if len(tsiN) == 0 || len(tsrN) == 0 {
		return nil, &childErr{message.TS_UNACCEPTABLE, fmt.Sprintf("nothing left of TSi %s / TSr %s after narrowing", tsString(tsi.Selectors), tsString(tsr.Selectors))}
	}
	var shared []byte
	if ke != nil {
		k := pre.take(dh)
		if k == nil { // not done before (or for another group): now
			var err error
			if k, err = newDH(dh); err != nil {
				return nil, &childErr{message.NO_PROPOSAL_CHOSEN, err.Error()}
			}
			if shared, err = k.shared(ke.Data); err != nil {
				return nil, &childErr{message.INVALID_SYNTAX, err.Error()}
			}
		} else {
			shared = pre.shared
		}
		defer clear(shared)
		out = append(out, &message.KE{Group: uint16(dh), Data: k.public()})
	}
	spiIn := s.e.allocSPI()
	spiOut := binary.BigEndian.Uint32(chosen.SPI)
	i2r, r2i := childKeys(s.prop.prf, esp.encr, s.keys.d, shared, ni, nr)
	c, err := s.buildChild(esp, spiIn, spiOut, i2r, r2i, false, tsrN, tsiN, hostToHost, vip)
	if err != nil {
		return nil, &childErr{message.NO_PROPOSAL_CHOSEN, err.Error()}
	}
	c.nonceMin = minNonce(ni, nr)
	if err := s.install(c, rekeyOf); err != nil {
		return nil, &childErr{message.TEMPORARY_FAILURE, err.Error()}
	}
	chosen.SPI = binary.BigEndian.AppendUint32(nil, spiIn)
	out = append(out, &message.SA{Proposals: []message.Proposal{chosen}},
		&message.TS{Selectors: tsiN}, &message.TS{Responder: true, Selectors: tsrN})
	return out, nil
}

// hostAuthority is what a peer may claim in a CREATE_CHILD_SA: its
// authority (RFC 3554 §4), and, for the path-monitoring Child SA of a
// virtual-address peer (it was given an inner address, so its uplink
// addresses are in no pool of ours), the outer addresses it runs this IKE
// SA on: the one IKE comes from and those it announced in the
// authenticated IKE_AUTH (RFC 4555 §3.6). Only when TSi is exactly such
// hosts and TSr exactly ours, so the SA covers nothing but traffic
// between the two hosts' own outer addresses.
func (s *ikeSA) hostAuthority(tsi, tsr []message.TrafficSelector) []netip.Prefix {
	if len(s.vip) == 0 || !sameHosts(tsi, s.peerOuterAddrs()) || !sameHosts(uniform(tsr), s.ourOuterAddrs()) {
		return s.authority
	}
	return append(slices.Clone(s.authority), prefixesOf(s.peerOuterAddrs())...)
}

// chooseChildProposal is the responder's Child SA proposal choice. In
// CREATE_CHILD_SA, INVALID_KE_PAYLOAD only ever names a group the peer
// offered in this SA payload (RFC 7296 §1.3: "the responder ... selected
// ... a different group"); a proposal we can only take with a group it
// does not offer, or one we do not implement (e.g. MODP-2048 when the
// Child SA was created without PFS), gets NO_PROPOSAL_CHOSEN.
func (s *ikeSA) chooseChildProposal(sa *message.SA, ke *message.KE, inAuthExch bool) (espSuite, message.Proposal, error) {
	how, want := inAuth, dhGroup(0)
	if !inAuthExch {
		how = inCreate
		if ke != nil {
			want = dhGroup(ke.Group)
		}
	}
	allowed := s.espProposals()
	esp, chosen, ok := chooseESP(allowed, sa, want, how)
	if !ok {
		return esp, chosen, &childErr{message.NO_PROPOSAL_CHOSEN,
			fmt.Sprintf("no ESP proposal in common (KE group %v): offered %s, allowed %s", want, offerString(sa), proposalsString(allowed))}
	}
	if esp.dh != want {
		return esp, chosen, &invalidKEErr{esp.dh,
			fmt.Sprintf("KE group %v, but the proposal we take (%s) wants %v", want, esp, esp.dh)}
	}
	return esp, chosen, nil
}

func prefixesOf(as []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range as {
		if a.IsValid() && !a.IsUnspecified() {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

func minNonce(a, b []byte) []byte {
	if bytes.Compare(a, b) < 0 {
		return a
	}
	return b
}

// childResponse is the initiator's handling of the Child SA part of an
// IKE_AUTH or CREATE_CHILD_SA response.
func (s *ikeSA) childResponse(ps []message.Payload, c *childOffer, nr []byte) error {
	cfg := &s.e.cfg
	for _, n := range message.FindAll[*message.Notify](ps) {
		if n.NotifyType < 16384 {
			return &NotifyError{Type: n.NotifyType} // a Child SA refused
		}
	}
	ni := c.ni
	if nr == nil { // IKE_AUTH: the IKE_SA_INIT nonces (§2.17)
		ni, nr = s.ni, s.nr
	}
	var dh dhGroup
	var shared []byte
	if ke := message.Find[*message.KE](ps); c.dh != nil && ke != nil {
		if dhGroup(ke.Group) != c.dh.group {
			return errors.New("CREATE_CHILD_SA response with a KE of another group than ours")
		}
		var err error
		if shared, err = c.dh.shared(ke.Data); err != nil {
			return err
		}
		defer clear(shared)
		dh = c.dh.group
	}
	how := inCreate
	if c.ni == nil {
		how = inAuth
	}
	esp, spiOut, err := acceptESP(s.espProposals(), message.Find[*message.SA](ps), dh, how)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoProposal, err)
	}
	var tsi, tsr []message.TrafficSelector
	for _, t := range message.FindAll[*message.TS](ps) {
		if t.Responder {
			tsr = t.Selectors
		} else {
			tsi = t.Selectors
		}
	}
	// The responder may only narrow (§2.9).
	if len(tsi) == 0 || len(tsr) == 0 || unauthorized(tsi, tsPrefixes(c.ltsi)) != nil || unauthorized(tsr, tsPrefixes(c.ltsr)) != nil {
		return fmt.Errorf("gateway answered traffic selectors %s / %s outside what we offered", tsString(tsi), tsString(tsr))
	}
	tsi, tsr = uniform(tsi), uniform(tsr)
	var vip []netip.Addr
	switch {
	case c.rekeys != nil:
		vip = c.rekeys.VirtualIP // a rekey keeps the virtual address (and so the outer rule)
	case !c.hostToHost && cfg.Mode == ModeVirtual:
		vip = s.vip
	}
	i2r, r2i := childKeys(s.prop.prf, esp.encr, s.keys.d, shared, ni, nr)
	child, err := s.buildChild(esp, c.spi, spiOut, i2r, r2i, true, tsi, tsr, c.hostToHost, vip)
	if err != nil {
		return err
	}
	child.nonceMin = minNonce(ni, nr)
	return s.install(child, c.rekeys)
}

func tsPrefixes(ts []message.TrafficSelector) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range ts {
		out = append(out, rangePrefixes(tsRange(t))...)
	}
	return out
}

// createChild sends CREATE_CHILD_SA for a new or rekeyed Child SA.
func (s *ikeSA) createChild(c *childOffer) {
	cfg := &s.e.cfg
	c.ni = randomBytes(minNonceLen)
	if cfg.PFS {
		g := s.prop.dh
		if ds := s.espProposals()[0].dh; len(ds) > 0 {
			g = ds[0]
		}
		c.dh, _ = newDH(g)
	}
	var ps []message.Payload
	if c.rekeys != nil {
		ps = append(ps, &message.Notify{Protocol: message.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, c.rekeys.In.SPI), NotifyType: message.REKEY_SA})
	}
	ps = append(ps, s.offerSA(c), &message.Nonce{Data: c.ni})
	if c.dh != nil {
		ps = append(ps, &message.KE{Group: uint16(c.dh.group), Data: c.dh.public()})
	}
	ps = append(ps, c.tsi(), c.tsr())
	s.start(&request{exch: message.CREATE_CHILD_SA, payloads: ps,
		onReply: func(m *message.Message, rps []message.Payload) {
			nr := message.Find[*message.Nonce](rps)
			if c.rekeys != nil {
				c.rekeys.rekeying = false
			}
			if nr == nil {
				err := s.childResponse(rps, c, nil) // reports the refusal
				if err == nil {
					err = errors.New("no nonce")
				}
				s.childFailed(c, err)
				return
			}
			if old := c.rekeys; old != nil && old.replaced && message.Find[*message.SA](rps) != nil {
				// A collision (§2.8.1): the peer rekeyed it too. The SA
				// made with the lowest of the four nonces is redundant,
				// and whoever made it deletes it. Ours, if redundant,
				// never reaches the data path, where it would take the
				// name's policy from the one that stays.
				if theirs := s.rekeyedByPeer(old); theirs != nil && bytes.Compare(minNonce(c.ni, nr.Data), theirs.nonceMin) < 0 {
					s.sendDelete(c.spi, old.Name, "rekey collision: redundant")
					return
				}
			}
			if err := s.childResponse(rps, c, nr.Data); err != nil {
				s.childFailed(c, err)
				return
			}
			if old := c.rekeys; old != nil {
				old.replaced = true
				s.deleteChild(old, "rekeyed")
			}
			if old := c.readdresses; old != nil && slices.Contains(s.children, old) {
				old.replaced = true
				s.deleteChild(old, "our addresses changed")
			}
		},
		onFail: s.failed})
}

func (s *ikeSA) rekeyedByPeer(old *Child) *Child {
	for _, c := range s.children {
		if c != old && c.Name == old.Name && !c.ours {
			return c
		}
	}
	return nil
}

func (s *ikeSA) childFailed(c *childOffer, err error) {
	s.e.cfg.Log.Warn("CREATE_CHILD_SA failed", "ike", s.name(), "err", err)
	if c.rekeys == nil {
		s.emit(Progress{Kind: EvChildFailed, Err: err})
	}
}

// rekeyChild replaces a Child SA with a new one (§2.8); the old one is
// deleted once the new one is in.
func (s *ikeSA) rekeyChild(c *Child) {
	if c.rekeying || c.replaced || s.state != stEstablished || !slices.Contains(s.children, c) {
		return
	}
	c.rekeying = true
	o := &childOffer{spi: s.e.allocSPI(), hostToHost: c.HostToHost, rekeys: c}
	o.ltsi, o.ltsr = c.localTS, c.remoteTS
	if !s.initiator {
		o.ltsi, o.ltsr = c.localTS, c.remoteTS // TSi is always the exchange initiator's side
	}
	s.createChild(o)
}

// deleteChild deletes a Child SA with INFORMATIONAL (§1.4.1); it stops
// being used at once.
func (s *ikeSA) deleteChild(c *Child, why string) {
	spi := c.In.SPI
	s.removeChild(c)
	s.sendDelete(spi, c.Name, why)
}

// sendDelete sends the INFORMATIONAL DELETE of the Child SA whose inbound
// SPI is spi.
func (s *ikeSA) sendDelete(spi uint32, name, why string) {
	s.e.cfg.Log.Info("Child SA deleted", "ike", s.name(), "child", name, "spi_in", fmt.Sprintf("%#08x", spi), "why", why)
	s.start(&request{exch: message.INFORMATIONAL,
		payloads: []message.Payload{&message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, spi)}}},
		onReply:  func(*message.Message, []message.Payload) {},
		onFail:   s.failed})
}

// respondCreateChild answers CREATE_CHILD_SA: a new or rekeyed Child SA,
// or an IKE SA rekey (§1.3).
func (s *ikeSA) respondCreateChild(msgID uint32, ps []message.Payload) {
	cfg := &s.e.cfg
	reply := func(out ...message.Payload) { s.respond(message.CREATE_CHILD_SA, msgID, out) }
	sa := message.Find[*message.SA](ps)
	ni := message.Find[*message.Nonce](ps)
	ke := message.Find[*message.KE](ps)
	if s.state == stEstablished && (sa == nil || ni == nil || len(sa.Proposals) == 0) {
		reply(notify(message.INVALID_SYNTAX, nil))
		return
	}
	var pre *dhDone
	if s.state == stEstablished && ke != nil {
		pre = s.dhUnlocked(ke) // e.mu released meanwhile
		defer pre.wipe()
		if s.state == stDead || s.e.closed {
			return // ended meanwhile
		}
	}
	if s.state != stEstablished {
		reply(notify(message.TEMPORARY_FAILURE, nil))
		return
	}
	if sa.Proposals[0].Protocol == message.ProtoIKE {
		s.respondRekeyIKE(msgID, sa, ni, ke, pre)
		return
	}
	var old *Child
	for _, n := range filterNotify(ps, message.REKEY_SA) {
		if len(n.SPI) == 4 {
			spi := binary.BigEndian.Uint32(n.SPI)
			for _, c := range s.children {
				if c.Out.SPI == spi {
					old = c
				}
			}
			if old == nil {
				reply(&message.Notify{Protocol: message.ProtoESP, SPI: n.SPI, NotifyType: message.CHILD_SA_NOT_FOUND})
				return
			}
		}
	}
	nr := randomBytes(minNonceLen)
	out, err := s.acceptChild(ps, ni.Data, nr, ke, pre, old, false)
	if err != nil {
		cfg.Log.Warn("CREATE_CHILD_SA refused", "ike", s.name(), "err", err)
		reply(childError(err))
		return
	}
	if old != nil {
		old.replaced = true // the peer deletes it (§2.8)
	}
	// Nonce after SA (§1.3.1 order: SA, Nonce, [KE], TSi, TSr).
	var sorted []message.Payload
	for _, p := range out {
		if _, ok := p.(*message.SA); ok {
			sorted = append(sorted, p, &message.Nonce{Data: nr})
			continue
		}
		sorted = append(sorted, p)
	}
	reply(sorted...)
}

// rekeyIKE replaces the IKE SA (§2.18): the children move to the new one
// and the old one is deleted.
func (s *ikeSA) rekeyIKE() {
	cfg := &s.e.cfg
	if s.state != stEstablished || s.replacedBy != nil {
		return
	}
	dh, err := newDH(s.prop.dh)
	if err != nil {
		return
	}
	n := s.e.newSA(true, s.local, s.remote, s.natT)
	delete(s.e.sas, n.spiI) // registered once the exchange completes
	ni := randomBytes(minNonceLen)
	spi := binary.BigEndian.AppendUint64(nil, n.spiI)
	ps := []message.Payload{ikeSAPayload(cfg.IKEProposals, spi), &message.Nonce{Data: ni}, &message.KE{Group: uint16(dh.group), Data: dh.public()}}
	s.start(&request{exch: message.CREATE_CHILD_SA, payloads: ps,
		onReply: func(m *message.Message, rps []message.Payload) {
			sa := message.Find[*message.SA](rps)
			nr := message.Find[*message.Nonce](rps)
			ke := message.Find[*message.KE](rps)
			prop, err := acceptIKE(cfg.IKEProposals, sa)
			if err != nil || nr == nil || ke == nil || len(sa.Proposals[0].SPI) != 8 {
				cfg.Log.Warn("IKE SA rekey failed", "ike", s.name(), "err", err, "notify", firstError(rps))
				s.armIKERekeyRetry()
				return
			}
			shared, err := dh.shared(ke.Data)
			if err != nil {
				s.armIKERekeyRetry()
				return
			}
			n.spiR = binary.BigEndian.Uint64(sa.Proposals[0].SPI)
			s.e.sas[n.spiI] = n
			s.handOver(n, prop, shared, ni, nr.Data)
			clear(shared)
			s.deleteIKE(DownRekeyed)
		},
		onFail: s.failed})
}

func (s *ikeSA) armIKERekeyRetry() {
	s.armIKERekey(10 * time.Second)
}

func firstError(ps []message.Payload) string {
	for _, n := range message.FindAll[*message.Notify](ps) {
		if n.NotifyType < 16384 {
			return n.NotifyType.String()
		}
	}
	return ""
}

// handOver moves everything from s to its replacement n, keyed from the
// rekey exchange: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
func (s *ikeSA) handOver(n *ikeSA, prop ikeSuite, shared, ni, nr []byte) {
	n.prop, n.ni, n.nr = prop, ni, nr
	n.keys = deriveIKE(prop.prf, prop.encr, s.prop.prf, s.keys.d, shared, ni, nr, n.spiI, n.spiR)
	n.setCiphers()
	n.peerID, n.peer, n.authority = s.peerID, s.peer, s.authority
	n.certAddrs, n.pskAuth, n.policyGone = s.certAddrs, s.pskAuth, s.policyGone
	n.peerFrag, n.peerHashes, n.peerMOBIKE, n.peerAddrs = s.peerFrag, s.peerHashes, s.peerMOBIKE, s.peerAddrs
	n.natHere, n.natThere, n.natT = s.natHere, s.natThere, s.natT
	n.peerTrack = s.peerTrack
	n.local, n.remote = s.local, s.remote
	n.vip, n.dns = s.vip, s.dns
	n.aaa, n.authLifetime = s.aaa, s.authLifetime
	n.id = s.id
	n.proven, n.espPeer = s.proven, s.espPeer
	n.rekeys = s.rekeys + 1
	n.authenticated = s.authenticated
	n.children = s.children
	for _, c := range n.children {
		c.ike = n
	}
	s.children = nil
	s.replacedBy = n
	if s.ikeRekeyTimer != nil {
		s.ikeRekeyTimer.Stop()
	}
	n.established()
	s.e.cfg.Log.Info("IKE SA rekeyed", "ike", n.name(), "spi_i", fmt.Sprintf("%016x", n.spiI), "spi_r", fmt.Sprintf("%016x", n.spiR))
	if n.policyGone {
		// A reload removed the peer while this rekey was in flight
		// (SetPeers): the replacement goes the same way.
		n.deleteIKE(DownPolicyChanged)
	}
}

// respondRekeyIKE is the responder's half of an IKE SA rekey.
func (s *ikeSA) respondRekeyIKE(msgID uint32, sa *message.SA, ni *message.Nonce, ke *message.KE, pre *dhDone) {
	cfg := &s.e.cfg
	reply := func(out ...message.Payload) { s.respond(message.CREATE_CHILD_SA, msgID, out) }
	var want dhGroup
	if ke != nil {
		want = dhGroup(ke.Group)
	}
	prop, chosen, ok := chooseIKE(cfg.IKEProposals, sa, want)
	if !ok || len(chosen.SPI) != 8 {
		cfg.Log.Warn("IKE SA rekey refused: no proposal in common", "ike", s.name(),
			"offered", offerString(sa), "allowed", proposalsString(cfg.IKEProposals))
		reply(notify(message.NO_PROPOSAL_CHOSEN, nil))
		return
	}
	if ke == nil || want != prop.dh {
		// §1.3.2: a group the peer offered (chooseIKE returns no other).
		var g [2]byte
		binary.BigEndian.PutUint16(g[:], uint16(prop.dh))
		reply(notify(message.INVALID_KE_PAYLOAD, g[:]))
		return
	}
	dh, shared := pre.take(prop.dh), pre.sharedOf()
	if dh == nil { // not done before (or for another group): now
		var err error
		if dh, err = newDH(prop.dh); err != nil {
			reply(notify(message.NO_PROPOSAL_CHOSEN, nil))
			return
		}
		if shared, err = dh.shared(ke.Data); err != nil {
			reply(notify(message.INVALID_SYNTAX, nil))
			return
		}
	}
	defer clear(shared)
	n := s.e.newSA(false, s.local, s.remote, s.natT)
	n.spiI = binary.BigEndian.Uint64(chosen.SPI)
	nr := randomBytes(minNonceLen)
	chosen.SPI = binary.BigEndian.AppendUint64(nil, n.spiR)
	reply(&message.SA{Proposals: []message.Proposal{chosen}}, &message.Nonce{Data: nr}, &message.KE{Group: uint16(prop.dh), Data: dh.public()})
	s.handOver(n, prop, shared, bytes.Clone(ni.Data), nr)
	s.state = stDeleting // the peer deletes the old SA
}

// respondInformational answers DELETE, liveness checks and MOBIKE's
// UPDATE_SA_ADDRESSES.
func (s *ikeSA) respondInformational(msgID uint32, ps []message.Payload, remote netip.AddrPort) {
	var out []message.Payload
	deleteIKE := false
	for _, d := range message.FindAll[*message.Delete](ps) {
		switch d.Protocol {
		case message.ProtoIKE:
			deleteIKE = true
		case message.ProtoESP:
			var ours [][]byte
			for _, b := range d.SPIs {
				if len(b) != 4 {
					continue
				}
				spi := binary.BigEndian.Uint32(b)
				for _, c := range slices.Clone(s.children) {
					if c.Out.SPI == spi {
						ours = append(ours, binary.BigEndian.AppendUint32(nil, c.In.SPI))
						s.e.cfg.Log.Info("Child SA deleted by the peer", "ike", s.name(), "child", c.Name, "spi_in", fmt.Sprintf("%#08x", c.In.SPI))
						s.removeChild(c)
					}
				}
			}
			if len(ours) > 0 {
				out = append(out, &message.Delete{Protocol: message.ProtoESP, SPISize: 4, SPIs: ours})
			}
		}
	}
	mobike, then := s.mobikeRequest(ps, remote)
	out = append(out, mobike...)
	s.respond(message.INFORMATIONAL, msgID, out)
	if deleteIKE {
		s.destroy(DownPeerDeleted)
		return
	}
	if then != nil {
		then()
	}
}

// updateAddresses is MOBIKE's UPDATE_SA_ADDRESSES (RFC 4555 §3.5), sent
// after a move, with our other addresses.
func (s *ikeSA) updateAddresses() {
	ps := []message.Payload{notify(message.UPDATE_SA_ADDRESSES, nil)}
	ps = append(ps, natNotifies(s.spiI, s.spiR, netip.AddrPortFrom(s.local, s.localPort()), s.remote)...)
	// §3.6: our other addresses, or that there are none.
	if extra := addrNotifies(s.e.cfg.LocalAddrs, s.local); len(extra) > 0 {
		ps = append(ps, extra...)
	} else {
		ps = append(ps, notify(message.NO_ADDITIONAL_ADDRESSES, nil))
	}
	// §3.5, §4.2.5: a COOKIE2 the responder copies back.
	cookie := randomBytes(16)
	ps = append(ps, notify(message.COOKIE2, cookie))
	s.start(&request{exch: message.INFORMATIONAL, payloads: ps,
		onReply: func(_ *message.Message, rps []message.Payload) {
			if !slices.ContainsFunc(filterNotify(rps, message.COOKIE2), func(n *message.Notify) bool { return bytes.Equal(n.Data, cookie) }) {
				s.e.cfg.Log.Warn("MOBIKE: the responder did not copy our COOKIE2 (RFC 4555 §4.2.5)", "ike", s.name())
			}
		},
		onFail: s.failed})
}

// dhDone is our half of a CREATE_CHILD_SA's Diffie-Hellman (PFS for a
// Child SA, RFC 7296 §1.3.1; the new IKE SA's keys, §1.3.2), done before
// the exchange's other checks, outside e.mu (dhUnlocked).
type dhDone struct {
	key    *dhKey
	shared []byte
}

// dhUnlocked runs the Diffie-Hellman for the peer's KE without e.mu, so a
// rekey storm's ECDH runs on every IKE goroutine at once instead of one at
// a time under the lock. Under e.mu on entry and on return; the caller
// checks what may have ended meanwhile (the SA, the endpoint): as if the
// request had come in a moment later. The SA takes no other request of
// the peer meanwhile (its window has moved past this one, §2.3, and the
// IKE queue hands one IKE SA's messages to one goroutine). Nil if the
// group or the KE data is not one we can use: the exchange then refuses
// it as before.
func (s *ikeSA) dhUnlocked(ke *message.KE) *dhDone {
	g := dhGroup(ke.Group)
	if g.curve() == nil {
		return nil
	}
	s.e.mu.Unlock()
	defer s.e.mu.Lock()
	k, err := newDH(g)
	if err != nil {
		return nil
	}
	shared, err := k.shared(ke.Data)
	if err != nil {
		return nil
	}
	return &dhDone{key: k, shared: shared}
}

// take returns the key if it was made for group g; nil otherwise.
func (d *dhDone) take(g dhGroup) *dhKey {
	if d == nil || d.key.group != g {
		return nil
	}
	return d.key
}

func (d *dhDone) sharedOf() []byte {
	if d == nil {
		return nil
	}
	return d.shared
}

// wipe zeroes the shared secret (used or not).
func (d *dhDone) wipe() {
	if d != nil {
		clear(d.shared)
	}
}

// askedFor is the address a CP request's INTERNAL_IP4/6_ADDRESS names, if
// any (RFC 7296 §3.15.1: empty asks for any address).
func askedFor(a message.CPAttr) netip.Addr {
	v := a.Value
	if a.Type == message.INTERNAL_IP6_ADDRESS && len(v) == 17 {
		v = v[:16]
	}
	if len(v) != 4 && len(v) != 16 {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(v)
	return ip
}
