package ike

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
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
	taken, answer := e.screen(b, remote, nil, nil)
	if len(answer) > 0 {
		e.cfg.Send(answer, local, remote, natT)
	}
	return taken
}

// screen is Screen's check; the COOKIE answer, if any, is appended to out
// and returned (sc, if set, computes the cookie without allocating).
func (e *Endpoint) screen(b []byte, remote netip.AddrPort, sc *Screener, out []byte) (taken bool, answer []byte) {
	if !e.scr.cookieMode.Load() {
		return false, nil
	}
	h, err := message.ParseHeader(b)
	if err != nil || h.Exchange != message.IKE_SA_INIT || h.IsResponse() || h.SPIr != 0 {
		return false, nil
	}
	if h.MsgID != 0 || h.Length > maxInitRequest {
		e.scr.dropped.Add(1)
		return true, nil
	}
	got, ni, err := message.ScanInit(b, h)
	if err != nil || len(ni) > maxNonceLen {
		e.scr.dropped.Add(1)
		e.cfg.Log.Debug("IKE message dropped", "from", remote, "why", "malformed IKE_SA_INIT (cookie mode)", "err", err)
		return true, nil
	}
	var want []byte
	if sc != nil {
		want = sc.cookie(ni, remote, h.SPIi)
	} else {
		want = e.cookie(ni, remote, h.SPIi)
	}
	if hmac.Equal(got, want) {
		return false, nil
	}
	e.scr.cookies.Add(1)
	return true, appendCookieAnswer(out, h.SPIi, want)
}

// appendCookieAnswer appends the IKE_SA_INIT response that carries only
// a COOKIE notification (RFC 7296 §2.6, §3.10): what sendPlain would
// encode, written without building a message.
func appendCookieAnswer(out []byte, spiI uint64, cookie []byte) []byte {
	const notifyLen = 8 // generic payload header, protocol ID, SPI size, type
	h := message.Header{SPIi: spiI, NextPayload: message.PayloadNotify, Version: 0x20, Exchange: message.IKE_SA_INIT,
		Flags: message.FlagResponse, Length: uint32(message.HeaderLen + notifyLen + len(cookie))}
	out = h.AppendTo(out)
	n := notifyLen + len(cookie)
	out = append(out, 0, 0, byte(n>>8), byte(n), 0, 0, byte(message.COOKIE>>8), byte(message.COOKIE&0xff))
	return append(out, cookie...)
}

// Screener is Screen for one reading goroutine that sends in batches:
// its HMAC is keyed once and reused, and the COOKIE answer is written into
// the reader's buffer, not sent, so a reader answers a whole read of
// spoofed IKE_SA_INIT with one sendmmsg and no allocation. Not safe for
// concurrent use: one per goroutine.
type Screener struct {
	e   *Endpoint
	mac hash.Hash
	buf []byte // the last cookie
	in  []byte // the address and SPI it was made of
}

// NewScreener makes a Screener for one goroutine.
func (e *Endpoint) NewScreener() *Screener {
	return &Screener{e: e, mac: hmac.New(sha256.New, e.secret[:]), buf: make([]byte, 0, 1+sha256.Size), in: make([]byte, 0, 16+8)}
}

// Screen is Endpoint.Screen with the COOKIE answer appended to out and
// returned instead of sent; the caller sends it to remote from the
// address the request came to (natT: with the non-ESP marker).
func (sc *Screener) Screen(b []byte, remote netip.AddrPort, out []byte) (taken bool, answer []byte) {
	return sc.e.screen(b, remote, sc, out)
}

// cookie is Endpoint.cookie, in sc's buffer (valid until the next call).
func (sc *Screener) cookie(ni []byte, remote netip.AddrPort, spiI uint64) []byte {
	m := sc.mac
	m.Reset()
	m.Write(ni)
	// One buffer of sc's for the address and SPI: arrays on the stack
	// would escape through hash.Hash's Write.
	in := sc.in[:0]
	if a := remote.Addr(); a.Is4() {
		b := a.As4()
		in = append(in, b[:]...)
	} else {
		b := a.As16()
		in = append(in, b[:]...)
	}
	in = binary.BigEndian.AppendUint64(in, spiI)
	m.Write(in)
	sc.in = in
	sc.buf = m.Sum(append(sc.buf[:0], 1))
	return sc.buf
}

// validCookie says whether IKE_SA_INIT request b carries the COOKIE RFC
// 7296 §2.6 asks of remote.
func (e *Endpoint) validCookie(b []byte, h message.Header, remote netip.AddrPort) bool {
	got, ni, err := message.ScanInit(b, h)
	return err == nil && got != nil && hmac.Equal(got, e.cookie(ni, remote, h.SPIi))
}

// maxNonceLen is RFC 7296 §3.9's upper bound on a nonce.
const maxNonceLen = 256
