package ike

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

type saState uint8

const (
	stInitSent    saState = iota + 1 // initiator: IKE_SA_INIT sent
	stInitDone                       // responder: IKE_SA_INIT answered; initiator: IKE_AUTH sent
	stEstablished                    // authenticated
	stDeleting                       // DELETE sent or received
	stDead
)

// ikeSA is one IKE SA and its Child SAs.
type ikeSA struct {
	e      *Endpoint
	id     int
	spiI   uint64
	spiR   uint64
	local  netip.Addr
	remote netip.AddrPort
	// peerTrack (gateway) is where the peer has sent authenticated ESP
	// from, shared by the Child SAs' outer rules (tunnel.PeerTracker).
	peerTrack *tunnel.PeerTracker
	created   time.Time
	lastHeard time.Time

	prop    ikeSuite
	keys    ikeKeys
	sendKey *skCipher
	recvKey *skCipher

	ni, nr     []byte
	msg1, msg2 []byte // the IKE_SA_INIT request and response, for AUTH (§2.15)
	dh         *dhKey
	peerKE     *[]byte // responder: the peer's KE data until deferredKeys derives the keys (a pointer: 8 bytes, not a slice's 24, keeps ikeSA in the 1,024-byte size class)
	cookie     []byte
	chosen     *message.Proposal // responder: the proposal chosen, until the IKE_SA_INIT response is built

	peerHashes []auth.HashAlg
	peerAddrs  []netip.Addr // ADDITIONAL_IP*_ADDRESS (RFC 4555 §3.6)
	// MOBIKE responder (RFC 4555 §3.5, §3.7): the peer endpoints it has
	// shown it receives at, and the one the ESP SAs send to.
	proven    []netip.AddrPort
	espPeer   netip.AddrPort
	peerID    auth.Identity
	peer      *Peer
	authority []netip.Prefix
	certAddrs []netip.Prefix // the addresses the peer's certificate certifies
	vip       []netip.Addr   // virtual addresses: assigned to us, or (responder) to the peer
	// eap (responder) is the EAP conversation until IKE_AUTH ends
	// (eap.go); aaa what the AAA server authorized, kept by rekeys;
	// authLifetime its Session-Timeout (RFC 4478 AUTH_LIFETIME).
	eap          *eapConv
	eapPeer      EAPMethod // initiator: our EAP method while IKE_AUTH runs (eappeer.go)
	aaa          *Authorization
	authLifetime time.Duration
	sessionEnd   time.Duration // when the Session-Timeout deletes the SA (boundSession), after created; 0: none
	dns          []netip.Addr

	// Requests we send: window size 1 (§2.3), the rest queued.
	out   *request
	queue []*request
	// Requests we answer: the next expected ID and the last response, sent
	// again when its request is retransmitted (§2.1).
	peerNext uint32
	cachedID uint32
	cached   [][]byte
	frags    *fragments     // RFC 7383 reassembly, nil between sets
	half     *halfOpenLink  // responder: its place among the half-open SAs (halfopen.go)
	byPeer   peerLink       // established: its place in Endpoint.byPeer
	replyTo  netip.AddrPort // where the request being answered came from

	children []*Child

	dpdTimer, ikeRekeyTimer *time.Timer
	ikeRekeyAt              time.Duration // when ikeRekeyTimer fires, after created (ExportSA hands the rest over)
	replacedBy              *ikeSA
	// RFC 6311 (hasync.go): the last sync we answered.
	lastSync      *syncAnswer
	downErr       error     // the failure that ends the SA (its EvFailed)
	rekeys        int       // IKE SA rekeys this SA descends from
	authenticated time.Time // when the first of the line authenticated

	// The flags, together: an established SA's size is what a gateway's
	// fleet costs (BenchmarkGatewayMemoryPerTunnel), and a bool between
	// wider fields costs a word.
	initiator  bool // we are the original initiator (RFC 7296 §2.2)
	natT       bool // on UDP 4500
	natHere    bool // a NAT in front of us
	natThere   bool // a NAT in front of the peer
	dhRetried  bool
	authBusy   bool // responder: checking IKE_AUTH's signatures without e.mu (respondAuth)
	peerFrag   bool
	peerMOBIKE bool
	certReq    bool // the peer sent CERTREQ
	pskAuth    bool // the peer authenticated with a PSK
	// policyGone: SetPeers deleted this SA; a rekey that completes
	// meanwhile must not let the replacement live on (handOver).
	policyGone bool
	haveCached bool
	resync     bool // imported: see resyncs
	// RFC 6311 (hasync.go): the peer announced message-ID and replay
	// counter sync and so did we; an imported SA not yet synced.
	peerMIDSync, peerReplaySync bool
	syncPending                 bool
	state                       saState
	// Requests we send: the next message ID (window size 1, §2.3; out and
	// queue above).
	nextID uint32
}

func (s *ikeSA) name() string {
	if s.peerID.Data != nil {
		return fmt.Sprintf("%s#%d", s.peerID.String(), s.id)
	}
	return fmt.Sprintf("%v#%d", s.remote, s.id)
}

func (s *ikeSA) ourSPI() uint64 {
	if s.initiator {
		return s.spiI
	}
	return s.spiR
}

// request is one exchange we started.
type request struct {
	exch     message.ExchangeType
	payloads []message.Payload
	msgID    uint32
	pkts     [][]byte
	tries    int
	timer    *time.Timer
	plain    bool           // IKE_SA_INIT
	imported bool           // the exporter's request in flight: its bytes only (goLive)
	to       netip.AddrPort // where to send it; zero: the peer's current address
	onReply  func(m *message.Message, ps []message.Payload)
	onFail   func(err error)
}

// start queues or sends a request.
func (s *ikeSA) start(r *request) {
	if s.out != nil {
		s.queue = append(s.queue, r)
		return
	}
	s.send(r)
}

func (s *ikeSA) send(r *request) {
	r.msgID = s.nextID
	s.nextID++
	s.changed(ChangeMessageID)
	if !r.plain {
		r.pkts = s.protect(r.exch, r.msgID, false, r.payloads)
	}
	s.out = r
	s.transmit(r)
}

// followNAT points a gateway's requests at the endpoint the peer's
// authenticated ESP came from last, when that is newer than its last IKE
// message and a NAT is in front of the peer. RFC 7296 §2.23: a host that
// "receives a packet whose integrity protection validates, but has a
// different port, address, or both" should send there, retransmissions
// included; a NAT rebinding is invisible to the peer, so no MOBIKE
// message will announce it.
func (s *ikeSA) followNAT() {
	if s.initiator || !s.natThere || s.peerTrack == nil || s.state != stEstablished {
		return
	}
	ep, heard, ok := s.peerTrack.Endpoint(s.remote.Addr().Is4())
	if !ok || ep.Port() == 0 || ep == s.remote || !heard.After(s.lastHeard) {
		return
	}
	s.e.cfg.Log.Info("IKE peer's NAT mapping moved (authenticated ESP)", "ike", s.name(), "from", s.remote, "to", ep)
	s.remote = ep
	s.changed(ChangeMoved)
}

// transmit sends r's packets and arms its retransmission timer, the
// timeout doubling each time (§2.1).
func (s *ikeSA) transmit(r *request) {
	s.followNAT()
	to := s.remote
	if r.to.IsValid() {
		to = r.to
	}
	for _, p := range r.pkts {
		if err := s.e.cfg.Send(p, s.local, to, s.natT); err != nil {
			s.e.cfg.Log.Debug("IKE send", "ike", s.name(), "err", err)
		}
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	d := s.e.cfg.RetransmitTimeout << r.tries
	r.timer = time.AfterFunc(d, func() {
		s.e.mu.Lock()
		defer s.e.mu.Unlock()
		if s.out != r || s.state == stDead {
			return
		}
		if r.tries >= s.e.cfg.RetransmitTries {
			s.out = nil
			r.onFail(ErrPeerSilent)
			return
		}
		r.tries++
		s.e.Stats.Retransmitted++
		s.transmit(r)
	})
}

// next sends the next queued request, if any.
func (s *ikeSA) next() {
	s.out = nil
	if len(s.queue) > 0 && s.state != stDead {
		r := s.queue[0]
		s.queue = s.queue[1:]
		s.send(r)
	}
}

// respond encrypts and sends a response, keeping it for retransmitted
// requests.
func (s *ikeSA) respond(exch message.ExchangeType, msgID uint32, ps []message.Payload) {
	pkts := s.protect(exch, msgID, true, ps)
	s.cached, s.cachedID, s.haveCached = pkts, msgID, true
	to := s.remote
	if s.replyTo.IsValid() {
		to = s.replyTo
	}
	for _, p := range pkts {
		if err := s.e.cfg.Send(p, s.local, to, to.Port() != 500); err != nil {
			s.e.cfg.Log.Debug("IKE send", "ike", s.name(), "err", err)
		}
	}
}

func (s *ikeSA) flags(response bool) uint8 {
	var f uint8
	if s.initiator {
		f |= message.FlagInitiator
	}
	if response {
		f |= message.FlagResponse
	}
	return f
}

// protect builds the encrypted message, as RFC 7383 fragments when it is
// large and the peer takes them (only after IKE_SA_INIT, §2.5).
func (s *ikeSA) protect(exch message.ExchangeType, msgID uint32, response bool, ps []message.Payload) [][]byte {
	first, inner := message.EncodePayloads(ps)
	h := message.Header{SPIi: s.spiI, SPIr: s.spiR, NextPayload: message.PayloadSK, Version: 0x20,
		Exchange: exch, Flags: s.flags(response), MsgID: msgID}
	if size := message.HeaderLen + 4 + sealedLen(len(inner)); !s.peerFrag || size <= s.e.cfg.FragmentSize {
		h.Length = uint32(size)
		b := h.AppendTo(make([]byte, 0, size))
		skLen := 4 + sealedLen(len(inner))
		b = append(b, byte(first), 0, byte(skLen>>8), byte(skLen))
		return [][]byte{s.sendKey.seal(b, b, inner)}
	}
	// RFC 7383 §2.5: every fragment is a message of its own, with the SKF
	// payload; only the first names the first inner payload.
	chunk := s.e.cfg.FragmentSize - message.HeaderLen - 8 - sealedLen(0)
	total := (len(inner) + chunk - 1) / chunk
	var pkts [][]byte
	for i := 0; i < total; i++ {
		part := inner[i*chunk : min((i+1)*chunk, len(inner))]
		size := message.HeaderLen + 8 + sealedLen(len(part))
		fh := h
		fh.NextPayload = message.PayloadSKF
		fh.Length = uint32(size)
		b := fh.AppendTo(make([]byte, 0, size))
		next := byte(0)
		if i == 0 {
			next = byte(first)
		}
		l := 8 + sealedLen(len(part))
		b = append(b, next, 0, byte(l>>8), byte(l), byte((i+1)>>8), byte(i+1), byte(total>>8), byte(total))
		pkts = append(pkts, s.sendKey.seal(b, b, part))
	}
	return pkts
}

// fragments reassembles one message (RFC 7383 §2.6).
type fragments struct {
	msgID    uint32
	response bool
	total    int
	next     message.PayloadType
	parts    map[int][]byte
	bytes    int // charged against the reassembly bounds (reserveFrag)
}

const maxFragments = 64

// handleEncrypted decrypts, reassembles and dispatches a message.
func (s *ikeSA) handleEncrypted(m *message.Message, local netip.Addr, remote netip.AddrPort, natT bool) {
	h := m.Header
	e := s.e
	if s.recvKey == nil {
		e.logDrop("encrypted message before keys", remote, nil)
		return
	}
	// Message-ID window first (§2.3): a retransmitted request gets the
	// cached response, anything else out of window is dropped.
	if !h.IsResponse() && h.MsgID == 0 && h.Exchange == message.INFORMATIONAL && s.answerMIDSync(m, remote) {
		return // RFC 6311 §4.1: outside the window, before the cache check
	}
	if !h.IsResponse() {
		if s.haveCached && h.MsgID == s.cachedID {
			if enc := encryptedOf(m); enc != nil && (!enc.Fragment || enc.FragNum == 1) {
				if _, err := s.recvKey.open(m.Raw[:enc.AADLen], enc.Body); err == nil {
					e.Stats.Answered++
					for _, p := range s.cached {
						e.cfg.Send(p, s.local, remote, remote.Port() != 500)
					}
				}
			}
			return
		}
		if h.MsgID != s.peerNext && !s.resyncs(h.MsgID) {
			e.logDrop("request out of window", remote, nil)
			return
		}
	} else if s.out == nil || s.out.msgID != h.MsgID || s.out.exch != h.Exchange {
		e.logDrop("unexpected response", remote, nil)
		return
	}
	enc := encryptedOf(m)
	if enc == nil {
		e.logDrop("no encrypted payload", remote, nil)
		return
	}
	if enc.Fragment && !s.fragRoom(h, max(len(enc.Body)-aeadIVLen-aeadICVLen-1, 0)) { // the plaintext at most
		return // counted; before the AEAD, so it costs nothing
	}
	pt, err := s.recvKey.open(m.Raw[:enc.AADLen], enc.Body)
	if err != nil {
		e.logDrop("integrity", remote, err)
		return
	}
	if !h.IsResponse() && s.resync {
		// Authenticated: the peer's requests went on at the gateway we
		// took the SA over from (resyncs).
		if h.MsgID != s.peerNext {
			e.cfg.Log.Info("IKE message IDs resynchronized after the import", "ike", s.name(), "expected", s.peerNext, "got", h.MsgID)
		}
		s.peerNext, s.resync = h.MsgID, false
	}
	next := enc.Next
	if enc.Fragment {
		var done bool
		if pt, next, done = s.addFragment(h, enc, pt, remote); !done {
			return
		}
	}
	ps, err := message.ParsePayloads(next, pt)
	if err != nil {
		e.logDrop("malformed encrypted payloads", remote, err)
		if !h.IsResponse() {
			// §2.21.1: an authenticated but malformed request gets
			// INVALID_SYNTAX.
			s.peerNext++
			s.respond(h.Exchange, h.MsgID, []message.Payload{&message.Notify{NotifyType: message.INVALID_SYNTAX}})
		}
		return
	}
	s.lastHeard = time.Now()
	if natT && !s.natT {
		s.natT = true // the peer floated to 4500 (RFC 7296 §2.23)
	}
	if remote != s.remote && s.state < stEstablished {
		s.remote = remote // the initiator floated to 4500 for IKE_AUTH (§2.23)
	} else if s.state == stEstablished && remote != s.remote && (!s.peerMOBIKE || s.natThere) {
		// An authenticated message from a new address: follow it (the
		// gateway's half of a road warrior's move; never on an
		// unauthenticated packet). RFC 7296 §2.23 has a host that is not
		// behind a NAT follow a validated packet from a new address and
		// port; with a NAT in front of the peer we do so even with MOBIKE,
		// because a NAT rebinding is invisible to the peer, which so
		// never sends UPDATE_SA_ADDRESSES for it.
		e.cfg.Log.Info("IKE peer moved", "ike", s.name(), "from", s.remote, "to", remote)
		s.remote = remote
		s.changed(ChangeMoved)
	}
	if local.IsValid() && !s.initiator {
		s.local = local
	}
	if h.IsResponse() {
		r := s.out
		r.timer.Stop()
		s.out = nil
		r.onReply(m, ps)
		if s.out == nil {
			s.next()
		}
		return
	}
	if s.state == stInitDone && !s.initiator && h.Exchange != message.IKE_AUTH {
		e.logDrop("request before IKE_AUTH", remote, nil)
		return
	}
	s.peerNext++
	s.changed(ChangeMessageID)
	s.replyTo = remote // responses go where the request came from (§2.11)
	switch h.Exchange {
	case message.IKE_AUTH:
		if s.authBusy {
			e.logDrop("IKE_AUTH while the last one is being checked", remote, nil)
			return
		}
		if s.initiator || s.state != stInitDone {
			s.respond(h.Exchange, h.MsgID, []message.Payload{&message.Notify{NotifyType: message.INVALID_SYNTAX}})
			return
		}
		s.respondAuth(h.MsgID, ps)
	case message.CREATE_CHILD_SA:
		s.respondCreateChild(h.MsgID, ps)
	case message.INFORMATIONAL:
		s.respondInformational(h.MsgID, ps, remote)
	default:
		s.respond(h.Exchange, h.MsgID, []message.Payload{&message.Notify{NotifyType: message.INVALID_SYNTAX}})
	}
}

func encryptedOf(m *message.Message) *message.Encrypted {
	if len(m.Payloads) == 0 {
		return nil
	}
	enc, _ := m.Payloads[len(m.Payloads)-1].(*message.Encrypted)
	return enc
}

// established finishes authentication: timers start.
func (s *ikeSA) established() {
	s.state = stEstablished
	s.e.indexPeer(s)
	s.e.initIndex(s, true)
	if s.authenticated.IsZero() {
		s.authenticated = time.Now()
	}
	s.dh = nil
	// The IKE_SA_INIT messages were kept only for AUTH's signed octets
	// (§2.15), both sides' now checked; a retransmitted IKE_SA_INIT
	// request no longer finds the SA (it left the half-open table).
	s.msg1, s.msg2 = nil, nil
	if !s.initiator && len(s.proven) == 0 {
		// The IKE SA was set up with the peer at this endpoint.
		s.proven, s.espPeer = []netip.AddrPort{s.remote}, s.remote
	}
	s.armDPD()
	if d := s.e.cfg.IKELifetime; d > 0 {
		s.armIKERekey(jitter(d))
	}
	s.changed(ChangeCreated)
}

// armIKERekey rekeys the IKE SA after d.
func (s *ikeSA) armIKERekey(d time.Duration) {
	s.ikeRekeyAt = time.Since(s.created) + d
	s.ikeRekeyTimer = s.afterLocked(d, func() { s.rekeyIKE() })
}

// afterLocked runs f under the endpoint lock after d, unless the SA died.
func (s *ikeSA) afterLocked(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() {
		s.e.mu.Lock()
		defer s.e.mu.Unlock()
		if s.state == stDead || s.e.closed {
			return
		}
		f()
	})
}

// jitter takes up to 10% off d, so two peers with the same lifetime
// rarely rekey at the same moment (RFC 7296 §2.8.1 collisions), and a
// gateway's road warriors that connected in the same second do not all
// rekey, or check liveness, in one later second (§2.8: "the SA lifetime
// SHOULD have some randomness"). Uniform over 256 steps of d/10/255.
func jitter(d time.Duration) time.Duration {
	r := randomBytes(1)[0]
	return d - d/10*time.Duration(r)/255
}

// armDPD checks liveness after DPD of silence (§2.4): an empty
// INFORMATIONAL request; no answer after the retransmissions kills the SA.
// The timer runs a jittered period (at most d, so PeerGoneWithin holds),
// spreading the checks of peers that came up together; the silence it
// asks for is still the whole of d.
func (s *ikeSA) armDPD() {
	d := s.e.cfg.DPD
	if d <= 0 {
		return
	}
	if s.dpdTimer != nil {
		s.dpdTimer.Stop()
	}
	s.dpdTimer = s.afterLocked(jitter(d), func() {
		if s.state != stEstablished {
			return
		}
		if idle := time.Since(s.lastHeard); idle < d || s.out != nil {
			s.armDPD()
			return
		}
		s.checkLiveness()
	})
}

// checkLiveness sends the liveness check (§2.4: an empty INFORMATIONAL
// request) now; an answer re-arms DPD, no answer after the
// retransmissions ends the SA, and so does an unprotected INVALID_IKE_SPI
// answer (lostSA).
func (s *ikeSA) checkLiveness() {
	s.start(&request{exch: message.INFORMATIONAL,
		onReply: func(*message.Message, []message.Payload) { s.armDPD() },
		onFail:  s.failed,
	})
}

// lostSA handles an unprotected response with the SPIs of this IKE SA.
// RFC 7296 §2.21.4: a node that receives a request for an IKE SA it does
// not know (it restarted, or deleted it) MAY answer with an unprotected
// INVALID_IKE_SPI, same SPIs, the Message ID copied. Being unprotected,
// it is taken only as the answer to our own request in flight (a liveness
// check, or a MOBIKE update sent when the path moved), with its Message
// ID: forging it takes an on-path attacker who reads our SPIs and Message
// ID, who could drop the request's packets just as well.
// Then the peer has no IKE SA for these Child SAs: sending into them
// until the retransmissions run out would only blackhole traffic, so the
// SA ends at once and the owner connects again. Anything else is
// dropped. Reports whether m was such an answer.
func (s *ikeSA) lostSA(h message.Header, m *message.Message) bool {
	if !h.IsResponse() || m == nil || len(m.Payloads) != 1 {
		return false
	}
	n, ok := m.Payloads[0].(*message.Notify)
	if !ok || n.NotifyType != message.INVALID_IKE_SPI {
		return false
	}
	if s.state != stEstablished || s.out == nil || h.MsgID != s.out.msgID {
		s.e.logDrop("unprotected INVALID_IKE_SPI not answering our request in flight", s.remote, nil)
		return true
	}
	s.out.timer.Stop()
	s.out = nil
	s.e.cfg.Log.Warn("IKE: the peer no longer holds the IKE SA (INVALID_IKE_SPI to our request): reconnecting",
		"ike", s.name(), "peer", s.remote)
	s.fail(DownPeerDead, ErrPeerLostSA)
	return true
}

// failed ends an SA whose request went unanswered (§2.4: the peer is
// dead, or unreachable).
func (s *ikeSA) failed(err error) {
	s.e.cfg.Log.Warn("IKE SA failed", "ike", s.name(), "peer", s.remote, "err", err)
	s.fail(DownPeerDead, err)
}

// fail ends the SA after a failure: its terminal event is EvFailed with
// err.
func (s *ikeSA) fail(why DownReason, err error) {
	if s.downErr == nil {
		s.downErr = err
	}
	s.destroy(why)
}

// emit reports an event of this SA's line.
func (s *ikeSA) emit(p Progress) {
	p.Gen, p.Peer = s.id, s.remote
	s.e.progress(p)
}

// destroy removes the SA and its Child SAs and zeroes the keys. It reports
// the line's one terminal event (an initiator's SA, or one that was up),
// unless a rekey replaced the SA: the line goes on.
func (s *ikeSA) destroy(why DownReason) {
	if s.state == stDead {
		return
	}
	wasUp := s.state >= stEstablished
	if wasUp {
		s.changed(ChangeDeleted)
	}
	s.state = stDead
	s.e.unindexPeer(s)
	s.e.initIndex(s, false)
	for _, t := range []*time.Timer{s.dpdTimer, s.ikeRekeyTimer} {
		if t != nil {
			t.Stop()
		}
	}
	if s.out != nil && s.out.timer != nil {
		s.out.timer.Stop()
	}
	for _, c := range slices.Clone(s.children) {
		s.removeChild(c)
	}
	s.children = nil
	delete(s.e.sas, s.ourSPI())
	s.e.removeHalfOpen(s) // O(1): the SA knows its place
	s.releaseFrags()
	s.keys.wipe()
	if s.sendKey != nil {
		s.sendKey.wipe()
		s.recvKey.wipe()
	}
	s.wipeEAP() // eap.go
	if s.replacedBy != nil || !wasUp && !s.initiator {
		return
	}
	if wasUp {
		s.e.cfg.Log.Info("IKE SA down", "ike", s.name(), "why", why.String(), "err", s.downErr)
	}
	if s.downErr != nil {
		s.emit(Progress{Kind: EvFailed, Reason: why, Err: s.downErr})
	} else {
		s.emit(Progress{Kind: EvDeleted, Reason: why})
	}
}

// sendDeleteNow sends an INFORMATIONAL DELETE of the IKE SA without
// waiting for the answer (shutdown).
func (s *ikeSA) sendDeleteNow() {
	ps := []message.Payload{&message.Delete{Protocol: message.ProtoIKE}}
	for _, p := range s.protect(message.INFORMATIONAL, s.nextID, false, ps) {
		s.e.cfg.Send(p, s.local, s.remote, s.natT)
	}
	s.nextID++
}

// deleteIKE deletes the SA with an INFORMATIONAL exchange (§1.4.1).
func (s *ikeSA) deleteIKE(why DownReason) {
	s.state = stDeleting
	s.start(&request{exch: message.INFORMATIONAL,
		payloads: []message.Payload{&message.Delete{Protocol: message.ProtoIKE}},
		onReply:  func(*message.Message, []message.Payload) { s.destroy(why) },
		onFail:   func(error) { s.destroy(why) },
	})
}

// peerKey buckets identities for Endpoint.byPeer so that identities Equal
// calls equal share a bucket: FQDN and RFC 822 names compare without case;
// every DN shares one bucket (dnEqual's canonical form is not a key), so
// INITIAL_CONTACT among DN identities still compares each with Equal.
func peerKey(id auth.Identity) string {
	switch id.Type {
	case auth.IDFQDN, auth.IDRFC822Addr:
		return fmt.Sprintf("%d:%s", id.Type, strings.ToLower(string(id.Data)))
	case auth.IDDERASN1DN:
		return fmt.Sprintf("%d:", id.Type)
	}
	return fmt.Sprintf("%d:%x", id.Type, id.Data)
}

// indexPeer files an established IKE SA under its peer's identity: the
// bucket is a list through the SAs themselves (peerLink), so filing one
// allocates nothing beyond the map entry of its identity. Under e.mu.
func (e *Endpoint) indexPeer(s *ikeSA) {
	if s.peerID.Data == nil || s.byPeer.in {
		return
	}
	k := peerKey(s.peerID)
	head := e.byPeer[k]
	s.byPeer = peerLink{in: true, key: k, next: head}
	if head != nil {
		head.byPeer.prev = s
	}
	e.byPeer[k] = s
}

// unindexPeer takes a dying IKE SA out of byPeer. Under e.mu.
func (e *Endpoint) unindexPeer(s *ikeSA) {
	l := &s.byPeer
	if !l.in {
		return
	}
	if l.prev != nil {
		l.prev.byPeer.next = l.next
	} else if l.next != nil {
		e.byPeer[l.key] = l.next
	} else {
		delete(e.byPeer, l.key)
	}
	if l.next != nil {
		l.next.byPeer.prev = l.prev
	}
	*l = peerLink{}
}

// peerLink is an IKE SA's place in its identity's bucket of
// Endpoint.byPeer.
type peerLink struct {
	in         bool
	key        string
	prev, next *ikeSA
}
