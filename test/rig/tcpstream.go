package rig

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// TCPStream is one established TCP connection between the server and the
// road warrior's address local, over which the server writes a checked
// byte stream (byte i is i mod 251) in chunks at a steady pace; the road
// warrior reads it, checks every byte and records when each read
// returned. It is what a long-lived connection bound to one of the road
// warrior's addresses sees across a failover.
type TCPStream struct {
	mu    sync.Mutex
	reads []time.Time
	n     int64
	err   error
	ln    net.Listener
	cli   net.Conn
	srv   chan net.Conn
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once
}

const tcpStreamPort = "5202"

// StartTCPStream connects from the road warrior's address local to the
// server (port 5202) and starts the stream: chunk bytes every interval.
func StartTCPStream(bed *netns.Bed, local netip.Addr, chunk int, interval time.Duration) (*TCPStream, error) {
	srvAddr := netns.Srv4
	if local.Is6() {
		srvAddr = netns.Srv6
	}
	return StartTCPStreamIn(bed.RW, bed.Srv, local, srvAddr, chunk, interval)
}

// StartTCPStreamIn is StartTCPStream between namespaces cl and srv (any
// bed), to the server's address srvAddr.
func StartTCPStreamIn(cl, srv *netns.NS, local, srvAddr netip.Addr, chunk int, interval time.Duration) (*TCPStream, error) {
	s := &TCPStream{srv: make(chan net.Conn, 1), stop: make(chan struct{})}
	if err := srv.Do(func() (err error) {
		s.ln, err = net.Listen("tcp", net.JoinHostPort(srvAddr.String(), tcpStreamPort))
		return err
	}); err != nil {
		return nil, err
	}
	s.done.Go(func() {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.srv <- c
		s.write(c, chunk, interval)
	})
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), Timeout: 10 * time.Second}
	if err := cl.Do(func() (err error) {
		s.cli, err = d.Dial("tcp", net.JoinHostPort(srvAddr.String(), tcpStreamPort))
		return err
	}); err != nil {
		s.ln.Close()
		s.done.Wait()
		return nil, fmt.Errorf("TCP stream from %v: %w", local, err)
	}
	s.done.Go(s.read)
	return s, nil
}

func (s *TCPStream) write(c net.Conn, chunk int, interval time.Duration) {
	defer c.Close()
	buf := make([]byte, chunk)
	var off int64
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for i := range buf {
			buf[i] = byte((off + int64(i)) % 251)
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
		off += int64(chunk)
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *TCPStream) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := s.cli.Read(buf)
		now := time.Now()
		s.mu.Lock()
		for i := range n {
			if buf[i] != byte((s.n+int64(i))%251) && s.err == nil {
				s.err = fmt.Errorf("TCP stream corrupted at byte %d", s.n+int64(i))
			}
		}
		s.n += int64(n)
		if n > 0 {
			s.reads = append(s.reads, now)
		}
		if err != nil && s.err == nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			select {
			case <-s.stop:
			default:
				s.err = err
			}
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Received is the number of bytes read so far.
func (s *TCPStream) Received() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Err is the first corruption or connection error seen (nil: intact).
func (s *TCPStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// FirstReadAfter is when the first read after t returned (zero if none).
func (s *TCPStream) FirstReadAfter(t time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.reads {
		if r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// Stall is the longest time between two reads (or between the last read
// and to) that ends after from and at or before to: how long the
// connection stood still around an event at from.
func (s *TCPStream) Stall(from, to time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var prev time.Time
	var worst time.Duration
	for _, r := range s.reads {
		if r.After(to) {
			break
		}
		if r.After(from) && !prev.IsZero() {
			worst = max(worst, r.Sub(prev))
		}
		prev = r
	}
	if !prev.IsZero() && to.After(from) {
		start := prev
		if from.After(prev) {
			start = from
		}
		worst = max(worst, to.Sub(start))
	}
	return worst
}

// Close ends the stream and joins its goroutines.
func (s *TCPStream) Close() {
	s.once.Do(func() {
		close(s.stop)
		s.ln.Close()
		s.cli.Close()
		select {
		case c := <-s.srv:
			c.Close()
		default:
		}
		s.done.Wait()
	})
}
