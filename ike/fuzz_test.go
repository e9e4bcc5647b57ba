package ike

import (
	"net/netip"
	"testing"
)

// FuzzHandle feeds arbitrary datagrams to a gateway endpoint, after a real
// exchange so that established SAs exist: nothing may panic, and the
// endpoint must still complete a fresh handshake afterwards.
func FuzzHandle(f *testing.F) {
	t := &testing.T{}
	rwC, gwC := pskConfigs(t, ModeVirtual)
	gwC.Peers[0].VirtualPool = netip.MustParsePrefix("100.64.0.0/8")
	w, rw, gw, rp, _ := newSync(f, rwC, gwC)
	w.queue = nil
	rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	var seeds [][]byte
	for len(w.queue) > 0 {
		q := w.queue[0]
		w.queue = w.queue[1:]
		seeds = append(seeds, q.msg)
		q.to.Handle(q.msg, q.local, q.remote, q.natT)
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, toRW bool) {
		if toRW {
			rw.Handle(b, rwAddr, netip.AddrPortFrom(gwAddr, 4500), true)
		} else {
			gw.Handle(b, gwAddr, netip.AddrPortFrom(rwAddr, 500), false)
		}
		w.queue = nil // whatever it answered goes nowhere
		before := rp.installs
		rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
		w.pump(gw)
		if rp.installs != before+1 {
			t.Fatalf("no handshake after a fuzzed datagram")
		}
	})
}

// FuzzScreen feeds arbitrary datagrams to the lock-free cookie check of a
// gateway in cookie mode: nothing may panic; whatever Screen takes is
// answered with a COOKIE or counted as dropped, and a real initiator that
// returns the cookie still gets through afterwards.
func FuzzScreen(f *testing.F) {
	e, c := newResponder(f, func(cfg *Config) { cfg.CookieThreshold = -1 })
	hc, err := NewHalfOpenClient(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(hc.Request())
	f.Add(hc.Request()[:40])
	f.Add([]byte{})
	from := src(7)
	n := 0
	f.Fuzz(func(t *testing.T, b []byte) {
		n++ // a fresh real initiator each time: one address holds at most half_open_per_source
		before := e.Counters()
		took := e.Screen(b, gwAddr, from, false)
		after := e.Counters()
		sent := c.take(from)
		cookies, dropped := after.Cookies-before.Cookies, after.Dropped-before.Dropped
		switch {
		case !took && (len(sent) != 0 || cookies+dropped != 0):
			t.Fatalf("passed on, yet sent %d and counted %d cookies, %d drops", len(sent), cookies, dropped)
		case took && !(cookies == 1 && dropped == 0 && len(sent) == 1 || cookies == 0 && dropped == 1 && len(sent) == 0):
			t.Fatalf("taken: sent %d, counted %d cookies, %d drops; want one COOKIE sent or one drop", len(sent), cookies, dropped)
		}
		if halfOpen(t, e, c, src(8+n%60000)) == nil {
			t.Fatal("no IKE_SA_INIT answer after a fuzzed datagram")
		}
	})
}
