package tunnel

import (
	"bytes"

	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// The gateway's RFC 3554 rule with a PeerTracker (outer.go, addrs): one row
// per rule, each named after it. Times are injected (seenAt), in ms.
func TestOuterRulesFollowWhatThePeerProved(t *testing.T) {
	ap := netip.MustParseAddrPort
	gwA, gwB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	gwV6 := netip.MustParseAddr("2001:db8:2::1")
	ike := netip.MustParseAddr("192.0.2.2") // the road warrior's IKE endpoint
	type heard struct {
		from    string
		local   netip.Addr
		monitor bool
		atMs    int64
	}
	ms := int64(time.Millisecond)
	cases := []struct {
		rule     string
		nat      bool
		heard    []heard
		innerDst netip.Addr
		wantSrc  netip.Addr
		wantDst  netip.AddrPort // port 0: the SA's PeerPort
	}{
		{"rule 4: nothing heard yet, the IKE endpoint", false, nil,
			rwAddr2, gwA, netip.AddrPortFrom(ike, 0)},
		{"rule 1: proven and live, the inner destination (RFC 3554 §2)", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 1}, {"198.51.100.2:4500", gwB, true, 2}},
			rwAddr2, gwB, ap("198.51.100.2:4500")},
		{"rule 1: the primary, proven and live", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 1}, {"198.51.100.2:4500", gwB, true, 2}},
			rwAddr, gwA, ap("192.0.2.2:4500")},
		{"rule 3: an address in TSi the peer never sent from (strongSwan) gets ESP at the address it sends from", false,
			[]heard{{"192.0.2.2:4500", gwA, false, 1}},
			rwAddr2, gwA, ap("192.0.2.2:4500")},
		{"rule 3: a dead path (silent while the other talked) moves to the live address", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 100}, {"198.51.100.2:4500", gwB, true, 500}},
			rwAddr, gwB, ap("198.51.100.2:4500")},
		{"rule 1: a silence shorter than the threshold is not death", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 350}},
			rwAddr, gwA, ap("192.0.2.2:4500")},
		{"rule 1: everything silent, nothing is declared dead", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 120}},
			rwAddr, gwA, ap("192.0.2.2:4500")},
		{"rule 1: a path heard again lives again", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 900}, {"192.0.2.2:4500", gwA, true, 950}},
			rwAddr, gwA, ap("192.0.2.2:4500")},
		{"monitored peer: its network traffic from a dead address over the other path does not revive it", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 900}, {"192.0.2.2:4500", gwB, false, 950}},
			rwAddr, gwB, ap("198.51.100.2:4500")},
		{"rule 1: a path the monitored peer moved its own traffic off is not live (dead one way)", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 100},
				{"192.0.2.2:4500", gwA, false, 110}, {"192.0.2.2:4500", gwA, true, 200}, {"198.51.100.2:4500", gwB, true, 200},
				{"192.0.2.2:4500", gwB, false, 210}},
			rwAddr, gwB, ap("198.51.100.2:4500")},
		{"rule 1: the peer's traffic back on the path makes it live again", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 100},
				{"192.0.2.2:4500", gwA, false, 110}, {"192.0.2.2:4500", gwB, false, 210}, {"192.0.2.2:4500", gwA, false, 310}},
			rwAddr, gwA, ap("192.0.2.2:4500")},
		{"rule 1: a peer that never moved keeps RFC 3554's inner destination for its other address", false,
			[]heard{{"192.0.2.2:4500", gwA, true, 100}, {"198.51.100.2:4500", gwB, true, 100}, {"192.0.2.2:4500", gwA, false, 110}},
			rwAddr2, gwB, ap("198.51.100.2:4500")},
		{"rule 2: NAT detected, never the inner address: the NAT-mapped endpoint", true,
			[]heard{{"203.0.113.7:61000", gwA, false, 1}},
			rwAddr, gwA, ap("203.0.113.7:61000")},
		{"rule 2: NAT rebinding to a new port on the same address is followed", true,
			[]heard{{"203.0.113.7:61000", gwA, false, 1}, {"203.0.113.7:1024", gwA, false, 5}},
			rwAddr, gwA, ap("203.0.113.7:1024")},
		{"rule 2: NAT rebinding to a new address is followed", true,
			[]heard{{"203.0.113.7:61000", gwA, false, 1}, {"203.0.113.8:4500", gwA, false, 5}},
			rwAddr, gwA, ap("203.0.113.8:4500")},
		{"rule 2: with a NAT even an address the peer sent from is not used as inner = outer", true,
			[]heard{{"192.0.2.2:4500", gwA, false, 1}, {"203.0.113.7:4500", gwA, false, 5}},
			rwAddr, gwA, ap("203.0.113.7:4500")},
		{"rule 3: a peer heard only over IPv6 since its IPv4 went silent gets IPv4 inside IPv6 (RFC 4301 §5.1.2.1)", true,
			[]heard{{"192.0.2.2:4500", gwA, false, 100}, {"[2001:db8:2::2]:4500", gwV6, false, 150}, {"[2001:db8:2::2]:4500", gwV6, false, 600}},
			rwAddr, gwV6, ap("[2001:db8:2::2]:4500")},
		{"rule 3: the inner family's outer address while it is not silent longer than the threshold", true,
			[]heard{{"192.0.2.2:4500", gwA, false, 100}, {"[2001:db8:2::2]:4500", gwV6, false, 300}},
			rwAddr, gwA, ap("192.0.2.2:4500")},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			tr := new(PeerTracker)
			for _, h := range c.heard {
				tr.seenAt(ap(h.from), h.local, h.monitor, h.atMs*ms)
			}
			r := GatewayToRoadWarrior(gwA)
			r.Dst, r.FollowPeer, r.NAT = []netip.Addr{ike}, tr, c.nat
			src, dst, port, err := r.addrs(srvAddr, c.innerDst)
			if err != nil || src != c.wantSrc || netip.AddrPortFrom(dst, port) != c.wantDst {
				t.Fatalf("got %v -> %v (%v), want %v -> %v", src, netip.AddrPortFrom(dst, port), err, c.wantSrc, c.wantDst)
			}
		})
	}
}

// Virtual-address mode: the freshest endpoint, address and port.
func TestOuterRuleVirtualFollowsTheFreshestEndpoint(t *testing.T) {
	tr := new(PeerTracker)
	r := GatewayToGateway(gwAddr, rwAddr)
	r.FollowPeer = tr
	if _, d, p, _ := r.addrs(srvAddr, netip.MustParseAddr("100.64.0.2")); d != rwAddr || p != 0 {
		t.Fatalf("before any ESP: %v:%d", d, p)
	}
	tr.seenAt(netip.MustParseAddrPort("203.0.113.7:3000"), gwAddr, false, 10)
	if _, d, p, _ := r.addrs(srvAddr, netip.MustParseAddr("100.64.0.2")); d != netip.MustParseAddr("203.0.113.7") || p != 3000 {
		t.Fatalf("after ESP from the NAT: %v:%d", d, p)
	}
}

// The tracker forgets the address heard from longest ago when full, and
// keeps working.
func TestPeerTrackerReplacesTheStalestWhenFull(t *testing.T) {
	tr := new(PeerTracker)
	for i := range peerSlots + 3 {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		tr.seenAt(netip.AddrPortFrom(a, 4500), gwAddr, false, int64(i+1)*int64(time.Second))
	}
	if got := len(tr.Endpoints()); got != peerSlots {
		t.Fatalf("%d endpoints, want %d", got, peerSlots)
	}
	if tr.find(netip.AddrFrom4([4]byte{198, 51, 100, 10})) != nil {
		t.Fatal("the stalest address was kept")
	}
	if a := tr.Addr(true); a != netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + peerSlots + 2)}) {
		t.Fatalf("freshest %v", a)
	}
}

// Unauthenticated packets never move the destination: random ESP from
// random sources and ports (garbage, forged ICVs, replays of a valid
// packet from a new source) leaves the chosen outer destination where the
// authenticated traffic put it.
func TestOuterDestinationNeverMovedByUnauthenticatedESP(t *testing.T) {
	tracker := new(PeerTracker)
	rwOut, gwIn := saPair(t, AESGCM128, func(c *SAConfig) {
		c.PeerAddrs = MustAddrSet("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
		c.Peer = tracker
	})
	rule := GatewayToRoadWarrior(gwAddr)
	rule.Dst, rule.FollowPeer = []netip.Addr{rwAddr}, tracker
	inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 40)
	good := sealPacket(t, rwOut, inner)
	if _, err := gwIn.OpenFrom(netip.AddrPortFrom(rwAddr, 4500), gwAddr, bytes.Clone(good)); err != nil {
		t.Fatal(err)
	}
	want := func() netip.AddrPort {
		_, d, p, err := rule.addrs(srvAddr, rwAddr2)
		if err != nil {
			t.Fatal(err)
		}
		return netip.AddrPortFrom(d, p)
	}
	before := want()
	if before != netip.AddrPortFrom(rwAddr, 4500) {
		t.Fatalf("after one authenticated packet: %v", before)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte([]int{192, 198, 203}[rnd.IntN(3)]), byte([]int{0, 51, 0}[rnd.IntN(3)]), byte(rnd.IntN(256)), byte(rnd.IntN(256))}), uint16(rnd.IntN(65536)))
		var pkt []byte
		switch i % 3 {
		case 0: // garbage of any length
			pkt = make([]byte, rnd.IntN(200))
			for j := range pkt {
				pkt[j] = byte(rnd.Uint32())
			}
		case 1: // a fresh packet with one bit flipped
			pkt = sealPacket(t, rwOut, inner)
			pkt[rnd.IntN(len(pkt))] ^= 1 << rnd.IntN(8)
		case 2: // a valid packet replayed from elsewhere
			pkt = bytes.Clone(good)
		}
		if _, err := gwIn.OpenFrom(src, gwAddr, pkt); err == nil {
			t.Fatalf("packet %d accepted from %v", i, src)
		}
		if got := want(); got != before {
			t.Fatalf("packet %d (kind %d) from %v moved the destination to %v", i, i%3, src, got)
		}
	}
	// And an authenticated one does move it (the test can fail).
	if _, err := gwIn.OpenFrom(netip.MustParseAddrPort("198.51.100.2:1024"), gwAddr, sealPacket(t, rwOut, inner)); err != nil {
		t.Fatal(err)
	}
	if got := want(); got != netip.MustParseAddrPort("198.51.100.2:1024") {
		t.Fatalf("authenticated packet from the secondary: %v", got)
	}
}

func FuzzPeerTracker(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		tr := new(PeerTracker)
		r := GatewayToRoadWarrior(gwAddr)
		r.Dst, r.FollowPeer = []netip.Addr{rwAddr}, tr
		now := int64(1)
		for i := 0; i+3 < len(ops); i += 4 {
			a := netip.AddrFrom4([4]byte{198, 51, 100, ops[i] % 16})
			now += int64(ops[i+1]) * int64(10*time.Millisecond)
			tr.seenAt(netip.AddrPortFrom(a, uint16(ops[i+2])), gwAddr, ops[i+3]&1 == 1, now)
			r.NAT = ops[i+3]&2 == 2
			_, d, _, err := r.addrs(srvAddr, netip.AddrFrom4([4]byte{198, 51, 100, ops[i+3] % 16}))
			if err != nil || !d.IsValid() {
				t.Fatalf("no destination: %v", err)
			}
			if d != rwAddr && tr.find(d) == nil {
				t.Fatalf("destination %v never heard from", d)
			}
		}
		if len(tr.Endpoints()) > peerSlots {
			t.Fatal("tracker grew past its slots")
		}
	})
}

// IKE follows a NAT rebinding through Endpoint: the endpoint ESP came
// from last, and when.
func TestPeerTrackerEndpointIsTheLatestAuthenticated(t *testing.T) {
	tr := new(PeerTracker)
	if _, _, ok := tr.Endpoint(true); ok {
		t.Fatal("an endpoint before any packet")
	}
	old, moved := netip.MustParseAddrPort("192.0.2.2:4500"), netip.MustParseAddrPort("192.0.2.3:40001")
	tr.seen(old, gwAddr, false)
	_, t0, _ := tr.Endpoint(true)
	time.Sleep(5 * time.Millisecond)
	tr.seen(moved, gwAddr, false)
	ep, t1, ok := tr.Endpoint(true)
	if !ok || ep != moved || !t1.After(t0) || time.Since(t1) > time.Minute || t1.After(time.Now()) {
		t.Fatalf("endpoint %v at %v (before: %v)", ep, t1, t0)
	}
}
