package datapath

import (
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
	q := NewIKEQueue(slots)
	stuck := make(chan struct{})
	var handled atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		q.Run(1, func(msg []byte, _ netip.Addr, remote netip.AddrPort, natT bool) {
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
	q := NewIKEQueue(16) // 32 KiB
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
	q := NewIKEQueue(1024)
	go q.Run(1, func([]byte, netip.Addr, netip.AddrPort, bool) {})
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
	q := NewIKEQueue(slots)
	stuck := make(chan struct{})
	var order []bool // isInit of each handled message
	var mu sync.Mutex
	var wg sync.WaitGroup
	first := make(chan struct{}, 1)
	wg.Go(func() {
		q.Run(1, func(msg []byte, _ netip.Addr, _ netip.AddrPort, _ bool) {
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
	q := NewIKEQueue(4)
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
	if screened != 100 || q.Dropped() != 0 || len(q.lanes[laneInit].work) != 0 || len(q.lanes[laneSA].work) != 1 {
		t.Fatalf("screened %d, dropped %d, init lane %d, SA lane %d", screened, q.Dropped(), len(q.lanes[laneInit].work), len(q.lanes[laneSA].work))
	}
}
