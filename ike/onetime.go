package ike

import (
	"crypto"
	"errors"
	"fmt"
	"net/netip"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
)

// OneTimeRequest is a road warrior's IKE_AUTH with a one-time key (seed
// 002's signed request, mapped in ike/auth/onetime.go): the gateway (the
// Target) hands it to the OneTimeAuthority (the Host), which looks the key
// up, has Verify check the signature with the public key it stored, and
// marks the key used.
type OneTimeRequest struct {
	// ID is the peer's IDi as sent (auth.ParseOneTimeIdentity reads key
	// ID and user from it): the authority parses it, so that even a
	// malformed request reaches its accounting.
	ID auth.Identity
	// RawKey is the peer's CERT encoding 15 (RFC 7670) as sent, nil if it
	// sent none (auth.ParseRawPublicKey reads it): the stored key must be
	// the same.
	RawKey []byte
	Remote netip.AddrPort
	// SPIi, SPIr and Nonce are the request's ID: fresh for each attempt,
	// and what the signature covers (RFC 7296 §2.15).
	SPIi, SPIr uint64
	Nonce      []byte
	// Verify checks the AUTH payload (RFC 7427 method 14) with pub.
	Verify func(pub crypto.PublicKey) error
}

// OneTimeAuthority admits one-time keys: exactly once each. Admit returns
// the peer policy the key is authorized for (its PSK is the secret our
// AUTH is computed with, which Admit's caller zeroes; ESPProposals are the
// key's objective) or an error saying why not. It is called without the
// endpoint's lock and may block on a shared store.
type OneTimeAuthority interface {
	Admit(OneTimeRequest) (*Peer, error)
}

// isOneTime: this IKE_AUTH is a one-time key's (ID_KEY_ID, a signature)
// and we take them, and no configured peer names the identity (a peer
// without an ID, any identity our CAs certify, does not: a one-time key
// has no certificate).
func (s *ikeSA) isOneTime(pid auth.Identity, a *message.Auth) bool {
	if s.e.cfg.OneTime == nil || pid.Type != auth.IDKeyID || a.Method == auth.MethodPSK {
		return false
	}
	for i := range s.e.cfg.Peers {
		if p := &s.e.cfg.Peers[i]; len(p.ID.Data) > 0 && p.ID.Equal(pid) {
			return false
		}
	}
	return true
}

// respondOneTime is respondAuth for a one-time key. Like it, the checks
// run without e.mu (held on entry and on return).
func (s *ikeSA) respondOneTime(msgID uint32, ps []message.Payload, idi *message.ID, a *message.Auth) {
	e, cfg := s.e, &s.e.cfg
	pid := auth.Identity{Type: auth.IDType(idi.IDType), Data: idi.Data}
	refuse := func(err error) {
		cfg.Log.Warn("IKE_AUTH refused", "peer", s.remote, "err", err)
		s.respond(message.IKE_AUTH, msgID, []message.Payload{notify(message.AUTHENTICATION_FAILED, nil)})
		s.destroy(DownNegotiation)
	}
	req := OneTimeRequest{ID: pid, Remote: s.remote, SPIi: s.spiI, SPIr: s.spiR, Nonce: s.ni}
	for _, c := range message.FindAll[*message.Cert](ps) {
		if c.Encoding == auth.CertRawPublicKey {
			req.RawKey = c.Data
			break
		}
	}
	idr := localID(cfg.LocalID, true)
	theirOctets := s.signedOctets(s.msg1, s.nr, s.keys.pi, idi)
	ourOctets := s.signedOctets(s.msg2, s.ni, s.keys.pr, idr)
	method, data := a.Method, a.Data
	req.Verify = func(pub crypto.PublicKey) error { return auth.Verify(method, data, theirOctets, pub) }

	s.authBusy = true
	e.mu.Unlock()
	peer, aerr := cfg.OneTime.Admit(req)
	var ours *message.Auth
	if aerr == nil {
		if peer == nil || len(peer.PSK) == 0 {
			aerr = errors.New("one-time authority admitted the key without a gateway secret")
		} else {
			// Our AUTH: shared key MIC under the key's gateway secret, the
			// one thing the holder of the code can check us with.
			ours = &message.Auth{Method: auth.MethodPSK, Data: auth.PSK(s.prop.prf.auth(), peer.PSK, ourOctets)}
			clear(peer.PSK)
			peer.PSK = nil
		}
	}
	e.mu.Lock()
	s.authBusy = false
	if s.state == stDead || e.closed {
		if aerr == nil {
			cfg.Log.Warn("one-time key admitted, but its IKE SA ended before IKE_AUTH was answered", "peer", s.remote, "id", pid)
		}
		return
	}
	if aerr != nil {
		refuse(fmt.Errorf("one-time key %v: %w", pid, aerr))
		return
	}
	peer.ID, peer.OneTime = pid, true
	s.peerID, s.peer = pid, peer
	s.authority = authorityOf(peer, nil)
	e.removeHalfOpen(s)
	s.peerMOBIKE = len(filterNotify(ps, message.MOBIKE_SUPPORTED)) > 0
	s.peerAddrs = readAddrNotifies(ps)
	s.finishAuth(msgID, ps, idr, ours, nil)
}

// espProposals are the ESP proposals this IKE SA's Child SAs may use,
// chosen by the peer or offered in our own rekeys: its peer policy's (a
// one-time key's objective), else the configuration's.
func (s *ikeSA) espProposals() []ESPProposal {
	if s.peer != nil && len(s.peer.ESPProposals) > 0 {
		return s.peer.ESPProposals
	}
	return s.e.cfg.ESPProposals
}
