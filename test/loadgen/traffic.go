package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

const ipv4UDPHeader = 20 + 8

// innerUDP writes an IPv4/UDP packet src:port -> dst with payload bytes of
// zeros (index i in the first four, for the reader) at b and returns its
// length. The UDP checksum is 0: optional over IPv4 (RFC 768).
func innerUDP(b []byte, src netip.Addr, dst netip.AddrPort, payload int, i uint32) int {
	n := ipv4UDPHeader + payload
	clear(b[:n])
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	s, d := src.As4(), dst.Addr().As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ipv4Checksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+payload))
	if payload >= 4 {
		binary.BigEndian.PutUint32(b[28:], i)
	}
	return n
}

func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Blast sends UDP datagrams of payload bytes to dst through the Child SAs
// of road warriors idx, round robin, from senders goroutines, until ctx
// ends or each sender has gone count times over its share (0: no limit).
// It returns how many were sealed and handed to the socket. Road warriors
// that are down are skipped.
func (g *Gen) Blast(ctx context.Context, idx []int, dst netip.AddrPort, payload, count, senders int) uint64 {
	return g.offer(ctx, idx, dst, payload, count, senders, 0, 1)
}

// BlastAt is Blast at an offered rate of pps datagrams per second in all
// (0: as fast as it can), until ctx ends. A rate the gateway can carry
// measures it without the flood's cost: a datagram the gateway's socket
// drops has still cost the generator its sealing and the kernel its way
// there, CPU both take from the gateway on a shared machine.
func (g *Gen) BlastAt(ctx context.Context, idx []int, dst netip.AddrPort, payload, senders int, pps float64, burst int) uint64 {
	return g.offer(ctx, idx, dst, payload, 0, senders, pps, burst)
}

func (g *Gen) offer(ctx context.Context, idx []int, dst netip.AddrPort, payload, count, senders int, pps float64, burst int) uint64 {
	if len(idx) == 0 {
		return 0
	}
	var sent atomic.Uint64
	var wg sync.WaitGroup
	senders = max(1, senders)
	// Each sender paces its share of the rate: one datagram every gap.
	var gap time.Duration
	if pps > 0 {
		gap = time.Duration(float64(senders) * float64(time.Second) / pps)
	}
	for s := range senders {
		wg.Go(func() {
			// Each sender owns a contiguous share of idx; with fewer road
			// warriors than senders they all send over every one (Seal is
			// safe concurrently; the reordering, a batch or two, stays far
			// inside the replay window), so one SA gets as many senders as
			// many SAs do.
			share := idx
			if len(idx) >= senders {
				share = idx[s*len(idx)/senders : (s+1)*len(idx)/senders]
			}
			sent.Add(g.blast(ctx, share, dst, payload, count, gap, max(1, burst)))
		})
	}
	wg.Wait()
	return sent.Load()
}

// pacer holds a sender to one datagram every gap (0: no pacing): after
// each batch it sleeps until the batch's time has come.
type pacer struct {
	gap  time.Duration
	next time.Time
}

func (p *pacer) wait(ctx context.Context, n int) {
	if p.gap == 0 || n == 0 {
		return
	}
	now := time.Now()
	if p.next.IsZero() || now.Sub(p.next) > 100*time.Millisecond {
		p.next = now // start, or fell far behind: no burst to catch up
	}
	p.next = p.next.Add(time.Duration(n) * p.gap)
	if d := p.next.Sub(now); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

func (g *Gen) blast(ctx context.Context, idx []int, dst netip.AddrPort, payload, count int, gap time.Duration, burst int) uint64 {
	// A paced sender sends batches of about a millisecond's worth, so a
	// slow rate still comes out as a steady stream.
	batch := 64
	if gap > 0 {
		batch = max(1, min(batch, int(time.Millisecond/gap)))
	}
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, tunnel.HeaderLen+ipv4UDPHeader+payload+tunnel.MaxTrailer)
	}
	msgs := make([]transport.Datagram, batch)
	p := pacer{gap: gap}
	var sent uint64
	n := 0
	flush := func() {
		if n > 0 {
			k, _ := g.udp.WriteBatch(msgs[:n])
			sent += uint64(k)
			p.wait(ctx, n)
			n = 0
		}
	}
	// A batch fills across rounds: with a share of fewer road warriors
	// than a batch (one SA) a round still does not cost a system call of
	// its own.
	for rounds := 0; ctx.Err() == nil && (count == 0 || rounds < count); rounds++ {
		up := 0
		for _, i := range idx {
			rw := g.rws[i]
			sa := rw.out.Load()
			if sa == nil {
				continue
			}
			up++
			for range burst {
				b := bufs[n][:cap(bufs[n])]
				l := innerUDP(b[tunnel.HeaderLen:], rw.addr, dst, payload, uint32(i))
				esp, err := sa.Seal(b, l)
				if err != nil {
					break
				}
				msgs[n] = transport.Datagram{Buf: esp, Local: rw.addr, Remote: g.gw}
				if n++; n == batch {
					flush()
				}
			}
			if ctx.Err() != nil {
				break
			}
		}
		if up == 0 {
			break // nobody to send through
		}
	}
	flush()
	return sent
}

// Sink counts UDP datagrams to one address; Echo answers them to their
// source. Open them in the namespace behind the gateway (netns.NS.Do).
type Sink struct {
	c       *net.UDPConn
	echo    bool
	Packets atomic.Uint64
	Bytes   atomic.Uint64
	done    chan struct{}
}

// ListenSink opens a sink (echo: an echo server) at addr; the caller runs
// it in the right namespace.
func ListenSink(addr netip.AddrPort, echo bool) (*Sink, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	c.SetReadBuffer(8 << 20)
	s := &Sink{c: c, echo: echo, done: make(chan struct{})}
	go s.serve()
	return s, nil
}

func (s *Sink) serve() {
	defer close(s.done)
	b := make([]byte, 65536)
	for {
		n, from, err := s.c.ReadFromUDPAddrPort(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.Packets.Add(1)
		s.Bytes.Add(uint64(n))
		if s.echo {
			s.c.WriteToUDPAddrPort(b[:n], from)
		}
	}
}

// Close stops the sink and waits for its goroutine.
func (s *Sink) Close() {
	s.c.Close()
	<-s.done
}

// WaitReceived waits until every road warrior of idx has received at
// least n inner packets, or timeout; it returns those that have not.
func (g *Gen) WaitReceived(idx []int, n uint64, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var short []int
		for _, i := range idx {
			if g.rws[i].rx.Load() < n {
				short = append(short, i)
			}
		}
		if len(short) == 0 || time.Now().After(deadline) {
			return short
		}
		time.Sleep(20 * time.Millisecond)
	}
}
