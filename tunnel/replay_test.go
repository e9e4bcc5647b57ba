package tunnel

import (
	"sync"
	"sync/atomic"
	"testing"
)

// RFC 4303 §3.4.3 anti-replay, each step named after the rule it checks.
func TestRFC4303_3_4_3_ReplayWindow(t *testing.T) {
	type step struct {
		seq  uint64
		want bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"sequence 0 is never valid (§3.3.3)", []step{{0, false}}},
		{"duplicates are rejected", []step{{1, true}, {1, false}, {2, true}, {2, false}}},
		{"out of order inside the window is accepted once", []step{{100, true}, {50, true}, {99, true}, {50, false}, {99, false}}},
		{"left of the window is rejected", []step{{5000, true}, {5000 - 1024, false}, {5000 - 1023, true}}},
		{"a jump far ahead clears the whole ring", []step{{1, true}, {2, true}, {1 << 20, true}, {1<<20 - 5, true}, {1 << 20, false}}},
		{"a jump of exactly one word keeps the right bits", []step{{64, true}, {128, true}, {64, true && false}, {127, true}, {65, true}}},
		{"ring wrap-around: old bits do not leak into new words", []step{{3, true}, {3 + 64*32, true}, {3 + 64*32 - 1, true}, {3 + 64*31, true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := newReplayWindow(1024, false)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range c.steps {
				if got := w.check(s.seq) && w.commit(s.seq); got != s.want {
					t.Fatalf("step %d seq %d: got %v want %v", i, s.seq, got, s.want)
				}
			}
		})
	}
}

// The window never shifts a bitmap, so any size works the same; sizes
// below 1024 are refused by design.
func TestReplayWindowSizes(t *testing.T) {
	for _, size := range []int{1024, 1500, 4096, 65536} {
		w, err := newReplayWindow(size, false)
		if err != nil {
			t.Fatal(err)
		}
		top := uint64(10 * size)
		w.commit(top)
		eff := w.size // rounded up to whole words
		if eff < uint64(size) {
			t.Fatalf("size %d: effective window %d", size, eff)
		}
		if !w.check(top-eff+1) || w.check(top-eff) {
			t.Fatalf("size %d: window edge wrong", size)
		}
	}
	if _, err := newReplayWindow(512, false); err == nil {
		t.Fatal("512 accepted")
	}
}

// RFC 4303 Appendix A2.2: the receiver infers the high 32 bits of an
// extended sequence number from its window (cases A and B).
func TestRFC4303_A2_2_ESNInference(t *testing.T) {
	cases := []struct {
		name string
		top  uint64
		seql uint32
		want uint64
		ok   bool
	}{
		{"case A: inside the window, same epoch", 5<<32 | 5000, 4500, 5<<32 | 4500, true},
		{"case A: ahead, same epoch", 5<<32 | 5000, 9000, 5<<32 | 9000, true},
		{"case A: below the window means the next epoch", 5<<32 | 5000, 100, 6<<32 | 100, true},
		{"case B: window spans epochs, high low bits are the previous epoch", 5<<32 | 10, 0xFFFFFFF0, 4<<32 | 0xFFFFFFF0, true},
		{"case B: low bits are this epoch", 5<<32 | 10, 5, 5<<32 | 5, true},
		{"case B at epoch 0: nothing before the first packet", 10, 0xFFFFFFF0, 0, false},
		{"fresh SA starts in epoch 0", 0, 1, 1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, _ := newReplayWindow(1024, true)
			w.top = c.top
			got, ok := w.infer(c.seql)
			if ok != c.ok || (ok && got != c.want) {
				t.Fatalf("infer(%#x) with top %#x = %#x,%v; want %#x,%v", c.seql, c.top, got, ok, c.want, c.ok)
			}
		})
	}
}

// With ESN the window crosses 2^32 without losing packets: the sender's
// sequence runs past the low 32 bits and the receiver follows.
func TestRFC4303_2_2_1_ESNAcrossEpoch(t *testing.T) {
	out, in := saPair(t, AESGCM128, func(c *SAConfig) { c.ESN = true })
	out.seq.Store(1<<32 - 3)
	in.replay.top = 1<<32 - 4
	inner := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10)
	var pkts [][]byte
	for range 6 {
		pkts = append(pkts, sealPacket(t, out, inner))
	}
	// Deliver out of order across the boundary.
	for _, i := range []int{0, 3, 1, 5, 2, 4} {
		if _, err := in.Open(rwAddr, pkts[i]); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	if in.LastSeq() != 1<<32+3 {
		t.Fatalf("top %#x", in.LastSeq())
	}
}

// Parallel receivers may pass the pre-check with the same number; exactly
// one may commit it.
func TestReplayCommitRaceHasOneWinner(t *testing.T) {
	w, _ := newReplayWindow(4096, false)
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := uint64(1); s <= 2000; s++ {
				if w.check(s) && w.commit(s) {
					wins.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 2000 {
		t.Fatalf("%d commits for 2000 numbers", wins.Load())
	}
}
