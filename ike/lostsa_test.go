package ike

import (
	"net/netip"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

// §2.21.4: a gateway that lost the IKE SA (restarted, or deleted it while
// the road warrior was frozen) answers the road warrior's liveness check
// with an unprotected INVALID_IKE_SPI, and the road warrior ends the IKE
// SA at once (ErrPeerLostSA) instead of sending into Child SAs nobody
// holds until its retransmissions run out (here 10 s of them).
func TestLivenessCheckToAPeerThatLostTheSAEndsIt_RFC7296_2_21_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.RetransmitTimeout, rw.RetransmitTries = 5*time.Second, 1
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	if n := p.gw.DropAll(); n != 1 { // the gateway forgets it, no word to the road warrior
		t.Fatalf("gateway dropped %d IKE SAs, want 1", n)
	}
	asked := time.Now()
	p.rw.CheckLiveness()
	failedWith(t, p, ErrPeerLostSA)
	if d := time.Since(asked); d > 4*time.Second {
		t.Errorf("the IKE SA ended %v after the check: the retransmission, not the answer", d)
	}
	if p.rw.Alive(gen) {
		t.Error("the IKE SA is still alive")
	}
	if c := p.gw.Counters(); c.InvalidSPIAnswered == 0 {
		t.Errorf("gateway counters %+v: no INVALID_IKE_SPI answered", c)
	}
}

// The unprotected INVALID_IKE_SPI counts only as the answer to our own
// liveness check in flight, with its Message ID: one that answers nothing
// (forged, or stale) is dropped and the SA stays.
func TestUnsolicitedInvalidIKESPIIsDropped_RFC7296_2_21_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	var spiI, spiR uint64
	var msgID uint32
	p.rwSA(t, func(s *ikeSA) { spiI, spiR, msgID = s.spiI, s.spiR, s.nextID })
	for _, id := range []uint32{msgID, msgID - 1} {
		m := &message.Message{Header: message.Header{SPIi: spiI, SPIr: spiR, Version: 0x20, Exchange: message.INFORMATIONAL,
			Flags: message.FlagResponse, MsgID: id}, Payloads: []message.Payload{notify(message.INVALID_IKE_SPI, nil)}}
		p.rw.Handle(m.Encode(), rwAddr, netip.AddrPortFrom(gwAddr, 4500), true)
	}
	if !p.rw.Alive(gen) {
		t.Fatal("an INVALID_IKE_SPI that answered no liveness check ended the IKE SA")
	}
	// The gateway still holds the SA: a liveness check gets its answer.
	p.rw.CheckLiveness()
	time.Sleep(200 * time.Millisecond)
	if !p.rw.Alive(gen) {
		t.Fatal("a liveness check answered by the peer ended the IKE SA")
	}
}

// A freeze shorter than our own liveness limit (a short SIGSTOP or
// suspend) but longer than wakeGap starts a liveness check at once: a
// peer with a shorter DPD than ours has deleted the SA meanwhile.
func TestWakeChecksLiveness_RFC7296_2_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.DPD, rw.RetransmitTimeout, rw.RetransmitTries = time.Hour, 5*time.Second, 1
	p := newPair(t, rw, gw)
	if _, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500)); err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	p.gw.DropAll()
	now := time.Now().Round(0)
	p.rw.mu.Lock()
	p.rw.checkFreeze(now.Add(-freezeTick-wakeGap/2), now) // too short: nothing
	p.rw.mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	select {
	case pr := <-p.prog:
		if pr.Kind == EvFailed {
			t.Fatalf("a gap shorter than wakeGap ended the SA: %v", pr)
		}
	default:
	}
	p.rw.mu.Lock()
	p.rw.checkFreeze(now.Add(-freezeTick-2*wakeGap), now)
	p.rw.mu.Unlock()
	failedWith(t, p, ErrPeerLostSA)
}

// An adopted address (our secondary's lease changed): the path-monitoring
// Child SA is replaced by one whose selectors name the new address (outer
// = inner, RFC 3554 §2), the gateway authorizes it (MOBIKE told it the
// address, RFC 4555 §3.6), both sides hold only the new one, and its
// inbound SA takes packets from every address the peer's selectors name.
func TestReaddressReplacesThePathMonitoringSA_RFC3554_2(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	newAddr := netip.MustParseAddr("198.51.100.77")
	p.w.owners[newAddr] = p.rw
	p.connect(t)
	checkPaired(t, p, 2)
	p.rw.Readdress(rwAddr2, newAddr)
	hostsWith := func(cs []*Child, a netip.Addr) bool {
		for _, c := range cs {
			if c.HostToHost {
				return c.Selector.Local.Contains(a) || c.Selector.Remote.Contains(a)
			}
		}
		return false
	}
	waitFor(t, "a path-monitoring Child SA naming the new address on both sides", func() bool {
		rs, gs := p.rp.snapshot(), p.gp.snapshot()
		return len(rs) == 2 && len(gs) == 2 && hostsWith(rs, newAddr) && hostsWith(gs, newAddr) && !hostsWith(rs, rwAddr2) && !hostsWith(gs, rwAddr2)
	})
	checkPaired(t, p, 2)
	for _, c := range p.rp.snapshot() {
		if c.HostToHost && (!c.In.PeerAddrs.Contains(gwAddr) || !c.In.PeerAddrs.Contains(gwAddr2)) {
			t.Errorf("the road warrior's path-monitoring inbound SA does not take the gateway's addresses: %v", c.In.PeerAddrs)
		}
	}
}

// §3.15.1: a road warrior connecting again asks for the virtual address
// it had; a gateway that holds no lease for it (it restarted) and where
// nobody else holds that address gives it back, so connections
// established on it survive the reconnect. Here the first free address
// of the pool is another one, which a request for "any" would get.
func TestReconnectAsksForTheSameVirtualAddress_RFC7296_3_15_1(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	first := netip.MustParseAddr("100.64.0.1")
	p.gw.mu.Lock()
	p.gw.leased[first] = "someone else"
	p.gw.mu.Unlock()
	vipOf := func() netip.Addr {
		for _, c := range p.rp.snapshot() {
			if len(c.VirtualIP) == 1 {
				return c.VirtualIP[0]
			}
		}
		return netip.Addr{}
	}
	p.connect(t)
	waitFor(t, "a virtual address", func() bool { return vipOf().IsValid() })
	had := vipOf()
	if had == first {
		t.Fatalf("got %v, which another identity holds", had)
	}
	// The gateway restarts: no IKE SA, no lease; the pool's first address is free.
	p.gw.DropAll()
	p.gw.mu.Lock()
	clear(p.gw.leases)
	clear(p.gw.leased)
	p.gw.mu.Unlock()
	p.rw.Reset()
	waitFor(t, "the old Child SAs gone", func() bool { return len(p.rp.snapshot()) == 0 })
	p.connect(t)
	waitFor(t, "a virtual address again", func() bool { return vipOf().IsValid() })
	if got := vipOf(); got != had {
		t.Fatalf("virtual address %v after the reconnect, want the one it had (%v)", got, had)
	}
}

// A gateway whose IKE SAs may come by import (NoInvalidSPI: an HA pair,
// context put after a restart) stays silent to requests for SAs it does
// not hold: the road warrior keeps its SA until its own check runs out.
func TestNoInvalidSPIWhileSAsMayBeImported_RFC7296_2_21_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.RetransmitTimeout, rw.RetransmitTries = 5*time.Second, 1
	gw.NoInvalidSPI = true
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	p.gw.DropAll()
	p.rw.CheckLiveness()
	time.Sleep(300 * time.Millisecond)
	if !p.rw.Alive(gen) {
		t.Fatal("the IKE SA ended: the gateway answered INVALID_IKE_SPI")
	}
	if c := p.gw.Counters(); c.InvalidSPIAnswered != 0 {
		t.Fatalf("gateway answered %d INVALID_IKE_SPI", c.InvalidSPIAnswered)
	}
}
