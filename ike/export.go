package ike

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/ikectx"
	"github.com/roamsec/roamsec/ike/message"
)

// Seed 004 (Palomares & Laurent) moves the whole security context of an
// IKE SA to another gateway so that the tunnel carries on with no new
// negotiation: ExportSA writes it (ike/ikectx is the form), ImportSA
// installs it. What a peer must not see is the same (SPI, sequence
// number) twice, nor the same IKE IV: the importer jumps both ahead.

// Errors of the context transfer; callers test them with errors.Is.
var (
	// ErrNoSuchSA: no established IKE SA has that SPI.
	ErrNoSuchSA = errors.New("no established IKE SA with that SPI")
	// ErrSAExists: the IKE SA, or one of its inbound ESP SPIs, is here
	// already.
	ErrSAExists = errors.New("the IKE SA or one of its ESP SPIs is already installed here")
	// ErrBusy: a Child SA exchange is in flight; its answer could not be
	// handled elsewhere. Try again once it completed.
	ErrBusy = errors.New("a CREATE_CHILD_SA exchange is in flight")
	// ErrAmbiguous: two IKE SAs here share that initiator SPI.
	ErrAmbiguous = errors.New("two IKE SAs share that initiator SPI")
	// ErrNoPolicy: this endpoint has no ike.peers entry for the SA's peer,
	// or no pool for its virtual address.
	ErrNoPolicy = errors.New("no policy here for the IKE SA's peer")
	// ErrNotTransferable: a one-time key's IKE SA (seed 002) stays where
	// it was admitted. Its policy was made for it alone by the one-time
	// authority and is in no other gateway's ike.peers, so an importer
	// would refuse it, or, beside a wildcard certificate peer, give it
	// that peer's policy instead of the key's objective.
	ErrNotTransferable = errors.New("a one-time key's IKE SA is not transferred (its policy is its own)")
)

// ivJump is how far an imported IKE SA's SK IV counter goes past the
// exported one: the exporter may go on sending a while (RFC 5282 §3.1: an
// IV never repeats under one key); 2^32 messages is more than any SA sends.
const ivJump = 1 << 32

// ExportedSA is one IKE SA's encoded context.
type ExportedSA struct {
	SPI  uint64 // SPIi
	Data []byte
}

// ExportSA returns the encoded context of the established IKE SA whose
// initiator SPI is spiI and of its Child SAs (ike/ikectx; keys in clear:
// seal it before it leaves the process, and zero it after).
func (e *Endpoint) ExportSA(spiI uint64) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := e.bySPIi(spiI)
	if err != nil {
		return nil, err
	}
	return s.encode(time.Now())
}

// ExportAll exports every established IKE SA. One that is busy (ErrBusy)
// is left out and reported in the error, the others are returned.
func (e *Endpoint) ExportAll() ([]ExportedSA, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	var out []ExportedSA
	var errs []error
	for _, s := range e.sas {
		if s.state != stEstablished {
			continue
		}
		b, err := s.encode(now)
		if errors.Is(err, ErrNotTransferable) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name(), err))
			continue
		}
		out = append(out, ExportedSA{SPI: s.spiI, Data: b})
	}
	return out, errors.Join(errs...)
}

// bySPIi finds the established IKE SA with initiator SPI spiI. Under
// e.mu. Two peers may have picked the same SPIi (the initiator's choice,
// RFC 7296 §2.6; a malicious one on purpose): then neither is ExportSA's
// to pick, and the error says so.
func (e *Endpoint) bySPIi(spiI uint64) (*ikeSA, error) {
	switch l := e.byInit[spiI]; len(l) {
	case 0:
		return nil, fmt.Errorf("ike: %016x: %w", spiI, ErrNoSuchSA)
	case 1:
		return l[0], nil
	}
	return nil, fmt.Errorf("ike: %016x: %w", spiI, ErrAmbiguous)
}

// initIndex files s under its SPIi (add) or takes it out. Under e.mu.
func (e *Endpoint) initIndex(s *ikeSA, add bool) {
	l := slices.DeleteFunc(e.byInit[s.spiI], func(x *ikeSA) bool { return x == s })
	if add {
		l = append(l, s)
	}
	if len(l) == 0 {
		delete(e.byInit, s.spiI)
		return
	}
	e.byInit[s.spiI] = l
}

func (s *ikeSA) encode(now time.Time) ([]byte, error) {
	r, err := s.export(now)
	if err != nil {
		return nil, err
	}
	defer r.Wipe()
	return ikectx.Encode(r)
}

// export copies the SA's context (keys included, as copies). Under e.mu.
func (s *ikeSA) export(now time.Time) (*ikectx.SA, error) {
	if s.peer != nil && s.peer.OneTime {
		return nil, ErrNotTransferable
	}
	if s.out != nil && s.out.exch == message.CREATE_CHILD_SA ||
		slices.ContainsFunc(s.queue, func(r *request) bool { return r.exch == message.CREATE_CHILD_SA }) {
		return nil, ErrBusy
	}
	c := bytes.Clone
	r := &ikectx.SA{ExportedAt: now, Initiator: s.initiator, SPIi: s.spiI, SPIr: s.spiR,
		Local: s.local, Remote: s.remote, NATT: s.natT, NATHere: s.natHere, NATThere: s.natThere,
		Encr: s.prop.encr.id, EncrBits: s.prop.encr.bits, PRF: uint16(s.prop.prf), DH: uint16(s.prop.dh),
		SKd: c(s.keys.d), SKei: c(s.keys.ei), SKer: c(s.keys.er), SKpi: c(s.keys.pi), SKpr: c(s.keys.pr),
		SendIV:     s.sendKey.iv,
		PeerIDType: uint8(s.peerID.Type), PeerID: c(s.peerID.Data), PSKAuth: s.pskAuth,
		Authority: slices.Clone(s.authority), CertAddrs: slices.Clone(s.certAddrs),
		PeerFrag: s.peerFrag, PeerMOBIKE: s.peerMOBIKE, PeerAddrs: slices.Clone(s.peerAddrs),
		PeerMIDSync: s.peerMIDSync, PeerReplaySync: s.peerReplaySync,
		Proven: slices.Clone(s.proven), ESPPeer: s.espPeer, VIP: slices.Clone(s.vip), DNS: slices.Clone(s.dns),
		NextID: s.nextID, PeerNext: s.peerNext, HaveCached: s.haveCached, CachedID: s.cachedID,
		Rekeys: s.rekeys, Authenticated: s.authenticated, SilentFor: max(now.Sub(s.lastHeard), 0)}
	for _, h := range s.peerHashes {
		r.PeerHashes = append(r.PeerHashes, uint16(h))
	}
	r.AAA = s.exportAAA(now)
	for _, p := range s.cached {
		r.Cached = append(r.Cached, c(p))
	}
	if s.out != nil {
		// The request in flight (a liveness check, a DELETE, MOBIKE):
		// the importer sends the same bytes again with the same ID
		// (§2.1), so nothing is sealed twice with one IV.
		r.NextID, r.OutExchange = s.out.msgID, uint8(s.out.exch)
		for _, p := range s.out.pkts {
			r.Outstanding = append(r.Outstanding, c(p))
		}
	}
	if s.ikeRekeyTimer != nil && s.ikeRekeyAt != 0 {
		r.IKERekeyIn = max(s.created.Add(s.ikeRekeyAt).Sub(now), time.Millisecond)
	}
	for _, ch := range s.children {
		if ch.replaced || !ch.In.Alive() || !ch.Out.Alive() {
			continue // on its way out: the peer deletes it, or rekeys
		}
		x := ikectx.Child{Name: ch.Name, HostToHost: ch.HostToHost, Created: ch.Created, Ours: ch.ours, NonceMin: c(ch.nonceMin),
			Encr: ch.esp.encr.id, EncrBits: ch.esp.encr.bits, ESN: ch.esp.esn, DH: uint16(ch.esp.dh),
			LocalTS: slices.Clone(ch.localTS), RemoteTS: slices.Clone(ch.remoteTS), VIP: slices.Clone(ch.VirtualIP),
			SPIIn: ch.In.SPI, SPIOut: ch.Out.SPI, KeyIn: ch.In.KeyMaterial(), KeyOut: ch.Out.KeyMaterial(),
			SeqOut: ch.Out.LastSeq(), ReplayTop: ch.In.LastSeq(), UDPEncap: ch.Out.UDPEncap, PeerPort: ch.Out.PeerPort}
		if ch.timer != nil && ch.rekeyAt != 0 {
			x.RekeyIn = max(ch.Created.Add(ch.rekeyAt).Sub(now), time.Millisecond)
		}
		r.Children = append(r.Children, x)
	}
	return r, nil
}

// exportAAA is the AAA server's authorization with the time left to its
// Session-Timeout, or nil.
func (s *ikeSA) exportAAA(now time.Time) *ikectx.AAA {
	a := s.aaa
	if a == nil {
		return nil
	}
	x := &ikectx.AAA{User: a.User, VirtualIP4: a.VirtualIP4, SessionID: a.SessionID, Peer: a.Peer, Local: a.Local, Timeout: a.SessionTimeout}
	for _, c := range a.Class {
		x.Class = append(x.Class, bytes.Clone(c))
	}
	if a.SessionTimeout > 0 && s.sessionEnd != 0 {
		x.SessionLeft = min(max(s.created.Add(s.sessionEnd).Sub(now), time.Millisecond), a.SessionTimeout)
	}
	return x
}

// importAAA restores the authorization; its Session-Timeout runs on from
// where the exporter left it (goLive arms it).
func importAAA(x *ikectx.AAA) *Authorization {
	if x == nil {
		return nil
	}
	a := &Authorization{User: x.User, VirtualIP4: x.VirtualIP4, SessionID: x.SessionID, Peer: x.Peer, Local: x.Local, SessionTimeout: x.Timeout}
	for _, c := range x.Class {
		a.Class = append(a.Class, bytes.Clone(c))
	}
	return a
}

// ImportSA installs an exported IKE SA and its Child SAs: into the data
// path through Config.Install, as negotiated ones are, with the same
// names, SPIs and keys; the rekey timers take the time that was left, DPD
// starts afresh. seqJump is added to every outbound ESP sequence number
// (the exporter may have sent up to that many more since: under AES-GCM a
// number sent twice is a nonce reused, RFC 4106 §3.1), and every inbound
// replay window starts at the exported edge, all below it seen. Only a
// responder (gateway) imports: a road warrior's connector owns its one
// line. data is zeroed.
func (e *Endpoint) ImportSA(data []byte, seqJump uint64) error {
	rec, err := ikectx.Decode(data)
	clear(data)
	if err != nil {
		return err
	}
	defer rec.Wipe()
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return errors.New("ike: endpoint closed")
	case e.cfg.Initiator || rec.Initiator:
		return errors.New("ike: only a gateway takes over a road warrior's IKE SA (the original responder's side)")
	case e.sas[rec.SPIr] != nil || len(e.byInit[rec.SPIi]) > 0:
		return fmt.Errorf("ike: IKE SA %016x_%016x: %w", rec.SPIi, rec.SPIr, ErrSAExists)
	}
	if len(e.cfg.LocalAddrs) > 0 && !slices.Contains(e.cfg.LocalAddrs, rec.Local) {
		// The peer sends IKE and ESP to this address: the service
		// addresses move with the context, or the tunnel does not.
		return fmt.Errorf("ike: the IKE SA runs on %v, not one of this gateway's addresses %v: %w", rec.Local, e.cfg.LocalAddrs, ErrNoPolicy)
	}
	for _, c := range rec.Children {
		if e.spiTaken(c.SPIIn) {
			return fmt.Errorf("ike: ESP SPI %#08x: %w", c.SPIIn, ErrSAExists)
		}
	}
	s, err := e.restore(rec)
	if err != nil {
		return err
	}
	if err := s.restoreChildren(rec, seqJump); err != nil {
		s.undoImport()
		return err
	}
	s.goLive(rec)
	return nil
}

// restore builds the IKE SA of rec, keys and leases included, not yet
// registered. Under e.mu.
func (e *Endpoint) restore(rec *ikectx.SA) (*ikeSA, error) {
	prop, err := ikeSuiteOf(rec)
	if err != nil {
		return nil, err
	}
	c := bytes.Clone
	s := &ikeSA{e: e, spiI: rec.SPIi, spiR: rec.SPIr, local: rec.Local, remote: rec.Remote,
		natT: rec.NATT, natHere: rec.NATHere, natThere: rec.NATThere, prop: prop,
		keys:   ikeKeys{d: c(rec.SKd), ei: c(rec.SKei), er: c(rec.SKer), pi: c(rec.SKpi), pr: c(rec.SKpr)},
		peerID: auth.Identity{Type: auth.IDType(rec.PeerIDType), Data: c(rec.PeerID)}, pskAuth: rec.PSKAuth,
		authority: rec.Authority, certAddrs: rec.CertAddrs, peerFrag: rec.PeerFrag, peerMOBIKE: rec.PeerMOBIKE,
		peerMIDSync: rec.PeerMIDSync && e.syncAnnouncement() != nil, peerReplaySync: rec.PeerReplaySync && e.syncAnnouncement() != nil,
		peerAddrs: rec.PeerAddrs, proven: rec.Proven, espPeer: rec.ESPPeer, vip: rec.VIP, dns: rec.DNS,
		nextID: rec.NextID, peerNext: rec.PeerNext, haveCached: rec.HaveCached, cachedID: rec.CachedID,
		rekeys: rec.Rekeys, authenticated: rec.Authenticated, created: time.Now(), aaa: importAAA(rec.AAA),
		lastHeard: time.Now().Add(-rec.SilentFor), state: stInitDone}
	for _, h := range rec.PeerHashes {
		s.peerHashes = append(s.peerHashes, auth.HashAlg(h))
	}
	for _, p := range rec.Cached {
		s.cached = append(s.cached, c(p))
	}
	if len(s.keys.d) != prop.prf.size() || len(s.keys.pi) != prop.prf.size() || len(s.keys.pr) != prop.prf.size() {
		s.keys.wipe()
		return nil, fmt.Errorf("ike: SK_d/SK_p of %d bytes for %v", len(s.keys.d), prop.prf)
	}
	if err := s.setCiphers(); err != nil {
		s.keys.wipe()
		return nil, fmt.Errorf("ike: imported IKE keys: %w", err)
	}
	s.sendKey.iv = sat(rec.SendIV, ivJump)
	if s.aaa != nil {
		// Authenticated with EAP (only EAP fills aaa): its policy is an
		// EAP entry, which findPeer leaves out.
		s.peer = e.findEAPPeer(s.peerID)
	} else {
		s.peer = e.findPeer(s.peerID, s.pskAuth)
	}
	if s.peer == nil {
		s.wipeKeys()
		return nil, fmt.Errorf("ike: %v: %w (ike.peers)", s.peerID, ErrNoPolicy)
	}
	if err := e.restoreLeases(s); err != nil {
		s.wipeKeys()
		return nil, err
	}
	e.seq++
	s.id = e.seq
	return s, nil
}

func (s *ikeSA) wipeKeys() {
	s.keys.wipe()
	if s.sendKey != nil {
		s.sendKey.wipe()
		s.recvKey.wipe()
	}
}

// restoreLeases takes the peer's virtual addresses as leased here: in
// the pools of its policy, and free or already its own.
func (e *Endpoint) restoreLeases(s *ikeSA) error {
	id := s.peerID.String()
	for _, a := range s.vip {
		if s.aaaAddr(a) {
			// RADIUS Framed-IP-Address: leased to the user, not from a
			// pool (child.go's CP reply).
			owner := "user " + s.aaa.User
			if who, ok := e.leased[a]; ok && who != owner {
				return fmt.Errorf("ike: Framed-IP-Address %v is leased to %s here: %w", a, who, ErrSAExists)
			}
			e.leased[a] = owner
			continue
		}
		var pool netip.Prefix
		for _, p := range []netip.Prefix{s.peer.VirtualPool, s.peer.VirtualPool6} {
			if p.IsValid() && p.Contains(a) {
				pool = p
			}
		}
		if !pool.IsValid() {
			return fmt.Errorf("ike: virtual address %v of %v: %w (not in its pool)", a, s.peerID, ErrNoPolicy)
		}
		if who, ok := e.leased[a]; ok && who != id {
			return fmt.Errorf("ike: virtual address %v is leased to %s here: %w", a, who, ErrSAExists)
		}
		if old, ok := e.leases[id+"|"+pool.String()]; ok && old != a {
			return fmt.Errorf("ike: %s already leases %v from %v here: %w", id, old, pool, ErrSAExists)
		}
		e.leases[id+"|"+pool.String()], e.leased[a] = a, id
	}
	return nil
}

// restoreChildren builds and installs the Child SAs of rec. Under e.mu.
func (s *ikeSA) restoreChildren(rec *ikectx.SA, seqJump uint64) error {
	for i := range rec.Children {
		x := &rec.Children[i]
		esp, err := espSuiteOf(x)
		if err != nil {
			return err
		}
		// buildChild takes (i2r, r2i) and, for an SA we initiated, reads
		// the outbound key as i2r: hand it ours that way round.
		ch, err := s.buildChild(esp, x.SPIIn, x.SPIOut, bytes.Clone(x.KeyOut), bytes.Clone(x.KeyIn), true,
			x.LocalTS, x.RemoteTS, x.HostToHost, x.VIP)
		if err != nil {
			return fmt.Errorf("ike: Child SA %s: %w", x.Name, err)
		}
		// Names are this endpoint's (the data path's policies are filed
		// under them, and IKE SA numbers are per process): the same kind
		// suffix, this SA's name; a rekey collision's pair keeps sharing.
		kind := x.Name[strings.LastIndexByte(x.Name, '/')+1:]
		ch.Name, ch.ours, ch.nonceMin, ch.Created = s.name()+"/"+kind, x.Ours, bytes.Clone(x.NonceMin), x.Created
		ch.Out.SkipSeq(sat(x.SeqOut, seqJump))
		ch.In.RaiseReplayFloor(x.ReplayTop)
		ch.importedTop = x.ReplayTop
		s.aimChild(ch)
		rekeyIn := x.RekeyIn
		if rekeyIn == 0 && s.e.cfg.ChildLifetime > 0 {
			rekeyIn = jitter(s.e.cfg.ChildLifetime)
		}
		if err := s.put(ch, false, rekeyIn); err != nil {
			return fmt.Errorf("ike: Child SA %s: %w", x.Name, err)
		}
	}
	return nil
}

// undoImport removes what restoreChildren installed and the leases.
func (s *ikeSA) undoImport() {
	for _, c := range slices.Clone(s.children) {
		s.removeChild(c)
	}
	id := s.peerID.String()
	for _, a := range s.vip {
		if s.e.leased[a] == id || s.aaaAddr(a) && s.e.leased[a] == "user "+s.aaa.User {
			delete(s.e.leased, a)
			for k, v := range s.e.leases {
				if v == a {
					delete(s.e.leases, k)
				}
			}
		}
	}
	s.wipeKeys()
}

// goLive registers the imported SA and starts its timers, as if it had
// just authenticated here. Under e.mu.
func (s *ikeSA) goLive(rec *ikectx.SA) {
	e := s.e
	e.sas[s.spiR] = s
	s.state = stEstablished
	s.resync, s.syncPending = true, true
	e.indexPeer(s)
	e.initIndex(s, true)
	s.armDPD()
	if x := rec.AAA; x != nil && x.SessionLeft > 0 {
		// RADIUS Session-Timeout: the exporter's deadline, not a new one
		// (a standby's record may be old: it is sent again only when the
		// SA changes). The pair's clocks agree (ExportedAt); one in the
		// future counts as now.
		age := max(time.Since(rec.ExportedAt), 0)
		s.boundSession(max(x.SessionLeft-age, time.Millisecond))
		s.authLifetime = x.Timeout
	}
	if d := rec.IKERekeyIn; d > 0 {
		s.armIKERekey(d)
	} else if d := e.cfg.IKELifetime; d > 0 {
		s.armIKERekey(jitter(d))
	}
	if len(rec.Outstanding) > 0 {
		// The exporter's request in flight, the same bytes and ID; its
		// answer only needs to arrive (liveness, DELETE, MOBIKE).
		r := &request{exch: message.ExchangeType(rec.OutExchange), msgID: rec.NextID, imported: true,
			onReply: func(*message.Message, []message.Payload) { s.armDPD() }, onFail: s.failed}
		for _, p := range rec.Outstanding {
			r.pkts = append(r.pkts, bytes.Clone(p))
		}
		s.nextID = rec.NextID + 1
		s.out = r
		s.transmit(r)
	}
	e.cfg.Log.Info("IKE SA imported", "ike", s.name(), "spi_i", fmt.Sprintf("%016x", s.spiI), "spi_r", fmt.Sprintf("%016x", s.spiR),
		"children", len(s.children), "peer", s.remote, "exported_ago", time.Since(rec.ExportedAt).Round(time.Millisecond).String())
	s.emit(Progress{Kind: EvIKEEstablished, ID: s.peerID, Proposal: s.prop.String()})
	s.changed(ChangeCreated)
}

// resyncSlack is how many requests the peer may have sent to the
// exporter after the export.
const resyncSlack = 16

// resyncs reports whether a request with msgID may be the peer's next
// though we expected peerNext: until the first authenticated request
// after an import, one up to resyncSlack IDs ahead (the exporter answered
// the ones between after the export: RFC 6311 §1's problem, which a
// standby that follows every ChangeMessageID avoids). Only the pre-check:
// handleEncrypted moves peerNext once the message authenticated.
func (s *ikeSA) resyncs(msgID uint32) bool {
	return s.resync && msgID > s.peerNext && msgID-s.peerNext <= resyncSlack
}

// sat is a + b, at most the largest uint64.
func sat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func ikeSuiteOf(rec *ikectx.SA) (ikeSuite, error) {
	encr, ok := encrOf(rec.Encr, rec.EncrBits)
	prf := prfAlg(rec.PRF)
	dh := dhGroup(rec.DH)
	if !ok || !slices.Contains(allPRF, prf) || !slices.Contains(allDH, dh) {
		return ikeSuite{}, fmt.Errorf("ike: imported IKE suite %d/%d, %d, %d: not one roamsec implements", rec.Encr, rec.EncrBits, rec.PRF, rec.DH)
	}
	return ikeSuite{encr: encr, prf: prf, dh: dh}, nil
}

func espSuiteOf(x *ikectx.Child) (espSuite, error) {
	encr, ok := encrOf(x.Encr, x.EncrBits)
	if !ok || x.DH != 0 && !slices.Contains(allDH, dhGroup(x.DH)) {
		return espSuite{}, fmt.Errorf("ike: imported ESP suite %d/%d, %d: not one roamsec implements", x.Encr, x.EncrBits, x.DH)
	}
	if len(x.KeyIn) != encr.keyLen() || len(x.KeyOut) != encr.keyLen() {
		return espSuite{}, fmt.Errorf("ike: Child SA %s: ESP keys of %d/%d bytes for %v", x.Name, len(x.KeyIn), len(x.KeyOut), encr)
	}
	return espSuite{encr: encr, esn: x.ESN, dh: dhGroup(x.DH)}, nil
}

func encrOf(id uint16, bits int) (encrAlg, bool) {
	e := encrAlg{id, bits}
	return e, slices.Contains(allEncr, e)
}
