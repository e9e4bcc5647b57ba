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
