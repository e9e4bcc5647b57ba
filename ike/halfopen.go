package ike

import (
	"net/netip"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

// This file bounds what IKE SAs that never authenticate may hold (RFC 7296
// §2.6 names the attack: "a lot of half-open IKE SAs ... a lot of memory
// and CPU"): half-open SAs capped in total (the oldest makes room) and per
// source address (new ones refused), their
// expiry O(1) each, and RFC 7383 reassembly memory capped in bytes.
//
// Half-open SAs all live for the same HalfOpenTimeout, so the order they
// were created in is the order they expire in: one intrusive list, oldest
// first, and one timer for its head. Removing one (authenticated,
// destroyed) unlinks it in O(1); the timer expires at most reapBatch per
// turn of the lock, so an expiry storm never holds the Endpoint lock for
// long and a legitimate IKE_SA_INIT waits at most one batch.

// reapBatch is how many half-open SAs one turn of the lock expires.
const reapBatch = 256

// halfOpenTable is the responder's half-open IKE SAs; under e.mu.
type halfOpenTable struct {
	byKey      map[initKey]*ikeSA
	perSrc     map[netip.Addr]int
	head, tail *ikeSA // oldest first
	reaper     *time.Timer
	reaping    bool // reaper armed or running
}

// halfOpenLink is an ikeSA's place in the table, nil outside it: a
// pointer, so an established SA does not carry it.
type halfOpenLink struct {
	key        initKey
	deadline   time.Time
	prev, next *ikeSA
}

// DropReason says why the endpoint dropped an IKE message on purpose
// (bounds, not malformation); Stats.Drops counts each.
type DropReason uint8

const (
	DropHalfOpenCap  DropReason = iota // the oldest half-open SA went to make room at HalfOpenMax
	DropPerSourceCap                   // HalfOpenPerSource from that address
	DropFragMemory                     // RFC 7383 reassembly memory full (global or per SA)
	DropQueueFull                      // the IKE queue in front of the endpoint was full (counted by its owner)
	numDropReasons
)

var dropNames = [numDropReasons]string{"half_open_cap", "per_source_cap", "fragment_memory", "queue_full"}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons lists every reason, for status and metrics (a fixed label
// set: bounded cardinality).
func DropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// admitHalfOpen says whether a new half-open SA from src may be created
// (after the cookie check, so src is real). An address at its share is
// refused, counted. At HalfOpenMax the oldest half-open SA makes room,
// counted: it has had the longest to send its IKE_AUTH, which a real
// initiator does one round trip after IKE_SA_INIT, so attackers from many
// addresses cannot keep a real initiator out by filling the table, only
// by pushing HalfOpenMax new SAs through it within its round trip. Under
// e.mu.
func (e *Endpoint) admitHalfOpen(src netip.Addr) bool {
	t := &e.half
	if t.perSrc[src] >= e.cfg.HalfOpenPerSource {
		e.Stats.Drops[DropPerSourceCap]++
		return false
	}
	if len(t.byKey) >= e.cfg.HalfOpenMax && t.head != nil {
		e.Stats.Drops[DropHalfOpenCap]++
		t.head.destroy(DownHalfOpenTimeout) // unlinks it
	}
	return true
}

// addHalfOpen records s (just answered IKE_SA_INIT from key) as half-open,
// expiring HalfOpenTimeout from now. Under e.mu.
func (e *Endpoint) addHalfOpen(s *ikeSA, key initKey) {
	t := &e.half
	s.half = &halfOpenLink{key: key, deadline: time.Now().Add(e.cfg.HalfOpenTimeout), prev: t.tail}
	if t.tail != nil {
		t.tail.half.next = s
	} else {
		t.head = s
	}
	t.tail = s
	t.byKey[key] = s
	t.perSrc[key.remote.Addr()]++
	e.cookieSwitch()
	if !t.reaping {
		t.reaping = true
		t.reaper = time.AfterFunc(e.cfg.HalfOpenTimeout, e.reap)
	}
}

// removeHalfOpen takes s out of the table, in O(1) (authenticated or
// destroyed). Under e.mu.
func (e *Endpoint) removeHalfOpen(s *ikeSA) {
	if s.half == nil {
		return
	}
	t := &e.half
	l := s.half
	if l.prev != nil {
		l.prev.half.next = l.next
	} else {
		t.head = l.next
	}
	if l.next != nil {
		l.next.half.prev = l.prev
	} else {
		t.tail = l.prev
	}
	delete(t.byKey, l.key)
	src := l.key.remote.Addr()
	if t.perSrc[src] <= 1 {
		delete(t.perSrc, src)
	} else {
		t.perSrc[src]--
	}
	s.half = nil
	e.cookieSwitch()
}

// cookieSwitch notes cookie mode turning on or off (RFC 7296 §2.6: cookies
// are demanded above CookieThreshold half-open SAs). Under e.mu.
func (e *Endpoint) cookieSwitch() {
	on := len(e.half.byKey) >= e.cfg.CookieThreshold
	if on != e.Stats.CookieMode {
		e.Stats.CookieMode = on
		e.Stats.CookieSwitches++
		e.scr.cookieMode.Store(on)
	}
}

// reap is the half-open table's one timer: it expires the SAs past their
// deadline, reapBatch per turn of the lock, then re-arms for the next
// deadline.
func (e *Endpoint) reap() {
	for {
		e.mu.Lock()
		t := &e.half
		if e.closed {
			t.reaping = false
			e.mu.Unlock()
			return
		}
		now := time.Now()
		for range reapBatch {
			s := t.head
			if s == nil || s.half.deadline.After(now) {
				break
			}
			s.destroy(DownHalfOpenTimeout) // unlinks it
		}
		s := t.head
		if s != nil && !s.half.deadline.After(now) {
			e.mu.Unlock() // more are due: let others take the lock first
			continue
		}
		if s == nil {
			t.reaping = false
		} else {
			t.reaper = time.AfterFunc(s.half.deadline.Sub(now), e.reap)
		}
		e.mu.Unlock()
		return
	}
}

// stopReaper stops the timer (Close). Under e.mu.
func (e *Endpoint) stopReaper() {
	if e.half.reaper != nil {
		e.half.reaper.Stop()
	}
	e.half.reaping = false
}

// fragCharge is what one stored fragment costs against the reassembly
// bounds: its plaintext and the map entry around it.
func fragCharge(n int) int { return n + 64 }

// sameSet says whether fragment header h belongs to the set s holds.
func (f *fragments) sameSet(h message.Header) bool {
	return f != nil && f.parts != nil && f.msgID == h.MsgID && f.response == h.IsResponse()
}

// fragRoom says whether a fragment of n encrypted bytes fits s's and the
// endpoint's reassembly bounds (a fragment of another message would replace
// the set s holds); a refusal is counted. Checked before decryption, so a
// refused fragment costs no AEAD. Under e.mu.
func (s *ikeSA) fragRoom(h message.Header, n int) bool {
	e := s.e
	held := 0
	if s.frags.sameSet(h) {
		held = s.frags.bytes
	}
	c := fragCharge(n)
	if held+c > e.cfg.FragmentMemoryPerSA || e.fragBytes-s.frags.held()+held+c > e.cfg.FragmentMemory {
		e.Stats.Drops[DropFragMemory]++
		return false
	}
	return true
}

// addFragment stores an authenticated fragment (RFC 7383 §2.6) and, once
// the set is complete, returns the reassembled plaintext and its first
// payload type. Under e.mu.
func (s *ikeSA) addFragment(h message.Header, enc *message.Encrypted, pt []byte, remote netip.AddrPort) ([]byte, message.PayloadType, bool) {
	e := s.e
	if !s.frags.sameSet(h) {
		s.releaseFrags()
		s.frags = &fragments{msgID: h.MsgID, response: h.IsResponse(), parts: map[int][]byte{}}
	}
	f := s.frags
	if enc.TotalFrags == 0 || enc.TotalFrags > maxFragments || enc.FragNum == 0 || enc.FragNum > enc.TotalFrags ||
		(f.total != 0 && f.total != int(enc.TotalFrags)) {
		e.logDrop("bad fragment numbers", remote, nil)
		return nil, 0, false
	}
	if old, ok := f.parts[int(enc.FragNum)]; ok { // a retransmitted fragment replaces its copy
		f.bytes -= fragCharge(len(old))
		e.fragBytes -= fragCharge(len(old))
	}
	c := fragCharge(len(pt))
	if f.bytes+c > e.cfg.FragmentMemoryPerSA || e.fragBytes+c > e.cfg.FragmentMemory {
		delete(f.parts, int(enc.FragNum))
		e.Stats.Drops[DropFragMemory]++
		return nil, 0, false
	}
	f.bytes += c
	e.fragBytes += c
	f.total = int(enc.TotalFrags)
	if enc.FragNum == 1 {
		f.next = enc.Next
	}
	f.parts[int(enc.FragNum)] = pt
	if len(f.parts) < f.total {
		return nil, 0, false
	}
	var out []byte
	for i := 1; i <= f.total; i++ {
		out = append(out, f.parts[i]...)
	}
	next := f.next
	s.releaseFrags()
	return out, next, true
}

// releaseFrags frees s's reassembly buffer and its charge. Under e.mu.
func (s *ikeSA) releaseFrags() {
	s.e.fragBytes -= s.frags.held()
	s.frags = nil
}

// held is what f is charged, 0 for no set (nil).
func (f *fragments) held() int {
	if f == nil {
		return 0
	}
	return f.bytes
}
