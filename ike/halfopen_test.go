package ike

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// A gateway endpoint driven by hand: what it sends is captured, and
// HalfOpenClients play the initiators (no credentials, as an attacker).

type captured struct {
	mu   sync.Mutex
	sent map[netip.AddrPort][][]byte
}

func (c *captured) send(msg []byte, _ netip.Addr, remote netip.AddrPort, _ bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent[remote] = append(c.sent[remote], append([]byte(nil), msg...))
	return nil
}

func (c *captured) take(to netip.AddrPort) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.sent[to]
	delete(c.sent, to)
	return out
}

func newResponder(t testing.TB, tune func(*Config)) (*Endpoint, *captured) {
	t.Helper()
	_, gw := pskConfigs(t, ModeVirtual)
	c := &captured{sent: map[netip.AddrPort][][]byte{}}
	gw.Send, gw.Install, gw.Remove, gw.Log = c.send, func(*Child) error { return nil }, func(*Child) {}, testLogTB(t)
	if tune != nil {
		tune(&gw)
	}
	e, err := New(gw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, c
}

// halfOpen runs IKE_SA_INIT from src (answering a cookie if asked) and
// returns the client, or nil if the responder did not answer.
func halfOpen(t testing.TB, e *Endpoint, c *captured, src netip.AddrPort) *HalfOpenClient {
	t.Helper()
	hc, err := NewHalfOpenClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.Handle(hc.Request(), gwAddr, src, false)
		got := c.take(src)
		if len(got) == 0 {
			return nil
		}
		err := hc.Response(got[len(got)-1])
		if errors.Is(err, ErrCookie) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return hc
	}
	t.Fatal("cookie asked twice")
	return nil
}

func src(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 500)
}

// TestHalfOpenCappedPerSource: one address holds at most HalfOpenPerSource
// half-open SAs; more are dropped and counted, other addresses still get
// theirs.
func TestHalfOpenCappedPerSource(t *testing.T) {
	e, c := newResponder(t, func(c *Config) { c.HalfOpenPerSource, c.CookieThreshold = 3, 1000 })
	a := src(1)
	for i := range 5 {
		hc := halfOpen(t, e, c, netip.AddrPortFrom(a.Addr(), uint16(1000+i)))
		if (hc != nil) != (i < 3) {
			t.Fatalf("request %d from one address answered: %v", i+1, hc != nil)
		}
	}
	if halfOpen(t, e, c, src(2)) == nil {
		t.Fatal("another address refused")
	}
	st := e.Counters()
	if st.HalfOpen != 4 || st.Drops[DropPerSourceCap] != 2 || st.Drops[DropHalfOpenCap] != 0 {
		t.Fatalf("half-open %d, per-source drops %d, total-cap drops %d; want 4, 2, 0", st.HalfOpen, st.Drops[DropPerSourceCap], st.Drops[DropHalfOpenCap])
	}
}

// TestHalfOpenCapEvictsOldest: at HalfOpenMax half-open SAs, a new one
// (with a valid cookie) is answered and the oldest goes, counted: the
// table stays at the cap, and a real initiator that authenticates within
// its round trip is never kept out by a table full of attackers.
func TestHalfOpenCapEvictsOldest(t *testing.T) {
	e, c := newResponder(t, func(c *Config) { c.HalfOpenMax, c.CookieThreshold = 6, 2 })
	var first *HalfOpenClient
	for i := range 10 {
		hc := halfOpen(t, e, c, src(i))
		if hc == nil {
			t.Fatalf("request %d not answered", i)
		}
		if i == 0 {
			first = hc
		}
	}
	st := e.Counters()
	if st.HalfOpen != 6 || st.Drops[DropHalfOpenCap] != 4 {
		t.Fatalf("half-open %d, cap drops %d; want 6, 4", st.HalfOpen, st.Drops[DropHalfOpenCap])
	}
	if st.Cookies != 8 || !st.CookieMode || st.CookieSwitches != 1 {
		t.Fatalf("cookies %d, mode %v, switches %d; want 8 (every request after the 2nd), on, 1", st.Cookies, st.CookieMode, st.CookieSwitches)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, s := range e.half.byKey {
		if k.remote == src(0) || s.spiI == first.SPIi {
			t.Fatal("the oldest half-open SA is still there")
		}
	}
	if e.half.head.half.key.remote != src(4) {
		t.Fatalf("oldest left is from %v, want %v", e.half.head.half.key.remote, src(4))
	}
}

// TestSpoofedInitTakesNoShare_RFC7296_2_6: in cookie mode a request
// without the cookie (a spoofed source cannot return it) creates no state
// and uses up no address's share.
func TestSpoofedInitTakesNoShare_RFC7296_2_6(t *testing.T) {
	e, c := newResponder(t, func(c *Config) { c.HalfOpenPerSource, c.CookieThreshold = 2, -1 })
	victim := src(7)
	for range 50 {
		hc, _ := NewHalfOpenClient(nil)
		e.Handle(hc.Request(), gwAddr, victim, false) // never answers the cookie
	}
	c.take(victim)
	if st := e.Counters(); st.HalfOpen != 0 || st.Cookies != 50 {
		t.Fatalf("half-open %d, cookies %d; want 0, 50", st.HalfOpen, st.Cookies)
	}
	if halfOpen(t, e, c, victim) == nil {
		t.Fatal("the real owner of the address was refused")
	}
}

// TestHalfOpenExpireTogether: SAs that never authenticate expire after
// HalfOpenTimeout, all of them, through the table's one timer; the tables
// and the per-source counts empty, and cookie mode switches off again.
func TestHalfOpenExpireTogether(t *testing.T) {
	const n, timeout = 1000, 3 * time.Second
	e, c := newResponder(t, func(c *Config) {
		c.HalfOpenTimeout, c.CookieThreshold, c.HalfOpenPerSource = timeout, 64, 4
	})
	t0 := time.Now()
	for i := range n {
		if halfOpen(t, e, c, src(i/4)) == nil {
			t.Fatalf("SA %d refused", i)
		}
	}
	if time.Since(t0) > timeout {
		t.Skip("the machine took longer to create them than they live")
	}
	if st := e.Counters(); st.HalfOpen != n || !st.CookieMode {
		t.Fatalf("half-open %d, cookie mode %v; want %d, on", st.HalfOpen, st.CookieMode, n)
	}
	waitFor(t, "half-open SAs to expire", func() bool { return e.Counters().HalfOpen == 0 })
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.sas) != 0 || len(e.half.perSrc) != 0 || e.half.head != nil || e.half.tail != nil || e.half.reaping {
		t.Fatalf("after expiry: %d SAs, %d sources, head %v, tail %v, reaper armed %v", len(e.sas), len(e.half.perSrc), e.half.head, e.half.tail, e.half.reaping)
	}
	if e.Stats.CookieMode || e.Stats.CookieSwitches != 2 {
		t.Fatalf("cookie mode %v after %d switches; want off after 2", e.Stats.CookieMode, e.Stats.CookieSwitches)
	}
}

// TestHalfOpenExpiryReArms: SAs created after the timer fired still
// expire (the timer re-arms for the next deadline, and starts again once
// the table was empty).
func TestHalfOpenExpiryReArms(t *testing.T) {
	e, c := newResponder(t, func(c *Config) { c.HalfOpenTimeout = 200 * time.Millisecond })
	halfOpen(t, e, c, src(1))
	time.Sleep(100 * time.Millisecond)
	halfOpen(t, e, c, src(2))
	waitFor(t, "the first to expire", func() bool { return e.Counters().HalfOpen == 1 })
	waitFor(t, "the second to expire", func() bool { return e.Counters().HalfOpen == 0 })
	halfOpen(t, e, c, src(3))
	waitFor(t, "one created after the table emptied to expire", func() bool { return e.Counters().HalfOpen == 0 })
}

// TestAuthenticatedLeavesHalfOpen: an IKE SA that authenticates (having
// floated to 4500, §2.23) is no longer half-open: it does not count
// towards the cookie threshold or its address's share.
func TestAuthenticatedLeavesHalfOpen(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	if st := p.gw.Counters(); st.HalfOpen != 0 {
		t.Fatalf("%d half-open SAs after IKE_AUTH, want 0", st.HalfOpen)
	}
}

// TestCloseEndsHalfOpen: Close removes every half-open SA and stops the
// expiry timer.
func TestCloseEndsHalfOpen(t *testing.T) {
	e, c := newResponder(t, func(c *Config) { c.CookieThreshold, c.HalfOpenPerSource = 1<<20, 1<<20 })
	for i := range 3000 {
		halfOpen(t, e, c, src(i))
	}
	e.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.sas) != 0 || len(e.half.byKey) != 0 || e.half.reaping {
		t.Fatalf("after Close: %d SAs, %d half-open, reaper %v", len(e.sas), len(e.half.byKey), e.half.reaping)
	}
}

// TestFragmentMemoryBounded_RFC7383: fragments that never complete (no
// fragment 1) are held within FragmentMemoryPerSA per SA and
// FragmentMemory in all; the rest are dropped and counted before
// decryption, and an SA's fragments are freed when it expires.
func TestFragmentMemoryBounded_RFC7383(t *testing.T) {
	const size = 1000
	e, c := newResponder(t, func(c *Config) {
		c.FragmentMemoryPerSA, c.FragmentMemory = 8*fragCharge(size), 20*fragCharge(size)
		c.HalfOpenTimeout = 500 * time.Millisecond
	})
	sent := 0
	for i := range 4 {
		hc := halfOpen(t, e, c, src(i))
		frags, err := hc.Fragments(64, 2, 64, size)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frags {
			e.Handle(f, gwAddr, src(i), false)
			sent++
			if b := e.Counters().FragmentBytes; b > 20*fragCharge(size) {
				t.Fatalf("%d bytes of fragments held, bound %d", b, 20*fragCharge(size))
			}
		}
	}
	st := e.Counters()
	// 8 + 8 fit, then 4 of the third SA's: 20 held in all.
	if held := st.FragmentBytes / fragCharge(size); held != 20 || st.Drops[DropFragMemory] != uint64(sent-20) {
		t.Fatalf("%d fragments held, %d dropped of %d; want 20 held, %d dropped", held, st.Drops[DropFragMemory], sent, sent-20)
	}
	waitFor(t, "the SAs to expire", func() bool { return e.Counters().HalfOpen == 0 })
	if b := e.Counters().FragmentBytes; b != 0 {
		t.Fatalf("%d bytes of fragments held after the SAs expired", b)
	}
}

// BenchmarkHalfOpenExpiry: the cost of expiring one half-open SA, with
// many of them (it was O(n) each: a scan of the table).
func BenchmarkHalfOpenExpiry(b *testing.B) {
	e, c := newResponder(b, func(c *Config) { c.CookieThreshold, c.HalfOpenPerSource, c.HalfOpenMax = 1<<30, 1<<30, 1<<30 })
	for i := range b.N {
		halfOpen(b, e, c, src(i))
	}
	b.ResetTimer()
	e.mu.Lock()
	for e.half.head != nil {
		e.half.head.destroy(DownHalfOpenTimeout)
	}
	e.mu.Unlock()
}

// TestConcurrentIKEAuthOutsideLock: many road warriors authenticate with
// certificates at once; the gateway checks and makes signatures, and does
// IKE_SA_INIT's Diffie-Hellman, without its lock, from several goroutines
// (the wire delivers each message on a goroutine of its own). Every one
// gets its IKE SA, and the race detector sees no unguarded state.
func TestConcurrentIKEAuthOutsideLock(t *testing.T) {
	const n = 12
	rwCfg, gwCfg := certConfigs(t, ModeVirtual)
	p := newPair(t, rwCfg, gwCfg)
	up := make(chan int, n)
	for i := range n {
		addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		cfg := rwCfg
		pl := new(plane)
		cfg.Initiator, cfg.Send, cfg.Install, cfg.Remove, cfg.Log = true, p.w.send(addr), pl.install, pl.remove, testLog(t)
		cfg.LocalID = mustID(t, "rw1@roamsec.example")
		cfg.Progress = func(pr Progress) {
			if pr.Kind == EvIKEEstablished {
				up <- i
			}
		}
		rw, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rw.Close)
		p.w.mu.Lock()
		p.w.owners[addr] = rw
		p.w.mu.Unlock()
		if _, err := rw.Connect(addr, netip.AddrPortFrom(gwAddr, 500)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]bool{}
	deadline := time.After(30 * time.Second)
	for len(seen) < n {
		select {
		case i := <-up:
			seen[i] = true
		case <-deadline:
			t.Fatalf("%d of %d road warriors established", len(seen), n)
		}
	}
	if st := p.gw.Counters(); st.HalfOpen != 0 {
		t.Fatalf("%d half-open SAs left after every IKE_AUTH", st.HalfOpen)
	}
}

// RFC 7296 §2.6: a responder's cost per IKE_SA_INIT from a real address is
// its Diffie-Hellman. The answer carries only our public value; g^ir and
// the keys wait for the SA's first encrypted message, so a half-open SA
// that never sends one (a cookie-answering flood) costs no shared secret,
// and one that does (here a fragment, RFC 7383) gets the keys the
// initiator has.
func TestHalfOpenDefersSharedSecret_RFC7296_2_6(t *testing.T) {
	e, c := newResponder(t, nil)
	from := src(1)
	hc := halfOpen(t, e, c, from)
	if hc == nil {
		t.Fatal("no IKE_SA_INIT answer")
	}
	sa := func() *ikeSA {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.sas[hc.SPIr]
	}
	s := sa()
	e.mu.Lock()
	deferred, keyed := s.peerKE != nil, s.recvKey != nil
	e.mu.Unlock()
	if !deferred || keyed {
		t.Fatalf("after IKE_SA_INIT: peer KE kept %v, keys %v; want the keys deferred", deferred, keyed)
	}
	frags, err := hc.Fragments(2, 1, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	e.Handle(frags[0], gwAddr, from, false)
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.recvKey == nil || s.peerKE != nil || s.dh != nil {
		t.Fatalf("after the first encrypted message: keys %v, peer KE kept %v", s.recvKey != nil, s.peerKE != nil)
	}
	if e.fragBytes == 0 {
		t.Fatalf("the fragment was not authenticated with the derived keys (dropped %d)", e.Stats.Dropped)
	}
}

// RFC 7296 §2.12 lets a responder reuse its DH value across IKE SAs. While
// cookies are demanded (a flood from real addresses) the gateway answers
// IKE_SA_INIT with one value for a while, saving a multiplication per
// half-open SA; otherwise every IKE SA gets its own (forward secrecy
// between them). The initiator's keys still work with a reused value.
func TestResponderReusesDHOnlyInCookieMode_RFC7296_2_12(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int
		same      bool
	}{
		{"cookie mode: one DH value", -1, true},
		{"no cookie mode: one each", 1000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, c := newResponder(t, func(cfg *Config) { cfg.CookieThreshold = tc.threshold })
			a, b := halfOpen(t, e, c, src(1)), halfOpen(t, e, c, src(2))
			if a == nil || b == nil {
				t.Fatal("no IKE_SA_INIT answer")
			}
			if same := bytes.Equal(a.peerKE, b.peerKE); same != tc.same {
				t.Fatalf("the two answers' KE data equal: %v, want %v", same, tc.same)
			}
			frags, err := b.Fragments(2, 1, 1, 100)
			if err != nil {
				t.Fatal(err)
			}
			e.Handle(frags[0], gwAddr, src(2), false)
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.fragBytes == 0 {
				t.Fatal("the second SA's fragment was not authenticated")
			}
		})
	}
}
