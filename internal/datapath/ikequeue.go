package datapath

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
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
// which any IKE goroutine takes from; the messages of an existing IKE SA go
// to the lane of the one goroutine that handles that IKE SA (worker), and
// each goroutine serves its own lane first: a flood of
// IKE_SA_INIT, spoofed or not, fills only its own lane, and the messages
// of IKE SAs that exist (IKE_AUTH, DPD, rekeys, DELETE) still get through.
type IKEQueue struct {
	// Screen, if set (before the first Push), sees each new IKE_SA_INIT
	// request first, in the pushing goroutine; true: it took the message
	// (ike.Endpoint.Screen: answered with a COOKIE or dropped, counted
	// there), which then takes no slot.
	Screen func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool

	init    initLane // new IKE_SA_INIT requests, for any worker, fair between sources
	sa      []lane   // messages of existing IKE SAs, one lane per worker
	seed    maphash.Seed
	dropped atomic.Uint64
	done    chan struct{}
	stop    sync.Once
}

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
	at     time.Time // queued (new IKE_SA_INIT requests only)
}

// initMaxWait is how long a new IKE_SA_INIT request may wait in its lane:
// an older one is dropped, counted (queue_full), when a worker reaches it.
// Under a flood of IKE_SA_INIT that answers cookies (real addresses, a
// Diffie-Hellman each) the lane stays full, and a FIFO of n slots would
// make a real initiator wait n × the handling time behind it, twice (the
// cookie round trip, RFC 7296 §2.6), past its retransmission timer
// (§2.1): stale requests are skipped in nanoseconds instead, so a new one
// waits at most about this long. The initiator retransmits what was
// dropped.
const initMaxWait = 250 * time.Millisecond

// ikeSlot is a slot's buffer size kept between messages; a larger message
// gets a buffer of its own, dropped after use, so the steady memory is
// slots × ikeSlot and the bytes queued at any time at most maxBytes.
const ikeSlot = 2048

// NewIKEQueue makes a queue for workers IKE goroutines: n slots for new
// IKE_SA_INIT requests, shared (fair between sources: initLane), and n slots for the messages of existing
// IKE SAs, split among the workers (at least minSlots each); each lane
// holds at most its slots × 2 KiB of messages.
func NewIKEQueue(n, workers int) *IKEQueue {
	workers = max(workers, 1)
	q := &IKEQueue{sa: make([]lane, workers), seed: maphash.MakeSeed(), done: make(chan struct{})}
	q.init.make(n)
	for i := range q.sa {
		q.sa[i].make(max((n+workers-1)/workers, minSlots))
	}
	return q
}

// minSlots is the fewest slots a worker's lane has: room for a few IKE
// SAs' messages however small the queue is configured.
const minSlots = 8

func (l *lane) make(n int) {
	l.work, l.free, l.maxBytes = make(chan *ikeMsg, n), make(chan *ikeMsg, n), int64(n)*ikeSlot
	for range n {
		l.free <- &ikeMsg{buf: make([]byte, 0, ikeSlot)}
	}
}

// isInit says whether msg is a new IKE_SA_INIT request: exchange type 34,
// the Response flag clear and the responder's SPI zero (RFC 7296 §3.1).
func isInit(msg []byte) bool {
	return len(msg) >= 28 && binary.BigEndian.Uint64(msg[8:16]) == 0 && msg[18] == 34 && msg[19]&0x20 == 0
}

// worker is the worker that handles msg's IKE SA: every message of one
// IKE SA carries the initiator's SPI (RFC 7296 §3.1, whoever sends it, a
// COOKIE or INVALID_KE_PAYLOAD answer included), so one IKE SA's messages
// are handled by one goroutine, in the order they came (its window, §2.3,
// and RFC 7383 fragment sets need no reordering). The seed keeps a peer
// from choosing SPIs that all land on one worker.
func (q *IKEQueue) worker(msg []byte) int {
	var spi uint64
	if len(msg) >= 8 {
		spi = binary.BigEndian.Uint64(msg)
	}
	return int(maphash.Comparable(q.seed, spi) % uint64(len(q.sa)))
}

// Push copies msg into the queue (or lets Screen take it); it never
// blocks. False: dropped and counted (queue full).
func (q *IKEQueue) Push(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool {
	if q.Screen != nil && isInit(msg) && q.Screen(msg, local, remote, natT) {
		return true
	}
	return q.PushScreened(msg, local, remote, natT)
}

// PushScreened is Push for a message its caller already screened (a
// reader with an ike.Screener of its own, which sends the COOKIE answers
// of a whole read at once): Screen is not called.
func (q *IKEQueue) PushScreened(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) bool {
	if isInit(msg) {
		ok, dropped := q.init.push(msg, local, remote, natT)
		if !ok {
			dropped++
		}
		q.dropped.Add(uint64(dropped))
		return ok
	}
	l := &q.sa[q.worker(msg)]
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
	l.work <- m // never blocks: there are as many slots as free buffers
	return true
}

// Dropped is how many messages the queue refused, or dropped as stale
// (initMaxWait).
func (q *IKEQueue) Dropped() uint64 { return q.dropped.Load() }

// Workers is how many goroutines Run starts.
func (q *IKEQueue) Workers() int { return len(q.sa) }

// Run drains the queue with its workers calling handle (which must copy
// what it keeps) until Close; it returns once they all have. Several
// workers call handle at once, never for the same IKE SA.
func (q *IKEQueue) Run(handle func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool)) {
	var wg sync.WaitGroup
	for i := range q.sa {
		wg.Go(func() { q.serve(&q.sa[i], handle) })
	}
	wg.Wait()
}

// serve is one worker: its IKE SAs' messages first, new IKE_SA_INIT
// requests when it has none, until Close.
func (q *IKEQueue) serve(own *lane, handle func([]byte, netip.Addr, netip.AddrPort, bool)) {
	for {
		var m *ikeMsg
		select {
		case <-q.done:
			return
		case m = <-own.work:
		default:
			select {
			case <-q.done:
				return
			case m = <-own.work:
			case <-q.init.ready:
				q.serveInit(handle)
				continue
			}
		}
		handle(m.buf, m.local, m.remote, m.natT)
		own.queued.Add(-int64(len(m.buf)))
		if cap(m.buf) > ikeSlot {
			m.buf = make([]byte, 0, ikeSlot)
		}
		own.free <- m
	}
}

// serveInit handles the next new IKE_SA_INIT request (initLane.pop), or
// drops it, counted, if it waited over initMaxWait.
func (q *IKEQueue) serveInit(handle func([]byte, netip.Addr, netip.AddrPort, bool)) {
	m := q.init.pop()
	if m == nil {
		return // a spare wake-up: its message was dropped to make room
	}
	if time.Since(m.at) > initMaxWait {
		q.dropped.Add(1) // stale (initMaxWait)
	} else {
		handle(m.buf, m.local, m.remote, m.natT)
	}
	q.init.done(m)
}

// Close stops Run's goroutines; messages still queued are dropped.
func (q *IKEQueue) Close() { q.stop.Do(func() { close(q.done) }) }
