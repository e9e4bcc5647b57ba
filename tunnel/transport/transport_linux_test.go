package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// espPacket builds an ESP-looking packet: SPI, sequence number and n-8
// bytes of pattern, so that any corruption or mix-up shows.
func espPacket(spi, seq uint32, n int) []byte {
	b := make([]byte, max(n, 8))
	binary.BigEndian.PutUint32(b, spi)
	binary.BigEndian.PutUint32(b[4:], seq)
	for i := 8; i < n; i++ {
		b[i] = byte(int(seq) + i)
	}
	return b[:n]
}

// transports enumerates the four wire formats under test.
var transports = []struct {
	name string
	v6   bool
	udp  bool
}{
	{"raw4", false, false},
	{"raw6", true, false},
	{"udp4", false, true},
	{"udp6", true, true},
}

// pair is a sender in namespace A and a receiver in namespace B, both bound
// to the unspecified address of their family.
type pair struct {
	a, b       Conn
	srcA, dstB [2]netip.Addr
	portA      uint16 // the sender's UDP port, 0 for raw
	portB      uint16 // the receiver's UDP port, 0 for raw
	ikeOnly    bool   // the receiver is a port-500 IKEConn: everything is IKE
}

func newPair(tb testing.TB, bed *testbed, v6, udp bool) *pair {
	tb.Helper()
	p := &pair{srcA: addrA4, dstB: addrB4}
	any := netip.IPv4Unspecified()
	if v6 {
		p.srcA, p.dstB, any = addrA6, addrB6, netip.IPv6Unspecified()
	}
	if udp {
		// The sender takes an ephemeral port, which also checks LocalAddr;
		// the receiver sits on the real NAT-T port, free in a fresh namespace.
		a := listenUDPIn(tb, bed.nsA, netip.AddrPortFrom(any, 0))
		b := listenUDPIn(tb, bed.nsB, netip.AddrPortFrom(any, NATTPort))
		p.a, p.b, p.portA, p.portB = a, b, a.LocalAddr().Port(), NATTPort
		if p.portA == 0 {
			tb.Fatal("LocalAddr of a port-0 UDP socket reports port 0, want the kernel's choice")
		}
	} else {
		p.a = listenESPIn(tb, bed.nsA, any)
		p.b = listenESPIn(tb, bed.nsB, any)
	}
	return p
}

// readN reads until at least want datagrams have arrived, copying each out
// of its buffer. A transport that loses packets fails the test after a
// deadline instead of hanging it (the deadline closes c).
func readN(tb testing.TB, c Conn, want int) []Datagram {
	tb.Helper()
	timer := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer timer.Stop()
	var got []Datagram
	msgs := make([]Datagram, c.BatchSize())
	for len(got) < want {
		for i := range msgs {
			msgs[i] = Datagram{Buf: make([]byte, 8192)}
		}
		n, err := c.ReadBatch(msgs)
		if err != nil {
			tb.Fatalf("ReadBatch after %d of %d datagrams: %v", len(got), want, err)
		}
		for _, m := range msgs[:n] {
			m.Buf = slices.Clone(m.Buf)
			got = append(got, m)
		}
	}
	return got
}

func mustWrite(tb testing.TB, c Conn, msgs []Datagram) {
	tb.Helper()
	n, err := c.WriteBatch(msgs)
	if err != nil || n != len(msgs) {
		tb.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(msgs))
	}
}

// TestPerPacketSource_RFC3554 sends one batch whose packets each pick a
// different outer source and destination, and checks the receiver sees
// exactly the bytes, the source as Remote and the destination as Local.
// RFC 3554 §3 makes the outer source of a road warrior's packet its inner
// source, so the choice is per packet and must survive batching.
func TestPerPacketSource_RFC3554(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			cases := []struct {
				name       string
				local      netip.Addr // sender's chosen source; zero: kernel's choice
				dst        netip.Addr
				wantRemote netip.Addr
			}{
				{"kernel chooses source on the link's first subnet", netip.Addr{}, p.dstB[0], p.srcA[0]},
				{"first address", p.srcA[0], p.dstB[0], p.srcA[0]},
				{"second address as source", p.srcA[1], p.dstB[0], p.srcA[1]},
				{"second address as destination", p.srcA[0], p.dstB[1], p.srcA[0]},
				{"second pair", p.srcA[1], p.dstB[1], p.srcA[1]},
				{"unspecified source means kernel's choice", unspecified(tr.v6), p.dstB[1], p.srcA[1]},
			}
			var out []Datagram
			for i, c := range cases {
				out = append(out, Datagram{
					Buf:    espPacket(0x1000+uint32(i), uint32(i+1), 100+i*300),
					Local:  c.local,
					Remote: netip.AddrPortFrom(c.dst, p.portB),
				})
			}
			mustWrite(t, p.a, out)
			// Match by SPI, not order: each destination address resolves
			// its own neighbour entry, so the batch can arrive reordered.
			bySPI := map[uint32]Datagram{}
			for _, g := range readN(t, p.b, len(cases)) {
				bySPI[binary.BigEndian.Uint32(g.Buf)] = g
			}
			for i, c := range cases {
				g, ok := bySPI[0x1000+uint32(i)]
				if !ok {
					t.Errorf("%s: not received", c.name)
					continue
				}
				if !bytes.Equal(g.Buf, out[i].Buf) {
					t.Errorf("%s: payload differs: got %d bytes % x..., want %d bytes % x...", c.name, len(g.Buf), head(g.Buf), len(out[i].Buf), head(out[i].Buf))
				}
				if want := netip.AddrPortFrom(c.wantRemote, p.portA); g.Remote != want {
					t.Errorf("%s: Remote = %v, want %v", c.name, g.Remote, want)
				}
				if g.Local != c.dst {
					t.Errorf("%s: Local = %v, want %v", c.name, g.Local, c.dst)
				}
				if g.IKE {
					t.Errorf("%s: ESP delivered as IKE", c.name)
				}
			}
			if s := p.a.Stats(); s.Sent != uint64(len(cases)) {
				t.Errorf("sender Stats.Sent = %d, want %d", s.Sent, len(cases))
			}
			if s := p.b.Stats(); s.Received != uint64(len(cases)) || s.Malformed != 0 {
				t.Errorf("receiver Stats = %+v, want Received %d, Malformed 0", s, len(cases))
			}
		})
	}
}

func unspecified(v6 bool) netip.Addr {
	if v6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func head(b []byte) []byte { return b[:min(len(b), 12)] }

// TestWriteBatchSourceNotLocal checks that a source address that is not ours
// fails the packet (the kernel's route lookup refuses it with ENETUNREACH,
// not EINVAL, unless IP_FREEBIND is set) and that WriteBatch reports how
// many packets before it went out.
func TestWriteBatchSourceNotLocal(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		if tr.v6 {
			continue // one family suffices for the error accounting
		}
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			to := netip.AddrPortFrom(p.dstB[0], p.portB)
			msgs := []Datagram{
				{Buf: espPacket(0x2000, 1, 64), Remote: to},
				{Buf: espPacket(0x2000, 2, 64), Remote: to, Local: addrNone4},
				{Buf: espPacket(0x2000, 3, 64), Remote: to},
			}
			n, err := p.a.WriteBatch(msgs)
			if n != 1 || !errors.Is(err, unix.ENETUNREACH) {
				t.Fatalf("WriteBatch = %d, %v; want 1, ENETUNREACH", n, err)
			}
			// The packet before the failure arrives; the rest are resent.
			mustWrite(t, p.a, msgs[2:])
			got := readN(t, p.b, 2)
			for i, want := range []*Datagram{&msgs[0], &msgs[2]} {
				if !bytes.Equal(got[i].Buf, want.Buf) {
					t.Errorf("datagram %d: got % x, want % x", i, head(got[i].Buf), head(want.Buf))
				}
			}
		})
	}
}

// TestWriteBatchFamilyMismatch checks that an address of the wrong family
// fails that packet before anything is sent, instead of being misencoded.
func TestWriteBatchFamilyMismatch(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			other := addrB4[0]
			if !tr.v6 {
				other = addrB6[0]
			}
			for _, d := range []Datagram{
				{Buf: espPacket(1, 1, 16), Remote: netip.AddrPortFrom(other, p.portB)},
				{Buf: espPacket(1, 1, 16), Remote: netip.AddrPortFrom(p.dstB[0], p.portB), Local: other},
			} {
				if n, err := p.a.WriteBatch([]Datagram{d}); n != 0 || !errors.Is(err, errFamily) {
					t.Errorf("WriteBatch(local %v, remote %v) = %d, %v; want 0, errFamily", d.Local, d.Remote, n, err)
				}
			}
			if s := p.a.Stats(); s.Sent != 0 {
				t.Errorf("Stats.Sent = %d after failed sends, want 0", s.Sent)
			}
		})
	}
}

// TestRawIPv4HeaderStripped checks that the IPv4 header raw sockets deliver
// is removed whatever its length: IHL counts 32-bit words including options
// (RFC 791 §3.1), and the ESP payload must start at Buf[0].
func TestRawIPv4HeaderStripped(t *testing.T) {
	bed := newTestbed(t)
	p := newPair(t, bed, false, false)
	rr := make([]byte, 40) // record route filling the 40-byte option space
	rr[0], rr[1], rr[2] = 7, 39, 4
	for i, c := range []struct {
		name    string
		options []byte
	}{
		{"no options, IHL 5", nil},
		{"NOP options, IHL 6", []byte{1, 1, 1, 1}},
		{"record route, IHL 15", rr},
	} {
		t.Run(c.name, func(t *testing.T) {
			setIPOptions(t, p.a, c.options)
			want := espPacket(0x3000, uint32(i+1), 1000)
			mustWrite(t, p.a, []Datagram{{Buf: want, Remote: netip.AddrPortFrom(p.dstB[0], 0)}})
			got := readN(t, p.b, 1)[0]
			if !bytes.Equal(got.Buf, want) {
				t.Errorf("payload: got %d bytes % x..., want %d bytes % x...", len(got.Buf), head(got.Buf), len(want), head(want))
			}
			if got.Remote.Addr() != p.srcA[0] || got.Local != p.dstB[0] {
				t.Errorf("Remote %v Local %v, want %v %v", got.Remote, got.Local, p.srcA[0], p.dstB[0])
			}
		})
	}
}

func setIPOptions(tb testing.TB, c Conn, opts []byte) {
	tb.Helper()
	var serr error
	err := c.(*ESPConn).rc.Control(func(fd uintptr) {
		if len(opts) == 0 {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, "")
			return
		}
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, string(opts))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		tb.Fatalf("IP_OPTIONS: %v", err)
	}
}

// classifyCase is a datagram sent to a receiver and what it must make of it.
type classifyCase struct {
	name    string
	payload []byte
	want    []byte // delivered payload; nil: dropped
	ike     bool
}

// runClassify sends every case followed by a sentinel ESP packet and checks
// which ones the receiver delivered, in order, and how.
func runClassify(t *testing.T, p *pair, cases []classifyCase) {
	t.Helper()
	to := netip.AddrPortFrom(p.dstB[0], p.portB)
	var out []Datagram
	var want []classifyCase
	for _, c := range cases {
		out = append(out, Datagram{Buf: c.payload, Remote: to})
		if c.want != nil {
			want = append(want, c)
		}
	}
	sentinel := espPacket(0xfeedface, 1, 32)
	out = append(out, Datagram{Buf: sentinel, Remote: to})
	want = append(want, classifyCase{name: "sentinel", want: sentinel, ike: p.ikeOnly})
	mustWrite(t, p.a, out)
	got := readN(t, p.b, len(want))
	if len(got) != len(want) {
		t.Fatalf("delivered %d datagrams, want %d", len(got), len(want))
	}
	for i, w := range want {
		if !bytes.Equal(got[i].Buf, w.want) || got[i].IKE != w.ike {
			t.Errorf("%s: delivered % x (IKE %v), want % x (IKE %v)", w.name, head(got[i].Buf), got[i].IKE, head(w.want), w.ike)
		}
		if got[i].Remote != netip.AddrPortFrom(p.srcA[0], p.portA) || got[i].Local != p.dstB[0] {
			t.Errorf("%s: Remote %v Local %v", w.name, got[i].Remote, got[i].Local)
		}
	}
}

// TestUDPClassification_RFC3948 checks the receive-side demultiplexing of
// RFC 3948: a zero non-ESP marker means IKE (§2.2), a lone 0xFF is a NAT
// keep-alive (§2.3), anything else shorter than an ESP header (SPI and
// sequence number, RFC 4303 §2) is malformed.
func TestUDPClassification_RFC3948(t *testing.T) {
	bed := newTestbed(t)
	ikeMsg := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0xab}, 28)...)
	for _, v6 := range []bool{false, true} {
		name := "udp4"
		if v6 {
			name = "udp6"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, bed, v6, true)
			runClassify(t, p, []classifyCase{
				{"ESP is delivered as is", espPacket(0x4000, 1, 200), espPacket(0x4000, 1, 200), false},
				{"non-ESP marker: IKE, marker stripped (§2.2)", ikeMsg, ikeMsg[4:], true},
				{"0xFF: NAT keep-alive dropped (§2.3)", []byte{0xff}, nil, false},
				{"empty datagram is malformed", []byte{}, nil, false},
				{"one byte other than 0xFF is malformed", []byte{0xfe}, nil, false},
				{"marker alone, no IKE message, is malformed", []byte{0, 0, 0, 0}, nil, false},
				{"7 bytes is malformed (RFC 4303 §2)", espPacket(0x4000, 2, 7), nil, false},
				{"two 0xFF bytes are malformed", []byte{0xff, 0xff}, nil, false},
				{"8 bytes, SPI and sequence only, is ESP", espPacket(0x4000, 3, 8), espPacket(0x4000, 3, 8), false},
				{"ESP after drops still delivered", espPacket(0x4000, 4, 1400), espPacket(0x4000, 4, 1400), false},
			})
			want := Stats{Received: 3 + 1, Keepalives: 1, Malformed: 5, IKE: 1}
			if s := p.b.Stats(); s != want {
				t.Errorf("receiver Stats = %+v, want %+v", s, want)
			}
		})
	}
}

// TestRawMalformed_RFC4303 checks that raw ESP shorter than the ESP header
// (RFC 4303 §2) or carrying the reserved SPI 0 (§2.1) is dropped and counted.
func TestRawMalformed_RFC4303(t *testing.T) {
	bed := newTestbed(t)
	for _, v6 := range []bool{false, true} {
		name := "raw4"
		if v6 {
			name = "raw6"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, bed, v6, false)
			runClassify(t, p, []classifyCase{
				{"7 bytes", espPacket(0x5000, 1, 7), nil, false},
				{"empty", []byte{}, nil, false},
				{"SPI 0 is reserved", espPacket(0, 1, 64), nil, false},
				{"ESP", espPacket(0x5000, 2, 64), espPacket(0x5000, 2, 64), false},
				{"a lone 0xFF is no keep-alive on raw IP", []byte{0xff}, nil, false},
			})
			want := Stats{Received: 1 + 1, Malformed: 4}
			if s := p.b.Stats(); s != want {
				t.Errorf("receiver Stats = %+v, want %+v", s, want)
			}
		})
	}
}

// TestUDPSendWireFormat_RFC3948 checks what SendKeepalive, SendIKE and
// WriteBatch with IKE put on the wire, read back by a plain UDP socket
// that knows nothing of markers.
func TestUDPSendWireFormat_RFC3948(t *testing.T) {
	bed := newTestbed(t)
	for _, v6 := range []bool{false, true} {
		name := "udp4"
		if v6 {
			name = "udp6"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, bed, v6, true)
			a := p.a.(*UDPConn)
			var plain *net.UDPConn
			inNS(t, bed.nsB, func() (err error) {
				plain, err = net.ListenUDP("udp", &net.UDPAddr{Port: 4501})
				return err
			})
			t.Cleanup(func() { plain.Close() })
			to := netip.AddrPortFrom(p.dstB[0], 4501)
			ike := []byte("IKE_SA_INIT stand-in, 28+ bytes long......")

			steps := []struct {
				name string
				send func() error
				want []byte
			}{
				{"keep-alive is the single byte 0xFF (§2.3)", func() error { return a.SendKeepalive(p.srcA[1], to) }, []byte{0xff}},
				{"SendIKE prepends the zero non-ESP marker (§2.2)", func() error { return a.SendIKE(ike, netip.Addr{}, to) }, append([]byte{0, 0, 0, 0}, ike...)},
				{"WriteBatch with IKE set does too", func() error {
					_, err := a.WriteBatch([]Datagram{{Buf: ike[:10], Remote: to, IKE: true}})
					return err
				}, append([]byte{0, 0, 0, 0}, ike[:10]...)},
				{"ESP goes out unchanged", func() error {
					_, err := a.WriteBatch([]Datagram{{Buf: espPacket(7, 7, 40), Remote: to}})
					return err
				}, espPacket(7, 7, 40)},
			}
			for _, s := range steps {
				if err := s.send(); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				buf := make([]byte, 2048)
				plain.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := plain.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				if !bytes.Equal(buf[:n], s.want) {
					t.Errorf("%s: wire % x, want % x", s.name, head(buf[:n]), head(s.want))
				}
				if from.Port() != p.portA {
					t.Errorf("%s: from port %d, want %d", s.name, from.Port(), p.portA)
				}
			}

			// And our own receiver takes the keep-alive and IKE apart.
			toB := netip.AddrPortFrom(p.dstB[0], p.portB)
			if err := a.SendKeepalive(netip.Addr{}, toB); err != nil {
				t.Fatal(err)
			}
			if err := a.SendIKE(ike, p.srcA[1], toB); err != nil {
				t.Fatal(err)
			}
			got := readN(t, p.b, 1)[0]
			if !got.IKE || !bytes.Equal(got.Buf, ike) || got.Remote.Addr() != p.srcA[1] {
				t.Errorf("received %+v, want IKE %q from %v", got, ike, p.srcA[1])
			}
			if s := p.b.Stats(); s.Keepalives != 1 || s.IKE != 1 {
				t.Errorf("receiver Stats = %+v, want 1 keep-alive and 1 IKE", s)
			}
		})
	}
}

// TestRawRejectsIKE checks that IKE, which has no place on raw ESP, is
// refused rather than sent as a bogus ESP packet.
func TestRawRejectsIKE(t *testing.T) {
	bed := newTestbed(t)
	p := newPair(t, bed, false, false)
	n, err := p.a.WriteBatch([]Datagram{{Buf: []byte("ike"), Remote: netip.AddrPortFrom(p.dstB[0], 0), IKE: true}})
	if n != 0 || !errors.Is(err, errIKEOnRaw) {
		t.Fatalf("WriteBatch(IKE on raw) = %d, %v; want 0, errIKEOnRaw", n, err)
	}
}

// TestReadBatchTruncated checks that a datagram larger than the buffer is
// dropped as malformed rather than delivered cut short.
func TestReadBatchTruncated(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			to := netip.AddrPortFrom(p.dstB[0], p.portB)
			mustWrite(t, p.a, []Datagram{
				{Buf: espPacket(0x6000, 1, 1200), Remote: to},
				{Buf: espPacket(0x6000, 2, 100), Remote: to},
			})
			timer := time.AfterFunc(5*time.Second, func() { p.b.Close() })
			defer timer.Stop()
			msgs := []Datagram{{Buf: make([]byte, 500)}, {Buf: make([]byte, 500)}}
			var got []byte
			for got == nil {
				n, err := p.b.ReadBatch(msgs)
				if err != nil {
					t.Fatal(err)
				}
				if n > 0 {
					got = msgs[0].Buf
				}
			}
			if want := espPacket(0x6000, 2, 100); !bytes.Equal(got, want) {
				t.Errorf("delivered % x, want the short packet % x", head(got), head(want))
			}
			if s := p.b.Stats(); s.Malformed != 1 || s.Received != 1 {
				t.Errorf("Stats = %+v, want Malformed 1, Received 1", s)
			}
		})
	}
}

// TestReadBatchKeepsBuffers checks that dropping datagrams inside a batch
// permutes the caller's buffers but loses none, so buffer pools stay whole.
func TestReadBatchKeepsBuffers(t *testing.T) {
	bed := newTestbed(t)
	p := newPair(t, bed, false, true)
	to := netip.AddrPortFrom(p.dstB[0], p.portB)
	mustWrite(t, p.a, []Datagram{
		{Buf: []byte{0xff}, Remote: to},
		{Buf: espPacket(0x7000, 1, 100), Remote: to},
		{Buf: []byte{1, 2, 3}, Remote: to},
		{Buf: espPacket(0x7000, 2, 100), Remote: to},
	})
	time.Sleep(50 * time.Millisecond) // let all four queue so one read sees them
	msgs := make([]Datagram, 4)
	var before []*byte
	for i := range msgs {
		msgs[i].Buf = make([]byte, 256)
		before = append(before, unsafe.SliceData(msgs[i].Buf))
	}
	timer := time.AfterFunc(5*time.Second, func() { p.b.Close() })
	defer timer.Stop()
	n, err := p.b.ReadBatch(msgs)
	if err != nil || n != 2 {
		t.Fatalf("ReadBatch = %d, %v; want 2, nil", n, err)
	}
	for i := range n {
		if want := espPacket(0x7000, uint32(i+1), 100); !bytes.Equal(msgs[i].Buf, want) {
			t.Errorf("msgs[%d] = % x, want % x", i, head(msgs[i].Buf), head(want))
		}
	}
	var after []*byte
	for _, m := range msgs {
		after = append(after, unsafe.SliceData(m.Buf))
	}
	less := func(a, b *byte) int { return int(uintptr(unsafe.Pointer(a)) - uintptr(unsafe.Pointer(b))) }
	slices.SortFunc(before, less)
	slices.SortFunc(after, less)
	if !slices.Equal(before, after) {
		t.Errorf("buffers after ReadBatch are not the ones passed in")
	}
}

// TestCloseUnblocksRead checks that Close ends a blocked ReadBatch with an
// error wrapping net.ErrClosed, so reader goroutines can exit.
func TestCloseUnblocksRead(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			errc := make(chan error, 1)
			go func() {
				_, err := p.b.ReadBatch([]Datagram{{Buf: make([]byte, 100)}})
				errc <- err
			}()
			time.Sleep(20 * time.Millisecond)
			p.b.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("ReadBatch after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("ReadBatch still blocked after Close")
			}
		})
	}
}

// TestNoAllocsPerPacket checks the steady-state send and receive paths
// allocate nothing: a 32-packet batch out and back in, per run.
func TestNoAllocsPerPacket(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			const batch = 32
			out := make([]Datagram, batch)
			for i := range out {
				out[i] = Datagram{Buf: espPacket(0x8000, uint32(i+1), 1400), Local: p.srcA[i%2], Remote: netip.AddrPortFrom(p.dstB[i%2], p.portB)}
			}
			bufs := make([][]byte, batch)
			in := make([]Datagram, batch)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			var failed error
			cycle := func() {
				if _, err := p.a.WriteBatch(out); err != nil {
					failed = err
					return
				}
				for got := 0; got < batch; {
					for i := range in {
						in[i].Buf = bufs[i]
					}
					n, err := p.b.ReadBatch(in[:batch-got])
					if err != nil {
						failed = err
						return
					}
					got += n
				}
			}
			timer := time.AfterFunc(10*time.Second, func() { p.b.Close() })
			defer timer.Stop()
			cycle() // neighbour resolution and first-use allocations
			allocs := testing.AllocsPerRun(100, cycle)
			if failed != nil {
				t.Fatal(failed)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per %d-packet write+read, want 0", allocs, batch)
			}
		})
	}
}

// TestListenRejectsInvalid checks that the zero address is an error rather
// than a silent choice of family.
func TestListenRejectsInvalid(t *testing.T) {
	if _, err := ListenRawESP(netip.Addr{}); err == nil {
		t.Error("ListenRawESP(zero Addr) succeeded")
	}
	if _, err := ListenUDP(netip.AddrPort{}); err == nil {
		t.Error("ListenUDP(zero AddrPort) succeeded")
	}
}

// TestNoDFAndLocalFragmentation checks the fragmentation policy of the
// package documentation (RFC 4301 §8.1, "clear DF"): an outer packet larger
// than the link MTU is fragmented and arrives whole instead of failing with
// EMSGSIZE, and raw IPv4 packets leave without the DF bit.
func TestNoDFAndLocalFragmentation(t *testing.T) {
	bed := newTestbed(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, bed, tr.v6, tr.udp)
			to := netip.AddrPortFrom(p.dstB[0], p.portB)
			small, big := espPacket(0xa000, 1, 100), espPacket(0xa000, 2, 4000) // link MTU is 1500
			mustWrite(t, p.a, []Datagram{{Buf: small, Remote: to}})
			timer := time.AfterFunc(5*time.Second, func() { p.b.Close() })
			defer timer.Stop()
			msgs := []Datagram{{Buf: make([]byte, 8192)}}
			if n, err := p.b.ReadBatch(msgs); err != nil || n != 1 || !bytes.Equal(msgs[0].Buf, small) {
				t.Fatalf("ReadBatch = %d, %v, % x", n, err, head(msgs[0].Buf))
			}
			if !tr.v6 && !tr.udp {
				// Slot 0's IPv4 header is still in the receive scratch space.
				hdr := p.b.(*ESPConn).rx.ipHdr[:ipv4HeaderLen]
				if hdr[6]&0x40 != 0 {
					t.Errorf("outer IPv4 header has DF set: % x", hdr)
				}
			}
			mustWrite(t, p.a, []Datagram{{Buf: big, Remote: to}})
			msgs[0].Buf = msgs[0].Buf[:cap(msgs[0].Buf)]
			if n, err := p.b.ReadBatch(msgs); err != nil || n != 1 || !bytes.Equal(msgs[0].Buf, big) {
				t.Fatalf("4000-byte packet: ReadBatch = %d, %v, %d bytes", n, err, len(msgs[0].Buf))
			}
		})
	}
}

// TestIKEPort500NoMarker_RFC7296 checks the port-500 socket: IKE travels
// there without the non-ESP marker (RFC 7296 §2.23), so every datagram is
// delivered as IKE, as is, even one whose first four bytes are zero, and a
// send carries no marker.
func TestIKEPort500NoMarker_RFC7296(t *testing.T) {
	bed := newTestbed(t)
	var a, b *IKEConn
	inNS(t, bed.nsA, func() (err error) { a, err = ListenIKE(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)); return })
	t.Cleanup(func() { a.Close() })
	inNS(t, bed.nsB, func() (err error) { b, err = ListenIKE(netip.AddrPortFrom(netip.IPv4Unspecified(), 500)); return })
	t.Cleanup(func() { b.Close() })
	p := &pair{a: a, b: b, srcA: addrA4, dstB: addrB4, portA: a.LocalAddr().Port(), portB: 500, ikeOnly: true}
	ike := bytes.Repeat([]byte{0xab}, 28)
	zeroSPI := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0xcd}, 40)...)
	runClassify(t, p, []classifyCase{
		{"an IKE message is delivered as is", ike, ike, true},
		{"leading zeros are no marker on port 500", zeroSPI, zeroSPI, true},
	})
	if s := b.Stats(); s.IKE != 3 || s.Malformed != 0 { // the two and runClassify's sentinel
		t.Errorf("Stats = %+v, want IKE 3", s)
	}
}
