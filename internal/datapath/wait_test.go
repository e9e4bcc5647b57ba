package datapath

import (
	"log/slog"
	"os"
	"testing"
	"time"
)

// newTestWaiter returns a datapath with its wake pipe open and a waiter on
// the read end of a fresh pipe (any pollable descriptor will do; no network).
func newTestWaiter(t *testing.T) (*Datapath, *waiter, *os.File) {
	t.Helper()
	d := &Datapath{log: slog.New(slog.DiscardHandler), wakeR: -1, wakeW: -1}
	d.openWake()
	if d.wakeR < 0 {
		t.Fatal("no wake pipe")
	}
	t.Cleanup(d.closeWake)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	wt := d.newWaiter(r)
	if wt == nil {
		t.Fatal("newWaiter: nil for an *os.File")
	}
	return d, wt, w
}

// waitReturns runs wt.wait in a goroutine and reports on the channel when
// it returned.
func waitReturns(wt *waiter) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wt.wait()
		close(done)
	}()
	return done
}

func TestWaiterBlocksUntilReadable(t *testing.T) {
	_, wt, w := newTestWaiter(t)
	done := waitReturns(wt)
	select {
	case <-done:
		t.Fatal("wait returned with nothing to read")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return once the descriptor was readable")
	}
}

func TestWaiterReturnsOnShutdown(t *testing.T) {
	d, wt, _ := newTestWaiter(t)
	done := waitReturns(wt)
	select {
	case <-done:
		t.Fatal("wait returned before shutdown")
	case <-time.After(100 * time.Millisecond):
	}
	d.wake()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return on shutdown (the pipe is the only way to wake a ppoll)")
	}
	// Once woken, every later wait returns at once too: the reader that
	// was not in ppoll when wake ran must not block afterwards.
	select {
	case <-waitReturns(wt):
	case <-time.After(10 * time.Second):
		t.Fatal("a wait after shutdown blocked")
	}
}

func TestWaiterDoesNotAllocate(t *testing.T) {
	_, wt, w := newTestWaiter(t)
	if _, err := w.Write([]byte{1}); err != nil { // readable from now on
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(1000, wt.wait); a != 0 {
		t.Errorf("wait allocates %.1f times per call, want 0 (hot path)", a)
	}
}

func TestNoWaiterWithoutDescriptorOrPipe(t *testing.T) {
	d := &Datapath{log: slog.New(slog.DiscardHandler), wakeR: -1, wakeW: -1}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if d.newWaiter(r) != nil {
		t.Error("a waiter without a wake pipe could never be woken on shutdown")
	}
	d.openWake()
	defer d.closeWake()
	if d.newWaiter(struct{}{}) != nil {
		t.Error("a waiter for something with no descriptor")
	}
	var none *waiter
	none.wait() // must return: readers of test doubles have no waiter
}
