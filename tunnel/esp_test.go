package tunnel

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var transforms = []Transform{AESGCM128, AESGCM256, ChaCha20Poly1305}

// RFC 4303 §2 / §3.3: a tunnel-mode packet of either family goes in and
// comes out unchanged, with the right next header, for every transform and
// with and without extended sequence numbers.
func TestRFC4303_RoundTrip(t *testing.T) {
	inners := map[string][]byte{
		"ipv4-icmp":  ipv4Packet(rwAddr, srvAddr, ProtoICMP, 0, 0, 56),
		"ipv4-tcp":   ipv4Packet(rwAddr, srvAddr, ProtoTCP, 40000, 80, 1400),
		"ipv4-sctp":  ipv4Packet(rwAddr, srvAddr, ProtoSCTP, 5000, 5001, 100),
		"ipv6-udp":   ipv6Packet(rwAddr6, srv6, ProtoUDP, 1, 2, 1),
		"ipv4-small": ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 0),
	}
	for _, tr := range transforms {
		for _, esn := range []bool{false, true} {
			out, in := saPair(t, tr, func(c *SAConfig) { c.ESN = esn })
			for name, inner := range inners {
				esp := sealPacket(t, out, inner)
				wantNH := byte(NextHeaderIPv4)
				if inner[0]>>4 == 6 {
					wantNH = NextHeaderIPv6
				}
				if (len(esp)-HeaderLen-icvLen)%4 != 0 {
					t.Fatalf("%v/%s: not 4-byte aligned (RFC 4303 §2.4)", tr, name)
				}
				if bytes.Contains(esp, inner[20:]) && len(inner) > 40 {
					t.Fatalf("%v/%s: plaintext visible in ESP", tr, name)
				}
				got, err := in.Open(rwAddr, esp)
				if err != nil {
					t.Fatalf("%v esn=%v %s: %v", tr, esn, name, err)
				}
				if !bytes.Equal(got, inner) {
					t.Fatalf("%v/%s: inner differs", tr, name)
				}
				_ = wantNH
			}
		}
	}
}

// RFC 4303 §2.2: the first packet has sequence 1, then 2, 3, ...; the IV is
// distinct for every packet under one key (RFC 4106 §3.1).
func TestRFC4303_SequenceAndUniqueIV(t *testing.T) {
	out, _ := saPair(t, AESGCM128, nil)
	seen := map[string]bool{}
	for i := uint32(1); i <= 1000; i++ {
		esp := sealPacket(t, out, ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10))
		if seq := uint32(esp[4])<<24 | uint32(esp[5])<<16 | uint32(esp[6])<<8 | uint32(esp[7]); seq != i {
			t.Fatalf("packet %d carries sequence %d", i, seq)
		}
		iv := string(esp[8:16])
		if seen[iv] {
			t.Fatalf("IV repeated at packet %d", i)
		}
		seen[iv] = true
	}
}

// RFC 4303 §3.3.3: "the sender ... MUST NOT ... cycle" the sequence
// number: it stops and asks for a rekey, soft before hard.
func TestRFC4303_3_3_3_SenderNeverWraps(t *testing.T) {
	for _, esn := range []bool{false, true} {
		var mu sync.Mutex
		var events []LifetimeEvent
		out, _ := saPair(t, AESGCM128, func(c *SAConfig) {
			c.ESN = esn
			c.OnLifetime = func(e LifetimeEvent) { mu.Lock(); events = append(events, e); mu.Unlock() }
		})
		out.seq.Store(out.maxSeq - 1)
		inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10)
		esp := sealPacket(t, out, inner) // the last number: allowed
		if got := uint32(esp[4])<<24 | uint32(esp[5])<<16 | uint32(esp[6])<<8 | uint32(esp[7]); got != uint32(out.maxSeq) {
			t.Fatalf("last sequence %#x", got)
		}
		buf := make([]byte, HeaderLen+len(inner), 200)
		copy(buf[HeaderLen:], inner)
		if _, err := out.Seal(buf, len(inner)); !errors.Is(err, DropExpired) {
			t.Fatalf("esn=%v: sealing past the sequence space: %v", esn, err)
		}
		mu.Lock()
		if len(events) != 2 || events[0].Hard || !events[1].Hard || events[1].Reason != "sequence" {
			t.Fatalf("esn=%v: events %+v", esn, events)
		}
		mu.Unlock()
		if out.Alive() {
			t.Fatal("SA alive after its sequence space ended")
		}
	}
}

// RFC 4303 §2.4: padding bytes are 1, 2, 3, ... and the receiver checks
// them; RFC 4303 §2.6: next header 59 is a dummy packet, dropped silently.
func TestRFC4303_2_4_PaddingAndDummy(t *testing.T) {
	inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 1) // 29 bytes: 1 pad byte
	cases := []struct {
		name    string
		trailer []byte
		want    error
	}{
		{"monotonic padding accepted", []byte{1, 1, 4}, nil},
		{"wrong padding byte", []byte{7, 1, 4}, DropBadPadding},
		{"pad length beyond payload", []byte{1, 200, 4}, DropBadPadding},
		{"next header 59 dummy", []byte{1, 1, 59}, DropDummy},
		{"next header not IP in tunnel mode", []byte{1, 1, 6}, DropMalformed},
		{"next header 41 with an IPv4 packet", []byte{1, 1, 41}, DropMalformed},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, in := saPair(t, AESGCM256, nil)
			pt := append(bytes.Clone(inner), c.trailer...)
			_, err := in.Open(rwAddr, sealRaw(t, in, pt, uint32(i+1)))
			if !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want != nil && in.Counters.Drops[c.want.(DropReason)].Load() != 1 {
				t.Fatalf("drop not counted")
			}
		})
	}
}

// RFC 4303 §3.4.4: an ICV failure drops the packet: a wrong key, a flipped
// bit anywhere (header, IV, ciphertext, ICV).
func TestRFC4303_3_4_4_ICVFailure(t *testing.T) {
	out, _ := saPair(t, ChaCha20Poly1305, nil)
	_, wrong := saPair(t, ChaCha20Poly1305, func(c *SAConfig) { c.Key = testKey(ChaCha20Poly1305, 99) })
	esp := sealPacket(t, out, ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 100))
	if _, err := wrong.Open(rwAddr, bytes.Clone(esp)); !errors.Is(err, DropICV) {
		t.Fatalf("wrong key: %v", err)
	}
	for _, off := range []int{5, 9, HeaderLen + 3, len(esp) - 1} {
		_, in := saPair(t, ChaCha20Poly1305, nil)
		bad := bytes.Clone(esp)
		bad[off] ^= 0x40
		if _, err := in.Open(rwAddr, bad); !errors.Is(err, DropICV) && !errors.Is(err, DropReplay) {
			t.Fatalf("bit flip at %d: %v", off, err)
		}
		if in.Counters.Drops[DropICV].Load()+in.Counters.Drops[DropReplay].Load() != 1 {
			t.Fatal("not counted")
		}
		// The forged packet must not have moved the window: the real one
		// with the same sequence still gets in (RFC 4303 §3.4.3).
		if _, err := in.Open(rwAddr, bytes.Clone(esp)); err != nil {
			t.Fatalf("genuine packet after a forgery at %d: %v", off, err)
		}
	}
	if wrong.Counters.Drops[DropICV].Load() != 1 {
		t.Fatal("ICV failure not counted")
	}
}

// RFC 4303 §3.4.3: a replayed packet is dropped and counted.
func TestRFC4303_3_4_3_ReplayedPacketDropped(t *testing.T) {
	out, in := saPair(t, AESGCM128, nil)
	esp := sealPacket(t, out, ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10))
	if _, err := in.Open(rwAddr, bytes.Clone(esp)); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Open(rwAddr, bytes.Clone(esp)); !errors.Is(err, DropReplay) {
		t.Fatalf("replay: %v", err)
	}
	if in.Counters.Drops[DropReplay].Load() != 1 || in.Counters.Packets.Load() != 1 {
		t.Fatalf("counters %+v", in.Counters.Snapshot())
	}
}

// RFC 4301 §5.2 step 4: after decapsulation the inner packet must match
// the SA's selectors, else it is dropped.
func TestRFC4301_5_2_InnerPacketMustMatchSelectors(t *testing.T) {
	sel := Selector{
		Local:  MustAddrSet("192.0.2.2", "198.51.100.2"), // road warrior's own addresses
		Remote: MustAddrSet("203.0.113.0/24"),
		Proto:  ProtoSCTP, LocalPorts: PortRange{5000, 5000}, RemotePorts: PortRange{9899, 9899},
	}
	cases := []struct {
		name  string
		inner []byte
		ok    bool
	}{
		{"SCTP from the primary address", ipv4Packet(rwAddr, srvAddr, ProtoSCTP, 5000, 9899, 20), true},
		{"SCTP from the secondary address, same SA (RFC 3554 §2)", ipv4Packet(rwAddr2, srvAddr, ProtoSCTP, 5000, 9899, 20), true},
		{"source outside the set", ipv4Packet(netip.MustParseAddr("192.0.2.99"), srvAddr, ProtoSCTP, 5000, 9899, 20), false},
		{"destination outside the set", ipv4Packet(rwAddr, netip.MustParseAddr("198.51.100.9"), ProtoSCTP, 5000, 9899, 20), false},
		{"wrong protocol", ipv4Packet(rwAddr, srvAddr, ProtoTCP, 5000, 9899, 20), false},
		{"wrong port", ipv4Packet(rwAddr, srvAddr, ProtoSCTP, 5001, 9899, 20), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Sealed by an SA with wide selectors so the bad packets exist.
			out, _ := saPair(t, AESGCM128, nil)
			_, in := saPair(t, AESGCM128, func(cfg *SAConfig) { cfg.Selector = sel })
			_, err := in.Open(rwAddr, sealPacket(t, out, c.inner))
			if c.ok != (err == nil) {
				t.Fatalf("err %v", err)
			}
			if !c.ok && (!errors.Is(err, DropPolicy) || in.Counters.Drops[DropPolicy].Load() != 1) {
				t.Fatalf("want a counted policy drop, got %v", err)
			}
		})
	}
}

// Seed 000 and RFC 3554 §2: ESP from any outer source inside the peer's
// pool is accepted on the same SA; from outside the pool it is dropped
// and counted, before any decryption.
func TestRFC3554_InboundSourceMustBeInPeerPool(t *testing.T) {
	pool := MustAddrSet("192.0.2.0/24", "2001:db8:1::/64", "198.51.100.7")
	cases := []struct {
		src string
		ok  bool
	}{
		{"192.0.2.2", true},
		{"192.0.2.254", true},
		{"198.51.100.7", true},
		{"2001:db8:1::abcd", true},
		{"198.51.100.8", false},
		{"203.0.113.2", false},
		{"2001:db8:2::1", false},
		{"::ffff:192.0.2.2", false}, // v4-mapped is not the v4 peer
	}
	out, _ := saPair(t, AESGCM128, nil)
	_, in := saPair(t, AESGCM128, func(c *SAConfig) { c.PeerAddrs = pool })
	for _, c := range cases {
		esp := sealPacket(t, out, ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10))
		_, err := in.Open(netip.MustParseAddr(c.src), esp)
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, DropNotInPool)) {
			t.Errorf("outer source %s: %v", c.src, err)
		}
	}
	if got := in.Counters.Drops[DropNotInPool].Load(); got != 4 {
		t.Fatalf("not-in-pool drops %d, want 4", got)
	}
}

// Malformed input is a counted drop, never a panic.
func TestMalformedIsCountedDrop(t *testing.T) {
	_, in := saPair(t, AESGCM128, nil)
	for _, n := range []int{0, 1, 8, 16, minESP - 2, minESP - 1, minESP + 1, minESP + 2, minESP + 3} {
		if _, err := in.Open(rwAddr, make([]byte, n)); !errors.Is(err, DropMalformed) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	out, _ := saPair(t, AESGCM128, nil)
	if _, err := out.Seal(make([]byte, HeaderLen+1, 100), 1); !errors.Is(err, DropMalformed) {
		t.Fatalf("non-IP inner: %v", err)
	}
	if _, err := out.Seal(make([]byte, HeaderLen+60), 60); !errors.Is(err, DropMalformed) {
		t.Fatalf("no trailer room: %v", err)
	}
}

// RFC 4301 §4.4.2.1: soft lifetimes ask for a rekey, hard lifetimes kill
// the SA, by packets, bytes and time.
func TestRFC4301_4_4_2_1_Lifetimes(t *testing.T) {
	events := make(chan LifetimeEvent, 10)
	out, _ := saPair(t, AESGCM128, func(c *SAConfig) {
		c.Lifetimes = Lifetimes{Soft: Limit{Packets: 3}, Hard: Limit{Bytes: 5 * 48}}
		c.OnLifetime = func(e LifetimeEvent) { events <- e }
	})
	inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 20) // 48 bytes
	for range 5 {
		sealPacket(t, out, inner)
	}
	if e := <-events; e.Hard || e.Reason != "packets" {
		t.Fatalf("first event %+v", e)
	}
	if e := <-events; !e.Hard || e.Reason != "bytes" {
		t.Fatalf("second event %+v", e)
	}
	buf := make([]byte, HeaderLen+len(inner), 200)
	copy(buf[HeaderLen:], inner)
	if _, err := out.Seal(buf, len(inner)); !errors.Is(err, DropExpired) {
		t.Fatalf("after hard lifetime: %v", err)
	}

	timed := make(chan LifetimeEvent, 2)
	in, err := NewSA(SAConfig{SPI: 0x2000, Dir: Inbound, Transform: AESGCM128, Key: testKey(AESGCM128, 0),
		Lifetimes:  Lifetimes{Soft: Limit{Time: 10 * time.Millisecond}, Hard: Limit{Time: 30 * time.Millisecond}},
		OnLifetime: func(e LifetimeEvent) { timed <- e }})
	if err != nil {
		t.Fatal(err)
	}
	for _, hard := range []bool{false, true} {
		select {
		case e := <-timed:
			if e.Hard != hard || e.Reason != "time" {
				t.Fatalf("time event %+v", e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("time lifetime never fired")
		}
	}
	if in.Alive() {
		t.Fatal("alive after hard time lifetime")
	}
}

// Key material is zeroed when an SA dies, and String never shows it.
func TestKeyZeroedOnClose(t *testing.T) {
	out, _ := saPair(t, AESGCM256, nil)
	k := out.keys.Load()
	if bytes.Count(k.raw, []byte{0}) == len(k.raw) {
		t.Fatal("key already zero")
	}
	if bytes.Contains([]byte(out.String()), k.raw[:4]) {
		t.Fatal("String shows key bytes")
	}
	out.Close()
	if bytes.Count(k.raw, []byte{0}) != len(k.raw) {
		t.Fatal("key not zeroed")
	}
	inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 0)
	buf := make([]byte, HeaderLen+len(inner), 100)
	copy(buf[HeaderLen:], inner)
	if _, err := out.Seal(buf, len(inner)); !errors.Is(err, DropExpired) {
		t.Fatalf("seal after close: %v", err)
	}
}

func TestNewSA_RefusesBadConfig(t *testing.T) {
	good := SAConfig{SPI: 0x1234, Dir: Outbound, Transform: AESGCM128, Key: testKey(AESGCM128, 0), Outer: HostToHost()}
	cases := map[string]func(*SAConfig){
		"reserved SPI (RFC 4303 §2.1)": func(c *SAConfig) { c.SPI = 255 },
		"short key":                    func(c *SAConfig) { c.Key = c.Key[:16] },
		"unknown transform":            func(c *SAConfig) { c.Transform = 9 },
		"no direction":                 func(c *SAConfig) { c.Dir = 0 },
		"no outer destination":         func(c *SAConfig) { c.Outer = OuterRule{SrcFromInner: true} },
		"replay window too small":      func(c *SAConfig) { c.Dir = Inbound; c.ReplayWindow = 64 },
	}
	if _, err := NewSA(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range cases {
		c := good
		mod(&c)
		if _, err := NewSA(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The steady state allocates nothing (hot path rule).
func TestSealOpenDoNotAllocate(t *testing.T) {
	out, in := saPair(t, AESGCM128, nil)
	inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 1000)
	buf := make([]byte, 2000)
	allocs := testing.AllocsPerRun(1000, func() {
		copy(buf[HeaderLen:], inner)
		esp, err := out.Seal(buf, len(inner))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Open(rwAddr, esp); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet", allocs)
	}
}
