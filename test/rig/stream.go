package rig

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// EchoServer answers UDP datagrams on the server's port 7 (IPv4 and
// IPv6) until the bed is torn down.
func EchoServer(bed *netns.Bed) error {
	for _, a := range []netip.Addr{netns.Srv4, netns.Srv6} {
		if err := echoOn(bed, a); err != nil {
			return err
		}
	}
	return nil
}

func echoOn(bed *netns.Bed, a netip.Addr) error {
	_, err := EchoIn(bed.Srv, a)
	return err
}

// EchoIn answers UDP datagrams on port 7 of a (unspecified: every
// address) in ns until the returned stop is called.
func EchoIn(ns *netns.NS, a netip.Addr) (stop func(), err error) {
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 7)))
		return err
	}); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return func() { c.Close(); <-done }, nil
}

type answer struct{ sent, got time.Time }

// Stream sends a numbered UDP datagram every interval from the road
// warrior to the server's echo port (EchoServer) and records when each
// answer came back. Its socket is not bound to an address, so every
// datagram takes the source the routing gives it at that moment.
type Stream struct {
	mu      sync.Mutex
	sent    map[uint32]time.Time
	replies []answer
	conn    *net.UDPConn
	stop    chan struct{}
	done    sync.WaitGroup
	once    sync.Once
}

// StartStream starts sending to the server's IPv4 address; Close stops it.
func StartStream(bed *netns.Bed, interval time.Duration) (*Stream, error) {
	return StartStreamTo(bed, netns.Srv4, interval)
}

// StartStreamTo is StartStream to the server address srv (IPv4 or IPv6).
func StartStreamTo(bed *netns.Bed, srv netip.Addr, interval time.Duration) (*Stream, error) {
	return StartStreamIn(bed.RW, srv, interval)
}

// StartStreamIn is StartStreamTo from namespace ns (any bed).
func StartStreamIn(ns *netns.NS, srv netip.Addr, interval time.Duration) (*Stream, error) {
	s := &Stream{sent: map[uint32]time.Time{}, stop: make(chan struct{})}
	network := "udp6"
	if srv.Is4() {
		network = "udp4"
	}
	if err := ns.Do(func() (err error) {
		s.conn, err = net.ListenUDP(network, nil)
		return err
	}); err != nil {
		return nil, err
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(srv, 7))
	s.done.Go(func() {
		buf := make([]byte, 64)
		for {
			n, err := s.conn.Read(buf)
			if err != nil {
				return
			}
			if n != 4 {
				continue
			}
			seq := uint32(buf[0])<<24 | uint32(buf[1])<<16 | uint32(buf[2])<<8 | uint32(buf[3])
			now := time.Now()
			s.mu.Lock()
			if sent, ok := s.sent[seq]; ok {
				s.replies = append(s.replies, answer{sent, now})
			}
			s.mu.Unlock()
		}
	})
	s.done.Go(func() {
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for seq := uint32(0); ; seq++ {
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
			b := []byte{byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
			s.mu.Lock()
			s.sent[seq] = time.Now()
			s.mu.Unlock()
			s.conn.WriteToUDP(b, dst) // an error (no route for a moment) is a lost datagram
		}
	})
	return s, nil
}

// Close stops the stream; it is safe to call twice.
func (s *Stream) Close() {
	s.once.Do(func() {
		close(s.stop)
		s.conn.Close()
		s.done.Wait()
	})
}

// FirstReplyAfter is when the first answer to a datagram sent after t0
// came back, or zero: an answer already in flight at t0 does not count.
func (s *Stream) FirstReplyAfter(t0 time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.replies {
		if r.sent.After(t0) {
			return r.got
		}
	}
	return time.Time{}
}

// LongestGap is the longest time between two answers in a row that came
// back between from and to (from and to count as answers): the outage of
// an interruption inside that window.
func (s *Stream) LongestGap(from, to time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []time.Time
	for _, r := range s.replies {
		if r.got.After(from) && r.got.Before(to) {
			got = append(got, r.got)
		}
	}
	slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
	prev, longest := from, time.Duration(0)
	for _, g := range append(got, to) {
		longest = max(longest, g.Sub(prev))
		prev = g
	}
	return longest
}

// WaitFor polls cond every few milliseconds until it holds or d passes,
// and reports whether it held.
func WaitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cond()
}

// Counts returns how many datagrams were sent and how many came back.
func (s *Stream) Counts() (sent, answered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent), len(s.replies)
}

// LostBetween counts the datagrams sent between from and to that no
// answer came back for.
func (s *Stream) LostBetween(from, to time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	answered := map[time.Time]bool{}
	for _, r := range s.replies {
		answered[r.sent] = true
	}
	lost := 0
	for _, at := range s.sent {
		if at.After(from) && at.Before(to) && !answered[at] {
			lost++
		}
	}
	return lost
}
