package datapath

import (
	"encoding/binary"
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
//
// New IKE_SA_INIT requests (responder SPI zero) have a lane of their own,
// and the IKE goroutines serve the other lane first: a flood of
// IKE_SA_INIT, spoofed or not, fills only its own lane, and the messages
// of IKE SAs that exist (IKE_AUTH, DPD, rekeys, DELETE) still get through.
type IKEQueue struct {
	// Screen, if set (before the first Push), sees each new IKE_SA_INIT
	// request first, in the pushing goroutine; true: it took the message
	// (ike.Endpoint.Screen: answered with a COOKIE or dropped, counted
	// there), which then takes no slot.
	Screen func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool

	lanes   [2]lane // laneSA first, then laneInit
	ready   chan struct{}
	dropped atomic.Uint64
	done    chan struct{}
	stop    sync.Once
}

const (
	laneSA   = 0 // messages of existing IKE SAs
	laneInit = 1 // new IKE_SA_INIT requests
)

type lane struct {
	work     chan *ikeMsg
	free     chan *ikeMsg
	maxBytes int64
	queued   atomic.Int64 // bytes in work
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

// NewIKEQueue makes a queue of n slots per lane, each lane holding at most
// n × 2 KiB of messages.
func NewIKEQueue(n int) *IKEQueue {
	q := &IKEQueue{ready: make(chan struct{}, 2*n), done: make(chan struct{})}
	for i := range q.lanes {
		l := &q.lanes[i]
		l.work, l.free, l.maxBytes = make(chan *ikeMsg, n), make(chan *ikeMsg, n), int64(n)*ikeSlot
		for range n {
			l.free <- &ikeMsg{buf: make([]byte, 0, ikeSlot)}
		}
	}
	return q
}

// isInit says whether msg is a new IKE_SA_INIT request: exchange type 34,
// the Response flag clear and the responder's SPI zero (RFC 7296 §3.1).
func isInit(msg []byte) bool {
	return len(msg) >= 28 && binary.BigEndian.Uint64(msg[8:16]) == 0 && msg[18] == 34 && msg[19]&0x20 == 0
}

// Push copies msg into the queue (or lets Screen take it); it never
// blocks. False: dropped and counted (queue full).
func (q *IKEQueue) Push(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool {
	l := &q.lanes[laneSA]
	if isInit(msg) {
		if q.Screen != nil && q.Screen(msg, local, remote, natT) {
			return true
		}
		l = &q.lanes[laneInit]
	}
	if l.queued.Add(int64(len(msg))) > l.maxBytes {
		l.queued.Add(-int64(len(msg)))
		q.dropped.Add(1)
		return false
	}
	var m *ikeMsg
	select {
	case m = <-l.free:
	default:
		l.queued.Add(-int64(len(msg)))
		q.dropped.Add(1)
		return false
	}
	m.buf = append(m.buf[:0], msg...)
	m.local, m.remote, m.natT = local, remote, natT
	l.work <- m           // never blocks: there are as many slots as free buffers
	q.ready <- struct{}{} // nor this: one token per queued message, 2n at most
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
				case <-q.ready:
				}
				q.serve(handle)
			}
		})
	}
	wg.Wait()
}

// serve handles one message, from the existing SAs' lane if it has one.
// A ready token was taken, so one of the lanes holds a message.
func (q *IKEQueue) serve(handle func([]byte, netip.Addr, netip.AddrPort, bool)) {
	var m *ikeMsg
	var l *lane
	select {
	case m = <-q.lanes[laneSA].work:
		l = &q.lanes[laneSA]
	default:
		select {
		case m = <-q.lanes[laneSA].work:
			l = &q.lanes[laneSA]
		case m = <-q.lanes[laneInit].work:
			l = &q.lanes[laneInit]
		}
	}
	handle(m.buf, m.local, m.remote, m.natT)
	l.queued.Add(-int64(len(m.buf)))
	if cap(m.buf) > ikeSlot {
		m.buf = make([]byte, 0, ikeSlot)
	}
	l.free <- m
}

// Close stops Run's goroutines; messages still queued are dropped.
func (q *IKEQueue) Close() { q.stop.Do(func() { close(q.done) }) }
