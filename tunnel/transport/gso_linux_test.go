package transport

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestUDPGSO checks that UDP_SEGMENT batching is invisible on the wire:
// runs of same-address, same-size datagrams go out as one segmented send
// (the last segment may be shorter), every datagram arrives as its own
// UDP datagram with its exact bytes and addresses, and anything that
// breaks a run (other address, other size, IKE) is still delivered.
// Segments larger than the path MTU make the kernel refuse GSO, and the
// batch must then go out unsegmented rather than fail.
func TestUDPGSO(t *testing.T) {
	bed := newTestbed(t)
	for _, v6 := range []bool{false, true} {
		name := "udp4"
		if v6 {
			name = "udp6"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, bed, v6, true)
			a := p.a.(*UDPConn)
			if !a.gso {
				t.Skip("kernel has no UDP_SEGMENT")
			}
			to0 := netip.AddrPortFrom(p.dstB[0], p.portB)
			to1 := netip.AddrPortFrom(p.dstB[1], p.portB)
			var out []Datagram
			add := func(n int, size int, local netip.Addr, to netip.AddrPort, ike bool) {
				for range n {
					seq := uint32(len(out) + 1)
					out = append(out, Datagram{Buf: espPacket(0xb000, seq, size), Local: local, Remote: to, IKE: ike})
				}
			}
			add(20, 1400, p.srcA[0], to0, false) // one run ...
			add(1, 900, p.srcA[0], to0, false)   // ... ending in a short segment
			add(10, 1400, p.srcA[0], to0, false) // a new run after the short one
			add(5, 1400, p.srcA[1], to0, false)  // other source
			add(1, 300, p.srcA[1], to0, true)    // IKE never joins a run
			add(3, 1400, p.srcA[1], to0, false)
			add(4, 200, netip.Addr{}, to1, false) // other destination, other size
			add(70, 100, p.srcA[0], to1, false)   // longer than maxGSOSegments
			before := a.gsoSends.Load()
			mustWrite(t, a, out)
			if a.gsoSends.Load() == before {
				t.Error("no segmented send for a batch made of runs")
			}
			checkArrived(t, p, out)
			if s := p.b.Stats(); s.Received+s.IKE != uint64(len(out)) || s.Malformed != 0 {
				t.Errorf("receiver Stats = %+v, want %d datagrams", s, len(out))
			}

			t.Run("segment larger than the MTU falls back", func(t *testing.T) {
				out = nil
				add(6, 4000, p.srcA[0], to0, false) // veth MTU is 1500
				before := a.gsoSends.Load()
				mustWrite(t, a, out)
				checkArrived(t, p, out)
				if a.gsoSends.Load() != before {
					t.Error("kernel accepted segments above the MTU")
				}
				if !a.gso {
					t.Error("GSO disabled for good after a per-destination refusal")
				}
			})
		})
	}
}

// checkArrived reads len(out) datagrams and checks each arrived intact.
func checkArrived(t *testing.T, p *pair, out []Datagram) {
	t.Helper()
	got := map[uint32]Datagram{}
	for _, g := range readN(t, p.b, len(out)) {
		got[binary.BigEndian.Uint32(g.Buf[4:])] = g
	}
	for i, o := range out {
		g, ok := got[binary.BigEndian.Uint32(o.Buf[4:])]
		switch {
		case !ok:
			t.Errorf("datagram %d (%d bytes) not received", i, len(o.Buf))
		case !bytes.Equal(g.Buf, o.Buf) || g.IKE != o.IKE:
			t.Errorf("datagram %d: got %d bytes IKE %v, want %d bytes IKE %v", i, len(g.Buf), g.IKE, len(o.Buf), o.IKE)
		case g.Local != o.Remote.Addr() || (o.Local.IsValid() && g.Remote.Addr() != o.Local):
			t.Errorf("datagram %d: arrived %v -> %v, sent %v -> %v", i, g.Remote, g.Local, o.Local, o.Remote)
		}
	}
}
