package tunnel

import (
	"fmt"
	"math/bits"
	"sync"
)

// Replay window sizes, in packets. RFC 4303 §3.4.3 asks for at least 32
// and recommends 64; with parallel decryption and multipath reordering we
// need far more, so roamsec never goes below 1024.
const (
	DefaultReplayWindow = 1024
	MinReplayWindow     = 1024
	MaxReplayWindow     = 1 << 20
)

// replayWindow is the anti-replay check of RFC 4303 §3.4.3, kept as a ring
// of 64-bit words in the manner of RFC 6479: advancing the window clears
// whole words instead of shifting a bitmap, so the cost of a jump does not
// depend on the window size beyond one word per 64 packets skipped, and
// never more than the ring.
//
// The ring has one word more than the window needs, so the word holding
// the newest packets can be partly ahead of the window (RFC 6479 §2).
type replayWindow struct {
	mu   sync.Mutex
	top  uint64   // highest sequence number accepted so far (full 64 bits); 0 = none
	ring []uint64 // len is a power of two
	size uint64   // window size in packets, multiple of 64
	esn  bool
	mask uint64 // len(ring)-1
}

func newReplayWindow(size int, esn bool) (*replayWindow, error) {
	if size == 0 {
		size = DefaultReplayWindow
	}
	if size < MinReplayWindow || size > MaxReplayWindow {
		return nil, fmt.Errorf("replay window %d outside [%d, %d]", size, MinReplayWindow, MaxReplayWindow)
	}
	words := (size + 63) / 64
	n := 1 << bits.Len(uint(words)) // strictly more words than the window covers
	return &replayWindow{
		ring: make([]uint64, n),
		size: uint64(words * 64),
		esn:  esn,
		mask: uint64(n - 1),
	}, nil
}

// precheck infers the full sequence number of a received packet and
// reports whether it may be new, under one lock: the per-packet pre-check
// before the ICV (the window only moves in commit, after it).
func (w *replayWindow) precheck(seql uint32) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seq, ok := w.inferLocked(seql)
	return seq, ok && w.checkLocked(seq)
}

// infer returns the full sequence number for a received low 32 bits.
func (w *replayWindow) infer(seql uint32) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inferLocked(seql)
}

// inferLocked: without ESN the full number is the low bits themselves.
// With ESN it follows RFC 4303 Appendix A2.2 (cases A and B); a wrong
// guess fails the ICV because the high bits are part of the AAD, so
// guessing cannot be abused.
func (w *replayWindow) inferLocked(seql uint32) (uint64, bool) {
	if !w.esn {
		return uint64(seql), true
	}
	top := w.top
	tl, th := uint32(top), uint32(top>>32)
	ws := uint32(w.size)
	bl := tl - ws + 1 // modulo 2^32
	if tl >= ws-1 {   // Case A: window within one epoch
		if seql >= bl {
			return uint64(th)<<32 | uint64(seql), true
		}
		return uint64(th+1)<<32 | uint64(seql), th != ^uint32(0)
	}
	// Case B: window spans two epochs.
	if seql >= bl {
		if th == 0 {
			return 0, false // before the first epoch: not a valid number
		}
		return uint64(th-1)<<32 | uint64(seql), true
	}
	return uint64(th)<<32 | uint64(seql), true
}

// check reports whether seq may be new. It is a pre-check before the ICV
// is verified; the window only moves in commit, after verification.
func (w *replayWindow) check(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.checkLocked(seq)
}

func (w *replayWindow) checkLocked(seq uint64) bool {
	if seq == 0 {
		return false // the first packet sent on an SA has sequence 1 (RFC 4303 §3.3.3)
	}
	if seq > w.top {
		return true
	}
	if w.top-seq >= w.size {
		return false // left of the window
	}
	return w.ring[(seq>>6)&w.mask]&(1<<(seq&63)) == 0
}

// commit marks seq as received, advancing the window if needed. It
// re-checks under the lock: two workers may have passed check with the
// same number, and only one may win.
func (w *replayWindow) commit(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.checkLocked(seq) {
		return false
	}
	if seq > w.top {
		oldBlock, newBlock := w.top>>6, seq>>6
		diff := newBlock - oldBlock
		if diff > uint64(len(w.ring)) {
			diff = uint64(len(w.ring))
		}
		for i := uint64(1); i <= diff; i++ {
			w.ring[(oldBlock+i)&w.mask] = 0
		}
		w.top = seq
	}
	w.ring[(seq>>6)&w.mask] |= 1 << (seq & 63)
	return true
}

// raiseFloor moves the window's top to top with every number at or below
// it marked as seen: every word of the ring full, except the top's word,
// which holds the bits up to top only (the numbers above it in the same
// word are still new). A window already at or past top is left alone.
func (w *replayWindow) raiseFloor(top uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if top == 0 || top <= w.top {
		return
	}
	for i := range w.ring {
		w.ring[i] = ^uint64(0)
	}
	bit := top & 63
	word := ^uint64(0)
	if bit < 63 {
		word = 1<<(bit+1) - 1
	}
	w.ring[(top>>6)&w.mask] = word
	w.top = top
}
