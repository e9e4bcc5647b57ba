package datapath

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// IKEQueue hands IKE messages from the packet paths to IKE goroutines of
// their own: the crypto workers that find IKE on UDP 4500 (RFC 3948's
// non-ESP marker) and the UDP 500 readers only copy the message into a
// free slot and go on, so ESP never waits for IKE's lock or its
// Diffie-Hellman. When every slot is taken, or the bytes queued would pass
// the bound, the message is dropped and counted (Dropped): IKE gives way
// first, and IKE retransmits (RFC 7296 §2.1).
type IKEQueue struct {
	work     chan *ikeMsg
	free     chan *ikeMsg
	maxBytes int64
	queued   atomic.Int64 // bytes in work
	dropped  atomic.Uint64
	done     chan struct{}
	stop     sync.Once
}

type ikeMsg struct {
	buf    []byte
	local  netip.Addr
	remote netip.AddrPort
	natT   bool
}

// ikeSlot is a slot's buffer size kept between messages; a larger message
// gets a buffer of its own, dropped after use, so the steady memory is
// slots × ikeSlot and the bytes queued at any time at most maxBytes.
const ikeSlot = 2048

// NewIKEQueue makes a queue of n slots holding at most n × 2 KiB of
// messages.
func NewIKEQueue(n int) *IKEQueue {
	q := &IKEQueue{work: make(chan *ikeMsg, n), free: make(chan *ikeMsg, n), maxBytes: int64(n) * ikeSlot, done: make(chan struct{})}
	for range n {
		q.free <- &ikeMsg{buf: make([]byte, 0, ikeSlot)}
	}
	return q
}

// Push copies msg into the queue; it never blocks. False: dropped and
// counted (queue full).
func (q *IKEQueue) Push(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool {
	if q.queued.Add(int64(len(msg))) > q.maxBytes {
		q.queued.Add(-int64(len(msg)))
		q.dropped.Add(1)
		return false
	}
	var m *ikeMsg
	select {
	case m = <-q.free:
	default:
		q.queued.Add(-int64(len(msg)))
		q.dropped.Add(1)
		return false
	}
	m.buf = append(m.buf[:0], msg...)
	m.local, m.remote, m.natT = local, remote, natT
	q.work <- m // never blocks: there are as many slots as free buffers
	return true
}

// Dropped is how many messages the queue refused.
func (q *IKEQueue) Dropped() uint64 { return q.dropped.Load() }

// Run drains the queue with workers goroutines calling handle (which must
// copy what it keeps) until Close; it returns once they all have.
func (q *IKEQueue) Run(workers int, handle func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool)) {
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for {
				select {
				case <-q.done:
					return
				case m := <-q.work:
					handle(m.buf, m.local, m.remote, m.natT)
					q.queued.Add(-int64(len(m.buf)))
					if cap(m.buf) > ikeSlot {
						m.buf = make([]byte, 0, ikeSlot)
					}
					q.free <- m
				}
			}
		})
	}
	wg.Wait()
}

// Close stops Run's goroutines; messages still queued are dropped.
func (q *IKEQueue) Close() { q.stop.Do(func() { close(q.done) }) }
