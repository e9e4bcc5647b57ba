package ike

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
)

// RFC 7296 §2.6: while cookies are demanded, an IKE_SA_INIT request
// without the right COOKIE is answered statelessly. Screen does it without
// the endpoint's lock (the test holds it throughout), keeps no state, and
// lets a request with the right cookie through to Handle.
func TestScreenAnswersCookieWithoutLock_RFC7296_2_6(t *testing.T) {
	e, c := newResponder(t, func(cfg *Config) { cfg.CookieThreshold = -1 }) // cookies always
	hc, err := NewHalfOpenClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	from := src(1)
	e.mu.Lock()
	took := e.Screen(hc.Request(), gwAddr, from, false)
	half := len(e.half.byKey)
	e.mu.Unlock()
	if !took || half != 0 {
		t.Fatalf("Screen took %v, %d half-open SAs; want it answered and none", took, half)
	}
	got := c.take(from)
	if len(got) != 1 || !errors.Is(hc.Response(got[0]), ErrCookie) {
		t.Fatalf("want one COOKIE answer, got %d messages", len(got))
	}
	if e.Screen(hc.Request(), gwAddr, from, false) {
		t.Fatal("Screen took a request with the right cookie")
	}
	e.Handle(hc.Request(), gwAddr, from, false)
	if got := c.take(from); len(got) != 1 || hc.Response(got[0]) != nil {
		t.Fatal("the request with the cookie did not get its IKE_SA_INIT response")
	}
	// The cookie is bound to the source address: from another, asked again.
	if !e.Screen(hc.Request(), gwAddr, src(2), false) {
		t.Fatal("a cookie made for another address passed")
	}
	if st := e.Counters(); st.Cookies != 2 || st.HalfOpen != 1 {
		t.Fatalf("cookies %d half-open %d, want 2 and 1", st.Cookies, st.HalfOpen)
	}
}

// The cheap path only acts in cookie mode and only on IKE_SA_INIT
// requests; a malformed one in cookie mode is dropped there and counted.
func TestScreenOnlyInitRequestsInCookieMode(t *testing.T) {
	hc, err := NewHalfOpenClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	req := hc.Request()
	noNonce := (&message.Message{Header: message.Header{SPIi: 9, Version: 0x20, Exchange: message.IKE_SA_INIT, Flags: message.FlagInitiator},
		Payloads: []message.Payload{ikeSAPayload(DefaultIKEProposals, nil)}}).Encode()
	auth := append([]byte(nil), req...)
	auth[8], auth[18] = 1, byte(message.IKE_AUTH)
	for _, tc := range []struct {
		name      string
		threshold int
		msg       []byte
		took      bool
		dropped   uint64
	}{
		{name: "cookie mode off: to Handle", threshold: 64, msg: req},
		{name: "not IKE_SA_INIT: to Handle", threshold: -1, msg: auth},
		{name: "malformed header: to Handle", threshold: -1, msg: req[:20]},
		{name: "no nonce: dropped, counted", threshold: -1, msg: noNonce, took: true, dropped: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, c := newResponder(t, func(cfg *Config) { cfg.CookieThreshold = tc.threshold })
			if took := e.Screen(tc.msg, gwAddr, src(1), false); took != tc.took {
				t.Fatalf("took %v, want %v", took, tc.took)
			}
			if got := c.take(src(1)); len(got) != 0 {
				t.Fatalf("Screen sent %d messages", len(got))
			}
			if d := e.Counters().Dropped; d != tc.dropped {
				t.Fatalf("dropped %d, want %d", d, tc.dropped)
			}
		})
	}
}

// An initiator whose IKE_SA_INIT was admitted before cookies were demanded
// and whose response was lost retransmits without a cookie; Screen asks
// for one (it cannot see the half-open SA without the lock), and the
// initiator starts over with the same SPI and the cookie: the old
// half-open SA makes way, the new request is answered.
func TestRestartWithCookieReplacesHalfOpen_RFC7296_2_6(t *testing.T) {
	e, c := newResponder(t, func(cfg *Config) { cfg.CookieThreshold = 1 })
	hc, err := NewHalfOpenClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	from := src(1)
	e.Handle(hc.Request(), gwAddr, from, false)
	c.take(from) // the response, lost
	if !e.Screen(hc.Request(), gwAddr, from, false) {
		t.Fatal("the retransmission was not asked for a cookie")
	}
	got := c.take(from)
	if len(got) != 1 || !errors.Is(hc.Response(got[0]), ErrCookie) {
		t.Fatal("no COOKIE answer")
	}
	e.Handle(hc.Request(), gwAddr, from, false)
	if got := c.take(from); len(got) != 1 || hc.Response(got[0]) != nil {
		t.Fatal("the request with the cookie was not answered")
	}
	if st := e.Counters(); st.HalfOpen != 1 {
		t.Fatalf("%d half-open SAs, want 1 (the old one replaced)", st.HalfOpen)
	}
}

// RFC 7296 §2.4: INITIAL_CONTACT finds the old IKE SAs of an identity
// through Endpoint.byPeer; its list through the SAs stays exact as SAs of
// one identity come and go in any order.
func TestPeerIndexListExact_RFC7296_2_4(t *testing.T) {
	e, _ := newResponder(t, nil)
	e.mu.Lock()
	defer e.mu.Unlock()
	var sas []*ikeSA
	for i := range 5 {
		s := e.newSA(false, gwAddr, src(i), false)
		s.peerID = auth.Identity{Type: auth.IDFQDN, Data: []byte("rw.example")}
		e.indexPeer(s)
		e.indexPeer(s) // twice: filed once
		sas = append(sas, s)
	}
	count := func() (n int) {
		for o := e.byPeer[peerKey(sas[0].peerID)]; o != nil; o = o.byPeer.next {
			n++
		}
		return n
	}
	for _, i := range []int{2, 4, 0, 2} { // middle, first filed (last in list), head, again
		e.unindexPeer(sas[i])
	}
	if n := count(); n != 2 {
		t.Fatalf("%d SAs listed, want 2", n)
	}
	e.unindexPeer(sas[1])
	e.unindexPeer(sas[3])
	if len(e.byPeer) != 0 {
		t.Fatalf("%d identities left", len(e.byPeer))
	}
}

// The Screener (one per reading goroutine, answers sent in batches by the
// caller) answers exactly as Screen does, the COOKIE answer byte for byte
// what the message encoder makes of it (RFC 7296 §2.6, §3.10), for either
// family, and allocates nothing per spoofed request.
func TestScreenerAnswersAsScreen_RFC7296_2_6(t *testing.T) {
	e, c := newResponder(t, func(cfg *Config) { cfg.CookieThreshold = -1 })
	hc, err := NewHalfOpenClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	req := hc.Request()
	sc := e.NewScreener()
	for _, tc := range []struct {
		name string
		from netip.AddrPort
	}{
		{"IPv4 source", src(1)},
		{"IPv6 source", netip.MustParseAddrPort("[2001:db8::7]:500")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			took, answer := sc.Screen(req, tc.from, nil)
			if !took {
				t.Fatal("the Screener did not take a request without a cookie")
			}
			if !e.Screen(req, gwAddr, tc.from, false) {
				t.Fatal("Screen did not take it")
			}
			sent := c.take(tc.from)
			want := (&message.Message{Header: message.Header{SPIi: hc.SPIi, Version: 0x20, Exchange: message.IKE_SA_INIT, Flags: message.FlagResponse},
				Payloads: []message.Payload{notify(message.COOKIE, e.cookie(hc.ni, tc.from, hc.SPIi))}}).Encode()
			if len(sent) != 1 || !bytes.Equal(sent[0], want) || !bytes.Equal(answer, want) {
				t.Fatalf("answers differ:\nScreener %x\nScreen   %x\nencoder  %x", answer, sent, want)
			}
			buf := make([]byte, 0, 128)
			if a := testing.AllocsPerRun(100, func() { sc.Screen(req, tc.from, buf[:0]) }); a != 0 {
				t.Fatalf("%v allocations per screened request, want 0", a)
			}
		})
	}
}
