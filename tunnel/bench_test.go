package tunnel

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

var benchSizes = []int{64, 512, 1400, 8000}

func benchInner(size int) []byte {
	return ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, size-28)
}

func BenchmarkSeal(b *testing.B) {
	for _, tr := range transforms {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%v/%d", tr, size), func(b *testing.B) {
				out, _ := saPair(b, tr, func(c *SAConfig) { c.ESN = true })
				inner := benchInner(size)
				buf := make([]byte, HeaderLen+size+MaxTrailer)
				copy(buf[HeaderLen:], inner)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					copy(buf[HeaderLen:], inner) // Seal encrypts in place
					if _, err := out.Seal(buf, size); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkOpen decrypts fresh packets (a pre-sealed batch, rotated so the
// replay window always sees new numbers), the full inbound SA path.
func BenchmarkOpen(b *testing.B) {
	for _, tr := range transforms {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%v/%d", tr, size), func(b *testing.B) {
				out, in := saPair(b, tr, func(c *SAConfig) { c.ESN = true })
				inner := benchInner(size)
				const batch = 1024
				sealed := make([][]byte, batch)
				for i := range sealed {
					sealed[i] = sealPacket(b, out, inner)
				}
				work := make([]byte, len(sealed[0]))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i == batch {
						// Re-seal a new batch outside the timer.
						b.StopTimer()
						for j := range sealed {
							sealed[j] = sealPacket(b, out, inner)
						}
						i = 0
						b.StartTimer()
					}
					copy(work, sealed[i])
					if _, err := in.Open(rwAddr, work); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkSADLookup: one lookup among 100,000 inbound SAs.
func BenchmarkSADLookup(b *testing.B) {
	var sad SAD
	key := testKey(AESGCM128, 0)
	r := rand.New(rand.NewPCG(7, 7))
	spis := make([]uint32, 100_000)
	local := MustAddrSet("192.0.2.1", "198.51.100.1")
	for i := range spis {
		for {
			spis[i] = r.Uint32() | 0x100
			sa, err := NewSA(SAConfig{SPI: spis[i], Dir: Inbound, Transform: AESGCM128, Key: key, LocalAddrs: local})
			if err != nil {
				b.Fatal(err)
			}
			if sad.Add(sa) == nil {
				break
			}
		}
	}
	dst := netip.MustParseAddr("198.51.100.1")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if sad.Lookup(dst, spis[i%len(spis)], ProtoESP) == nil {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkAddrSetContains compares binary search over merged ranges with
// the list walk of a naive multi-address SA (the baseline seed 000 improves
// on), at 1, 16, 256 and 4096 entries, IPv4 and IPv6, worst case for the
// walk (address not in the set).
func BenchmarkAddrSetContains(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{1, 16, 256, 4096} {
			ps := make([]netip.Prefix, n)
			for i := range ps {
				if v6 {
					var a [16]byte
					a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
					// every other /48: disjoint, so nothing merges
					a[4], a[5] = byte(i>>7), byte(i<<1)
					ps[i] = netip.PrefixFrom(netip.AddrFrom16(a), 48)
				} else {
					ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 25) // disjoint, unmergeable
				}
			}
			s, _ := NewAddrSet(ps...)
			if len(s.v4)+len(s.v6) != n {
				b.Fatalf("%d entries merged into %d ranges: the benchmark would not measure %d", n, len(s.v4)+len(s.v6), n)
			}
			miss := netip.MustParseAddr("192.0.2.1")
			if v6 {
				miss = netip.MustParseAddr("2001:db9::1")
			}
			fam := "v4"
			if v6 {
				fam = "v6"
			}
			b.Run(fmt.Sprintf("%s/set/%d", fam, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if s.Contains(miss) {
						b.Fatal("hit")
					}
				}
			})
			b.Run(fmt.Sprintf("%s/list/%d", fam, n), func(b *testing.B) {
				for b.Loop() {
					if listContains(ps, miss) {
						b.Fatal("hit")
					}
				}
			})
		}
	}
}

// BenchmarkOuterAddrs is the per-packet outer-address choice of a gateway
// (SPD.Encapsulate's path): the pure RFC 3554 rule, and the rule with a
// PeerTracker holding a live and a dead path of the road warrior (rule 1:
// proven and live; rule 3: dead, the freshest instead). It must not
// allocate.
func BenchmarkOuterAddrs(b *testing.B) {
	pure := GatewayToRoadWarrior(gwAddr)
	tr := new(PeerTracker)
	tr.seenAt(netip.AddrPortFrom(rwAddr, 4500), gwAddr, true, 1)
	tr.seenAt(netip.AddrPortFrom(rwAddr2, 4500), gwAddr, true, 1e9)
	followed := GatewayToRoadWarrior(gwAddr)
	followed.Dst, followed.FollowPeer = []netip.Addr{rwAddr}, tr
	for _, c := range []struct {
		name string
		r    *OuterRule
		dst  netip.Addr
	}{{"pure", &pure, rwAddr}, {"tracker/live", &followed, rwAddr2}, {"tracker/dead", &followed, rwAddr}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, err := c.r.addrs(srvAddr, c.dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPeerTrackerSeen is the inbound side: one authenticated packet
// from an address already known (the steady state).
func BenchmarkPeerTrackerSeen(b *testing.B) {
	tr := new(PeerTracker)
	src := netip.AddrPortFrom(rwAddr, 4500)
	b.ReportAllocs()
	for b.Loop() {
		tr.seen(src, gwAddr, true)
	}
}
