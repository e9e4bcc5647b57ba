package datapath

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var ikeFrom = netip.MustParseAddrPort("198.51.100.7:4500")

// TestIKEQueueFullDropsNeverBlocks: while the IKE goroutine is stuck (the
// endpoint busy), Push neither blocks nor queues more than its slots: the
// rest is dropped and counted; once the goroutine goes on, what was queued
// is handled, intact.
func TestIKEQueueFullDropsNeverBlocks(t *testing.T) {
	const slots = 16
	q := NewIKEQueue(slots, 1)
	stuck := make(chan struct{})
	var handled atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		q.Run(func(msg []byte, _ netip.Addr, remote netip.AddrPort, natT bool) {
			<-stuck
			if len(msg) != 100 || msg[0] != msg[99] || remote != ikeFrom || !natT {
				bad.Add(1)
			}
			handled.Add(1)
		})
	})
	msg := make([]byte, 100)
	accepted := 0
	for i := range 1000 {
		msg[0], msg[99] = byte(i), byte(i)
		if q.Push(msg, netip.Addr{}, ikeFrom, true) {
			accepted++
		}
	}
	// One message may be in the stuck handler, slots more in the queue.
	if accepted > slots+1 || q.Dropped() != uint64(1000-accepted) {
		t.Fatalf("accepted %d, dropped %d of 1000; want at most %d accepted, the rest dropped", accepted, q.Dropped(), slots+1)
	}
	close(stuck)
	for handled.Load() < int64(accepted) {
		time.Sleep(time.Millisecond)
	}
	q.Close()
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d messages changed in the queue", bad.Load())
	}
}

// TestIKEQueueBytesBounded: large messages count by their size: the queue
// never holds more than slots × 2 KiB, however few messages that is.
func TestIKEQueueBytesBounded(t *testing.T) {
	q := NewIKEQueue(16, 1) // 32 KiB
	big := make([]byte, 10000)
	n := 0
	for range 10 {
		if q.Push(big, netip.Addr{}, ikeFrom, false) {
			n++
		}
	}
	if n != 3 || q.Dropped() != 7 {
		t.Fatalf("%d of 10 10-kB messages queued, %d dropped; want 3, 7", n, q.Dropped())
	}
	if !q.Push(make([]byte, 100), netip.Addr{}, ikeFrom, false) {
		t.Fatal("a small message that fits was refused")
	}
	q.Close()
}

// BenchmarkIKEQueuePush is what a crypto worker pays per IKE message.
func BenchmarkIKEQueuePush(b *testing.B) {
	q := NewIKEQueue(1024, 1)
	go q.Run(func([]byte, netip.Addr, netip.AddrPort, bool) {})
	defer q.Close()
	msg := make([]byte, 300)
	b.ReportAllocs()
	for b.Loop() {
		q.Push(msg, netip.Addr{}, ikeFrom, true)
	}
}

// initMsg is the start of an IKE_SA_INIT request: SPIi set, SPIr zero,
// exchange 34, Initiator flag (RFC 7296 §3.1).
func initMsg() []byte {
	m := make([]byte, 300)
	m[0], m[17], m[18], m[19] = 1, 0x20, 34, 0x08
	return m
}

// TestIKEQueueInitFloodLeavesSALane: a flood of new IKE_SA_INIT requests
// fills only its own lane; messages of existing IKE SAs (responder SPI
// set) are still queued, and served first.
func TestIKEQueueInitFloodLeavesSALane(t *testing.T) {
	const slots = 8
	q := NewIKEQueue(slots, 1)
	stuck := make(chan struct{})
	var order []bool // isInit of each handled message
	var mu sync.Mutex
	var wg sync.WaitGroup
	first := make(chan struct{}, 1)
	wg.Go(func() {
		q.Run(func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) {
			select {
			case first <- struct{}{}:
				<-stuck
			default:
			}
			mu.Lock()
			order = append(order, isInit(msg))
			mu.Unlock()
		})
	})
	q.Push(initMsg(), netip.Addr{}, ikeFrom, false) // taken by the goroutine, which then sticks
	<-first
	for range 100 {
		q.Push(initMsg(), netip.Addr{}, ikeFrom, false)
	}
	auth := make([]byte, 300)
	auth[8], auth[18] = 1, 35 // SPIr set, IKE_AUTH
	for i := range slots {
		if !q.Push(auth, netip.Addr{}, ikeFrom, true) {
			t.Fatalf("IKE_AUTH %d refused while the IKE_SA_INIT lane is full", i)
		}
	}
	// The stuck message still holds its slot: slots-1 more fit.
	if q.Dropped() != 100-(slots-1) {
		t.Fatalf("%d dropped, want %d (the IKE_SA_INIT beyond its lane)", q.Dropped(), 100-(slots-1))
	}
	close(stuck)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n == 2*slots {
			break
		}
		time.Sleep(time.Millisecond)
	}
	q.Close()
	wg.Wait()
	for i, init := range order[1 : 1+slots] { // after the stuck one: the IKE_AUTHs
		if init {
			t.Fatalf("message %d served was an IKE_SA_INIT while IKE_AUTH waited: %v", i+2, order)
		}
	}
}

// TestIKEQueueScreenTakesNoSlot: IKE_SA_INIT requests the screen takes
// (ike.Endpoint.Screen answering a spoofed flood with cookies) use no slot
// and are not queue drops; the screen never sees other messages.
func TestIKEQueueScreenTakesNoSlot(t *testing.T) {
	q := NewIKEQueue(4, 1)
	var screened int
	q.Screen = func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) bool {
		if !isInit(msg) {
			t.Fatal("the screen saw a message of an existing IKE SA")
		}
		screened++
		return true
	}
	for range 100 {
		if !q.Push(initMsg(), netip.Addr{}, ikeFrom, false) {
			t.Fatal("a screened message counted as dropped")
		}
	}
	auth := make([]byte, 300)
	auth[8], auth[18] = 1, 35
	q.Push(auth, netip.Addr{}, ikeFrom, true)
	if screened != 100 || q.Dropped() != 0 || q.init.queued() != 0 || len(q.sa[0].work) != 1 {
		t.Fatalf("screened %d, dropped %d, init lane %d, SA lane %d", screened, q.Dropped(), q.init.queued(), len(q.sa[0].work))
	}
}

// spiFor returns an initiator SPI whose messages the queue gives worker w.
func spiFor(q *IKEQueue, w int) []byte {
	m := make([]byte, 300)
	m[17], m[18] = 0x20, 37 // INFORMATIONAL
	for i := uint64(1); ; i++ {
		binary.BigEndian.PutUint64(m, i)
		m[8] = 1 // SPIr set
		if q.worker(m) == w {
			return m
		}
	}
}

// TestIKEQueueOneSAOneWorkerInOrder: with several workers, the messages of
// one IKE SA are handled one at a time and in the order they were pushed
// (RFC 7296 §2.3's window sees them as sent), while another IKE SA's
// messages are handled meanwhile by another worker.
func TestIKEQueueOneSAOneWorkerInOrder(t *testing.T) {
	const workers, per = 4, 200
	q := NewIKEQueue(4096, workers)
	type state struct {
		busy atomic.Bool
		last atomic.Int64
	}
	var sas [16]state
	var bad, handled atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		q.Run(func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) {
			st := &sas[msg[7]]
			if !st.busy.CompareAndSwap(false, true) {
				bad.Add(1) // two workers on one IKE SA
			}
			seq := int64(binary.BigEndian.Uint32(msg[20:24]))
			if seq != st.last.Load()+1 {
				bad.Add(1) // out of order
			}
			st.last.Store(seq)
			time.Sleep(time.Microsecond)
			st.busy.Store(false)
			handled.Add(1)
		})
	})
	msg := make([]byte, 100)
	msg[8], msg[18] = 1, 37
	pushed := 0
	for seq := 1; seq <= per; seq++ {
		for sa := range sas {
			msg[7] = byte(sa)
			binary.BigEndian.PutUint32(msg[20:24], uint32(seq))
			for !q.Push(msg, netip.Addr{}, ikeFrom, false) {
				time.Sleep(time.Millisecond) // full: the workers catch up
			}
			pushed++
		}
	}
	for handled.Load() < int64(pushed) {
		time.Sleep(time.Millisecond)
	}
	q.Close()
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d messages handled concurrently with or out of order of their IKE SA's", bad.Load())
	}
}

// TestIKEQueueWorkersRunTogether: an IKE SA whose handling blocks (its
// worker busy) holds up neither another worker's IKE SAs nor new
// IKE_SA_INIT requests.
func TestIKEQueueWorkersRunTogether(t *testing.T) {
	q := NewIKEQueue(64, 2)
	stuck := make(chan struct{})
	got := make(chan byte, 4)
	var wg sync.WaitGroup
	wg.Go(func() {
		q.Run(func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) {
			if msg[299] == 'A' {
				<-stuck
			}
			got <- msg[299]
		})
	})
	a, b, i := spiFor(q, 0), spiFor(q, 1), initMsg()
	a[299], b[299], i[299] = 'A', 'B', 'I'
	q.Push(a, netip.Addr{}, ikeFrom, false)
	time.Sleep(10 * time.Millisecond) // worker 0 takes A and sticks
	q.Push(b, netip.Addr{}, ikeFrom, false)
	q.Push(i, netip.Addr{}, ikeFrom, false)
	for range 2 {
		select {
		case c := <-got:
			if c == 'A' {
				t.Fatal("the stuck message finished")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a message waited for another worker's IKE SA")
		}
	}
	close(stuck)
	<-got
	q.Close()
	wg.Wait()
}

// TestIKEQueueStaleInitSkipped: IKE_SA_INIT requests that waited longer
// than initMaxWait (a lane kept full by a flood) are dropped, counted, when
// a worker reaches them, so a request queued after them is handled at
// once; the messages of existing IKE SAs are never dropped for their age.
func TestIKEQueueStaleInitSkipped(t *testing.T) {
	q := NewIKEQueue(64, 1)
	stuck := make(chan struct{})
	var handled []byte
	var mu sync.Mutex
	var wg sync.WaitGroup
	first := make(chan struct{}, 1)
	wg.Go(func() {
		q.Run(func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) {
			select {
			case first <- struct{}{}:
				<-stuck
			default:
			}
			mu.Lock()
			handled = append(handled, msg[299])
			mu.Unlock()
		})
	})
	blocker := spiFor(q, 0)
	q.Push(blocker, netip.Addr{}, ikeFrom, false) // the worker sticks on it
	<-first
	old, sa := initMsg(), spiFor(q, 0)
	old[299], sa[299] = 'o', 's'
	for range 10 {
		q.Push(old, netip.Addr{}, ikeFrom, false)
	}
	q.Push(sa, netip.Addr{}, ikeFrom, false)
	time.Sleep(initMaxWait + 50*time.Millisecond)
	fresh := initMsg()
	fresh[299] = 'f'
	q.Push(fresh, netip.Addr{}, ikeFrom, false)
	close(stuck)
	for {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		if n == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	q.Close()
	wg.Wait()
	if string(handled) != "\x00sf" || q.Dropped() != 10 {
		t.Fatalf("handled %q, dropped %d; want the blocker, the IKE SA's message and the fresh request, 10 stale dropped", handled, q.Dropped())
	}
}

// initFrom is an IKE_SA_INIT request from addr whose last byte is tag.
func initFrom(q *IKEQueue, addr string, tag byte) bool {
	m := initMsg()
	m[299] = tag
	return q.Push(m, netip.Addr{}, netip.MustParseAddrPort(addr+":500"), false)
}

// stuckQueue is a one-worker queue whose worker holds the first message
// until release; handled lists the tags of the messages handled after it.
type stuckQueue struct {
	q       *IKEQueue
	release chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	handled []byte
}

func newStuckQueue(t *testing.T, slots int) *stuckQueue {
	s := &stuckQueue{q: NewIKEQueue(slots, 1), release: make(chan struct{})}
	first := make(chan struct{})
	var once sync.Once
	s.wg.Go(func() {
		s.q.Run(func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) {
			stuck := false
			once.Do(func() { close(first); stuck = true })
			if stuck {
				<-s.release
				return
			}
			s.mu.Lock()
			s.handled = append(s.handled, msg[299])
			s.mu.Unlock()
		})
	})
	if !initFrom(s.q, "192.0.2.250", 'x') {
		t.Fatal("the first message was refused")
	}
	<-first
	return s
}

// drain releases the worker and waits until n messages were handled after
// the stuck one.
func (s *stuckQueue) drain(t *testing.T, n int) string {
	close(s.release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.handled)
		s.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages handled", got, n)
		}
		time.Sleep(time.Millisecond)
	}
	s.q.Close()
	s.wg.Wait()
	return string(s.handled)
}

// TestIKEQueueInitNewSourceServedBeforeAFlood: 400 addresses flooding at
// 8 IKE_SA_INIT a second each (cookies answered: real addresses, RFC 7296
// §2.6) for 10 s, against a gateway that handles 200 a second, keep the
// lane full; a request from a new address is neither dropped nor queued
// behind them: its bucket is full, the flood's are spent, so it takes a
// flood message's slot and is served first.
func TestIKEQueueInitNewSourceServedBeforeAFlood(t *testing.T) {
	const slots = 64
	var l initLane
	l.make(slots)
	now := time.Unix(1e9, 0)
	l.clock = func() time.Time { return now }
	msg := initMsg()
	dropped, handled := 0, 0
	for range 80 { // 10 s
		for range min(25, l.queued()) { // 200/s
			l.done(l.pop())
			handled++
		}
		for i := range 400 {
			ok, d := l.push(msg, netip.Addr{}, netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 500), false)
			dropped += d
			if !ok {
				dropped++
			}
		}
		now = now.Add(125 * time.Millisecond)
	}
	if n := l.queued(); n != slots || dropped != 80*400-slots-handled {
		t.Fatalf("%d queued, %d dropped, %d handled; want the lane full (%d), the rest dropped", n, dropped, handled, slots)
	}
	newcomer := netip.MustParseAddrPort("198.51.100.9:500")
	if ok, d := l.push(msg, netip.Addr{}, newcomer, false); !ok || d != 1 {
		t.Fatalf("the new source's request: queued %v, dropped %d for it; want queued in a flood message's slot", ok, d)
	}
	if m := l.pop(); m == nil || m.remote != newcomer {
		t.Fatalf("served %v first, want the new source", m)
	}
}

// TestIKEQueueInitRoundRobinBetweenSources: sources of one class are
// served in turn, one message each: a source with many queued delays
// another by at most one message.
func TestIKEQueueInitRoundRobinBetweenSources(t *testing.T) {
	s := newStuckQueue(t, 64)
	for _, tag := range []byte("abc") {
		initFrom(s.q, "203.0.113.1", tag)
	}
	initFrom(s.q, "203.0.113.2", 'X')
	initFrom(s.q, "203.0.113.3", 'Y')
	if got := s.drain(t, 5); got != "aXYbc" {
		t.Fatalf("served %q, want aXYbc (one message per source per turn)", got)
	}
}

// TestIKEQueueInitPerSourceCapKeepsNewest: one source has at most
// initPerSource requests queued per class; its oldest go (the newest is
// its retransmission, RFC 7296 §2.1), counted, and take no other source's
// slot.
func TestIKEQueueInitPerSourceCapKeepsNewest(t *testing.T) {
	s := newStuckQueue(t, 64)
	// 192.0.2.250 spent one token on the stuck message: 3 more fresh,
	// then bulk.
	for i := range 20 {
		initFrom(s.q, "192.0.2.250", byte('a'+i))
	}
	if s.q.init.queued() != 2*initPerSource-1 {
		t.Fatalf("%d queued from one source, want %d (fresh and bulk caps)", s.q.init.queued(), 2*initPerSource-1)
	}
	if d := s.q.Dropped(); d != 20-(2*initPerSource-1) {
		t.Fatalf("%d dropped, want %d", d, 20-(2*initPerSource-1))
	}
	got := s.drain(t, 2*initPerSource-1)
	if got != "abcqrst" {
		t.Fatalf("served %q, want the 3 fresh ones then the newest 4 bulk ones", got)
	}
}

// TestIKEQueueInitRateTableBounded: the per-source rate table forgets
// addresses (they start fresh again) rather than growing with them.
func TestIKEQueueInitRateTableBounded(t *testing.T) {
	var r rateTable
	now := time.Now()
	for i := range 3 * initTracked {
		r.take(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), now)
	}
	if n := len(r.cur) + len(r.prev); n > 2*initTracked {
		t.Fatalf("rate table holds %d addresses, bound %d", n, 2*initTracked)
	}
	a := netip.MustParseAddr("198.51.100.1")
	want := []uint8{classNew, classFresh, classFresh, classFresh, classBulk}
	for i, w := range want {
		if c := r.take(a, now); c != w {
			t.Fatalf("request %d of a burst: class %d, want %d", i, c, w)
		}
	}
	if c := r.take(a, now.Add(time.Duration(float64(time.Second)/initRate))); c != classFresh {
		t.Fatalf("after 1/initRate: class %d, want fresh (one token back)", c)
	}
	if c := r.take(a, now.Add(10*time.Second)); c != classNew {
		t.Fatalf("after 10 s of silence: class %d, want new (full bucket)", c)
	}
}
