package datapath

import (
	"net/netip"
	"sync"
	"time"
)

// initLane is the lane of new IKE_SA_INIT requests, fair between source
// addresses. Under a flood that answers cookies (RFC 7296 §2.6 only proves
// the address is real) the lane is always full, and a FIFO makes a new
// initiator wait behind, or be dropped for, whatever the attacker's
// addresses queued before it. So the lane queues per source address and
// serves the sources in turn (round robin, one message each), in classes
// by the source's token bucket (initRate a second, initBurst at once: an
// honest initiator sends one IKE_SA_INIT per attempt, a few with its
// retransmissions, §2.1): "new" (a full bucket: nothing sent for
// initBurst/initRate), "fresh" (a token left) and "bulk" (over its rate),
// each class served before the next. A source holds at most initPerSource
// messages per class (its oldest goes: the newest is its retransmission);
// when every slot is taken, a new message takes the slot of the oldest
// message of the next source in turn of the lowest class that has one, if
// that class is not above its own (else it is dropped), counted. So a
// flood's addresses, which spend their tokens as fast as they come,
// compete with a new initiator only for as many messages as they have
// been silent (at initRate), not for the lane.
type initLane struct {
	mu       sync.Mutex
	ready    chan struct{} // wake-ups: at least one per queued message
	free     []*ikeMsg     // buffers not queued nor being handled
	spare    []*srcQueue   // recycled per-source queues
	srcs     map[srcKey]*srcQueue
	rings    [numClasses]srcRing // new, fresh, bulk: sources with messages, in turn
	bytes    int64               // queued and being handled
	maxBytes int64
	rate     rateTable
	clock    func() time.Time // time.Now; a test's own
}

// A source's class: its bucket when the message came.
const (
	classNew   = iota // full
	classFresh        // a token left
	classBulk         // none: over its rate
	numClasses
)

// initPerSource is how many IKE_SA_INIT requests one source (of a class)
// may have queued.
const initPerSource = 4

// initRate and initBurst are a source's fresh share: its token bucket
// (per second, and at once).
const (
	initRate  = 1.0
	initBurst = 4.0
)

// initTracked bounds the addresses the rate table remembers (two
// generations of it); an address it forgot is fresh again.
const initTracked = 1 << 15

type srcKey struct {
	addr  netip.Addr
	class uint8
}

type srcQueue struct {
	key  srcKey
	msgs []*ikeMsg // oldest first, at most initPerSource
	next *srcQueue // in its ring
}

// srcRing is a FIFO of the sources of one class that have messages queued.
type srcRing struct{ head, tail *srcQueue }

func (r *srcRing) push(q *srcQueue) {
	q.next = nil
	if r.tail == nil {
		r.head = q
	} else {
		r.tail.next = q
	}
	r.tail = q
}

func (r *srcRing) pop() *srcQueue {
	q := r.head
	if q != nil {
		r.head = q.next
		if r.head == nil {
			r.tail = nil
		}
		q.next = nil
	}
	return q
}

func (l *initLane) make(n int) {
	l.clock = time.Now
	l.ready = make(chan struct{}, n)
	l.maxBytes = int64(n) * ikeSlot
	l.srcs = make(map[srcKey]*srcQueue)
	l.free = make([]*ikeMsg, n)
	for i := range l.free {
		l.free[i] = &ikeMsg{buf: make([]byte, 0, ikeSlot)}
	}
}

// push queues a copy of msg; false: dropped. dropped is how many queued
// messages it dropped to make room (counted by the caller).
func (l *initLane) push(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock()
	key := srcKey{addr: remote.Addr(), class: l.rate.take(remote.Addr(), now)}
	size := int64(len(msg))
	if size > l.maxBytes {
		return false, 0
	}
	sq := l.srcs[key]
	if sq != nil && len(sq.msgs) >= initPerSource {
		l.release(sq.popFront()) // its own oldest
		dropped++
	}
	for len(l.free) == 0 || l.bytes+size > l.maxBytes {
		if !l.evict(int(key.class), sq) {
			return false, dropped
		}
		dropped++
	}
	m := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	l.bytes += size
	m.buf = append(m.buf[:0], msg...)
	m.local, m.remote, m.natT, m.at = local, remote, natT, now
	if sq == nil {
		sq = l.newSource(key)
	}
	if len(sq.msgs) == 0 {
		l.rings[key.class].push(sq)
	}
	sq.msgs = append(sq.msgs, m)
	select {
	case l.ready <- struct{}{}:
	default: // as many wake-ups pending as slots: enough for every message
	}
	return true, dropped
}

// evict drops the oldest message of the next source in turn of the
// lowest class that has one, if not above class; never of own (the
// pusher's queue, which keeps its place). False: nothing to drop (every
// slot is being handled, or only messages of higher classes are queued).
func (l *initLane) evict(class int, own *srcQueue) bool {
	for c := numClasses - 1; c >= class; c-- {
		r := &l.rings[c]
		sq := r.pop()
		if sq == own && sq != nil { // keep own's place: take the next one
			victim := r.pop()
			l.prepend(r, sq)
			sq = victim
		}
		if sq == nil {
			continue
		}
		l.release(sq.popFront())
		if len(sq.msgs) > 0 {
			r.push(sq)
		} else {
			l.dropSource(sq)
		}
		return true
	}
	return false
}

func (l *initLane) prepend(r *srcRing, q *srcQueue) {
	q.next = r.head
	r.head = q
	if r.tail == nil {
		r.tail = q
	}
}

// pop takes the next message to handle: the oldest of the next source in
// turn of the first class that has one; nil if none (a spare wake-up).
func (l *initLane) pop() *ikeMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.rings {
		r := &l.rings[i]
		sq := r.pop()
		if sq == nil {
			continue
		}
		m := sq.popFront()
		if len(sq.msgs) > 0 {
			r.push(sq) // its turn again after the others'
		} else {
			l.dropSource(sq)
		}
		return m
	}
	return nil
}

// done gives back the slot of a message pop returned, once handled.
func (l *initLane) done(m *ikeMsg) {
	l.mu.Lock()
	l.release(m)
	l.mu.Unlock()
}

// release frees m's slot and bytes. Under l.mu.
func (l *initLane) release(m *ikeMsg) {
	l.bytes -= int64(len(m.buf))
	if cap(m.buf) > ikeSlot {
		m.buf = make([]byte, 0, ikeSlot)
	}
	m.buf = m.buf[:0]
	l.free = append(l.free, m)
}

// queued is how many messages wait (not being handled).
func (l *initLane) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, sq := range l.srcs {
		n += len(sq.msgs)
	}
	return n
}

func (l *initLane) newSource(k srcKey) *srcQueue {
	var sq *srcQueue
	if n := len(l.spare); n > 0 {
		sq, l.spare = l.spare[n-1], l.spare[:n-1]
	} else {
		sq = &srcQueue{msgs: make([]*ikeMsg, 0, initPerSource)}
	}
	sq.key = k
	l.srcs[k] = sq
	return sq
}

// dropSource forgets an empty source queue (not in a ring). Under l.mu.
func (l *initLane) dropSource(sq *srcQueue) {
	delete(l.srcs, sq.key)
	sq.key = srcKey{}
	l.spare = append(l.spare, sq)
}

func (q *srcQueue) popFront() *ikeMsg {
	m := q.msgs[0]
	copy(q.msgs, q.msgs[1:])
	q.msgs[len(q.msgs)-1] = nil
	q.msgs = q.msgs[:len(q.msgs)-1]
	return m
}

// rateTable is a token bucket per source address (initRate, initBurst).
// An address not seen for initBurst/initRate has a full bucket, so the
// table keeps two generations, each at most that long (or initTracked
// addresses): an address found only in the previous one moves to the
// current one, and one in neither starts full. Memory stays bounded
// however many addresses send.
type rateTable struct {
	cur, prev map[netip.Addr]bucket
	rotated   time.Time
}

type bucket struct {
	tokens float32
	at     int64 // unix nanoseconds of the last refill
}

// take takes a token from a's bucket and says which class that makes the
// message: classNew if the bucket was full, classFresh if it had a token,
// classBulk if none.
func (r *rateTable) take(a netip.Addr, now time.Time) uint8 {
	const window = time.Duration(initBurst / initRate * float64(time.Second))
	if r.cur == nil || now.Sub(r.rotated) >= window || len(r.cur) >= initTracked {
		r.prev, r.cur, r.rotated = r.cur, make(map[netip.Addr]bucket), now
	}
	t := now.UnixNano()
	b, ok := r.cur[a]
	if !ok {
		if b, ok = r.prev[a]; ok {
			delete(r.prev, a)
		} else {
			b = bucket{tokens: initBurst, at: t}
		}
	}
	b.tokens = min(initBurst, b.tokens+float32(float64(t-b.at)/1e9*initRate))
	b.at = t
	class := uint8(classBulk)
	switch {
	case b.tokens >= initBurst:
		class = classNew
	case b.tokens >= 1:
		class = classFresh
	}
	if class != classBulk {
		b.tokens--
	}
	r.cur[a] = b
	return class
}
