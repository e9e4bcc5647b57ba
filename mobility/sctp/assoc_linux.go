package sctp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	libsctp "github.com/ishidawataru/sctp"
	"golang.org/x/sys/unix"
)

// eventQueue is the depth of Events(). The reader blocks (and the kernel
// queues further notifications on the socket) while it is full.
const eventQueue = 64

// readBufSize holds any notification Linux sends us; a longer one (an
// ABORT with a huge cause in SCTP_COMM_LOST) would arrive truncated and be
// counted as malformed.
const readBufSize = 16 << 10

var errStopped = errors.New("sctp: association closed")

// Assoc is one one-to-one (SOCK_STREAM) SCTP association, multihomed.
// Its methods are safe for concurrent use; after Close they return
// net.ErrClosed.
type Assoc struct {
	conn     *libsctp.SCTPConn // over f's descriptor; called only inside rc callbacks
	f        *os.File          // owns the descriptor, registered with the runtime poller
	rc       syscall.RawConn
	id       int32
	peerPort uint16

	events    chan Event
	stop      chan struct{}
	done      chan struct{} // closed when the reader has returned
	readErr   error         // written by the reader before done is closed
	closeOnce sync.Once
	closeErr  error
	malformed atomic.Uint64
}

func newAssoc() *Assoc {
	return &Assoc{events: make(chan Event, eventQueue), stop: make(chan struct{}), done: make(chan struct{})}
}

// Dial connects a road warrior's association: it binds the local addresses
// (all of the host's if local is empty) and connects with connectx to the
// gateway's addresses on port; the kernel tries them in turn for the INIT.
// The notifications are subscribed and t applied before the INIT. ctx bounds
// the handshake (besides t.MaxInitAttempts): when it ends first, the INIT is
// abandoned and Dial returns ctx's error.
func Dial(ctx context.Context, local, peers []netip.Addr, port int, t Tuning) (*Assoc, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if len(peers) == 0 {
		return nil, errors.New("sctp: dial: no peer address")
	}
	if port <= 0 || port > 0xffff {
		return nil, fmt.Errorf("sctp: dial: port %d out of range", port)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var laddr *libsctp.SCTPAddr
	if len(local) > 0 {
		laddr = sctpAddr(local, 0)
	}
	raddr := sctpAddr(peers, port)
	a := newAssoc()

	// The library's connect blocks until the association is up. To honour
	// ctx, a watcher shuts the socket down when ctx ends: the kernel then
	// abandons the association in COOKIE-WAIT, which wakes the connect. The
	// watcher works on a duplicate of the descriptor, so it never touches
	// a number the library has closed and someone else reused.
	dup := -1
	dialDone := make(chan struct{})
	watcherDone := make(chan struct{})
	cfg := a.socketConfig(t)
	cfg.Control = func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			if err = configureSocket(int(fd), t); err != nil {
				return
			}
			if dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err != nil {
				dup, err = -1, fmt.Errorf("sctp: dup: %w", err)
			}
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return err
		}
		go func() {
			defer close(watcherDone)
			select {
			case <-ctx.Done():
				unix.Shutdown(dup, unix.SHUT_RDWR)
			case <-dialDone:
			}
		}()
		return nil
	}
	conn, err := cfg.Dial("sctp", laddr, raddr)
	close(dialDone)
	if dup >= 0 {
		<-watcherDone
		unix.Close(dup)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return nil, fmt.Errorf("sctp: dial %v: %w", raddr, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		conn.Close()
		return nil, fmt.Errorf("sctp: dial %v: %w", raddr, cerr)
	}
	if err := a.adopt(conn, t, port); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Assoc) socketConfig(t Tuning) libsctp.SocketConfig {
	attempts, initTimeo := t.initMsg()
	return libsctp.SocketConfig{
		InitMsg:             libsctp.InitMsg{NumOstreams: 1, MaxInstreams: 1, MaxAttempts: attempts, MaxInitTimeout: initTimeo},
		NotificationHandler: a.handle,
	}
}

func sctpAddr(addrs []netip.Addr, port int) *libsctp.SCTPAddr {
	sa := &libsctp.SCTPAddr{Port: port}
	for _, a := range addrs {
		a = a.Unmap()
		sa.IPAddrs = append(sa.IPAddrs, net.IPAddr{IP: net.IP(a.AsSlice()), Zone: a.Zone()})
	}
	return sa
}

func rawFD(c interface {
	SyscallConn() (syscall.RawConn, error)
}) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// adopt takes over conn's connected socket: non-blocking, owned by an
// os.File so that reads go through the runtime poller and Close cannot race
// a use of the descriptor; applies t to the association and starts the
// reader. On error the socket is closed.
func (a *Assoc) adopt(conn *libsctp.SCTPConn, t Tuning, peerPort int) error {
	fd, err := rawFD(conn)
	if err != nil {
		conn.Close()
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		conn.Close()
		return fmt.Errorf("sctp: %w", err)
	}
	a.conn = conn
	a.f = os.NewFile(uintptr(fd), "sctp")
	if a.rc, err = a.f.SyscallConn(); err != nil {
		a.f.Close()
		return err
	}
	err = a.control(func(fd int) error {
		st, err := a.conn.GetStatus()
		if err != nil {
			return optErr("get SCTP_STATUS", err)
		}
		a.id = int32(st.AssocID)
		if peerPort == 0 {
			peers, err := getAddrs(fd, optGetPeerAddrs, a.id)
			if err != nil {
				return err
			}
			if len(peers) == 0 {
				return errors.New("sctp: association without peer address")
			}
			peerPort = int(peers[0].Port())
		}
		a.peerPort = uint16(peerPort)
		return applyTuning(fd, a.id, t, false)
	})
	if err != nil {
		a.f.Close()
		return err
	}
	go a.readLoop()
	return nil
}

// control runs f with the descriptor, which stays open meanwhile.
func (a *Assoc) control(f func(fd int) error) error {
	var ferr error
	if err := a.rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return net.ErrClosed
	}
	return ferr
}

func (a *Assoc) readLoop() {
	defer close(a.done)
	defer close(a.events)
	buf := make([]byte, readBufSize)
	for {
		var rerr error
		err := a.rc.Read(func(uintptr) bool {
			for {
				// Notifications go to a.handle; data (none is expected)
				// is dropped. Returns EAGAIN once the socket is drained.
				_, _, rerr = a.conn.SCTPRead(buf)
				if !errors.Is(rerr, unix.EINTR) {
					break
				}
			}
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			select {
			case <-a.stop:
			default:
				a.readErr = err // io.EOF: the association is over
			}
			return
		}
	}
}

// handle is the library's NotificationHandler: it runs on the reader.
func (a *Assoc) handle(b []byte) error {
	n, err := ParseNotification(b)
	if err != nil {
		a.malformed.Add(1)
		return nil
	}
	ev, ok := EventOf(n, time.Now())
	if !ok {
		return nil
	}
	select {
	case a.events <- ev:
		return nil
	case <-a.stop:
		return errStopped
	}
}

// Events delivers path and association events in the order the kernel sent
// them. It is closed when the association is over (Err tells why) or closed.
// Read it: while it is full, no further notification is read.
func (a *Assoc) Events() <-chan Event { return a.events }

// Err is why Events was closed: nil after Close; io.EOF after the peer shut
// the association down; after SCTP_COMM_LOST the socket's error (ETIMEDOUT
// when every path failed, ECONNRESET when the peer aborted). It is nil while
// Events is open. Once it is set the association is over: Dial again.
func (a *Assoc) Err() error {
	select {
	case <-a.done:
		return a.readErr
	default:
		return nil
	}
}

// Malformed counts notifications that failed to decode (and were dropped).
func (a *Assoc) Malformed() uint64 { return a.malformed.Load() }

func (a *Assoc) peer(addr netip.Addr) netip.AddrPort {
	if !addr.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addr, a.peerPort)
}

func addrsOf(aps []netip.AddrPort) []netip.Addr {
	out := make([]netip.Addr, len(aps))
	for i, ap := range aps {
		out[i] = ap.Addr()
	}
	return out
}

// PeerAddrs are the peer's addresses in the association (SCTP_GET_PEER_ADDRS).
func (a *Assoc) PeerAddrs() (addrs []netip.Addr, err error) {
	err = a.control(func(fd int) error {
		aps, err := getAddrs(fd, optGetPeerAddrs, a.id)
		addrs = addrsOf(aps)
		return err
	})
	return
}

// LocalAddrs are this end's addresses in the association (SCTP_GET_LOCAL_ADDRS).
func (a *Assoc) LocalAddrs() (addrs []netip.Addr, err error) {
	err = a.control(func(fd int) error {
		aps, err := getAddrs(fd, optGetLocalAddrs, a.id)
		addrs = addrsOf(aps)
		return err
	})
	return
}

// PeerAddrInfo is the kernel's view of the path to one peer address: its
// state, smoothed RTT and RTO (SCTP_GET_PEER_ADDR_INFO).
func (a *Assoc) PeerAddrInfo(addr netip.Addr) (pi PeerAddrInfo, err error) {
	if !addr.IsValid() {
		return pi, errors.New("sctp: PeerAddrInfo: no address")
	}
	err = a.control(func(fd int) (err error) {
		pi, err = getPaddrInfo(fd, a.id, a.peer(addr))
		return
	})
	return
}

// SetPrimary makes addr the primary path (SCTP_PRIMARY_ADDR): the one data
// and the association's traffic use while it is active.
func (a *Assoc) SetPrimary(addr netip.Addr) error {
	if !addr.IsValid() {
		return errors.New("sctp: SetPrimary: no address")
	}
	return a.control(func(fd int) error { return setPrimary(fd, a.id, a.peer(addr)) })
}

// Primary is the primary path's peer address.
func (a *Assoc) Primary() (addr netip.Addr, err error) {
	err = a.control(func(fd int) error {
		ap, err := getPrimary(fd, a.id)
		addr = ap.Addr()
		return err
	})
	return
}

// RequestHeartbeat sends a heartbeat to addr now (SPP_HB_DEMAND), or to every
// peer address when addr is not valid. It counts like a periodic one: sent
// while the previous is unanswered, it is a strike against the path, so
// calling it when a link is known to be down hastens the detection.
func (a *Assoc) RequestHeartbeat(addr netip.Addr) error {
	return a.control(func(fd int) error {
		targets := []netip.Addr{addr}
		if !addr.IsValid() {
			aps, err := getAddrs(fd, optGetPeerAddrs, a.id)
			if err != nil {
				return err
			}
			targets = addrsOf(aps)
		}
		for _, t := range targets {
			if err := setPaddrParams(fd, a.id, a.peer(t), PeerAddrParams{Flags: SPPHBDemand}); err != nil {
				return fmt.Errorf("%v: %w", t, err)
			}
		}
		return nil
	})
}

// Send sends b as one message on stream 0. The peer's reader drops data;
// what matters is that DATA is outstanding on the primary path, so its
// retransmission timer (T3-rtx, one RTO, RFC 4960 §6.3.3) strikes a dead
// path, where heartbeats alone are sent at most every 200 ms plus up to
// an RTO (net/sctp/transport.c: sctp_transport_timeout).
func (a *Assoc) Send(b []byte) error {
	var werr error
	err := a.rc.Write(func(uintptr) bool {
		for {
			_, werr = a.conn.SCTPWrite(b, nil)
			if !errors.Is(werr, unix.EINTR) {
				break
			}
		}
		return !errors.Is(werr, unix.EAGAIN)
	})
	if err != nil {
		return net.ErrClosed
	}
	return werr
}

// RTOInfo reads the association's SCTP_RTOINFO.
func (a *Assoc) RTOInfo() (r RTOInfo, err error) {
	err = a.control(func(fd int) (err error) {
		r, err = getRTOInfo(fd, a.id)
		return
	})
	return
}

// PeerAddrParams reads SCTP_PEER_ADDR_PARAMS for addr, or the association's
// when addr is not valid.
func (a *Assoc) PeerAddrParams(addr netip.Addr) (p PeerAddrParams, err error) {
	err = a.control(func(fd int) (err error) {
		p, err = getPaddrParams(fd, a.id, a.peer(addr))
		return
	})
	return
}

// SetPeerAddrParams sets SCTP_PEER_ADDR_PARAMS for p.Addr, or for the
// association and all its paths when p.Addr is not valid.
func (a *Assoc) SetPeerAddrParams(p PeerAddrParams) error {
	return a.control(func(fd int) error { return setPaddrParams(fd, a.id, a.peer(p.Addr), p) })
}

// Thresholds reads SCTP_PEER_ADDR_THLDS for addr, or the association's when
// addr is not valid.
func (a *Assoc) Thresholds(addr netip.Addr) (th Thresholds, err error) {
	err = a.control(func(fd int) (err error) {
		th, err = getThlds(fd, a.id, a.peer(addr))
		return
	})
	return
}

// SetThresholds sets SCTP_PEER_ADDR_THLDS for addr, or for the association
// and all its paths when addr is not valid.
func (a *Assoc) SetThresholds(addr netip.Addr, th Thresholds) error {
	if th.PathMaxRetrans < 0 || th.PathMaxRetrans > 0xffff || th.PFThreshold < -1 || th.PFThreshold > 0xfffe {
		return fmt.Errorf("sctp: SetThresholds: %+v out of range", th)
	}
	pf := uint16(0xffff)
	if th.PFThreshold >= 0 {
		pf = uint16(th.PFThreshold)
	}
	return a.control(func(fd int) error { return setThlds(fd, a.id, a.peer(addr), uint16(th.PathMaxRetrans), pf) })
}

// Close shuts the association down gracefully (SHUTDOWN, RFC 4960 §9.2),
// releases the socket, and waits for the reader: Events is closed when
// Close returns.
func (a *Assoc) Close() error {
	a.closeOnce.Do(func() {
		close(a.stop)
		// ENOTCONN when the association is already gone.
		_ = a.control(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RDWR) })
		a.closeErr = a.f.Close()
		<-a.done
	})
	return a.closeErr
}

// Endpoint is the gateway's listening socket; Accept returns one Assoc per
// road warrior.
type Endpoint struct {
	f     *os.File
	rc    syscall.RawConn
	t     Tuning
	addrs []netip.AddrPort
}

// Listen binds the local addresses (all of the host's if local is empty) on
// port (0: one the kernel picks, see Port) and listens. The notifications
// are subscribed and t applied on the listening socket, before any INIT
// arrives; accepted associations inherit them, and get t again once up.
func Listen(local []netip.Addr, port int, t Tuning) (*Endpoint, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if port < 0 || port > 0xffff {
		return nil, fmt.Errorf("sctp: listen: port %d out of range", port)
	}
	attempts, initTimeo := t.initMsg()
	cfg := libsctp.SocketConfig{
		InitMsg: libsctp.InitMsg{NumOstreams: 1, MaxInstreams: 1, MaxAttempts: attempts, MaxInitTimeout: initTimeo},
		Control: func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) { err = configureSocket(int(fd), t) }); cerr != nil {
				return cerr
			}
			return err
		},
	}
	laddr := sctpAddr(local, port)
	ln, err := cfg.Listen("sctp", laddr)
	if err != nil {
		return nil, fmt.Errorf("sctp: listen %v: %w", laddr, err)
	}
	fd, err := rawFD(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		ln.Close()
		return nil, fmt.Errorf("sctp: %w", err)
	}
	e := &Endpoint{f: os.NewFile(uintptr(fd), "sctp-listener"), t: t}
	if e.rc, err = e.f.SyscallConn(); err == nil {
		e.addrs, err = getAddrs(fd, optGetLocalAddrs, futureAssoc)
	}
	if err == nil && len(e.addrs) == 0 {
		err = errors.New("sctp: listen: no local address")
	}
	if err != nil {
		e.f.Close()
		return nil, err
	}
	return e, nil
}

// Port is the port the endpoint listens on.
func (e *Endpoint) Port() int { return int(e.addrs[0].Port()) }

// Addrs are the addresses the endpoint is bound to.
func (e *Endpoint) Addrs() []netip.Addr { return addrsOf(e.addrs) }

// Accept waits for the next association. It returns net.ErrClosed once the
// endpoint is closed.
func (e *Endpoint) Accept() (*Assoc, error) {
	for {
		nfd, aerr := -1, error(nil)
		err := e.rc.Read(func(fd uintptr) bool {
			for {
				nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
				if !errors.Is(aerr, unix.EINTR) {
					break
				}
			}
			return !errors.Is(aerr, unix.EAGAIN)
		})
		if err != nil {
			return nil, fmt.Errorf("sctp: accept: %w", net.ErrClosed)
		}
		if errors.Is(aerr, unix.ECONNABORTED) {
			continue
		}
		if aerr != nil {
			return nil, fmt.Errorf("sctp: accept: %w", aerr)
		}
		a := newAssoc()
		if err := a.adopt(libsctp.NewSCTPConn(nfd, a.handle), e.t, 0); err != nil {
			return nil, err
		}
		return a, nil
	}
}

// Close stops listening; a blocked Accept returns net.ErrClosed. Accepted
// associations stay up.
func (e *Endpoint) Close() error { return e.f.Close() }
