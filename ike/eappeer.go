package ike

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
)

// This file is the initiator's EAP (RFC 7296 §2.16): our IKE_AUTH
// request has no AUTH; the gateway answers with its identity, its AUTH
// (certificate) and an EAP request; we answer each EAP request in the
// next IKE_AUTH request until EAP-Success, then send our AUTH computed
// with the method's MSK and check the gateway's, computed the same way,
// in the last response, which carries the first Child SA.

// EAPMethod is the peer side of one EAP method conversation (package
// eap's MSCHAPv2).
type EAPMethod interface {
	Type() uint8
	// Respond answers one EAP-Request of the method's type.
	Respond(req []byte) ([]byte, error)
	// MSK is the Master Session Key once the method succeeded.
	MSK() []byte
	// Wipe zeroes the method's secrets.
	Wipe()
}

// eapAuthResponse is the gateway's first IKE_AUTH response: its identity
// and AUTH, and the first EAP request. Under e.mu.
func (s *ikeSA) eapAuthResponse(ps []message.Payload, c *childOffer) {
	cfg := &s.e.cfg
	if n := message.Find[*message.Notify](ps); n != nil && n.NotifyType == message.AUTHENTICATION_FAILED {
		s.eapFail(ErrAuthRefused)
		return
	}
	idr := message.Find[*message.ID](ps)
	if idr == nil || !idr.Responder {
		s.eapFail(errors.New("IKE_AUTH response without IDr"))
		return
	}
	pid := auth.Identity{Type: auth.IDType(idr.IDType), Data: idr.Data}
	if len(cfg.RemoteID.Data) > 0 && !cfg.RemoteID.Equal(pid) {
		s.eapFail(fmt.Errorf("%w: it authenticated as %v, want %v", ErrPeerAuth, pid, cfg.RemoteID))
		return
	}
	// The gateway proves itself first, with its certificate: we give our
	// password's proof only to a gateway we know.
	if _, err := s.verifyPeer(ps, idr, s.signedOctets(s.msg2, s.ni, s.keys.pr, idr), nil); err != nil {
		s.eapFail(fmt.Errorf("%w: %v: %w", ErrPeerAuth, pid, err))
		return
	}
	s.eapPeer = cfg.EAPClient()
	s.eapStep(ps, c, pid)
}

// eapStep answers the EAP packet in ps. Under e.mu.
func (s *ikeSA) eapStep(ps []message.Payload, c *childOffer, pid auth.Identity) {
	cfg := &s.e.cfg
	if n := message.Find[*message.Notify](ps); n != nil && n.NotifyType == message.AUTHENTICATION_FAILED {
		s.eapFail(ErrAuthRefused)
		return
	}
	p := message.Find[*message.EAP](ps)
	if p == nil || len(p.Data) < 4 || int(binary.BigEndian.Uint16(p.Data[2:])) != len(p.Data) {
		s.eapFail(errors.New("IKE_AUTH response without a well-formed EAP payload"))
		return
	}
	d := p.Data
	switch d[0] {
	case 1: // Request
		resp, err := s.eapRespond(d)
		if err != nil {
			s.eapFail(fmt.Errorf("%w: EAP: %w", ErrAuthRefused, err))
			return
		}
		s.start(&request{exch: message.IKE_AUTH, payloads: []message.Payload{&message.EAP{Data: resp}},
			onReply: func(_ *message.Message, rps []message.Payload) { s.eapStep(rps, c, pid) },
			onFail:  func(err error) { s.fail(DownPeerDead, &ExchangeError{Exchange: message.IKE_AUTH, Err: err}) }})
	case 3: // Success
		msk := s.eapPeer.MSK()
		if msk == nil {
			s.eapFail(errors.New("EAP-Success before the method authenticated the gateway"))
			return
		}
		prf := s.prop.prf.auth()
		idi := localID(cfg.LocalID, false)
		ours := &message.Auth{Method: auth.MethodPSK, Data: auth.PSK(prf, msk, s.signedOctets(s.msg1, s.nr, s.keys.pi, idi))}
		s.start(&request{exch: message.IKE_AUTH, payloads: []message.Payload{ours},
			onReply: func(_ *message.Message, rps []message.Payload) { s.eapFinish(rps, c, pid) },
			onFail:  func(err error) { s.fail(DownPeerDead, &ExchangeError{Exchange: message.IKE_AUTH, Err: err}) }})
	default: // Failure
		s.eapFail(fmt.Errorf("%w: EAP-Failure", ErrAuthRefused))
	}
}

// eapRespond is our answer to an EAP request: our identity, a Nak naming
// our method for another one (RFC 3748 §5.3.1), or the method's.
func (s *ikeSA) eapRespond(d []byte) ([]byte, error) {
	if len(d) < 5 {
		return nil, errors.New("request without a type")
	}
	typ := s.eapPeer.Type()
	switch d[4] {
	case 1: // Identity
		id := s.e.cfg.EAPIdentity
		if id == "" {
			id = EAPUserName(s.e.cfg.LocalID)
		}
		return eapPacket(2, d[1], 1, []byte(id)), nil
	case typ:
		return s.eapPeer.Respond(d)
	case 3, 4: // Nak, Notification are responses or answered plainly
		return nil, fmt.Errorf("unexpected EAP type %d", d[4])
	}
	return eapPacket(2, d[1], 3, []byte{typ}), nil
}

func eapPacket(code, id, typ byte, data []byte) []byte {
	b := append([]byte{code, id, 0, 0, typ}, data...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// eapFinish checks the gateway's last AUTH, made with the MSK, and
// establishes the IKE SA and its first Child SA. Under e.mu.
func (s *ikeSA) eapFinish(ps []message.Payload, c *childOffer, pid auth.Identity) {
	a := message.Find[*message.Auth](ps)
	if a == nil {
		if n := message.Find[*message.Notify](ps); n != nil && n.NotifyType == message.AUTHENTICATION_FAILED {
			s.eapFail(ErrAuthRefused)
			return
		}
		s.eapFail(fmt.Errorf("%w: no AUTH after EAP", ErrPeerAuth))
		return
	}
	idr := localID(auth.Identity{Type: pid.Type, Data: pid.Data}, true)
	err := auth.VerifyPSK(s.prop.prf.auth(), s.eapPeer.MSK(), s.signedOctets(s.msg2, s.ni, s.keys.pr, idr), a.Data)
	s.eapPeer.Wipe()
	s.eapPeer = nil
	if a.Method != auth.MethodPSK || err != nil {
		s.eapFail(fmt.Errorf("%w: %v: AUTH after EAP: %w", ErrPeerAuth, pid, auth.ErrAuthFailed))
		return
	}
	s.authEstablished(ps, c, pid)
}

// eapFail ends IKE_AUTH with err and wipes the method. Under e.mu.
func (s *ikeSA) eapFail(err error) {
	if s.eapPeer != nil {
		s.eapPeer.Wipe()
		s.eapPeer = nil
	}
	s.e.cfg.Log.Warn("IKE_AUTH failed", "peer", s.remote, "err", err)
	s.fail(DownNegotiation, err)
}
