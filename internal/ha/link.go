package ha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outLink is our dialled connection to the peer: it carries our frames
// (heartbeats, and as the active the records and checkpoints); the peer
// answers each with an ack on it.
type outLink struct {
	mu    sync.Mutex
	conn  net.Conn
	seal  *sealer
	seq   uint64
	buf   []byte
	acked atomic.Uint64
	wait  time.Duration // write deadline
	sent  *atomic.Uint64
}

// send seals and writes one frame; a failed write closes the connection
// (the dial loop makes a new one, which starts with a full resync).
func (l *outLink) send(f *Frame) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return net.ErrClosed
	}
	l.seq++
	f.Seq = l.seq
	l.conn.SetWriteDeadline(time.Now().Add(l.wait))
	var err error
	l.buf, err = l.seal.writeFrame(l.conn, f, l.buf)
	if err != nil {
		l.conn.Close()
		l.conn = nil
		return err
	}
	l.sent.Add(uint64(len(l.buf) + 4 + l.seal.aead.Overhead()))
	return nil
}

// lag is how many of our frames the peer has not acknowledged.
func (l *outLink) lag() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq - min(l.acked.Load(), l.seq)
}

func (l *outLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
}

// dialLoop keeps a connection to the peer, calling up on each new one
// (before any other frame goes out on it), until ctx ends.
func (n *Node) dialLoop(ctx context.Context) {
	d := net.Dialer{Timeout: max(n.cfg.DeadAfter, 200*time.Millisecond), LocalAddr: &net.TCPAddr{IP: n.cfg.Listen.Addr().AsSlice()},
		Control: n.userTimeout}
	var lastErr string // logged once per outage, not once per heartbeat
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", n.cfg.Peer.String())
		if err == nil {
			lastErr = ""
			err = n.runOut(ctx, c)
		}
		if ctx.Err() == nil && err != nil && !errors.Is(err, io.EOF) && err.Error() != lastErr {
			lastErr = err.Error()
			n.log.Info("ha: sync link to the peer", "peer", n.cfg.Peer, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(n.cfg.Heartbeat):
		}
	}
}

// runOut runs one dialled connection: handshake, full resync, then acks
// read until it fails.
func (n *Node) runOut(ctx context.Context, c net.Conn) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(time.Second))
	send, recv, err := handshake(c, n.cfg.Key, true)
	if err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	l := n.out
	l.mu.Lock()
	l.conn, l.seal, l.seq = c, send, 0
	l.acked.Store(0)
	l.mu.Unlock()
	defer l.close()
	n.wake(wakeConnected)
	var buf []byte
	for {
		var f Frame
		f, buf, err = recv.readFrame(c, buf)
		if err != nil {
			n.drop(err)
			return err
		}
		if f.Type == FrameAck {
			l.acked.Store(f.Acked)
			n.ackedAt.Store(time.Now().UnixNano())
		}
	}
}

// userTimeout sets TCP_USER_TIMEOUT (RFC 5482) to 4 × dead_after: a
// connection whose frames go unacknowledged that long (a cut sync link)
// is aborted by the kernel, so the dial loop makes a new one as soon as
// the link is back, instead of after TCP's retransmission back-off.
func (n *Node) userTimeout(_, _ string, rc syscall.RawConn) error {
	ms := int(4 * n.cfg.DeadAfter / time.Millisecond)
	var serr error
	err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms) })
	return errors.Join(err, serr)
}

// acceptLoop takes the peer's connections to us until ctx ends; each is
// served by its own goroutine, all joined before it returns.
func (n *Node) acceptLoop(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("ha: sync listener", "err", err)
			}
			return
		}
		wg.Go(func() { n.serveIn(ctx, c) })
	}
}

// serveIn reads the peer's frames, applies them and acknowledges each.
func (n *Node) serveIn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok && la.AddrPort().Addr().Unmap() != n.cfg.Listen.Addr() {
		n.answerProbe(c)
		return
	}
	if ap, ok := c.RemoteAddr().(*net.TCPAddr); !ok || ap.AddrPort().Addr().Unmap() != n.cfg.Peer.Addr() {
		n.drop(errNotPeer)
		return
	}
	c.SetDeadline(time.Now().Add(time.Second))
	send, recv, err := handshake(c, n.cfg.Key, false)
	if err != nil {
		n.drop(err)
		return
	}
	c.SetDeadline(time.Time{})
	var buf, abuf []byte
	var last uint64
	for {
		// The peer's heartbeats keep coming while it lives: a read that
		// waits several DeadAfter is a dead connection (a peer whose
		// host vanished sends no FIN).
		c.SetReadDeadline(time.Now().Add(4 * n.cfg.DeadAfter))
		var f Frame
		f, buf, err = recv.readFrame(c, buf)
		if err != nil {
			n.drop(err)
			return
		}
		if f.Seq != last+1 {
			n.drop(errOrder)
			return
		}
		last = f.Seq
		n.received.Add(uint64(4 + len(buf)))
		n.apply(f)
		c.SetWriteDeadline(time.Now().Add(n.cfg.DeadAfter))
		if abuf, err = send.writeFrame(c, &Frame{Type: FrameAck, Seq: f.Seq, Acked: f.Seq}, abuf); err != nil {
			return
		}
	}
}

var (
	errNotPeer = errors.New("ha: connection from an address that is not the peer")
	errOrder   = errors.New("ha: frame out of sequence")
)

// drop counts a failed connection by reason.
func (n *Node) drop(err error) {
	reason := ""
	switch {
	case errors.Is(err, ErrAuth):
		reason = "auth"
	case errors.Is(err, ErrHandshake):
		reason = "handshake"
	case errors.Is(err, errNotPeer):
		reason = "not_peer"
	case errors.Is(err, errOrder):
		reason = "out_of_order"
	case errors.Is(err, ErrShort), errors.Is(err, ErrUnknown), errors.Is(err, ErrTrailing), errors.Is(err, ErrBadRole),
		errors.Is(err, ErrTooLarge), errors.Is(err, ErrCheckCount), errors.Is(err, ErrBadDir):
		reason = "malformed"
	default:
		return // EOF, resets, timeouts: the link, not the frames
	}
	n.mu.Lock()
	n.drops[reason]++
	n.mu.Unlock()
}

// answerProbe answers a probe that reached us on another address than
// the sync address (a service address, over the service network): one
// sealed heartbeat, then close.
func (n *Node) answerProbe(c net.Conn) {
	c.SetDeadline(time.Now().Add(n.cfg.DeadAfter))
	send, _, err := handshake(c, n.cfg.Key, false)
	if err != nil {
		n.drop(err)
		return
	}
	n.mu.Lock()
	f := Frame{Type: FrameHeartbeat, Seq: 1, Role: n.m.Role(), Priority: n.cfg.Priority, Epoch: n.m.Epoch()}
	n.mu.Unlock()
	send.writeFrame(c, &f, nil)
}

// probe looks for a live active on the service network: it connects to
// the first service address of each family at the sync port, over the
// service network, and asks for a sealed heartbeat. The kernel of a host
// whose daemon died (kill -9) answers ARP and resets the connection, a
// dead host answers nothing: neither is a sign of the active. Only a
// daemon with the cluster key that says it is active is. An answer that
// does not authenticate means someone else holds the address: taking it
// would make a conflict, so it counts as seen.
func (n *Node) probe(ctx context.Context, wait time.Duration) (bool, error) {
	if n.cfg.Probe != nil {
		return n.cfg.Probe(ctx, n.cfg.Services, wait)
	}
	deadline := time.Now().Add(wait)
	var targets []netip.Addr
	for _, s := range n.cfg.Services {
		a := s.Prefix.Addr()
		if !slices.ContainsFunc(targets, func(t netip.Addr) bool { return t.Is4() == a.Is4() }) {
			targets = append(targets, a)
		}
	}
	type res struct {
		seen bool
		err  error
	}
	out := make(chan res, len(targets))
	for _, a := range targets {
		go func() {
			s, err := n.probeOne(ctx, netip.AddrPortFrom(a, n.cfg.Listen.Port()), deadline)
			out <- res{s, err}
		}()
	}
	seen, errs := false, []error(nil)
	for range targets { // every probe joined before returning
		r := <-out
		seen = seen || r.seen
		errs = append(errs, r.err)
	}
	return seen, errors.Join(errs...)
}

func (n *Node) probeOne(ctx context.Context, to netip.AddrPort, deadline time.Time) (bool, error) {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", to.String())
	if err != nil {
		return false, nil // refused (no daemon), unreachable or silent (no host)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	_, recv, err := handshake(c, n.cfg.Key, true)
	if err != nil {
		return isTimeout(err), nil // a reset: no daemon; a stall: a daemon too busy to answer is still there
	}
	f, _, err := recv.readFrame(c, nil)
	switch {
	case errors.Is(err, ErrAuth):
		return true, fmt.Errorf("probe %v: answered, but not under our cluster key: %w", to, err)
	case err != nil:
		return isTimeout(err), nil
	}
	return f.Type == FrameHeartbeat && f.Role == RoleActive, nil
}
