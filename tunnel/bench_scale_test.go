package tunnel

import (
	"fmt"
	"net/netip"
	"testing"
)

// Per-packet cost against the number of peers (issue 11): a gateway with
// one road warrior per /32 policy. These use only the SPD's and SAD's
// public API, so the same file runs against older code for a before/after
// table.

var scalePeers = []int{1, 100, 1_000, 10_000, 100_000}

// peerVIP is road warrior i's inner address in 100.64.0.0/10.
func peerVIP(i int) netip.Addr {
	n := uint32(100)<<24 | uint32(64)<<16 | uint32(i+1)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

var scaleServer = netip.MustParseAddr("203.0.113.10") // behind the gateway

// scaleSPD is a gateway's SPD with n peers, each a PROTECT policy (local
// 203.0.113.0/24, remote the peer's /32) appended in order, and a
// 1400-byte packet to the last peer in buf's headroom layout. The policies
// share one AES-GCM-256 outbound SA: the SA's cost does not depend on the
// number of peers, and 100,000 key schedules would only slow the setup.
func scaleSPD(tb testing.TB, n int) (spd *SPD, buf, inner []byte) {
	tb.Helper()
	out, _ := saPair(tb, AESGCM256, func(c *SAConfig) { c.Outer = GatewayToRoadWarrior(gwAddr) })
	local := MustAddrSet("203.0.113.0/24")
	spd = new(SPD)
	for i := range n {
		remote, err := NewAddrSet(netip.PrefixFrom(peerVIP(i), 32))
		if err != nil {
			tb.Fatal(err)
		}
		p := &Policy{Name: fmt.Sprint("peer", i), Action: Protect, Selector: Selector{Local: local, Remote: remote}}
		p.SA.Store(out)
		spd.Append(p)
	}
	inner = ipv4Packet(scaleServer, peerVIP(n-1), ProtoUDP, 5000, 5001, 1400-28)
	return spd, make([]byte, HeaderLen+len(inner)+MaxTrailer), inner
}

// BenchmarkSPDEncapsulateScale: outbound, a 1400-byte packet to the last
// of N peers (lookup, AES-GCM-256 seal, outer addresses).
func BenchmarkSPDEncapsulateScale(b *testing.B) {
	for _, n := range scalePeers {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			spd, buf, inner := scaleSPD(b, n)
			b.SetBytes(int64(len(inner)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf[HeaderLen:], inner) // sealed in place
				if _, act, err := spd.Encapsulate(buf, len(inner), nil); act != Protect || err != nil {
					b.Fatal(act, err)
				}
			}
		})
	}
}

// BenchmarkSADDecapsulateScale: inbound, a 1400-byte packet from the last
// of N peers, each with its own AES-GCM-256 inbound SA in the SAD (SPI
// lookup, pool, replay, open, selector check, peer tracking).
func BenchmarkSADDecapsulateScale(b *testing.B) {
	for _, n := range scalePeers {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			var sad SAD
			local := MustAddrSet("203.0.113.0/24")
			key := testKey(AESGCM256, 1)
			var last *SA
			for i := range n {
				remote, _ := NewAddrSet(netip.PrefixFrom(peerVIP(i), 32))
				sa, err := NewSA(SAConfig{SPI: 0x1000 + uint32(i), Dir: Inbound, Transform: AESGCM256, Key: key,
					Selector: Selector{Local: local, Remote: remote}, Peer: new(PeerTracker)})
				if err != nil {
					b.Fatal(err)
				}
				if err := sad.Add(sa); err != nil {
					b.Fatal(err)
				}
				last = sa
			}
			out, err := NewSA(SAConfig{SPI: last.SPI, Dir: Outbound, Transform: AESGCM256, Key: key, Outer: HostToHost()})
			if err != nil {
				b.Fatal(err)
			}
			inner := ipv4Packet(peerVIP(n-1), scaleServer, ProtoUDP, 5001, 5000, 1400-28)
			const batch = 1024
			sealed := make([][]byte, batch)
			for j := range sealed {
				sealed[j] = make([]byte, HeaderLen+len(inner), HeaderLen+len(inner)+MaxTrailer)
			}
			// Re-sealed in place: an allocating benchmark would run the
			// garbage collector over the N SAs' heap while it measures.
			reseal := func() {
				for j, buf := range sealed {
					copy(buf[HeaderLen:], inner)
					esp, err := out.Seal(buf[:cap(buf)], len(inner))
					if err != nil {
						b.Fatal(err)
					}
					sealed[j] = esp
				}
			}
			reseal()
			work := make([]byte, len(sealed[0]))
			src := netip.AddrPortFrom(rwAddr, 4500)
			b.SetBytes(int64(len(inner)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == batch { // fresh sequence numbers, outside the timer
					b.StopTimer()
					reseal()
					i = 0
					b.StartTimer()
				}
				copy(work, sealed[i])
				if _, _, err := sad.DecapsulateFrom(src, gwAddr, work); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkSPDInsert: building an SPD of N policies one by one, as IKE
// installs them: appended (network Child SAs) or at the front (host-to-host
// Child SAs). One iteration is the whole build.
func BenchmarkSPDInsert(b *testing.B) {
	local := MustAddrSet("203.0.113.0/24")
	for _, n := range []int{10_000, 100_000} {
		ps := make([]*Policy, n)
		for i := range ps {
			remote, _ := NewAddrSet(netip.PrefixFrom(peerVIP(i), 32))
			ps[i] = &Policy{Name: fmt.Sprint("peer", i), Action: Protect, Selector: Selector{Local: local, Remote: remote}}
		}
		for _, front := range []bool{false, true} {
			name := "append"
			if front {
				name = "front"
			}
			b.Run(fmt.Sprintf("%s/policies=%d", name, n), func(b *testing.B) {
				for b.Loop() {
					var spd SPD
					for _, p := range ps {
						if front {
							spd.Insert(0, p)
						} else {
							spd.Append(p)
						}
					}
				}
			})
		}
	}
}

// BenchmarkSPDLookupScale is the lookup alone among N peers' policies:
// "last" asks for the last peer every time (its path stays in cache),
// "spread" for each peer in turn (a packet per peer, as with traffic
// spread over every road warrior: the index's nodes come from memory).
func BenchmarkSPDLookupScale(b *testing.B) {
	for _, n := range scalePeers {
		spd, _, _ := scaleSPD(b, n)
		flows := make([]Flow, n)
		for i := range flows {
			flows[i] = Flow{Src: scaleServer, Dst: peerVIP(i), Proto: ProtoUDP, HasPorts: true, SrcPort: 5000, DstPort: 5001}
		}
		b.Run(fmt.Sprintf("last/peers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if spd.LookupOutbound(&flows[n-1]) == nil {
					b.Fatal("no policy")
				}
			}
		})
		b.Run(fmt.Sprintf("spread/peers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if spd.LookupOutbound(&flows[i]) == nil {
					b.Fatal("no policy")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}
