package ike

import (
	"crypto/hmac"
	"net/netip"
	"sync/atomic"

	"github.com/roamsec/roamsec/ike/message"
)

// screen is what the lock-free cookie path (Screen) shares with the
// endpoint: whether cookies are demanded now, and its counters, which
// Counters adds to Stats.
type screen struct {
	cookieMode atomic.Bool   // mirrors Stats.CookieMode (cookieSwitch)
	cookies    atomic.Uint64 // COOKIE answers sent by Screen
	dropped    atomic.Uint64 // IKE_SA_INIT requests Screen found malformed
}

// Screen is RFC 7296 §2.6's stateless cookie check, run before a message
// is queued for the endpoint, in the goroutine that read it, without
// e.mu: while cookies are demanded, an IKE_SA_INIT request without the
// right COOKIE is answered with one (or, malformed, dropped and counted)
// after reading only its header, the first payload and the Nonce
// (message.ScanInit) and one HMAC. So a flood from spoofed addresses,
// which can never return a cookie, never takes a queue slot, an IKE
// goroutine or the lock, and the IKE_SA_INIT of a real initiator waits
// behind real ones only. It returns true if it took the message (answered
// or dropped); false: hand it to Handle as usual (not an IKE_SA_INIT
// request, cookie mode off, or the cookie is right; admitInit checks
// everything again under the lock). Safe from any goroutine.
func (e *Endpoint) Screen(b []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool {
	if !e.scr.cookieMode.Load() {
		return false
	}
	h, err := message.ParseHeader(b)
	if err != nil || h.Exchange != message.IKE_SA_INIT || h.IsResponse() || h.SPIr != 0 {
		return false
	}
	if h.MsgID != 0 || h.Length > maxInitRequest {
		e.scr.dropped.Add(1)
		return true
	}
	got, ni, err := message.ScanInit(b, h)
	if err != nil || len(ni) > maxNonceLen {
		e.scr.dropped.Add(1)
		e.cfg.Log.Debug("IKE message dropped", "from", remote, "why", "malformed IKE_SA_INIT (cookie mode)", "err", err)
		return true
	}
	want := e.cookie(ni, remote, h.SPIi)
	if hmac.Equal(got, want) {
		return false
	}
	e.scr.cookies.Add(1)
	e.sendPlain(h.SPIi, local, remote, natT, notify(message.COOKIE, want))
	return true
}

// validCookie says whether IKE_SA_INIT request b carries the COOKIE RFC
// 7296 §2.6 asks of remote.
func (e *Endpoint) validCookie(b []byte, h message.Header, remote netip.AddrPort) bool {
	got, ni, err := message.ScanInit(b, h)
	return err == nil && got != nil && hmac.Equal(got, e.cookie(ni, remote, h.SPIi))
}

// maxNonceLen is RFC 7296 §3.9's upper bound on a nonce.
const maxNonceLen = 256
