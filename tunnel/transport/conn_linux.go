package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	batchSize = 128 // as wireguard-go: amortises the syscall, bounded memory

	// oobSize fits IPV6_PKTINFO (40 bytes on 64-bit) plus UDP_SEGMENT or
	// UDP_GRO (24 each).
	oobSize = 64

	// GROSegments bounds the packets the kernel coalesces into one read
	// with UDP GRO: UDP_GRO_CNT_MAX of the GRO engine, and what our
	// UDP_SEGMENT sender puts in one send.
	GROSegments = 64

	ipv4HeaderLen = 20 // without options
	espHeaderLen  = 8  // SPI + sequence number, RFC 4303 §2

	// socketBufferSize follows wireguard-go: enough for bursts at multi-Gbit
	// rates without the receiver dropping while the ESP core is busy.
	socketBufferSize = 7 << 20
)

var (
	errFamily   = errors.New("transport: address family does not match the socket")
	errIKEOnRaw = errors.New("transport: IKE messages need the UDP transport")
)

// nonESPMarker precedes IKE messages in ESP-in-UDP (RFC 3948 §2.2). Sent from
// its own iovec so callers need no headroom. Never written to.
var nonESPMarker = [4]byte{}

// natKeepalive is the NAT keep-alive payload (RFC 3948 §2.3).
var natKeepalive = [1]byte{0xff}

// batchConn is the recvmmsg/sendmmsg machinery shared by ESPConn and UDPConn.
type batchConn struct {
	pc    net.PacketConn
	rc    syscall.RawConn
	local netip.AddrPort
	v6    bool
	udp   bool
	// ikeOnly: port 500, where every datagram is an IKE message and none
	// carries the non-ESP marker (RFC 7296 §2.23).
	ikeOnly bool

	rxMu sync.Mutex
	rx   mmsgBatch
	txMu sync.Mutex
	tx   mmsgBatch

	gso bool // UDP_SEGMENT on send; guarded by txMu
	// gro: UDP_GRO on receive (EnableGRO); guarded by rxMu, as is got.
	gro bool
	got []received

	// mark is the socket's SO_MARK (SetMark), for the packet socket's
	// route lookups (ESPConn.EnablePacketSend).
	mark atomic.Uint32

	received, sent, keepalives, malformed, ike atomic.Uint64
	packetSent                                 atomic.Uint64 // through the AF_PACKET socket (ESPConn.EnablePacketSend)
	groOverflow                                atomic.Uint64
	gsoSends                                   atomic.Uint64 // segmented sends, for tests
	coalesced                                  atomic.Uint64 // reads that held several packets (UDP GRO)
}

// received is one datagram as recvmmsg returned it, before a coalesced
// one is split: ReadBatch reuses msgs for the segments, so what it needs
// of each received message is set aside first.
type received struct {
	buf    []byte // the whole receive buffer
	n      int
	gso    int // segment size from the UDP_GRO control message; 0: one datagram
	remote netip.AddrPort
	local  netip.Addr
}

// mmsgBatch holds everything one recvmmsg/sendmmsg call needs, allocated once
// per direction so that the per-call work is only filling in lengths.
type mmsgBatch struct {
	hdrs []unix.Mmsghdr
	// iovs: receive uses two per message (raw IPv4 header, payload); send
	// lays them out in order, one per datagram plus one per IKE marker.
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte
	ipHdr []byte // receive side of raw IPv4: the kernel-supplied IP header lands here
	grp   []int  // send side: datagrams carried by each header (more than 1 with GSO)

	// Arguments and results of the system call. fn is bound once so that
	// RawConn.Read/Write get no freshly allocated closure per call.
	off   int // first header to pass; sendmmsg resumes after a short count
	count int
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// init sets up c around pc in place: the bound syscall functions point into
// c, so a batchConn must not be copied afterwards.
func (c *batchConn) init(pc net.PacketConn, v6, udp bool) error {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		pc.Close()
		return errors.New("transport: connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		pc.Close()
		return err
	}
	c.pc, c.rc, c.v6, c.udp = pc, rc, v6, udp
	switch a := pc.LocalAddr().(type) {
	case *net.UDPAddr:
		c.local = a.AddrPort()
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		c.local = netip.AddrPortFrom(ip, 0)
	}
	if !v6 {
		c.local = netip.AddrPortFrom(c.local.Addr().Unmap(), c.local.Port())
	}
	c.rx.init(!v6 && !udp)
	c.rx.fn = c.rx.recvmmsg
	c.tx.init(false)
	c.tx.fn = c.tx.sendmmsg
	if udp {
		// Readable since Linux 4.18, which added UDP_SEGMENT.
		var gerr error
		if err := rc.Control(func(fd uintptr) {
			_, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		}); err == nil && gerr == nil {
			c.gso = true
		}
	}
	return nil
}

func (b *mmsgBatch) init(rawIPv4Receive bool) {
	b.hdrs = make([]unix.Mmsghdr, batchSize)
	b.iovs = make([]unix.Iovec, 2*batchSize)
	b.names = make([]unix.RawSockaddrInet6, batchSize)
	b.oob = make([]byte, oobSize*batchSize)
	b.grp = make([]int, batchSize)
	if rawIPv4Receive {
		b.ipHdr = make([]byte, ipv4HeaderLen*batchSize)
	}
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[2*i]
		h.Control = &b.oob[i*oobSize]
		if b.ipHdr != nil {
			b.iovs[2*i].Base = &b.ipHdr[i*ipv4HeaderLen]
			b.iovs[2*i].SetLen(ipv4HeaderLen)
		}
	}
}

func (b *mmsgBatch) recvmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.count), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // let the poller wait for readability
		}
		b.n, b.errno = int(r), e
		return true
	}
}

func (b *mmsgBatch) sendmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.count), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // socket buffer full: wait for writability
		}
		b.n, b.errno = int(r), e
		return true
	}
}

func bufPtr(b []byte) *byte {
	if len(b) == 0 {
		return nil
	}
	return &b[0]
}

// ReadBatch implements Conn.
func (c *batchConn) ReadBatch(msgs []Datagram) (int, error) {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	limit, count := batchSize, len(msgs)
	if c.gro {
		// Every received datagram may hold GROSegments packets: read
		// only as many as msgs has room for all of.
		limit = batchSize * GROSegments
		count = min(batchSize, max(1, len(msgs)/GROSegments))
	}
	if len(msgs) > limit {
		msgs = msgs[:limit]
	}
	count = min(count, len(msgs))
	if count == 0 {
		return 0, nil
	}
	b := &c.rx
	for {
		for i := range msgs[:count] {
			h := &b.hdrs[i]
			h.Len = 0
			h.Hdr.Namelen = unix.SizeofSockaddrInet6
			h.Hdr.SetControllen(oobSize)
			h.Hdr.Flags = 0
			iov := b.iovs[2*i:]
			if b.ipHdr != nil {
				iov[1].Base = bufPtr(msgs[i].Buf)
				iov[1].SetLen(len(msgs[i].Buf))
				h.Hdr.SetIovlen(2)
			} else {
				iov[0].Base = bufPtr(msgs[i].Buf)
				iov[0].SetLen(len(msgs[i].Buf))
				h.Hdr.SetIovlen(1)
			}
		}
		b.count = count
		if err := c.rc.Read(b.fn); err != nil {
			return 0, err
		}
		if b.errno != 0 {
			if transientErrno(b.errno) {
				continue
			}
			return 0, os.NewSyscallError("recvmmsg", b.errno)
		}
		var n int
		if c.gro {
			n = c.deliverGRO(msgs, b.n)
		} else {
			n = c.deliver(msgs, b.n)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// transientErrno reports errors queued on the socket by ICMP (only possible
// with IP_RECVERR or a connected socket, neither of which we use, but cheap
// to be robust against); they describe an earlier send, not this read.
func transientErrno(e syscall.Errno) bool {
	switch e {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN,
		unix.ENETDOWN, unix.EPROTO, unix.EMSGSIZE:
		return true
	}
	return false
}

// deliver classifies the k received messages, compacts the ones for the
// caller to the front of msgs and returns how many there are.
func (c *batchConn) deliver(msgs []Datagram, k int) int {
	b := &c.rx
	var esp, ike, ka, bad uint64
	j := 0
	for i := 0; i < k; i++ {
		h := &b.hdrs[i]
		buf := msgs[i].Buf
		n := int(h.Len)
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			bad++ // larger than the buffer: cannot be a valid packet for the caller
			continue
		}
		var p []byte
		isIKE := false
		if c.ikeOnly {
			p, isIKE = buf[:n], true
		} else if c.udp {
			switch {
			case n >= 4 && buf[0]|buf[1]|buf[2]|buf[3] == 0:
				if n == 4 {
					bad++ // marker without an IKE message
					continue
				}
				p, isIKE = buf[4:n], true
			case n == 1 && buf[0] == 0xff:
				ka++
				continue
			case n < espHeaderLen:
				bad++
				continue
			default:
				p = buf[:n]
			}
		} else {
			if b.ipHdr != nil {
				// Raw IPv4 sockets deliver the IP header: the first 20 bytes
				// are in ipHdr, options (if any) at the start of buf.
				hdr := b.ipHdr[i*ipv4HeaderLen:]
				ihl := int(hdr[0]&0x0f) * 4
				if hdr[0]>>4 != 4 || ihl < ipv4HeaderLen || n < ihl {
					bad++
					continue
				}
				n -= ipv4HeaderLen
				if opt := ihl - ipv4HeaderLen; opt > 0 {
					// Rare: keep the payload at the start of the caller's
					// buffer rather than make every caller handle an offset.
					copy(buf, buf[opt:n])
					n -= opt
				}
			}
			// SPI 0 is reserved and never sent on the wire (RFC 4303 §2.1).
			if n < espHeaderLen || buf[0]|buf[1]|buf[2]|buf[3] == 0 {
				bad++
				continue
			}
			p = buf[:n]
		}
		if j != i {
			// Swap rather than overwrite so no caller buffer goes missing.
			msgs[i].Buf, msgs[j].Buf = msgs[j].Buf, msgs[i].Buf
		}
		m := &msgs[j]
		m.Buf = p
		m.IKE = isIKE
		m.Remote = sockaddrToAddrPort(&b.names[i])
		m.Local = pktinfoDst(b.oob[i*oobSize : i*oobSize+int(h.Hdr.Controllen)])
		if isIKE {
			ike++
		} else {
			esp++
		}
		j++
	}
	if esp > 0 {
		c.received.Add(esp)
	}
	if ike > 0 {
		c.ike.Add(ike)
	}
	if ka > 0 {
		c.keepalives.Add(ka)
	}
	if bad > 0 {
		c.malformed.Add(bad)
	}
	return j
}

// deliverGRO is deliver for a UDP socket with UDP_GRO: a received datagram
// may hold several ESP packets of gso bytes each, the last possibly
// shorter (the kernel coalesces only equal-sized datagrams of one flow,
// RFC 768 framing lost). Each becomes a Datagram whose Buf is a slice of
// the receive buffer, capped at its own end so that appending to it (the
// TUN's GRO) cannot run into the next one (the last keeps the buffer's
// spare capacity): nothing is copied.
func (c *batchConn) deliverGRO(msgs []Datagram, k int) int {
	b := &c.rx
	got := c.got[:0]
	for i := range k {
		h := &b.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			c.malformed.Add(1)
			continue
		}
		oob := b.oob[i*oobSize : i*oobSize+int(h.Hdr.Controllen)]
		r := received{buf: msgs[i].Buf, n: int(h.Len), remote: sockaddrToAddrPort(&b.names[i]), local: pktinfoDst(oob)}
		if g := groSize(oob); g > 0 && g < r.n {
			r.gso = g
			c.coalesced.Add(1)
		}
		got = append(got, r)
	}
	c.got = got
	var esp, ike, ka, bad, over uint64
	j := 0
	for _, r := range got {
		seg := r.n
		if r.gso > 0 {
			seg = r.gso
		}
		first := j
		for off := 0; off < r.n; off += seg {
			end := min(off+seg, r.n)
			if j == len(msgs) {
				over++ // only from a local sender of more than GROSegments segments
				continue
			}
			// Capped at the next packet's start; the last keeps the
			// buffer's spare room.
			seg := r.buf[off:end:end]
			if end == r.n {
				seg = r.buf[off:end]
			}
			p, isIKE, drop := classifyUDP(seg)
			switch drop {
			case dropKeepalive:
				ka++
				continue
			case dropMalformed:
				bad++
				continue
			}
			msgs[j] = Datagram{Buf: p, IKE: isIKE, Remote: r.remote, Local: r.local}
			if isIKE {
				ike++
			} else {
				esp++
			}
			j++
		}
		if j-first > 1 {
			msgs[first].Segs = j - first
		}
	}
	clear(c.got) // no references to the caller's buffers after return
	for _, v := range []struct {
		ctr *atomic.Uint64
		n   uint64
	}{{&c.received, esp}, {&c.ike, ike}, {&c.keepalives, ka}, {&c.malformed, bad}, {&c.groOverflow, over}} {
		if v.n > 0 {
			v.ctr.Add(v.n)
		}
	}
	return j
}

type udpDrop int

const (
	dropNone udpDrop = iota
	dropKeepalive
	dropMalformed
)

// classifyUDP sorts one ESP-in-UDP payload (RFC 3948 §2): IKE behind the
// non-ESP marker (returned without it), a NAT keep-alive, too short for
// ESP, or ESP.
func classifyUDP(buf []byte) (p []byte, isIKE bool, drop udpDrop) {
	n := len(buf)
	switch {
	case n >= 4 && buf[0]|buf[1]|buf[2]|buf[3] == 0:
		if n == 4 {
			return nil, false, dropMalformed // marker without an IKE message
		}
		return buf[4:], true, dropNone
	case n == 1 && buf[0] == 0xff:
		return nil, false, dropKeepalive
	case n < espHeaderLen:
		return nil, false, dropMalformed
	}
	return buf, false, dropNone
}

// groSize returns the segment size of a UDP_GRO control message, or 0.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4 {
			return int(*(*int32)(unsafe.Pointer(&data[0])))
		}
		oob = rest
	}
	return 0
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p := uint16(port[0])<<8 | uint16(port[1])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), p)
	case unix.AF_INET6:
		// The scope ID of a link-local peer is dropped: turning it into a
		// netip zone string would allocate, and ESP peers are not link-local.
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), p)
	}
	return netip.AddrPort{}
}

// pktinfoDst returns the destination address of a received packet from its
// IP_PKTINFO or IPV6_PKTINFO control message.
func pktinfoDst(oob []byte) netip.Addr {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// ipi_addr is the header's destination; ipi_spec_dst is the
			// kernel's preferred reply source, which can differ.
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom4(pi.Addr)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(pi.Addr)
		}
		oob = rest
	}
	return netip.Addr{}
}

// WriteBatch implements Conn.
func (c *batchConn) WriteBatch(msgs []Datagram) (int, error) {
	c.txMu.Lock()
	defer c.txMu.Unlock()
	return c.writeLocked(msgs)
}

// writeLocked is WriteBatch with txMu held.
func (c *batchConn) writeLocked(msgs []Datagram) (int, error) {
	sent := 0
	for sent < len(msgs) {
		chunk := msgs[sent:]
		if len(chunk) > batchSize {
			chunk = chunk[:batchSize]
		}
		n, err := c.writeChunk(chunk)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// writeChunk sends up to batchSize messages. Called with txMu held.
func (c *batchConn) writeChunk(msgs []Datagram) (int, error) {
	b := &c.tx
	gso := c.gso
	nh, nd, perr := c.packTx(msgs, gso)
	sentH, sentD := 0, 0
	for sentH < nh {
		b.off, b.count = sentH, nh-sentH
		if err := c.rc.Write(b.fn); err != nil {
			c.sent.Add(uint64(sentD))
			return sentD, err
		}
		if e := b.errno; e != 0 {
			if gso && b.grp[sentH] > 1 && (e == unix.EIO || e == unix.EINVAL || e == unix.EMSGSIZE) {
				// The kernel refused segmentation: the segment size exceeds
				// the path MTU (EMSGSIZE; EINVAL on older kernels) or the
				// device cannot checksum for us (EIO, permanent). Send the rest of the chunk one
				// datagram per header, which also surfaces any error that
				// was not about GSO against the right datagram.
				if e == unix.EIO {
					c.gso = false
				}
				// These datagrams packed before, so repacking cannot fail.
				gso = false
				nh, _, _ = c.packTx(msgs[sentD:nd], false)
				sentH = 0
				continue
			}
			c.sent.Add(uint64(sentD))
			return sentD, os.NewSyscallError("sendmmsg", e)
		}
		for _, g := range b.grp[sentH : sentH+b.n] {
			sentD += g
			if g > 1 {
				c.gsoSends.Add(1)
			}
		}
		sentH += b.n
	}
	c.sent.Add(uint64(sentD))
	return sentD, perr
}

const (
	// maxGSOSegments is UDP_MAX_SEGMENTS of older kernels (newer allow 128).
	maxGSOSegments = 64
	// maxGSOBytes keeps a segmented send under the 64 KiB IP datagram limit
	// with either family's headers.
	maxGSOBytes = 65000
)

// packTx lays msgs out as send headers and returns how many headers and how
// many datagrams it used; err is why it stopped before the end. With gso,
// runs of datagrams for the same addresses with one size (the last may be
// shorter) share a header and a UDP_SEGMENT control message, with one iovec
// each, so nothing is copied.
func (c *batchConn) packTx(msgs []Datagram, gso bool) (nh, nd int, err error) {
	b := &c.tx
	iv := 0
	for nd < len(msgs) {
		d := &msgs[nd]
		h := &b.hdrs[nh]
		if err := c.packHeader(nh, d); err != nil {
			return nh, nd, err
		}
		iov := b.iovs[iv:]
		k := 0
		if d.IKE && !c.ikeOnly {
			iov[0].Base = &nonESPMarker[0]
			iov[0].SetLen(len(nonESPMarker))
			k++
		}
		iov[k].Base = bufPtr(d.Buf)
		iov[k].SetLen(len(d.Buf))
		k++
		nd++
		segs := 1
		if gso && !d.IKE && len(d.Buf) > 0 {
			size, last, total := len(d.Buf), len(d.Buf), len(d.Buf)
			for nd < len(msgs) && segs < maxGSOSegments && last == size {
				e := &msgs[nd]
				if e.IKE || e.Remote != d.Remote || e.Local != d.Local ||
					len(e.Buf) == 0 || len(e.Buf) > size || total+len(e.Buf) > maxGSOBytes {
					break
				}
				iov[k].Base = &e.Buf[0]
				iov[k].SetLen(len(e.Buf))
				k++
				last = len(e.Buf)
				total += last
				segs++
				nd++
			}
			if segs > 1 {
				cl := int(h.Hdr.Controllen)
				h.Hdr.SetControllen(cl + putUDPSegment(b.oob[nh*oobSize+cl:(nh+1)*oobSize], uint16(size)))
			}
		}
		h.Hdr.Iov = &iov[0]
		h.Hdr.SetIovlen(k)
		b.grp[nh] = segs
		iv += k
		nh++
	}
	return nh, nd, nil
}

// packHeader fills send header i with d's addresses.
func (c *batchConn) packHeader(i int, d *Datagram) error {
	b := &c.tx
	h := &b.hdrs[i]
	h.Len = 0
	h.Hdr.Flags = 0
	if d.IKE && !c.udp {
		return errIKEOnRaw
	}

	remote := d.Remote.Addr()
	var ok bool
	if c.v6 {
		ok = remote.Is6() && !remote.Is4In6() // the socket is IPV6_V6ONLY
	} else {
		remote = remote.Unmap()
		ok = remote.Is4()
	}
	if !ok {
		return fmt.Errorf("%w: remote %v", errFamily, d.Remote)
	}
	sa := &b.names[i]
	port := uint16(0)
	if c.udp {
		port = d.Remote.Port()
	}
	if c.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: remote.As16()}
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
	} else {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: remote.As4()}
		h.Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	pb := (*[2]byte)(unsafe.Pointer(&sa.Port))
	pb[0], pb[1] = byte(port>>8), byte(port)

	h.Hdr.SetControllen(0)
	if local := d.Local; local.IsValid() && !local.IsUnspecified() {
		oob := b.oob[i*oobSize : (i+1)*oobSize]
		if c.v6 {
			if !local.Is6() || local.Is4In6() {
				return fmt.Errorf("%w: local %v", errFamily, local)
			}
			h.Hdr.SetControllen(putPktinfo6(oob, local))
		} else {
			local = local.Unmap()
			if !local.Is4() {
				return fmt.Errorf("%w: local %v", errFamily, local)
			}
			h.Hdr.SetControllen(putPktinfo4(oob, local))
		}
	}
	return nil
}

// putUDPSegment writes a UDP_SEGMENT control message: the kernel cuts the
// payload into datagrams of size bytes (the last may be shorter).
func putUDPSegment(oob []byte, size uint16) int {
	clear(oob[:unix.CmsgSpace(2)])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = size
	return unix.CmsgSpace(2)
}

// putPktinfo4 writes an IP_PKTINFO control message choosing src as the
// source address (ipi_spec_dst; ifindex 0 leaves the route lookup free).
func putPktinfo4(oob []byte, src netip.Addr) int {
	clear(oob[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.IPPROTO_IP
	h.Type = unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	pi.Spec_dst = src.As4()
	return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
}

// putPktinfo6 writes an IPV6_PKTINFO control message choosing src as the
// source address.
func putPktinfo6(oob []byte, src netip.Addr) int {
	clear(oob[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.IPPROTO_IPV6
	h.Type = unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	pi.Addr = src.As16()
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
}

// BatchSize implements Conn.
func (c *batchConn) BatchSize() int { return batchSize }

// Close implements Conn. Blocked ReadBatch and WriteBatch calls return
// an error wrapping net.ErrClosed.
func (c *batchConn) Close() error { return c.pc.Close() }

// LocalAddr returns the address the socket is bound to (port 0 for raw ESP).
func (c *batchConn) LocalAddr() netip.AddrPort { return c.local }

// Stats implements Conn.
func (c *batchConn) Stats() Stats {
	return Stats{
		Received:    c.received.Load(),
		Sent:        c.sent.Load(),
		Keepalives:  c.keepalives.Load(),
		Malformed:   c.malformed.Load(),
		IKE:         c.ike.Load(),
		GROOverflow: c.groOverflow.Load(),
		Coalesced:   c.coalesced.Load(),
		PacketSent:  c.packetSent.Load(),
	}
}
