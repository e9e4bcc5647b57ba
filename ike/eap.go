package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
)

// This file is the responder's EAP (RFC 7296 §2.16): a peer whose first
// IKE_AUTH request has no AUTH payload gets our AUTH (certificate) and an
// EAP request; each EAP message is relayed to the EAPBackend (a RADIUS
// server, RFC 3579) until it accepts or rejects; then the peer's AUTH,
// computed with the method's MSK, ends the exchange and the first Child
// SA is made from the first request's SA, TSi, TSr and CP. EAP-only
// authentication (RFC 5998): a peer that sends EAP_ONLY_AUTHENTICATION,
// when its policy allows it, gets no certificate AUTH, and the method's
// MSK authenticates both sides.

// EAPBackend runs the EAP method for the gateway: an AAA server.
type EAPBackend interface {
	// Relay sends one EAP message of the conversation to the server and
	// returns its answer. It blocks (the endpoint calls it in a goroutine
	// of its own, without its lock); it must give up when ctx ends.
	Relay(ctx context.Context, conv *EAPConversation, msg []byte) (EAPAnswer, error)
}

// EAPConversation is one peer's EAP authentication, kept by the endpoint
// between the rounds.
type EAPConversation struct {
	Identity string         // the user name: the peer's IKE identity
	Peer     netip.AddrPort // the peer's IKE endpoint
	Local    netip.Addr     // ours
	// State is the backend's (RADIUS State, RFC 2865 §5.24), echoed in the
	// next request.
	State []byte
}

// EAPVerdict is a backend's answer.
type EAPVerdict uint8

const (
	EAPContinue EAPVerdict = iota + 1 // another EAP request for the peer
	EAPAccept                         // EAP-Success: authenticated
	EAPReject                         // EAP-Failure
)

// EAPAnswer is a backend's answer to one EAP message.
type EAPAnswer struct {
	Verdict EAPVerdict
	Msg     []byte // the EAP packet for the peer
	MSK     []byte // EAPAccept: the method's Master Session Key (RFC 3748)
	Authz   *Authorization
}

// Authorization is what the AAA server decided for an authenticated
// peer, and what accounting reports. Shared by the IKE SA line (rekeys
// keep it) and its Child SAs (Child.AAA); read-only once set.
type Authorization struct {
	User string
	// VirtualIP4 (RADIUS Framed-IP-Address) is the address the peer gets
	// instead of one from the pool.
	VirtualIP4 netip.Addr
	// SessionTimeout (RADIUS Session-Timeout) bounds the IKE SA: the peer
	// is told to reauthenticate before it (RFC 4478 AUTH_LIFETIME) and the
	// IKE SA is deleted when it runs out. Zero: no bound.
	SessionTimeout time.Duration
	// Class (RADIUS Class, RFC 2865 §5.25) is echoed in accounting.
	Class [][]byte
	// SessionID is the accounting session (RFC 2866 Acct-Session-Id).
	SessionID string
	// Peer and Local are the IKE endpoints when the peer authenticated.
	Peer  netip.AddrPort
	Local netip.Addr
}

// eapConv is a responder IKE SA's EAP state between the IKE_AUTH rounds.
type eapConv struct {
	peer     *Peer
	first    []message.Payload // the first IKE_AUTH request: SA, TSi, TSr, CP
	idi      *message.ID
	eapOnly  bool // RFC 5998: no certificate AUTH of ours
	conv     EAPConversation
	msk      []byte // once accepted
	authz    *Authorization
	accepted bool
	lastID   uint8 // the Identifier of the last EAP request we relayed
	askedID  bool  // we asked for the EAP identity: the next response is it
}

// ErrEAPRefused: the AAA server rejected the peer.
var ErrEAPRefused = errors.New("EAP authentication refused by the AAA server")

// eapIdentity is an EAP-Response/Identity (RFC 3748 §5.1) carrying the
// IKE identity, which starts the conversation with the server without
// asking the peer (strongSwan's eap-radius does the same).
func eapIdentity(id string) []byte {
	b := make([]byte, 5, 5+len(id))
	b[0], b[1], b[4] = 2, 0, 1
	b = append(b, id...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// eapFailure is an EAP-Failure (RFC 3748 §4.2) for identifier id.
func eapFailure(id uint8) []byte { return []byte{4, id, 0, 4} }

// EAPUserName is the EAP identity and RADIUS User-Name for an IKE
// identity: its text.
func EAPUserName(id auth.Identity) string {
	switch id.Type {
	case auth.IDType(message.ID_FQDN), auth.IDType(message.ID_RFC822_ADDR), auth.IDType(message.ID_KEY_ID):
		return string(id.Data)
	}
	return id.String()
}

// findEAPPeer is the EAP policy for an identity: the entry naming it, else
// a wildcard EAP entry.
func (e *Endpoint) findEAPPeer(id auth.Identity) *Peer { return findEAPPeer(e.cfg.Peers, id) }

func findEAPPeer(peers []Peer, id auth.Identity) *Peer {
	for i := range peers {
		if p := &peers[i]; p.EAP && len(p.ID.Data) > 0 && p.ID.Equal(id) {
			return p
		}
	}
	for i := range peers {
		if p := &peers[i]; p.EAP && len(p.ID.Data) == 0 {
			return p
		}
	}
	return nil
}

// startEAP answers an IKE_AUTH request without AUTH (§2.16): our identity
// and AUTH (unless EAP-only), and the server's first EAP request. Under
// e.mu.
func (s *ikeSA) startEAP(msgID uint32, ps []message.Payload, idi *message.ID) {
	e, cfg := s.e, &s.e.cfg
	pid := auth.Identity{Type: auth.IDType(idi.IDType), Data: idi.Data}
	peer := e.findEAPPeer(pid)
	if peer == nil || cfg.EAP == nil {
		s.refuseAuth(msgID, fmt.Errorf("no EAP policy for identity %v (IKE_AUTH without AUTH)", pid))
		return
	}
	c := &eapConv{peer: peer, first: ps, idi: idi,
		conv: EAPConversation{Identity: EAPUserName(pid), Peer: s.remote, Local: s.local}}
	// RFC 5998 §4: EAP-only only where the policy allows it; otherwise the
	// request is ignored and we authenticate with our certificate.
	c.eapOnly = peer.EAPOnly && len(filterNotify(ps, message.EAP_ONLY_AUTHENTICATION)) > 0
	if !c.eapOnly && cfg.Credential == nil {
		s.refuseAuth(msgID, errors.New("EAP needs the gateway's certificate (ike.cert) unless EAP-only (RFC 5998)"))
		return
	}
	s.eap = c
	idr := localID(cfg.LocalID, true)
	ourOctets := s.signedOctets(s.msg2, s.ni, s.keys.pr, idr)
	first := eapIdentity(c.conv.Identity)
	if peer.EAPAskIdentity {
		first, c.askedID = nil, true // relayEAP asks the peer instead
	}
	s.relayEAP(msgID, first, func() ([]message.Payload, error) {
		out := []message.Payload{idr}
		if c.eapOnly {
			return out, nil
		}
		ours, certs, err := s.ourAuthWith(ourOctets, nil)
		if err != nil {
			return nil, err
		}
		return append(append(out, certs...), ours), nil
	})
}

// eapRound is a later IKE_AUTH request of the conversation: an EAP
// response to relay, or, once the server accepted, the peer's AUTH. Under
// e.mu.
func (s *ikeSA) eapRound(msgID uint32, ps []message.Payload) {
	c := s.eap
	if c.accepted {
		s.finishEAP(msgID, ps)
		return
	}
	p := message.Find[*message.EAP](ps)
	if p == nil || len(p.Data) < 4 {
		s.refuseAuth(msgID, errors.New("IKE_AUTH of the EAP conversation without an EAP payload"))
		return
	}
	if c.askedID {
		// RFC 3748 §5.1: the peer's EAP-Response/Identity names the user.
		c.askedID = false
		if len(p.Data) < 6 || p.Data[0] != 2 || p.Data[4] != 1 {
			s.refuseAuth(msgID, errors.New("the answer to EAP-Request/Identity is not an identity"))
			return
		}
		c.conv.Identity = string(p.Data[5:])
	}
	s.relayEAP(msgID, bytes.Clone(p.Data), nil)
}

// relayEAP hands msg to the backend in a goroutine the endpoint owns
// (e.wg), without e.mu, and answers the IKE_AUTH request msgID with what
// comes back; pre, if set, runs there too (our signature) and gives the
// payloads that go before the EAP payload. A nil msg relays nothing: the
// answer is our EAP-Request/Identity. Meanwhile the SA takes no
// other request (authBusy; its retransmissions fall out of the window).
// Under e.mu.
func (s *ikeSA) relayEAP(msgID uint32, msg []byte, pre func() ([]message.Payload, error)) {
	e := s.e
	s.authBusy = true
	conv := s.eap.conv // a copy: the goroutine's
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		var head []message.Payload
		var err error
		if pre != nil {
			head, err = pre()
		}
		ans := EAPAnswer{Verdict: EAPContinue, Msg: []byte{1, 1, 0, 5, 1}} // EAP-Request/Identity
		if err == nil && msg != nil {
			ctx, cancel := context.WithTimeout(e.ctx, eapRelayTimeout)
			ans, err = e.cfg.EAP.Relay(ctx, &conv, msg)
			cancel()
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		s.authBusy = false
		if s.state == stDead || e.closed {
			clear(ans.MSK)
			return
		}
		s.eap.conv.State = conv.State
		s.eapAnswer(msgID, head, ans, err)
	}()
}

// eapRelayTimeout bounds one relay (every server, every retransmission).
const eapRelayTimeout = 30 * time.Second

// eapAnswer sends the peer what the backend said. Under e.mu.
func (s *ikeSA) eapAnswer(msgID uint32, head []message.Payload, ans EAPAnswer, err error) {
	c, log := s.eap, s.e.cfg.Log
	if err != nil {
		s.refuseAuth(msgID, fmt.Errorf("EAP for %s: %w", c.conv.Identity, err))
		return
	}
	if len(ans.Msg) >= 2 {
		c.lastID = ans.Msg[1]
	}
	out := head
	switch ans.Verdict {
	case EAPContinue:
		if len(ans.Msg) < 4 {
			s.refuseAuth(msgID, errors.New("the AAA server's challenge has no EAP message"))
			return
		}
		out = append(out, &message.EAP{Data: ans.Msg})
		s.respond(message.IKE_AUTH, msgID, out)
	case EAPAccept:
		if c.eapOnly && len(ans.MSK) == 0 {
			// RFC 5998 §4: only a key-generating, mutually
			// authenticating method may stand alone.
			s.refuseAuth(msgID, errors.New("EAP-only with a method that made no MSK"))
			clear(ans.MSK)
			return
		}
		c.accepted, c.msk, c.authz = true, ans.MSK, ans.Authz
		if c.authz == nil {
			c.authz = &Authorization{}
		}
		if c.authz.User == "" {
			c.authz.User = c.conv.Identity
		}
		c.authz.Peer, c.authz.Local = s.remote, s.local
		msg := ans.Msg
		if len(msg) < 4 {
			msg = []byte{3, c.lastID, 0, 4} // EAP-Success
		}
		s.e.Stats.EAPAccepted++
		log.Info("EAP: the AAA server accepted the peer", "peer", s.remote, "user", c.conv.Identity)
		s.respond(message.IKE_AUTH, msgID, append(out, &message.EAP{Data: msg}))
	default:
		s.e.Stats.EAPRejected++
		log.Warn("IKE_AUTH refused", "peer", s.remote, "err", fmt.Errorf("%s: %w", c.conv.Identity, ErrEAPRefused))
		msg := ans.Msg
		if len(msg) < 4 || msg[0] != 4 {
			msg = eapFailure(c.lastID)
		}
		s.respond(message.IKE_AUTH, msgID, append(out, &message.EAP{Data: msg}))
		s.destroy(DownNegotiation)
	}
}

// finishEAP checks the peer's last AUTH, computed with the MSK (§2.16;
// SK_pi where the method made none), and answers with ours and the first
// Child SA. Under e.mu.
func (s *ikeSA) finishEAP(msgID uint32, ps []message.Payload) {
	e, cfg, c := s.e, &s.e.cfg, s.eap
	a := message.Find[*message.Auth](ps)
	if a == nil {
		s.refuseAuth(msgID, errors.New("the IKE_AUTH after EAP-Success has no AUTH"))
		return
	}
	keyI, keyR := c.msk, c.msk
	if len(c.msk) == 0 {
		keyI, keyR = s.keys.pi, s.keys.pr
	}
	prf := s.prop.prf.auth()
	theirs := s.signedOctets(s.msg1, s.nr, s.keys.pi, c.idi)
	pid := auth.Identity{Type: auth.IDType(c.idi.IDType), Data: c.idi.Data}
	if err := auth.VerifyPSK(prf, keyI, theirs, a.Data); a.Method != auth.MethodPSK || err != nil {
		s.refuseAuth(msgID, fmt.Errorf("%v: AUTH after EAP: %w", pid, auth.ErrAuthFailed))
		return
	}
	idr := localID(cfg.LocalID, true)
	ours := &message.Auth{Method: auth.MethodPSK, Data: auth.PSK(prf, keyR, s.signedOctets(s.msg2, s.ni, s.keys.pr, idr))}
	clear(c.msk)
	c.msk = nil
	s.peerID, s.peer, s.aaa = pid, c.peer, c.authz
	s.authority = authorityOf(c.peer, nil)
	e.removeHalfOpen(s)
	first := c.first
	s.peerMOBIKE = len(filterNotify(first, message.MOBIKE_SUPPORTED)) > 0
	s.peerAddrs = readAddrNotifies(first)
	if len(filterNotify(first, message.INITIAL_CONTACT)) > 0 {
		s.initialContact(pid)
	}
	s.eap = nil
	if s.aaa.SessionTimeout > 0 {
		s.boundSession(s.aaa.SessionTimeout)
	}
	s.finishAuth(msgID, first, nil, ours, nil)
}

// boundSession applies RADIUS Session-Timeout: RFC 4478's AUTH_LIFETIME
// tells the peer to reauthenticate (a new IKE SA) before d; at d the IKE
// SA line is deleted. Under e.mu.
func (s *ikeSA) boundSession(d time.Duration) {
	s.authLifetime = d
	s.sessionEnd = time.Since(s.created) + d
	gen := s.id
	e := s.e
	time.AfterFunc(d, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, o := range e.sas {
			if o.id == gen && o.state == stEstablished && !o.initiator {
				e.cfg.Log.Info("RADIUS Session-Timeout: deleting the IKE SA", "ike", o.name(), "after", d)
				o.deleteIKE(DownSessionTimeout)
			}
		}
	})
}

// refuseAuth answers IKE_AUTH with AUTHENTICATION_FAILED and drops the
// half-open SA. Under e.mu.
func (s *ikeSA) refuseAuth(msgID uint32, err error) {
	s.e.cfg.Log.Warn("IKE_AUTH refused", "peer", s.remote, "err", err)
	s.respond(message.IKE_AUTH, msgID, []message.Payload{notify(message.AUTHENTICATION_FAILED, nil)})
	if s.eap != nil {
		clear(s.eap.msk)
	}
	s.destroy(DownNegotiation)
}

// aaaAddr reports whether a is the address the AAA server assigned.
func (s *ikeSA) aaaAddr(a netip.Addr) bool {
	return s.aaa != nil && s.aaa.VirtualIP4.IsValid() && s.aaa.VirtualIP4 == a
}

// wipeEAP zeroes what an IKE SA that dies in the middle of EAP holds: the
// MSK (responder), the method's password and keys (initiator).
func (s *ikeSA) wipeEAP() {
	if s.eap != nil {
		clear(s.eap.msk)
		s.eap.msk = nil
	}
	if s.eapPeer != nil {
		s.eapPeer.Wipe()
		s.eapPeer = nil
	}
}
