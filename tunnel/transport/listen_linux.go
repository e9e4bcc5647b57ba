package transport

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ESPConn carries ESP directly over IP, protocol 50 (RFC 4303).
// WriteBatch may send through an AF_PACKET socket (EnablePacketSend).
type ESPConn struct {
	batchConn
	ps *packetSender // nil: raw socket only; guarded by txMu
}

// UDPConn carries ESP in UDP and IKE behind the non-ESP marker (RFC 3948).
type UDPConn struct{ batchConn }

// IKEConn carries IKE alone, without the non-ESP marker: the socket of UDP
// port 500 (RFC 7296 §2.23). Every datagram read is delivered with IKE set.
type IKEConn struct{ batchConn }

var (
	_ Conn = (*ESPConn)(nil)
	_ Conn = (*UDPConn)(nil)
)

// ListenRawESP opens a raw IP socket for protocol 50 bound to local. The
// family of local picks IPv4 or IPv6; an unspecified address receives ESP
// sent to any local address of that family. Needs CAP_NET_RAW.
//
// Every raw socket for protocol 50 gets its own copy of each incoming ESP
// packet, and the kernel's own ESP input (if loaded) still sees it too and
// drops it for want of a state.
func ListenRawESP(local netip.Addr) (*ESPConn, error) {
	if !local.IsValid() {
		return nil, errors.New("transport: ListenRawESP needs an address (unspecified for all)")
	}
	v6 := local.Is6() && !local.Is4In6()
	network := "ip4:50"
	if v6 {
		network = "ip6:50"
	} else {
		local = local.Unmap()
	}
	pc, err := listen(network, local.String(), v6)
	if err != nil {
		return nil, err
	}
	c := new(ESPConn)
	if err := c.init(pc, v6, false); err != nil {
		return nil, err
	}
	return c, nil
}

// ListenUDP opens a UDP socket for ESP in UDP and IKE bound to local. The
// family of local's address picks IPv4 or IPv6 (an IPv6 socket is
// IPV6_V6ONLY, so open one of each for both). Port 0 lets the kernel choose;
// see LocalAddr. Gateways use NATTPort.
func ListenUDP(local netip.AddrPort) (*UDPConn, error) {
	a := local.Addr()
	if !a.IsValid() {
		return nil, errors.New("transport: ListenUDP needs an address (unspecified for all)")
	}
	v6 := a.Is6() && !a.Is4In6()
	network := "udp4"
	if v6 {
		network = "udp6"
	} else {
		a = a.Unmap()
	}
	pc, err := listen(network, net.JoinHostPort(a.String(), strconv.Itoa(int(local.Port()))), v6)
	if err != nil {
		return nil, err
	}
	c := new(UDPConn)
	if err := c.init(pc, v6, true); err != nil {
		return nil, err
	}
	return c, nil
}

// ListenIKE opens the IKE socket of port 500 (or local's port) bound to
// local; see IKEConn.
func ListenIKE(local netip.AddrPort) (*IKEConn, error) {
	u, err := ListenUDP(local)
	if err != nil {
		return nil, err
	}
	c := &IKEConn{batchConn: batchConn{}}
	// Re-initialise around the same socket: batchConn binds closures to
	// its own address, so it cannot be copied.
	if err := c.init(u.pc, u.v6, true); err != nil {
		return nil, err
	}
	c.ikeOnly = true
	return c, nil
}

// SendIKE sends msg, an IKE message, from local (zero Addr: the kernel's
// choice) to remote.
func (c *IKEConn) SendIKE(msg []byte, local netip.Addr, remote netip.AddrPort) error {
	d := [1]Datagram{{Buf: msg, Local: local, Remote: remote, IKE: true}}
	_, err := c.WriteBatch(d[:])
	return err
}

func listen(network, address string, v6 bool) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		cerr := rc.Control(func(fd uintptr) { err = setSockopts(int(fd), v6) })
		if cerr != nil {
			return cerr
		}
		return err
	}}
	return lc.ListenPacket(context.Background(), network, address)
}

func setSockopts(fd int, v6 bool) error {
	// Up to net.core.{r,w}mem_max first, then beyond it where we have
	// CAP_NET_ADMIN. Failure only costs throughput, so it is not an error.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferSize)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBufferSize)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize)

	// PKTINFO reports the destination of each received packet. Sending with
	// a PKTINFO control message works without it. PMTUDISC_DONT: see the
	// package documentation on fragmentation.
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return err
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
}

// EnableGRO turns on UDP_GRO (Linux 5.0+): the kernel may then hand over
// up to GROSegments equal-sized datagrams of one flow in one read, which
// ReadBatch splits into one Datagram per packet without copying. ReadBatch
// then receives into msgs[:len(msgs)/GROSegments] (at most BatchSize; at
// least one) and uses the rest of msgs as room for the packets: pass
// GROSegments entries per receive buffer, up to BatchSize*GROSegments.
// Every receive buffer must hold 64 KiB (a coalesced read is up to that
// large; a shorter buffer would truncate it), and the caller must keep its
// own list of its buffers: delivered Bufs are slices of them, and msgs no
// longer holds each. It returns an error where the kernel lacks UDP_GRO;
// the socket then works as before.
func (c *UDPConn) EnableGRO() error {
	var serr error
	if err := c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt UDP_GRO", serr)
	}
	c.rxMu.Lock()
	c.gro = true
	if c.got == nil {
		c.got = make([]received, 0, batchSize)
	}
	c.rxMu.Unlock()
	return nil
}

// SendKeepalive sends a NAT keep-alive, the single byte 0xFF
// (RFC 3948 §2.3), from local (zero Addr: kernel's choice) to remote.
func (c *UDPConn) SendKeepalive(local netip.Addr, remote netip.AddrPort) error {
	d := [1]Datagram{{Buf: natKeepalive[:], Local: local, Remote: remote}}
	_, err := c.WriteBatch(d[:])
	return err
}

// SendIKE sends msg, an IKE message, prefixed with the non-ESP marker
// (RFC 3948 §2.2). The same is done by WriteBatch for a Datagram with IKE set.
func (c *UDPConn) SendIKE(msg []byte, local netip.Addr, remote netip.AddrPort) error {
	d := [1]Datagram{{Buf: msg, Local: local, Remote: remote, IKE: true}}
	_, err := c.WriteBatch(d[:])
	return err
}
