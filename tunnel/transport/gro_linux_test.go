package transport

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readGRO reads until want packets have arrived on a GRO socket with 64 KiB
// buffers the caller keeps (as the datapath does), copying each packet out.
func readGRO(tb testing.TB, c Conn, want int) (got []Datagram, segs []int) {
	tb.Helper()
	timer := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer timer.Stop()
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	msgs := make([]Datagram, len(bufs)*GROSegments)
	for len(got) < want {
		for i := range msgs {
			msgs[i] = Datagram{}
		}
		for i := range bufs {
			msgs[i].Buf = bufs[i]
		}
		n, err := c.ReadBatch(msgs)
		if err != nil {
			tb.Fatalf("ReadBatch after %d of %d packets: %v", len(got), want, err)
		}
		for k, m := range msgs[:n] {
			// Appending to a packet (the TUN's GRO does) must not reach
			// the next packet of the same buffer.
			if k+1 < n {
				next := uintptr(unsafe.Pointer(unsafe.SliceData(msgs[k+1].Buf)))
				here := uintptr(unsafe.Pointer(unsafe.SliceData(m.Buf)))
				if next > here && here+uintptr(cap(m.Buf)) > next {
					tb.Errorf("packet %d's capacity runs %d bytes into the next packet", len(got), here+uintptr(cap(m.Buf))-next)
				}
			}
			segs = append(segs, m.Segs)
			m.Buf = bytes.Clone(m.Buf)
			got = append(got, m)
		}
	}
	return got, segs
}

// TestUDPGROSplitsCoalescedDatagrams checks UDP_GRO on receive: a run of
// equal-sized ESP packets sent as one UDP_SEGMENT datagram reaches a GRO
// socket as one coalesced read and is split back into the same packets, in
// order, with their addresses; the last, shorter segment of a run is a
// packet of its own; a NAT keep-alive or a runt as that last segment is
// counted (RFC 3948 §2.3, too short for ESP) and not delivered; and the
// counters count packets, not reads.
func TestUDPGROSplitsCoalescedDatagrams(t *testing.T) {
	bed := newTestbed(t)
	for _, v6 := range []bool{false, true} {
		name := "udp4"
		if v6 {
			name = "udp6"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, bed, v6, true)
			a, b := p.a.(*UDPConn), p.b.(*UDPConn)
			if !a.gso {
				t.Skip("kernel has no UDP_SEGMENT")
			}
			if err := b.EnableGRO(); err != nil {
				t.Skipf("kernel has no UDP_GRO: %v", err)
			}
			to := netip.AddrPortFrom(p.dstB[0], p.portB)
			var out, want []Datagram
			add := func(n, size int, deliver bool) {
				for range n {
					seq := uint32(len(out) + 1)
					d := Datagram{Buf: espPacket(0xc000, seq, size), Local: p.srcA[0], Remote: to}
					out = append(out, d)
					if deliver {
						want = append(want, d)
					}
				}
			}
			add(20, 1400, true) // a run ...
			add(1, 900, true)   // ... whose last segment is short
			add(10, 100, true)
			out = append(out, Datagram{Buf: []byte{0xff}, Local: p.srcA[0], Remote: to}) // keep-alive ends a run
			add(10, 200, true)
			out = append(out, Datagram{Buf: []byte{1, 2, 3}, Local: p.srcA[0], Remote: to}) // runt ends a run
			mustWrite(t, a, out)

			got, segs := readGRO(t, b, len(want))
			if len(got) != len(want) {
				t.Fatalf("%d packets delivered, want %d", len(got), len(want))
			}
			for i, w := range want {
				g := got[i]
				if !bytes.Equal(g.Buf, w.Buf) || g.IKE || g.Local != p.srcA[0] && g.Local != p.dstB[0] {
					t.Errorf("packet %d: % x (IKE %v), want % x", i, head(g.Buf), g.IKE, head(w.Buf))
				}
				if g.Local != p.dstB[0] || g.Remote.Addr() != p.srcA[0] || g.Remote.Port() != p.portA {
					t.Errorf("packet %d: local %v remote %v, want %v and %v:%d", i, g.Local, g.Remote, p.dstB[0], p.srcA[0], p.portA)
				}
			}
			if b.Stats().Coalesced == 0 {
				t.Error("no coalesced read: the kernel did not GRO, so nothing was split")
			}
			// Segs marks the first packet of each coalesced read with
			// how many follow in its buffer, and sums to those packets.
			for i := 0; i < len(segs); {
				if segs[i] == 0 {
					i++
					continue
				}
				for k := 1; k < segs[i]; k++ {
					if i+k >= len(segs) || segs[i+k] != 0 {
						t.Fatalf("Segs %v: a run of %d at %d overlaps another", segs, segs[i], i)
					}
				}
				i += segs[i]
			}
			s := b.Stats()
			if s.Received != uint64(len(want)) || s.Keepalives != 1 || s.Malformed != 1 || s.GROOverflow != 0 {
				t.Errorf("Stats = %+v, want Received %d, Keepalives 1, Malformed 1", s, len(want))
			}
		})
	}
}

// groRead fakes what recvmmsg returns for message i: n bytes, a UDP_GRO
// control message of segment size gso (none if 0).
func groRead(c *batchConn, i, n, gso int) {
	h := &c.rx.hdrs[i]
	h.Len = uint32(n)
	h.Hdr.Flags = 0
	oob := c.rx.oob[i*oobSize : (i+1)*oobSize]
	if gso == 0 {
		h.Hdr.SetControllen(0)
		return
	}
	clear(oob)
	ch := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_GRO
	ch.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = int32(gso)
	h.Hdr.SetControllen(unix.CmsgSpace(4))
}

// TestDeliverGROSplit checks the splitting rules on faked reads, apart
// from what the kernel chooses to coalesce.
func TestDeliverGROSplit(t *testing.T) {
	for _, c := range []struct {
		name      string
		n, gso    int
		slots     int
		wantLens  []int
		overflow  uint64
		malformed uint64
	}{
		{"exact multiple", 300, 100, 8, []int{100, 100, 100}, 0, 0},
		{"last segment shorter", 250, 100, 8, []int{100, 100, 50}, 0, 0},
		{"segment size at least the datagram is one packet", 100, 100, 8, []int{100}, 0, 0},
		{"no control message is one packet", 300, 0, 8, []int{300}, 0, 0},
		{"last segment too short for ESP is malformed", 205, 100, 8, []int{100, 100}, 0, 1},
		{"more segments than slots are counted overflow", 500, 100, 3, []int{100, 100, 100}, 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var bc batchConn
			bc.udp, bc.gro = true, true
			bc.rx.init(false)
			bc.got = make([]received, 0, batchSize)
			buf := make([]byte, 65536)
			for i := range c.n {
				buf[i] = byte(i%200 + 1) // no zero marker, no 0xff keep-alive
			}
			groRead(&bc, 0, c.n, c.gso)
			msgs := make([]Datagram, c.slots)
			msgs[0].Buf = buf
			k := bc.deliverGRO(msgs, 1)
			if k != len(c.wantLens) {
				t.Fatalf("%d packets, want %d", k, len(c.wantLens))
			}
			off := 0
			for i, l := range c.wantLens {
				m := msgs[i]
				wantCap := l // capped at the next packet ...
				if off+l == c.n {
					wantCap = len(buf) - off // ... but the last keeps the spare room
				}
				if len(m.Buf) != l || cap(m.Buf) != wantCap || unsafe.SliceData(m.Buf) != &buf[off] {
					t.Errorf("packet %d: len %d cap %d at offset %d, want len %d cap %d at %d (a slice of the buffer)",
						i, len(m.Buf), cap(m.Buf), uintptr(unsafe.Pointer(unsafe.SliceData(m.Buf)))-uintptr(unsafe.Pointer(&buf[0])), l, wantCap, off)
				}
				off += l
			}
			if wantSegs := len(c.wantLens); wantSegs > 1 && msgs[0].Segs != wantSegs || wantSegs == 1 && msgs[0].Segs != 0 {
				t.Errorf("Segs = %d with %d packets", msgs[0].Segs, wantSegs)
			}
			s := bc.Stats()
			if s.Received != uint64(k) || s.GROOverflow != c.overflow || s.Malformed != c.malformed {
				t.Errorf("Stats = %+v, want Received %d, GROOverflow %d, Malformed %d", s, k, c.overflow, c.malformed)
			}
		})
	}
}

// FuzzDeliverGRO splits arbitrary coalesced reads: it never panics, every
// packet it delivers is a slice of the buffer within the bytes that
// arrived, and every segment is delivered or counted.
func FuzzDeliverGRO(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, uint16(8), uint8(4))
	f.Add([]byte{0, 0, 0, 0, 1, 0xff, 0, 0, 0, 0}, uint16(5), uint8(1))
	f.Fuzz(func(t *testing.T, payload []byte, gso uint16, slots uint8) {
		if slots == 0 || len(payload) == 0 {
			return
		}
		var bc batchConn
		bc.udp, bc.gro = true, true
		bc.rx.init(false)
		bc.got = make([]received, 0, batchSize)
		buf := make([]byte, 65536)
		n := copy(buf, payload)
		groRead(&bc, 0, n, int(gso))
		msgs := make([]Datagram, slots)
		msgs[0].Buf = buf
		k := bc.deliverGRO(msgs, 1)
		end := uintptr(unsafe.Pointer(&buf[0])) + uintptr(n)
		for _, m := range msgs[:k] {
			p := uintptr(unsafe.Pointer(unsafe.SliceData(m.Buf)))
			if p < uintptr(unsafe.Pointer(&buf[0])) || p+uintptr(len(m.Buf)) > end {
				t.Fatalf("packet of %d bytes (cap %d) outside the %d bytes received", len(m.Buf), cap(m.Buf), n)
			}
		}
		segs := 1
		if gso > 0 && int(gso) < n {
			segs = (n + int(gso) - 1) / int(gso)
		}
		s := bc.Stats()
		if got := s.Received + s.IKE + s.Keepalives + s.Malformed + s.GROOverflow; got != uint64(segs) {
			t.Fatalf("%d segments, %d accounted for: %+v", segs, got, s)
		}
	})
}

// TestNoAllocsPerPacketGRO: the receive path with UDP GRO, splitting
// included, allocates nothing in steady state.
func TestNoAllocsPerPacketGRO(t *testing.T) {
	bed := newTestbed(t)
	p := newPair(t, bed, false, true)
	if err := p.b.(*UDPConn).EnableGRO(); err != nil {
		t.Skipf("no UDP_GRO: %v", err)
	}
	const batch = 32
	out := make([]Datagram, batch)
	for i := range out {
		out[i] = Datagram{Buf: espPacket(0x8100, uint32(i+1), 1400), Local: p.srcA[0], Remote: netip.AddrPortFrom(p.dstB[0], p.portB)}
	}
	bufs := make([][]byte, 2)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	in := make([]Datagram, len(bufs)*GROSegments)
	var failed error
	cycle := func() {
		if _, err := p.a.WriteBatch(out); err != nil {
			failed = err
			return
		}
		for got := 0; got < batch; {
			for i := range bufs {
				in[i].Buf = bufs[i]
			}
			n, err := p.b.ReadBatch(in)
			if err != nil {
				failed = err
				return
			}
			got += n
		}
	}
	timer := time.AfterFunc(10*time.Second, func() { p.b.Close() })
	defer timer.Stop()
	cycle()
	allocs := testing.AllocsPerRun(100, cycle)
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per %d-packet write+read with GRO, want 0", allocs, batch)
	}
	if p.b.Stats().Coalesced == 0 {
		t.Error("no coalesced read")
	}
}
