package auth

import (
	"crypto/hmac"
	"crypto/subtle"
	"errors"
	"hash"
)

// ErrAuthFailed is wrapped by every error of Verify and VerifyPSK. Its text
// is all a peer-facing log needs; it never carries data.
var ErrAuthFailed = errors.New("authentication failed")

// PRF is the IKE SA's negotiated prf (RFC 7296 §2.13), e.g. HMACPRF(sha256.New).
type PRF func(key, data []byte) []byte

// HMACPRF returns the PRF_HMAC_* function for a hash (RFC 2104, RFC 4868).
func HMACPRF(h func() hash.Hash) PRF {
	return func(key, data []byte) []byte {
		m := hmac.New(h, key)
		m.Write(data)
		return m.Sum(nil)
	}
}

// keyPad is the constant of RFC 7296 §2.15, 17 ASCII octets, no terminator.
var keyPad = []byte("Key Pad for IKEv2")

// SignedOctets builds InitiatorSignedOctets or ResponderSignedOctets (RFC
// 7296 §2.15): the sender's whole first message as sent (realMessage: IKE_SA_INIT
// request for the initiator, response for the responder), the peer's nonce
// data, and prf(SK_p, RestOfIDPayload) with the sender's SK_pi or SK_pr and
// its ID payload body (Identity.Body for ours, the received bytes for the
// peer's). Nil if prf is nil.
func SignedOctets(prf PRF, realMessage, peerNonce, skp, idBody []byte) []byte {
	if prf == nil {
		return nil
	}
	mac := prf(skp, idBody)
	out := make([]byte, 0, len(realMessage)+len(peerNonce)+len(mac))
	out = append(out, realMessage...)
	out = append(out, peerNonce...)
	return append(out, mac...)
}

// PSK computes the AUTH data for shared-key authentication (RFC 7296 §2.15):
// prf(prf(secret, "Key Pad for IKEv2"), signedOctets). With EAP methods that
// produce one, the MSK takes the secret's place. Nil if prf is nil.
func PSK(prf PRF, secret, signedOctets []byte) []byte {
	if prf == nil {
		return nil
	}
	return prf(prf(secret, keyPad), signedOctets)
}

// VerifyPSK checks a peer's shared-key AUTH data in constant time (the
// length of a PRF output is public). Every failure is ErrAuthFailed, with no
// data; an empty secret is refused rather than authenticating anyone who
// also configured none.
func VerifyPSK(prf PRF, secret, signedOctets, got []byte) error {
	if prf == nil || len(secret) == 0 {
		return ErrAuthFailed
	}
	want := PSK(prf, secret, signedOctets)
	if len(want) == 0 || subtle.ConstantTimeCompare(want, got) != 1 {
		return ErrAuthFailed
	}
	return nil
}
