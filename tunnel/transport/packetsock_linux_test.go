package transport

// Issue 14's experiment: does an AF_PACKET socket move raw ESP (IPv4,
// protocol 50) more cheaply than the raw IP socket ESPConn uses? Send side:
// sendmmsg on a SOCK_DGRAM packet socket (we write the IPv4 header, the
// kernel the Ethernet header), with and without PACKET_QDISC_BYPASS, and a
// PACKET_TX_RING (TPACKET_V2) kicked by one send per batch. Receive side:
// a PACKET_RX_RING (TPACKET_V3) with a classic BPF filter for protocol 50 to
// our address, next to ESPConn.ReadBatch. These are benchmarks: they report
// the cost per packet and assert nothing about it.

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pktSock is an AF_PACKET SOCK_DGRAM socket bound to one interface, sending
// IPv4 to one next-hop MAC address.
type pktSock struct {
	fd  int
	sll unix.RawSockaddrLinklayer
	// sendmmsg
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	ip   []byte
	id   uint16
	// PACKET_TX_RING
	ring             []byte
	frameSize, nextF int
	frames           int
}

func openPktSock(tb testing.TB, ns, dev string, dst net.HardwareAddr, bypass bool) *pktSock {
	tb.Helper()
	s := &pktSock{fd: -1}
	inNS(tb, ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		s.fd = fd
		s.sll = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(unix.ETH_P_IP), Ifindex: int32(ifi.Index), Halen: 6}
		copy(s.sll.Addr[:], dst)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize)
		if bypass {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
				return err
			}
		}
		// Bound to the interface so that nothing is received here
		// (protocol 0 on bind: no receive hook).
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	})
	tb.Cleanup(func() {
		if s.ring != nil {
			unix.Munmap(s.ring)
		}
		unix.Close(s.fd)
	})
	s.hdrs = make([]unix.Mmsghdr, batchSize)
	s.iovs = make([]unix.Iovec, 2*batchSize)
	s.ip = make([]byte, ipv4HeaderLen*batchSize)
	for i := range s.hdrs {
		h := &s.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.sll))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &s.iovs[2*i]
		h.SetIovlen(2)
		s.iovs[2*i].Base = &s.ip[i*ipv4HeaderLen]
		s.iovs[2*i].SetLen(ipv4HeaderLen)
	}
	return s
}

// sendmmsg sends msgs (at most batchSize) with one sendmmsg call per
// partial send, blocking on a full socket buffer.
func (s *pktSock) sendmmsg(msgs []Datagram) error {
	for i := range msgs {
		ipv4Header(s.ip[i*ipv4HeaderLen:], msgs[i].Local, msgs[i].Remote.Addr(), len(msgs[i].Buf), s.id)
		s.id++
		s.iovs[2*i+1].Base = &msgs[i].Buf[0]
		s.iovs[2*i+1].SetLen(len(msgs[i].Buf))
	}
	for off := 0; off < len(msgs); {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[off])), uintptr(len(msgs)-off), 0, 0, 0)
		if e != 0 {
			if e == unix.EAGAIN || e == unix.ENOBUFS || e == unix.EINTR {
				continue
			}
			return e
		}
		off += int(r)
	}
	return nil
}

// setupTxRing switches s to a PACKET_TX_RING of TPACKET_V2 frames.
func (s *pktSock) setupTxRing(tb testing.TB, frames int) {
	tb.Helper()
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		tb.Fatal(err)
	}
	s.frameSize, s.frames = 2048, frames
	req := unix.TpacketReq{Block_size: uint32(s.frameSize * 32), Block_nr: uint32(frames / 32), Frame_size: uint32(s.frameSize), Frame_nr: uint32(frames)}
	if err := unix.SetsockoptTpacketReq(s.fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		tb.Fatal("PACKET_TX_RING:", err)
	}
	ring, err := unix.Mmap(s.fd, 0, s.frameSize*frames, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		tb.Fatal(err)
	}
	s.ring = ring
}

// ringSend copies msgs into free TX ring frames and kicks the kernel with
// one sendto; it waits for frames to come back when the ring is full.
func (s *pktSock) ringSend(msgs []Datagram) error {
	// Data starts at TPACKET2_HDRLEN - sizeof(sockaddr_ll): the aligned
	// tpacket2_hdr (see tpacket_parse_header without PACKET_TX_HAS_OFF).
	const dataOff = 32
	for i := range msgs {
		f := s.ring[s.nextF*s.frameSize:]
		h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&f[0]))
		for atomic.LoadUint32(&h.Status) != unix.TP_STATUS_AVAILABLE {
			if err := s.kick(unix.MSG_DONTWAIT); err != nil {
				return err
			}
		}
		n := len(msgs[i].Buf)
		ipv4Header(f[dataOff:], msgs[i].Local, msgs[i].Remote.Addr(), n, s.id)
		s.id++
		copy(f[dataOff+ipv4HeaderLen:], msgs[i].Buf)
		h.Len = uint32(ipv4HeaderLen + n)
		atomic.StoreUint32(&h.Status, unix.TP_STATUS_SEND_REQUEST)
		s.nextF = (s.nextF + 1) % s.frames
	}
	return s.kick(0)
}

func (s *pktSock) kick(flags int) error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, uintptr(flags),
		uintptr(unsafe.Pointer(&s.sll)), unix.SizeofSockaddrLinklayer)
	if e != 0 && e != unix.EAGAIN && e != unix.ENOBUFS && e != unix.EINTR {
		return e
	}
	return nil
}

// rxRing is a PACKET_RX_RING of TPACKET_V3 blocks on a SOCK_DGRAM packet
// socket whose BPF filter passes only IPv4 ESP to one address.
type rxRing struct {
	fd               int
	ring             []byte
	blockSize, block int
	blocks           int
}

// espFilter is classic BPF over the IPv4 header (SOCK_DGRAM: the filter
// sees the packet from the network header): protocol 50 and destination dst.
func espFilter(dst netip.Addr) []unix.SockFilter {
	d := dst.As4()
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 9},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 3, K: unix.IPPROTO_ESP},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 16},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: binary.BigEndian.Uint32(d[:])},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
}

func openRxRing(tb testing.TB, ns, dev string, dst netip.Addr) *rxRing {
	tb.Helper()
	r := &rxRing{fd: -1, blockSize: 1 << 18, blocks: 64}
	inNS(tb, ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		// Protocol 0 until the filter is attached, so that nothing else
		// lands in the ring first.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		r.fd = fd
		f := espFilter(dst)
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
			return err
		}
		req := unix.TpacketReq3{Block_size: uint32(r.blockSize), Block_nr: uint32(r.blocks), Frame_size: 2048,
			Frame_nr: uint32(r.blockSize / 2048 * r.blocks), Retire_blk_tov: 1}
		if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return err
		}
		if r.ring, err = unix.Mmap(fd, 0, r.blockSize*r.blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	})
	tb.Cleanup(func() {
		unix.Munmap(r.ring)
		unix.Close(r.fd)
	})
	return r
}

// read copies the packets of the next filled block (ESP from the SPI on)
// into msgs' buffers, waiting for one with poll. Packets beyond len(msgs)
// in the block are dropped (the benchmark passes a block's worth).
func (r *rxRing) read(msgs []Datagram, timeout time.Duration) int {
	bd := (*unix.TpacketBlockDesc)(unsafe.Pointer(&r.ring[r.block*r.blockSize]))
	h1 := (*unix.TpacketHdrV1)(unsafe.Pointer(&bd.Hdr[0]))
	for atomic.LoadUint32(&h1.Block_status)&unix.TP_STATUS_USER == 0 {
		pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN | unix.POLLERR}}
		if n, _ := unix.Poll(pfd, int(timeout.Milliseconds())); n == 0 {
			return 0
		}
	}
	blk := r.ring[r.block*r.blockSize : (r.block+1)*r.blockSize]
	off, n := int(h1.Offset_to_first_pkt), 0
	for i := 0; i < int(h1.Num_pkts); i++ {
		ph := (*unix.Tpacket3Hdr)(unsafe.Pointer(&blk[off]))
		pkt := blk[off+int(ph.Net) : off+int(ph.Net)+int(ph.Snaplen)]
		if ihl := int(pkt[0]&0x0f) * 4; n < len(msgs) && len(pkt) > ihl {
			msgs[n].Buf = msgs[n].Buf[:copy(msgs[n].Buf[:cap(msgs[n].Buf)], pkt[ihl:])]
			n++
		}
		off += int(ph.Next_offset)
	}
	atomic.StoreUint32(&h1.Block_status, unix.TP_STATUS_KERNEL)
	r.block = (r.block + 1) % r.blocks
	return n
}

var macA, macB = net.HardwareAddr{2, 0, 0, 0, 0, 0x0a}, net.HardwareAddr{2, 0, 0, 0, 0, 0x0b}

// TestPacketSocketSendsESPTheRawSocketReceives is the experiment's check
// that the packet-socket senders put well-formed ESP on the wire: each
// sender's packets arrive whole at an ESPConn in the other namespace.
func TestPacketSocketSendsESPTheRawSocketReceives(t *testing.T) {
	bed := newTestbed(t)
	rx := listenESPIn(t, bed.nsB, netip.IPv4Unspecified())
	for k, mode := range []string{"sendmmsg", "sendmmsg+bypass", "txring"} {
		s := openPktSock(t, bed.nsA, "rsa", macB, mode != "sendmmsg")
		if mode == "txring" {
			s.setupTxRing(t, 256)
		}
		var out []Datagram
		for i := range 3 {
			out = append(out, Datagram{Buf: espPacket(0x2000+uint32(k), uint32(i+1), 1400), Local: addrA4[0], Remote: netip.AddrPortFrom(addrB4[0], 0)})
		}
		send := s.sendmmsg
		if mode == "txring" {
			send = s.ringSend
		}
		if err := send(out); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		got := readN(t, rx, len(out))
		for i, g := range got {
			if g.Remote.Addr() != addrA4[0] || g.Local != addrB4[0] || string(g.Buf) != string(out[i].Buf) {
				t.Errorf("%s: packet %d arrived as %v→%v %d bytes, want %v→%v the 1400 sent", mode, i, g.Remote, g.Local, len(g.Buf), addrA4[0], addrB4[0])
			}
		}
	}
}

// otherHost is a MAC address no interface of the bed has. Frames sent to it
// are PACKET_OTHERHOST at the receiving veth and ip_rcv drops them at once,
// so a send benchmark measures the sender and the veth hop only (the tc
// drop action is not available on every kernel).
var otherHost = net.HardwareAddr{2, 0, 0, 0, 0, 0x0c}

func sendToOtherHost(tb testing.TB, ns, dev string, dst netip.Addr) {
	run(tb, "ip", "-n", ns, "neigh", "replace", dst.String(), "lladdr", otherHost.String(), "dev", dev, "nud", "permanent")
}

func cpuNow() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRawESPSend compares senders of 1400-byte IPv4 ESP packets in
// batches of 128, the receiving veth dropping them as addressed to another host. One op is
// one packet; cpu-ns/pkt is the process's CPU (user+system, which includes
// the veth hop run in the sender's context).
func BenchmarkRawESPSend(b *testing.B) {
	bed := newTestbed(b)
	sendToOtherHost(b, bed.nsA, "rsa", addrB4[0])
	to := netip.AddrPortFrom(addrB4[0], 0)
	out := make([]Datagram, batchSize)
	for i := range out {
		out[i] = Datagram{Buf: espPacket(benchSPI, uint32(i+1), benchPacketSize), Local: addrA4[0], Remote: to}
	}
	raw := listenESPIn(b, bed.nsA, netip.IPv4Unspecified())
	senders := []struct {
		name string
		send func([]Datagram) error
	}{
		{"raw-sendmmsg", func(m []Datagram) error { _, err := raw.WriteBatch(m); return err }},
		{"packet-sendmmsg", openPktSock(b, bed.nsA, "rsa", otherHost, false).sendmmsg},
		{"packet-sendmmsg-qdisc-bypass", openPktSock(b, bed.nsA, "rsa", otherHost, true).sendmmsg},
	}
	ring := openPktSock(b, bed.nsA, "rsa", otherHost, false)
	ring.setupTxRing(b, 1024)
	ringB := openPktSock(b, bed.nsA, "rsa", otherHost, true)
	ringB.setupTxRing(b, 1024)
	senders = append(senders, struct {
		name string
		send func([]Datagram) error
	}{"packet-txring", ring.ringSend}, struct {
		name string
		send func([]Datagram) error
	}{"packet-txring-qdisc-bypass", ringB.ringSend})
	for _, s := range senders {
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(benchPacketSize)
			b.ReportAllocs()
			c0 := cpuNow()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				k := min(batchSize, b.N-sent)
				if err := s.send(out[:k]); err != nil {
					b.Fatal(err)
				}
				sent += k
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuNow()-c0)/float64(b.N), "cpu-ns/pkt")
		})
	}
}

// BenchmarkRawESPReceive compares receivers of 1400-byte IPv4 ESP packets
// sent with ESPConn batches of 128 from the other namespace: ESPConn's
// recvmmsg against a TPACKET_V3 ring (beside which a raw socket for
// protocol 50 with a drop-all filter keeps the kernel from answering with
// ICMP protocol unreachable, as the gateway would need). cpu-ns/pkt is the
// whole process's CPU (sender, veth hop, receiver) per packet delivered.
func BenchmarkRawESPReceive(b *testing.B) {
	bed := newTestbed(b)
	parent := b
	to := netip.AddrPortFrom(addrB4[0], 0)
	out := make([]Datagram, batchSize)
	for i := range out {
		out[i] = Datagram{Buf: espPacket(benchSPI, uint32(i+1), benchPacketSize), Local: addrA4[0], Remote: to}
	}
	tx := listenESPIn(b, bed.nsA, netip.IPv4Unspecified())
	rawRx := listenESPIn(b, bed.nsB, netip.IPv4Unspecified())
	bufs := make([]Datagram, 256)
	for i := range bufs {
		bufs[i].Buf = make([]byte, 2048)
	}
	ringOf := map[string]*rxRing{}
	readers := []struct {
		name  string
		setup func(b *testing.B) func(msgs []Datagram) int
	}{
		{"raw-recvmmsg", func(b *testing.B) func([]Datagram) int {
			return func(m []Datagram) int {
				n, err := rawRx.ReadBatch(m[:batchSize])
				if err != nil {
					return -1
				}
				return n
			}
		}},
		{"packet-rxring-v3", func(b *testing.B) func([]Datagram) int {
			// Opened on the parent: b.Run calls this for N=1 and again
			// for the real N, and the first ring must neither go on
			// taking copies nor be unmapped under the second run.
			r := ringOf["packet-rxring-v3"]
			if r == nil {
				r = openRxRing(parent, bed.nsB, "rsb", addrB4[0])
				ringOf["packet-rxring-v3"] = r
			}
			// The raw socket stays open (no ICMP protocol unreachable)
			// but drops everything in its filter.
			drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
			if err := rawRx.rc.Control(func(fd uintptr) {
				_ = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]})
			}); err != nil {
				b.Fatal(err)
			}
			return func(m []Datagram) int { return r.read(m, 200*time.Millisecond) }
		}},
	}
	for _, rd := range readers {
		b.Run(rd.name, func(b *testing.B) {
			read := rd.setup(b)
			var received atomic.Int64
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				msgs := make([]Datagram, len(bufs))
				for {
					for i := range msgs {
						msgs[i].Buf = bufs[i].Buf[:cap(bufs[i].Buf)]
					}
					n := read(msgs)
					if n > 0 {
						received.Add(int64(n))
					}
					select {
					case <-stop:
						return
					default:
					}
					if n < 0 {
						return
					}
				}
			}()
			b.SetBytes(benchPacketSize)
			c0 := cpuNow()
			start := time.Now()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				n, err := tx.WriteBatch(out[:min(batchSize, b.N-sent)])
				if err != nil {
					b.Fatal(err)
				}
				sent += n
			}
			// Let the receiver drain: stop once nothing arrived for 50 ms.
			for last := int64(-1); ; time.Sleep(50 * time.Millisecond) {
				if r := received.Load(); r == last {
					break
				} else {
					last = r
				}
			}
			b.StopTimer()
			elapsed := time.Since(start)
			got := received.Load()
			cpu := cpuNow() - c0
			close(stop)
			// Wake a blocked recvmmsg with one more packet until the
			// reader has returned.
			for waiting := true; waiting; {
				_, _ = tx.WriteBatch(out[:1])
				select {
				case <-done:
					waiting = false
				case <-time.After(50 * time.Millisecond):
				}
			}
			if rs, ok := ringOf[rd.name]; ok {
				st, err := unix.GetsockoptTpacketStatsV3(rs.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
				if err == nil {
					b.ReportMetric(float64(st.Drops), "ring-drops")
				}
			}
			b.ReportMetric(float64(got)/elapsed.Seconds(), "rx-pkt/s")
			b.ReportMetric(100*float64(int64(b.N)-got)/float64(b.N), "loss-%")
			if got > 0 {
				b.ReportMetric(float64(cpu)/float64(got), "cpu-ns/pkt")
			}
		})
	}
}
