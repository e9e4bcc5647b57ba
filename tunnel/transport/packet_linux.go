package transport

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Raw ESP over a packet socket (issue 14). A raw IP socket takes every
// packet through the route lookup, the netfilter OUTPUT and POSTROUTING
// hooks, ip_output and the neighbour layer. An AF_PACKET SOCK_DGRAM socket
// hands the packet, IPv4 header written here, to dev_queue_xmit with the
// next hop's MAC address: on veth it costs half the CPU per 1400-byte packet
// (BenchmarkRawESPSend). What it gives up, and how that is contained:
//
//   - Routing: the next hop (interface, gateway, preferred source) is looked
//     up over netlink with the socket's mark (SO_MARK, SetMark) and cached
//     per (local, remote) for nextHopTTL (unresolvedTTL when unusable), so
//     a route change reaches this path up to nextHopTTL late. A send error
//     drops the entry at once.
//   - Neighbours: the kernel does not see these packets, so it never moves a
//     STALE entry on to DELAY and PROBE. A next hop found STALE sends its
//     next packet through the raw socket, which does (RFC 1122 §2.3.2.1's
//     reachability confirmation is the kernel's job, not ours). An entry
//     without a usable address (INCOMPLETE, FAILED, none) means the raw
//     socket for every packet to that peer, which also makes the kernel
//     resolve it.
//   - Fragmentation: a packet larger than the interface MTU goes through the
//     raw socket, which fragments it (DF clear, see the package doc).
//   - Netfilter: OUTPUT and POSTROUTING rules do not see these packets; the
//     qdisc (tc) and packet captures still do.
//   - IPv4 on Ethernet only; anything else goes through the raw socket.
//
// Receive stays on the raw socket: see ARCHITECTURE.md for why a
// TPACKET_V3 ring was measured and not used.

// nextHopTTL bounds how long a cached next hop is used before netlink is
// asked again; unresolvedTTL how long one without a usable neighbour
// (being resolved through the raw socket's packets, or not Ethernet) sends
// through the raw socket before netlink is asked again.
const (
	nextHopTTL    = time.Second
	unresolvedTTL = 100 * time.Millisecond
)

// errNoNextHop: the packet goes through the raw socket.
var errNoNextHop = errors.New("transport: no usable next hop for the packet socket")

type hopKey struct{ local, remote netip.Addr }

// nextHop is where the packet socket sends for one (local, remote).
type nextHop struct {
	ok      bool // false: use the raw socket (cached so netlink is not asked per packet)
	stale   bool // the neighbour is STALE: one packet through the raw socket first
	ifindex int32
	mac     [6]byte
	src     netip.Addr // outer source: local, or the route's preferred source
	mtu     int
	expires int64 // monotonic nanoseconds
}

// packetSender is the packet-socket half of an ESPConn. Its fields are
// guarded by the ESPConn's txMu.
type packetSender struct {
	fd    int
	nl    *netlink.Handle
	hops  map[hopKey]*nextHop
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrLinklayer
	ip    []byte
	id    uint16
	epoch time.Time
	// resolve is the netlink lookup, replaceable in tests.
	resolve func(k hopKey, mark uint32) nextHop
}

// EnablePacketSend makes WriteBatch send IPv4 ESP through an AF_PACKET
// socket where the next hop is known (see the comment above nextHopTTL),
// and through the raw socket otherwise. It must be called in the network
// namespace of the socket. Needs CAP_NET_RAW. IPv6 ESPConns return an
// error and stay as they are.
func (c *ESPConn) EnablePacketSend() error {
	if c.v6 {
		return errors.New("transport: packet-socket send is IPv4 only")
	}
	// Protocol 0: the socket receives nothing; it is only sent from.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket AF_PACKET", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize)
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		unix.Close(fd)
		return err
	}
	p := &packetSender{
		fd: fd, nl: nl, hops: make(map[hopKey]*nextHop), epoch: time.Now(),
		hdrs:  make([]unix.Mmsghdr, batchSize),
		iovs:  make([]unix.Iovec, 2*batchSize),
		names: make([]unix.RawSockaddrLinklayer, batchSize),
		ip:    make([]byte, ipv4HeaderLen*batchSize),
	}
	p.resolve = p.lookup
	for i := range p.hdrs {
		h := &p.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&p.names[i]))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &p.iovs[2*i]
		h.SetIovlen(2)
		p.iovs[2*i].Base = &p.ip[i*ipv4HeaderLen]
		p.iovs[2*i].SetLen(ipv4HeaderLen)
	}
	c.txMu.Lock()
	old := c.ps
	c.ps = p
	c.txMu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

func (p *packetSender) close() {
	unix.Close(p.fd)
	p.nl.Close()
}

// Close implements Conn.
func (c *ESPConn) Close() error {
	err := c.batchConn.Close()
	c.txMu.Lock()
	if c.ps != nil {
		c.ps.close()
		c.ps = nil
	}
	c.txMu.Unlock()
	return err
}

// WriteBatch implements Conn: runs of packets with a usable next hop go
// through the packet socket, the others through the raw socket, in order.
func (c *ESPConn) WriteBatch(msgs []Datagram) (int, error) {
	c.txMu.Lock()
	defer c.txMu.Unlock()
	if c.ps == nil {
		return c.writeLocked(msgs)
	}
	now := int64(time.Since(c.ps.epoch))
	sent := 0
	for sent < len(msgs) {
		rest := msgs[sent:min(len(msgs), sent+batchSize)]
		k := c.packetRun(rest, now)
		var n int
		var err error
		if k > 0 {
			n, err = c.ps.send(rest[:k])
			c.sent.Add(uint64(n))
			c.packetSent.Add(uint64(n))
			if err != nil {
				// Forget the next hop and let the raw socket try
				// the packet (and surface its error, if any).
				delete(c.ps.hops, hopKey{rest[n].Local, rest[n].Remote.Addr()})
				err = nil
				k = n
			}
		}
		if k == 0 {
			n, err = c.writeLocked(rest[:c.rawRun(rest, now)])
		}
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// packetRun returns how many packets from the start of msgs can go through
// the packet socket, filling in their send headers.
func (c *ESPConn) packetRun(msgs []Datagram, now int64) int {
	p := c.ps
	for i := range msgs {
		h := p.hop(&msgs[i], c.mark.Load(), now)
		if h == nil {
			return i
		}
		ipv4Header(p.ip[i*ipv4HeaderLen:], h.src, msgs[i].Remote.Addr().Unmap(), len(msgs[i].Buf), p.id)
		p.id++
		p.names[i] = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(unix.ETH_P_IP), Ifindex: h.ifindex, Halen: 6}
		copy(p.names[i].Addr[:6], h.mac[:])
		p.iovs[2*i+1].Base = &msgs[i].Buf[0]
		p.iovs[2*i+1].SetLen(len(msgs[i].Buf))
	}
	return len(msgs)
}

// rawRun returns how many packets from the start of msgs (at least one)
// must go through the raw socket.
func (c *ESPConn) rawRun(msgs []Datagram, now int64) int {
	for i := 1; i < len(msgs); i++ {
		if h := c.ps.entry(&msgs[i], c.mark.Load(), now); h != nil && h.fits(&msgs[i]) && !h.stale {
			return i
		}
	}
	return len(msgs)
}

// hop returns d's next hop for the packet socket, or nil for the raw
// socket. The first packet to a STALE next hop takes the raw socket.
func (p *packetSender) hop(d *Datagram, mark uint32, now int64) *nextHop {
	h := p.entry(d, mark, now)
	if h == nil || !h.fits(d) {
		return nil
	}
	if h.stale {
		h.stale = false // this one through the raw socket: the kernel re-probes
		return nil
	}
	return h
}

// entry returns d's cached next hop, looked up again once expired, or nil
// for packets the raw socket must send (or refuse).
func (p *packetSender) entry(d *Datagram, mark uint32, now int64) *nextHop {
	if d.IKE || len(d.Buf) == 0 || !d.Remote.Addr().Unmap().Is4() {
		return nil // errors (IKE on raw, family) are the raw path's to report
	}
	k := hopKey{d.Local, d.Remote.Addr()}
	h := p.hops[k]
	if h == nil || now >= h.expires {
		if h == nil {
			if len(p.hops) >= maxNextHops {
				clear(p.hops) // bounded memory; re-resolved on use
			}
			h = new(nextHop)
			p.hops[k] = h
		}
		*h = p.resolve(k, mark)
		h.expires = now + int64(nextHopTTL)
		if !h.ok {
			h.expires = now + int64(unresolvedTTL)
		}
	}
	return h
}

// fits reports whether d can go to h through the packet socket.
func (h *nextHop) fits(d *Datagram) bool { return h.ok && ipv4HeaderLen+len(d.Buf) <= h.mtu }

// maxNextHops bounds the next-hop cache (one entry per peer and local
// address in use).
const maxNextHops = 1 << 16

// lookup asks netlink for the route to k.remote from k.local with mark,
// and for the next hop's neighbour entry.
func (p *packetSender) lookup(k hopKey, mark uint32) nextHop {
	opts := &netlink.RouteGetOptions{Mark: mark}
	if k.local.IsValid() && !k.local.IsUnspecified() {
		opts.SrcAddr = net.IP(k.local.Unmap().AsSlice())
	}
	routes, err := p.nl.RouteGetWithOptions(net.IP(k.remote.Unmap().AsSlice()), opts)
	if err != nil || len(routes) == 0 || routes[0].Type != unix.RTN_UNICAST {
		return nextHop{}
	}
	r := routes[0]
	gw := r.Gw
	if gw == nil {
		gw = net.IP(k.remote.Unmap().AsSlice())
	}
	src, ok := netip.AddrFromSlice(r.Src)
	if opts.SrcAddr != nil {
		src, ok = k.local.Unmap(), true
	}
	link, err := p.nl.LinkByIndex(r.LinkIndex)
	if err != nil || !ok || link.Attrs().EncapType != "ether" {
		return nextHop{}
	}
	neighs, err := p.nl.NeighList(r.LinkIndex, netlink.FAMILY_V4)
	if err != nil {
		return nextHop{}
	}
	const usable = netlink.NUD_REACHABLE | netlink.NUD_PERMANENT | netlink.NUD_NOARP |
		netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE
	for _, n := range neighs {
		if !n.IP.Equal(gw) || n.State&usable == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		h := nextHop{ok: true, stale: n.State&netlink.NUD_STALE != 0, ifindex: int32(r.LinkIndex), src: src.Unmap(), mtu: link.Attrs().MTU}
		copy(h.mac[:], n.HardwareAddr)
		return h
	}
	return nextHop{}
}

// send sends msgs, whose headers packetRun filled in, with sendmmsg. It
// returns how many went out; on error msgs[n] is the one that failed.
func (p *packetSender) send(msgs []Datagram) (int, error) {
	off := 0
	for off < len(msgs) {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&p.hdrs[off])), uintptr(len(msgs)-off), 0, 0, 0)
		switch e {
		case 0:
			off += int(r)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			// A blocking socket: a full device queue. Wait as the raw
			// socket's writer would, without a poller (the fd is not
			// registered with the runtime).
			pfd := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLOUT}}
			_, _ = unix.Poll(pfd, 10)
		default:
			return off, os.NewSyscallError("sendmmsg AF_PACKET", e)
		}
	}
	return len(msgs), nil
}

// ipv4Header writes a 20-byte IPv4 header for an ESP payload of n bytes:
// DF clear, as the raw socket's IP_PMTUDISC_DONT (RFC 4301 §8.1), TTL 64
// (the kernel's default), protocol 50 (RFC 4303).
func ipv4Header(h []byte, src, dst netip.Addr, n int, id uint16) {
	h[0], h[1] = 0x45, 0
	h[2], h[3] = byte((ipv4HeaderLen+n)>>8), byte(ipv4HeaderLen+n)
	h[4], h[5] = byte(id>>8), byte(id)
	h[6], h[7], h[8], h[9] = 0, 0, 64, unix.IPPROTO_ESP
	h[10], h[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	var sum uint32
	for i := 0; i < ipv4HeaderLen; i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	h[10], h[11] = byte(c>>8), byte(c)
}

// htons puts a 16-bit protocol number in network order for sockaddr_ll.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
