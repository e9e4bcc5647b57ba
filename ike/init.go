package ike

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
)

// This file is IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2, §2.15), both
// roles.

func notify(t message.NotifyType, data []byte) *message.Notify {
	return &message.Notify{NotifyType: t, Data: data}
}

func natNotifies(spiI, spiR uint64, local netip.AddrPort, remote netip.AddrPort) []message.Payload {
	return []message.Payload{
		notify(message.NAT_DETECTION_SOURCE_IP, natHash(spiI, spiR, local)),
		notify(message.NAT_DETECTION_DESTINATION_IP, natHash(spiI, spiR, remote)),
	}
}

func (s *ikeSA) localPort() uint16 {
	if s.natT {
		return 4500
	}
	return 500
}

// startInit sends IKE_SA_INIT (again, after a COOKIE or INVALID_KE_PAYLOAD).
func (s *ikeSA) startInit() error {
	cfg := &s.e.cfg
	if s.dh == nil {
		dh, err := s.e.newInitiatorDH(cfg.IKEProposals[0].dh[0])
		if err != nil {
			return err
		}
		s.dh = dh
	}
	if s.ni == nil {
		s.ni = randomBytes(minNonceLen)
	}
	var ps []message.Payload
	if s.cookie != nil {
		ps = append(ps, notify(message.COOKIE, s.cookie)) // first (§2.6)
	}
	ps = append(ps, ikeSAPayload(cfg.IKEProposals, nil),
		&message.KE{Group: uint16(s.dh.group), Data: s.dh.public()},
		&message.Nonce{Data: s.ni})
	ps = append(ps, natNotifies(s.spiI, 0, netip.AddrPortFrom(s.local, s.localPort()), s.remote)...)
	ps = append(ps, notify(message.IKEV2_FRAGMENTATION_SUPPORTED, nil),
		notify(message.SIGNATURE_HASH_ALGORITHMS, auth.EncodeHashAlgs(auth.SupportedHashAlgs)))
	m := &message.Message{Header: message.Header{SPIi: s.spiI, Version: 0x20, Exchange: message.IKE_SA_INIT, Flags: message.FlagInitiator}, Payloads: ps}
	s.msg1 = m.Encode()
	s.state = stInitSent
	s.nextID = 0
	if s.out != nil && s.out.timer != nil {
		s.out.timer.Stop()
	}
	s.out = nil
	s.emit(Progress{Kind: EvIKESAInit, Proposal: cfg.IKEProposals[0].String()})
	s.send(&request{exch: message.IKE_SA_INIT, plain: true, pkts: [][]byte{s.msg1},
		onReply: func(*message.Message, []message.Payload) {},
		onFail: func(err error) {
			s.fail(DownPeerDead, &ExchangeError{Exchange: message.IKE_SA_INIT, Err: err})
		}})
	return nil
}

// initResponse is the initiator's half of IKE_SA_INIT.
func (s *ikeSA) initResponse(m *message.Message, local netip.Addr, remote netip.AddrPort) {
	cfg := &s.e.cfg
	ps := m.Payloads
	fail := func(err error) {
		s.out.timer.Stop()
		s.out = nil
		cfg.Log.Warn("IKE_SA_INIT failed", "peer", s.remote, "err", err)
		s.fail(DownNegotiation, err)
	}
	if n := m.Notify(message.COOKIE); n != nil {
		if s.cookie != nil && bytes.Equal(s.cookie, n.Data) || len(n.Data) < 1 || len(n.Data) > 64 {
			return
		}
		s.cookie = bytes.Clone(n.Data)
		s.startInit()
		return
	}
	if n := m.Notify(message.INVALID_KE_PAYLOAD); n != nil && len(n.Data) == 2 && !s.dhRetried {
		g := dhGroup(binary.BigEndian.Uint16(n.Data))
		if !slices.ContainsFunc(cfg.IKEProposals, func(p IKEProposal) bool { return slices.Contains(p.dh, g) }) {
			fail(fmt.Errorf("%w: gateway wants DH group %d, which we did not offer", ErrNoProposal, g))
			return
		}
		s.dhRetried = true
		s.dh = nil
		dh, err := s.e.newInitiatorDH(g)
		if err != nil {
			fail(err)
			return
		}
		s.dh = dh
		s.startInit()
		return
	}
	for _, p := range ps {
		if n, ok := p.(*message.Notify); ok && n.NotifyType < 16384 {
			fail(&NotifyError{Exchange: message.IKE_SA_INIT, Type: n.NotifyType})
			return
		}
	}
	sa := message.Find[*message.SA](ps)
	ke := message.Find[*message.KE](ps)
	nr := message.Find[*message.Nonce](ps)
	if sa == nil || ke == nil || nr == nil || m.Header.SPIr == 0 {
		fail(errors.New("IKE_SA_INIT response lacks SA, KE or Nonce"))
		return
	}
	prop, err := acceptIKE(cfg.IKEProposals, sa)
	if err != nil {
		fail(fmt.Errorf("%w: %w", ErrNoProposal, err))
		return
	}
	if uint16(prop.dh) != ke.Group || prop.dh != s.dh.group {
		fail(fmt.Errorf("KE group %d does not match the chosen proposal %v", ke.Group, prop))
		return
	}
	shared, err := s.dh.shared(ke.Data)
	if err != nil {
		fail(err)
		return
	}
	s.out.timer.Stop()
	s.out = nil
	s.spiR = m.Header.SPIr
	s.prop, s.nr, s.msg2 = prop, bytes.Clone(nr.Data), bytes.Clone(m.Raw)
	s.keys = deriveIKE(prop.prf, prop.encr, 0, nil, shared, s.ni, s.nr, s.spiI, s.spiR)
	clear(shared)
	if err := s.setCiphers(); err != nil {
		fail(err)
		return
	}
	s.peerCaps(m)
	// NAT detection (§2.23): the hashes tell whether either side's address
	// or port was rewritten on the way.
	if n := m.Notify(message.NAT_DETECTION_DESTINATION_IP); n != nil {
		s.natHere = !bytes.Equal(n.Data, natHash(s.spiI, s.spiR, netip.AddrPortFrom(s.local, s.localPort())))
	}
	if n := m.Notify(message.NAT_DETECTION_SOURCE_IP); n != nil {
		s.natThere = !bytes.Equal(n.Data, natHash(s.spiI, s.spiR, remote))
	}
	// Float to 4500 for IKE_AUTH: needed behind a NAT, and what MOBIKE
	// wants anyway (RFC 4555 §3.1); the gateway listens on both.
	s.natT = true
	s.remote = netip.AddrPortFrom(s.remote.Addr(), 4500)
	s.state = stInitDone
	s.nextID = 1
	s.sendAuth()
}

// peerCaps reads the capabilities a peer announces in IKE_SA_INIT.
func (s *ikeSA) peerCaps(m *message.Message) {
	s.peerFrag = m.Notify(message.IKEV2_FRAGMENTATION_SUPPORTED) != nil
	if n := m.Notify(message.SIGNATURE_HASH_ALGORITHMS); n != nil {
		s.peerHashes, _ = auth.DecodeHashAlgs(n.Data)
	}
	s.certReq = message.Find[*message.CertReq](m.Payloads) != nil
}

func (s *ikeSA) setCiphers() error {
	send, recv, err := newCiphers(s.prop, s.keys, s.initiator)
	if err != nil {
		return err
	}
	s.sendKey, s.recvKey = send, recv
	return nil
}

// newCiphers makes the SK payload's ciphers from keys; it touches no SA.
func newCiphers(prop ikeSuite, keys ikeKeys, initiator bool) (send, recv *skCipher, err error) {
	i, r := &skCipher{encr: prop.encr, km: keys.ei}, &skCipher{encr: prop.encr, km: keys.er}
	for _, c := range []*skCipher{i, r} {
		if _, _, err := c.aead(); err != nil { // checked once: each message makes its own
			return nil, nil, err
		}
	}
	if initiator {
		return i, r, nil
	}
	return r, i, nil
}

// signedOctets is §2.15: the IKE_SA_INIT message the signer sent, the
// other side's nonce, and prf(SK_p, ID') of the signer's ID payload body.
func (s *ikeSA) signedOctets(ourMsg, peerNonce, skp []byte, id *message.ID) []byte {
	return auth.SignedOctets(s.prop.prf.auth(), ourMsg, peerNonce, skp, id.Body())
}

func (s *ikeSA) ourAuth(octets []byte) (*message.Auth, []message.Payload, error) {
	psk := s.e.cfg.PSK
	if !s.initiator && s.peer != nil && s.peer.PSK != nil {
		psk = s.peer.PSK
	}
	return s.ourAuthWith(octets, psk)
}

// ourAuthWith is our AUTH payload (and certificates) over octets: with psk
// without a credential. It reads only what does not change after
// IKE_SA_INIT, so it runs without e.mu.
func (s *ikeSA) ourAuthWith(octets, psk []byte) (*message.Auth, []message.Payload, error) {
	cfg := &s.e.cfg
	if cfg.Credential == nil {
		if psk == nil {
			return nil, nil, errors.New("no PSK for this peer")
		}
		return &message.Auth{Method: auth.MethodPSK, Data: auth.PSK(s.prop.prf.auth(), psk, octets)}, nil, nil
	}
	method, data, err := cfg.Credential.Sign(octets, s.peerHashes)
	if err != nil {
		return nil, nil, err
	}
	var certs []message.Payload
	for _, der := range cfg.Credential.CertPayloads() {
		certs = append(certs, &message.Cert{Encoding: cfg.Credential.CertEncoding(), Data: der})
	}
	return &message.Auth{Method: method, Data: data}, certs, nil
}

// verifyPeer checks the peer's AUTH payload (§2.15) with its PSK or its
// certificate, and that the certificate names its identity (RFC 4945).
// It returns the addresses the certificate certifies.
func (s *ikeSA) verifyPeer(ps []message.Payload, id *message.ID, octets, psk []byte) ([]netip.Prefix, error) {
	cfg := &s.e.cfg
	a := message.Find[*message.Auth](ps)
	if a == nil {
		return nil, errors.New("no AUTH payload")
	}
	pid := auth.Identity{Type: auth.IDType(id.IDType), Data: id.Data}
	if a.Method == auth.MethodPSK {
		if psk == nil {
			return nil, fmt.Errorf("peer %v uses a pre-shared key, and we have none for it", pid)
		}
		return nil, auth.VerifyPSK(s.prop.prf.auth(), psk, octets, a.Data)
	}
	if len(cfg.CAs) == 0 {
		return nil, fmt.Errorf("peer %v uses a certificate, and no CA is configured", pid)
	}
	var der [][]byte
	for _, c := range message.FindAll[*message.Cert](ps) {
		if c.Encoding == 4 {
			der = append(der, c.Data)
		}
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("peer %v sent no certificate", pid)
	}
	pool := x509.NewCertPool()
	for _, c := range cfg.CAs {
		pool.AddCert(c)
	}
	v := &auth.Verifier{Roots: pool, Cache: cfg.ChainCache}
	cert, err := v.VerifyChain(der)
	if err != nil {
		return nil, err
	}
	if err := auth.MatchIdentity(cert, pid); err != nil {
		return nil, err
	}
	if err := auth.Verify(a.Method, a.Data, octets, cert.PublicKey); err != nil {
		return nil, err
	}
	return auth.CertifiedAddrs(cert), nil
}

// certReq is our CERTREQ: SHA-1 of each CA's SubjectPublicKeyInfo
// (§3.7), so strongSwan sends its certificate.
func (e *Endpoint) certReq() *message.CertReq {
	if len(e.cfg.CAs) == 0 {
		return nil
	}
	var b []byte
	for _, c := range e.cfg.CAs {
		b = append(b, auth.CertReqHash(c)...)
	}
	return &message.CertReq{Encoding: 4, Data: b}
}

func addrNotifies(addrs []netip.Addr, except netip.Addr) []message.Payload {
	var ps []message.Payload
	for _, a := range addrs {
		if a == except || !a.IsValid() || a.IsUnspecified() {
			continue
		}
		t := message.ADDITIONAL_IP4_ADDRESS
		if a.Is6() {
			t = message.ADDITIONAL_IP6_ADDRESS
		}
		ps = append(ps, notify(t, a.AsSlice()))
	}
	return ps
}

func readAddrNotifies(ps []message.Payload) []netip.Addr {
	var out []netip.Addr
	for _, n := range message.FindAll[*message.Notify](ps) {
		if n.NotifyType == message.ADDITIONAL_IP4_ADDRESS && len(n.Data) == 4 ||
			n.NotifyType == message.ADDITIONAL_IP6_ADDRESS && len(n.Data) == 16 {
			a, _ := netip.AddrFromSlice(n.Data)
			out = append(out, a)
		}
	}
	return out
}

func localID(id auth.Identity, responder bool) *message.ID {
	return &message.ID{Responder: responder, IDType: message.IDType(id.Type), Data: id.Data}
}

// sendAuth is the initiator's IKE_AUTH request: identity, AUTH, the first
// Child SA (SA, TSi, TSr) and, in virtual-address mode, a CP request.
func (s *ikeSA) sendAuth() {
	cfg := &s.e.cfg
	idi := localID(cfg.LocalID, false)
	var a *message.Auth
	var certs []message.Payload
	if cfg.EAPClient == nil { // with EAP: no AUTH, RFC 7296 §2.16 (eappeer.go)
		var err error
		if a, certs, err = s.ourAuth(s.signedOctets(s.msg1, s.nr, s.keys.pi, idi)); err != nil {
			s.fail(DownNegotiation, err)
			return
		}
	}
	ps := []message.Payload{idi}
	ps = append(ps, certs...)
	if cr := s.e.certReq(); cr != nil {
		ps = append(ps, cr)
	}
	if len(cfg.RemoteID.Data) > 0 {
		ps = append(ps, localID(cfg.RemoteID, true))
	}
	if a != nil {
		ps = append(ps, a)
	}
	c := s.newChildOffer(false)
	if cfg.Mode == ModeVirtual {
		cp := &message.CP{CfgType: 1}
		// §3.15.1: ask for the address we had (a reconnect), so that
		// established connections on it survive; empty asks for any.
		v4, v6 := message.CPAttr{Type: message.INTERNAL_IP4_ADDRESS}, message.CPAttr{Type: message.INTERNAL_IP6_ADDRESS}
		for _, a := range s.e.lastVIP {
			if a.Is4() {
				v4.Value = a.AsSlice()
			} else {
				v6.Value = append(a.AsSlice(), 128)
			}
		}
		cp.Attrs = append(cp.Attrs, v4)
		if slices.ContainsFunc(cfg.RemoteTS, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			cp.Attrs = append(cp.Attrs, v6)
		}
		cp.Attrs = append(cp.Attrs, message.CPAttr{Type: message.INTERNAL_IP4_DNS})
		ps = append(ps, cp)
	}
	ps = append(ps, s.offerSA(c), c.tsi(), c.tsr())
	ps = append(ps, notify(message.INITIAL_CONTACT, nil), notify(message.MOBIKE_SUPPORTED, nil))
	ps = append(ps, addrNotifies(cfg.LocalAddrs, s.local)...)
	ps = append(ps, s.e.syncAnnouncement()...)
	s.emit(Progress{Kind: EvIKEAuth, ID: cfg.LocalID, Cert: cfg.Credential != nil})
	s.start(&request{exch: message.IKE_AUTH, payloads: ps,
		onReply: func(m *message.Message, rps []message.Payload) {
			if cfg.EAPClient != nil {
				s.eapAuthResponse(rps, c)
				return
			}
			s.authResponse(rps, c)
		},
		onFail: func(err error) {
			s.fail(DownPeerDead, &ExchangeError{Exchange: message.IKE_AUTH, Err: err})
		}})
}

// authResponse is the initiator's half of IKE_AUTH.
func (s *ikeSA) authResponse(ps []message.Payload, c *childOffer) {
	cfg := &s.e.cfg
	fail := func(err error) {
		cfg.Log.Warn("IKE_AUTH failed", "peer", s.remote, "err", err)
		s.fail(DownNegotiation, err)
	}
	for _, n := range message.FindAll[*message.Notify](ps) {
		if n.NotifyType == message.AUTHENTICATION_FAILED {
			fail(ErrAuthRefused)
			return
		}
	}
	idr := message.Find[*message.ID](ps)
	if idr == nil || !idr.Responder {
		fail(errors.New("IKE_AUTH response without IDr"))
		return
	}
	pid := auth.Identity{Type: auth.IDType(idr.IDType), Data: idr.Data}
	if len(cfg.RemoteID.Data) > 0 && !cfg.RemoteID.Equal(pid) {
		fail(fmt.Errorf("%w: it authenticated as %v, want %v", ErrPeerAuth, pid, cfg.RemoteID))
		return
	}
	if _, err := s.verifyPeer(ps, idr, s.signedOctets(s.msg2, s.ni, s.keys.pr, idr), cfg.PSK); err != nil {
		fail(fmt.Errorf("%w: %v: %w", ErrPeerAuth, pid, err))
		return
	}
	s.authEstablished(ps, c, pid)
}

// authEstablished is the initiator's IKE SA once the gateway is
// authenticated: the configuration payload and the first Child SA. ps is
// the last IKE_AUTH response.
func (s *ikeSA) authEstablished(ps []message.Payload, c *childOffer, pid auth.Identity) {
	cfg := &s.e.cfg
	fail := func(err error) {
		cfg.Log.Warn("IKE_AUTH failed", "peer", s.remote, "err", err)
		s.fail(DownNegotiation, err)
	}
	s.peerID = pid.Clone() // not a slice of the decrypted message, which it would keep whole
	s.peerMOBIKE = len(filterNotify(ps, message.MOBIKE_SUPPORTED)) > 0
	s.peerAddrs = readAddrNotifies(ps)
	s.noteSyncSupport(ps)
	s.established()
	cfg.Log.Info("IKE SA established", "ike", s.name(), "local", netip.AddrPortFrom(s.local, s.localPort()), "remote", s.remote,
		"proposal", s.prop.String(), "nat", s.natHere || s.natThere, "mobike", s.peerMOBIKE)
	s.emit(Progress{Kind: EvIKEEstablished, ID: pid, Proposal: s.prop.String()})
	if cp := message.Find[*message.CP](ps); cp != nil {
		for _, a := range cp.Attrs {
			switch {
			case a.Type == message.INTERNAL_IP4_ADDRESS && len(a.Value) == 4, a.Type == message.INTERNAL_IP6_ADDRESS && len(a.Value) == 17:
				ip, _ := netip.AddrFromSlice(a.Value[:len(a.Value)-len(a.Value)%4])
				s.vip = append(s.vip, ip)
				s.e.lastVIP = slices.Clone(s.vip)
			case a.Type == message.INTERNAL_IP4_DNS && len(a.Value) == 4, a.Type == message.INTERNAL_IP6_DNS && len(a.Value) == 16:
				ip, _ := netip.AddrFromSlice(a.Value)
				s.dns = append(s.dns, ip)
			}
		}
	}
	if cfg.Mode == ModeVirtual && len(s.vip) == 0 {
		fail(ErrNoVirtualAddress)
		return
	}
	if err := s.childResponse(ps, c, nil); err != nil {
		cfg.Log.Warn("Child SA refused", "ike", s.name(), "err", err)
		s.downErr = err // the line's EvFailed, once the DELETE is done
		s.deleteIKE(DownNegotiation)
		return
	}
	// The path-monitoring Child SA (outer = inner, our outer addresses <=>
	// the gateway's), in both modes: the probes and the SCTP association
	// ride it, authenticated, on the path each one tests.
	if cfg.HostToHost {
		s.createChild(s.newChildOffer(true))
	}
}

func filterNotify(ps []message.Payload, t message.NotifyType) []*message.Notify {
	var out []*message.Notify
	for _, n := range message.FindAll[*message.Notify](ps) {
		if n.NotifyType == t {
			out = append(out, n)
		}
	}
	return out
}

// maxInitRequest bounds the IKE_SA_INIT request a half-open SA keeps (it
// signs it in IKE_AUTH, §2.15): strongSwan's default max_packet.
const maxInitRequest = 10000

// respondInit is the responder's half of IKE_SA_INIT; it keeps no state
// for requests it refuses, and none before the cookie check (§2.6). The
// checks and the new half-open SA's place are taken under e.mu; the
// Diffie-Hellman and the key derivation run outside it (several IKE
// goroutines use several cores), and the SA gets its keys under e.mu again.
// Called without e.mu.
func (e *Endpoint) respondInit(h message.Header, b []byte, local netip.Addr, remote netip.AddrPort, natT bool) {
	e.mu.Lock()
	s, peerKE := e.admitInit(h, b, local, remote, natT)
	if s == nil {
		e.mu.Unlock()
		return
	}
	prop, reuse := s.prop, e.Stats.CookieMode
	e.mu.Unlock()

	// What IKE_SA_INIT from real addresses costs a responder is its
	// Diffie-Hellman (RFC 7296 §2.6). The answer needs only our public
	// value (a fixed-base multiplication; while cookies are demanded one
	// value per group for dhReuseFor, RFC 7296 §2.12: under a flood from
	// real addresses that saves a multiplication per half-open SA, and the
	// SAs answered meanwhile lose forward secrecy from each other, only
	// under attack); g^ir and the keys wait for the SA's first encrypted
	// message (deferredKeys), which a half-open SA that never
	// authenticates never sends. The peer's point is checked now (on the
	// curve: no multiplication), so a bad KE is still answered with
	// INVALID_SYNTAX.
	var dh *dhKey
	var err error
	if reuse {
		dh, err = e.dhReuse.key(prop.dh)
	} else {
		dh, err = newDH(prop.dh)
	}
	if err == nil {
		_, err = dh.peerKey(peerKE)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if s.state == stDead { // expired, reset or closed meanwhile
		return
	}
	if err != nil {
		e.logDrop("bad KE", remote, err)
		s.destroy(DownNegotiation)
		e.sendPlain(h.SPIi, local, remote, natT, notify(message.INVALID_SYNTAX, nil))
		return
	}
	ke := bytes.Clone(peerKE)
	s.dh, s.peerKE = dh, &ke
	ps := []message.Payload{&message.SA{Proposals: []message.Proposal{*s.chosen}},
		&message.KE{Group: uint16(prop.dh), Data: dh.public()}, &message.Nonce{Data: s.nr}}
	ps = append(ps, natNotifies(s.spiI, s.spiR, netip.AddrPortFrom(local, s.localPort()), remote)...)
	if cr := e.certReq(); cr != nil {
		ps = append(ps, cr)
	}
	ps = append(ps, notify(message.IKEV2_FRAGMENTATION_SUPPORTED, nil),
		notify(message.SIGNATURE_HASH_ALGORITHMS, auth.EncodeHashAlgs(auth.SupportedHashAlgs)))
	r := &message.Message{Header: message.Header{SPIi: s.spiI, SPIr: s.spiR, Version: 0x20, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse}, Payloads: ps}
	s.msg2 = r.Encode()
	s.chosen = nil
	e.cfg.Send(s.msg2, local, remote, natT)
}

// dhReuseFor is how long the responder answers IKE_SA_INIT with one DH
// value while cookies are demanded (respondInit).
const dhReuseFor = time.Second

// deferredKeys derives the keys of a responder's SA that respondInit
// answered without them, when its first message after IKE_SA_INIT (h)
// comes: the scalar multiplication outside e.mu, as respondInit's was.
// One IKE SA's messages are handled by one IKE goroutine
// (datapath.IKEQueue), so two never derive the same keys at once; an SA
// destroyed meanwhile gets none.
func (e *Endpoint) deferredKeys(h message.Header) {
	if !h.IsInitiator() || h.Exchange == message.IKE_SA_INIT {
		return
	}
	e.mu.Lock()
	s := e.sas[h.SPIr]
	if s == nil || s.initiator || s.peerKE == nil || s.spiI != h.SPIi {
		e.mu.Unlock()
		return
	}
	dh, peerKE, prop, ni, nr := s.dh, *s.peerKE, s.prop, s.ni, s.nr
	e.mu.Unlock()

	var keys ikeKeys
	var send, recv *skCipher
	shared, err := dh.shared(peerKE)
	if err == nil {
		keys = deriveIKE(prop.prf, prop.encr, 0, nil, shared, ni, nr, h.SPIi, h.SPIr)
		clear(shared)
		send, recv, err = newCiphers(prop, keys, false)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if s.state == stDead || s.peerKE == nil {
		keys.wipe()
		return
	}
	s.dh, s.peerKE = nil, nil
	if err != nil { // an X25519 point of low order (RFC 8031 §2.1)
		keys.wipe()
		e.logDrop("bad KE", s.remote, err)
		s.destroy(DownNegotiation)
		return
	}
	s.keys, s.sendKey, s.recvKey = keys, send, recv
}

func (e *Endpoint) sendPlain(spiI uint64, local netip.Addr, remote netip.AddrPort, natT bool, ps ...message.Payload) {
	r := &message.Message{Header: message.Header{SPIi: spiI, Version: 0x20, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse}, Payloads: ps}
	e.cfg.Send(r.Encode(), local, remote, natT)
}

// admitInit runs an IKE_SA_INIT request's checks (retransmission, syntax,
// cookie, the half-open caps, proposal) and returns the new half-open SA
// without keys, and the peer's KE data; nil if the request was answered or
// dropped here. Under e.mu.
func (e *Endpoint) admitInit(h message.Header, b []byte, local netip.Addr, remote netip.AddrPort, natT bool) (*ikeSA, []byte) {
	if e.closed {
		return nil, nil
	}
	if h.SPIr != 0 || h.MsgID != 0 {
		e.logDrop("IKE_SA_INIT request with SPIr or message ID set", remote, nil)
		return nil, nil
	}
	if s := e.half.byKey[initKey{remote, h.SPIi}]; s != nil {
		if bytes.Equal(s.msg1, b) {
			// A retransmission: the same answer (§2.1), once there is one.
			if s.msg2 != nil {
				e.Stats.Answered++
				e.cfg.Send(s.msg2, s.local, s.remote, s.natT)
			}
			return nil, nil
		}
		// The same initiator SPI from the same address and port, another
		// request: the initiator started over with the cookie it was
		// asked for (§2.6; Screen answers a retransmission without one
		// with a COOKIE once cookies are demanded). The cookie proves the
		// address; the old half-open SA makes way.
		if !e.validCookie(b, h, remote) {
			return nil, nil
		}
		s.destroy(DownNegotiation)
	}
	if len(b) > maxInitRequest {
		e.logDrop("IKE_SA_INIT request too large", remote, nil)
		return nil, nil
	}
	// An address at its share (admitHalfOpen) is refused before the
	// request is parsed: under a flood from real addresses most requests
	// end here, and cost a map lookup. Its count holds only SAs that
	// passed the cookie, so a spoofed source cannot use up a real one's.
	if e.half.perSrc[remote.Addr()] >= e.cfg.HalfOpenPerSource {
		e.Stats.Drops[DropPerSourceCap]++
		return nil, nil
	}
	m, err := message.Parse(b)
	if err != nil {
		e.logDrop("malformed IKE_SA_INIT", remote, err)
		return nil, nil
	}
	plain := func(ps ...message.Payload) { e.sendPlain(h.SPIi, local, remote, natT, ps...) }
	sa := message.Find[*message.SA](m.Payloads)
	ke := message.Find[*message.KE](m.Payloads)
	ni := message.Find[*message.Nonce](m.Payloads)
	if sa == nil || ke == nil || ni == nil {
		e.logDrop("IKE_SA_INIT without SA, KE or Nonce", remote, nil)
		plain(notify(message.INVALID_SYNTAX, nil))
		return nil, nil
	}
	if len(e.half.byKey) >= e.cfg.CookieThreshold {
		want := e.cookie(ni.Data, remote, h.SPIi)
		if n := m.Notify(message.COOKIE); n == nil || !bytes.Equal(n.Data, want) {
			e.Stats.Cookies++
			plain(notify(message.COOKIE, want))
			return nil, nil
		}
	}
	// After the cookie: a spoofed source cannot use up a real one's share.
	if !e.admitHalfOpen(remote.Addr()) {
		return nil, nil
	}
	prop, chosen, ok := chooseIKE(e.cfg.IKEProposals, sa, dhGroup(ke.Group))
	if !ok {
		e.cfg.Log.Info("IKE_SA_INIT refused: no proposal in common", "peer", remote,
			"offered", offerString(sa), "allowed", proposalsString(e.cfg.IKEProposals))
		plain(notify(message.NO_PROPOSAL_CHOSEN, nil))
		return nil, nil
	}
	if dhGroup(ke.Group) != prop.dh {
		// §1.2: tell the initiator which group to use (one it offered in
		// this SA payload: chooseIKE only returns those); keep no state.
		var g [2]byte
		binary.BigEndian.PutUint16(g[:], uint16(prop.dh))
		plain(notify(message.INVALID_KE_PAYLOAD, g[:]))
		return nil, nil
	}
	if prop.dh.curve() == nil {
		plain(notify(message.NO_PROPOSAL_CHOSEN, nil))
		return nil, nil
	}
	s := e.newSA(false, local, remote, natT)
	s.spiI = h.SPIi
	s.prop, s.ni, s.nr, s.msg1 = prop, bytes.Clone(ni.Data), randomBytes(minNonceLen), b
	chosen.SPI = nil
	s.chosen = &chosen
	s.peerCaps(m)
	if n := m.Notify(message.NAT_DETECTION_DESTINATION_IP); n != nil {
		s.natHere = !bytes.Equal(n.Data, natHash(s.spiI, 0, netip.AddrPortFrom(local, s.localPort())))
	}
	if n := m.Notify(message.NAT_DETECTION_SOURCE_IP); n != nil {
		s.natThere = !bytes.Equal(n.Data, natHash(s.spiI, 0, remote))
	}
	s.state = stInitDone
	s.peerNext = 1
	// A half-open SA that never authenticates goes away (§2.6's concern):
	// the table's one timer expires it.
	e.addHalfOpen(s, initKey{remote, h.SPIi})
	return s, bytes.Clone(ke.Data)
}

// respondAuth is the responder's half of IKE_AUTH: authenticate the
// peer, authorize its addresses (RFC 3554 §4), create the first Child SA.
// The public-key work (the peer's certificate chain and signature, our
// signature) runs without e.mu, which Handle holds on entry and gets back
// before this returns: meanwhile the SA takes no other request (its window
// has moved past this one, and nothing but IKE_AUTH is taken before it),
// and whatever ended it meanwhile (expiry, Close) is seen after.
func (s *ikeSA) respondAuth(msgID uint32, ps []message.Payload) {
	e, cfg := s.e, &s.e.cfg
	refuse := func(err error) {
		cfg.Log.Warn("IKE_AUTH refused", "peer", s.remote, "err", err)
		s.respond(message.IKE_AUTH, msgID, []message.Payload{notify(message.AUTHENTICATION_FAILED, nil)})
		s.destroy(DownNegotiation)
	}
	var idi *message.ID
	for _, id := range message.FindAll[*message.ID](ps) {
		if !id.Responder {
			idi = id
		}
	}
	a := message.Find[*message.Auth](ps)
	if s.eap != nil {
		s.eapRound(msgID, ps) // eap.go
		return
	}
	if idi != nil && a == nil {
		s.startEAP(msgID, ps, idi) // RFC 7296 §2.16: the peer wants EAP
		return
	}
	if idi == nil {
		refuse(errors.New("no IDi"))
		return
	}
	pid := auth.Identity{Type: auth.IDType(idi.IDType), Data: idi.Data}
	if s.isOneTime(pid, a) {
		s.respondOneTime(msgID, ps, idi, a)
		return
	}
	peer := e.findPeer(pid, a.Method == auth.MethodPSK)
	if peer == nil {
		refuse(fmt.Errorf("no policy for identity %v", pid))
		return
	}
	// Copies: a reload may zero the policy's PSK, and an expiry the keys,
	// while the lock is released.
	psk := bytes.Clone(peer.PSK)
	defer clear(psk)
	idr := localID(cfg.LocalID, true)
	theirOctets := s.signedOctets(s.msg1, s.nr, s.keys.pi, idi)
	ourOctets := s.signedOctets(s.msg2, s.ni, s.keys.pr, idr)

	s.authBusy = true
	e.mu.Unlock()
	certAddrs, verr := s.verifyPeer(ps, idi, theirOctets, psk)
	var ours *message.Auth
	var certs []message.Payload
	var serr error
	if verr == nil {
		ours, certs, serr = s.ourAuthWith(ourOctets, psk)
	}
	e.mu.Lock()
	s.authBusy = false
	if s.state == stDead || e.closed {
		return // expired, evicted or closed meanwhile
	}
	if verr != nil {
		refuse(fmt.Errorf("%v: %w", pid, verr))
		return
	}
	s.peerID, s.peer = pid.Clone(), peer // a slice of the decrypted IKE_AUTH (its certificate too) would keep it all
	s.authority = authorityOf(peer, certAddrs)
	s.certAddrs, s.pskAuth = certAddrs, a.Method == auth.MethodPSK
	e.removeHalfOpen(s) // by the key it was added under: s.remote may have floated to 4500
	s.peerMOBIKE = len(filterNotify(ps, message.MOBIKE_SUPPORTED)) > 0
	s.peerAddrs = readAddrNotifies(ps)
	if len(filterNotify(ps, message.INITIAL_CONTACT)) > 0 {
		s.initialContact(pid)
	}
	if serr != nil {
		refuse(serr)
		return
	}
	s.finishAuth(msgID, ps, idr, ours, certs)
}

// initialContact is §2.4: the peer has no other SA with us: forget old
// ones of the same identity (a road warrior that restarted). Under e.mu.
func (s *ikeSA) initialContact(pid auth.Identity) {
	for o, next := s.e.byPeer[peerKey(pid)], (*ikeSA)(nil); o != nil; o = next {
		next = o.byPeer.next // destroy unlinks o
		if o != s && o.state == stEstablished && o.peerID.Equal(pid) {
			s.e.cfg.Log.Info("INITIAL_CONTACT: removing the old IKE SA", "ike", o.name())
			o.destroy(DownReplaced)
		}
	}
}

// finishAuth establishes the responder's IKE SA and answers IKE_AUTH with
// our AUTH and the first Child SA; idr nil after EAP (§2.16: the last
// response has no IDr). Under e.mu.
func (s *ikeSA) finishAuth(msgID uint32, ps []message.Payload, idr *message.ID, ours *message.Auth, certs []message.Payload) {
	cfg := &s.e.cfg
	var out []message.Payload
	if idr != nil {
		out = append(out, idr)
	}
	if s.certReq || len(certs) > 0 {
		out = append(out, certs...)
	}
	out = append(out, ours)
	if s.authLifetime > 0 {
		// RFC 4478: reauthenticate before the AAA server's Session-Timeout.
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(s.authLifetime/time.Second))
		out = append(out, notify(message.AUTH_LIFETIME, b[:]))
	}
	s.noteSyncSupport(ps)
	s.established()
	cfg.Log.Info("IKE SA established", "ike", s.name(), "local", s.local, "remote", s.remote, "proposal", s.prop.String(),
		"nat", s.natHere || s.natThere, "mobike", s.peerMOBIKE)
	child, err := s.acceptChild(ps, s.ni, s.nr, nil, nil, nil, true)
	if err != nil {
		// §1.2: the IKE SA stands, the Child SA is refused.
		cfg.Log.Warn("Child SA refused", "ike", s.name(), "err", err)
		out = append(out, childError(err))
	} else {
		out = append(out, child...)
	}
	out = append(out, notify(message.MOBIKE_SUPPORTED, nil))
	out = append(out, addrNotifies(cfg.LocalAddrs, s.local)...)
	out = append(out, s.e.syncAnnouncement()...)
	s.respond(message.IKE_AUTH, msgID, out)
}
