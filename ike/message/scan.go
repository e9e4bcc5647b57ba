package message

import "encoding/binary"

// ScanInit reads, from an IKE_SA_INIT request, only what RFC 7296 §2.6's
// stateless cookie check needs: the COOKIE notify's data if it is the
// first payload (where §2.6 puts it) and the Nonce payload's data (Ni,
// which the cookie covers). It walks the generic payload headers (§3.2)
// and decodes no other payload, allocates nothing, and returns slices of
// b. It is the cheap path a responder in cookie mode takes for every
// IKE_SA_INIT before anything else: a flood from spoofed addresses costs
// this walk and one HMAC, not a full parse.
//
// The header must have passed ParseHeader. An error wraps
// ErrInvalidSyntax: a broken chain, or no Nonce.
func ScanInit(b []byte, h Header) (cookie, nonce []byte, err error) {
	b = b[:h.Length]
	next, off := h.NextPayload, HeaderLen
	for i := 0; next != PayloadNone; i++ {
		if i == maxScanPayloads {
			return nil, nil, &SyntaxError{Offset: off, Rule: "RFC 7296 §3.2", Msg: "too many payloads for IKE_SA_INIT"}
		}
		if len(b)-off < 4 {
			return nil, nil, &SyntaxError{Offset: off, Rule: "RFC 7296 §3.2", Msg: "payload header past the end"}
		}
		plen := int(binary.BigEndian.Uint16(b[off+2:]))
		if plen < 4 || plen > len(b)-off {
			return nil, nil, &SyntaxError{Payload: next, Offset: off, Rule: "RFC 7296 §3.2", Msg: "payload length out of bounds"}
		}
		body := b[off+4 : off+plen]
		switch next {
		case PayloadNotify:
			// Protocol ID, SPI size, notify type, SPI, data (§3.10).
			if i == 0 && len(body) >= 4 && NotifyType(binary.BigEndian.Uint16(body[2:])) == COOKIE && len(body) >= 4+int(body[1]) {
				cookie = body[4+int(body[1]):]
			}
		case PayloadNonce:
			nonce = body
		}
		next, off = PayloadType(b[off]), off+plen
	}
	if nonce == nil {
		return nil, nil, &SyntaxError{Payload: PayloadNonce, Offset: off, Rule: "RFC 7296 §1.2", Msg: "IKE_SA_INIT request without a Nonce"}
	}
	return cookie, nonce, nil
}

// maxScanPayloads bounds ScanInit's walk; a real IKE_SA_INIT request has a
// dozen payloads.
const maxScanPayloads = 64
