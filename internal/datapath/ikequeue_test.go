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
