package mobility

import (
	"testing"
	"time"
)

// fakeProber drives a Prober's decisions with a fake clock: no sockets,
// the test says which heartbeats are answered and when.
type fakeProber struct {
	t   *testing.T
	pr  *Prober
	now time.Time
	// inflight are the heartbeats sent and not yet answered, by path name.
	inflight map[string][]uint16
	events   []Event
}

func newFakeProber(t *testing.T, hb Heartbeat, paths ...Path) *fakeProber {
	f := &fakeProber{t: t, pr: &Prober{Paths: paths, HB: hb}, now: t0, inflight: map[string][]uint16{}}
	f.pr.start(t0)
	f.step(0)
	return f
}

// step advances the clock by d in 5 ms ticks (or in one tick of d when
// stalled is set: the prober was not running meanwhile).
func (f *fakeProber) step(d time.Duration) { f.advance(d, false) }

func (f *fakeProber) stall(d time.Duration) { f.advance(d, true) }

func (f *fakeProber) advance(d time.Duration, stalled bool) {
	inc := 5 * time.Millisecond
	if stalled {
		inc = d
	}
	for end := f.now.Add(d); ; {
		evs, probes := f.pr.tick(f.now, inc)
		f.events = append(f.events, evs...)
		for _, p := range probes {
			f.inflight[p.path.Name] = append(f.inflight[p.path.Name], p.seq)
		}
		if !f.now.Before(end) {
			return
		}
		f.now = f.now.Add(inc)
	}
}

// answer answers every heartbeat in flight on path p, now.
func (f *fakeProber) answer(p Path) {
	for _, seq := range f.inflight[p.Name] {
		f.events = append(f.events, f.pr.answer(reply{from: p.Peer, seq: seq, at: f.now})...)
	}
	f.inflight[p.Name] = nil
}

// drop forgets the heartbeats in flight on p (lost on the wire).
func (f *fakeProber) drop(p Path) { f.inflight[p.Name] = nil }

// missOne loses exactly one heartbeat on p: it waits for one in flight,
// drops it, waits for the heartbeat sent after the miss, and answers it.
func (f *fakeProber) missOne(p Path) {
	for len(f.inflight[p.Name]) == 0 {
		f.step(5 * time.Millisecond)
	}
	f.drop(p)
	for len(f.inflight[p.Name]) == 0 {
		f.step(5 * time.Millisecond)
	}
	f.answer(p)
}

// states is the sequence of non-answer state changes reported for p.
func (f *fakeProber) states(p Path) []State {
	var out []State
	for _, ev := range f.events {
		if ev.Peer == p.Peer && !ev.Answer {
			out = append(out, ev.State)
		}
	}
	return out
}

// keepAlive runs d with every heartbeat on the paths answered 1 ms after
// the tick it was sent in.
func (f *fakeProber) keepAlive(d time.Duration, paths ...Path) {
	for end := f.now.Add(d); f.now.Before(end); {
		f.step(5 * time.Millisecond)
		for _, p := range paths {
			f.answer(p)
		}
	}
}

// RFC 7829 §3 with PF threshold 1: one unanswered heartbeat is not a
// suspect path; two consecutive ones are; an answer in between starts
// the count over (consecutive misses only).
func TestRFC7829_PFThresholdCountsConsecutiveMisses(t *testing.T) {
	f := newFakeProber(t, DefaultHeartbeat, pri)
	f.keepAlive(time.Second, pri)
	for range 20 { // a miss, then an answer, twenty times: never suspect
		f.missOne(pri)
		f.keepAlive(300*time.Millisecond, pri)
	}
	if got := f.states(pri); len(got) != 0 {
		t.Fatalf("single misses reported %v", got)
	}
	// Dead: two misses make it PF, three inactive.
	start := f.now
	for i := 0; i < 200 && len(f.states(pri)) < 2; i++ {
		f.drop(pri)
		f.step(5 * time.Millisecond)
	}
	got := f.states(pri)
	if len(got) != 2 || got[0] != PotentiallyFailed || got[1] != Inactive {
		t.Fatalf("dead path reported %v", got)
	}
	t.Logf("dead path: PF then inactive after %v (fake clock)", f.now.Sub(start))
	if f.now.Sub(start) > 2*time.Second {
		t.Fatalf("took %v to find a dead path", f.now.Sub(start))
	}
}

// RFC 4960 §8.3: a HEARTBEAT ACK clears the error counter whenever it
// arrives; a late answer to a heartbeat already counted as missed is
// still an answer, so a slow path is not a dead one.
func TestRFC4960_8_3_LateAnswerClearsErrors(t *testing.T) {
	f := newFakeProber(t, DefaultHeartbeat, pri)
	f.keepAlive(time.Second, pri)
	// Answers come 150 ms late (past the RTO of a 1 ms path), every time.
	for range 30 {
		f.step(150 * time.Millisecond)
		f.answer(pri)
	}
	for _, st := range f.states(pri) {
		if st == Inactive {
			t.Fatalf("a slow path was declared inactive: %v", f.states(pri))
		}
	}
	last := f.events[len(f.events)-1]
	if !last.Answer || last.State != Active || last.Loss != 0 {
		t.Fatalf("last event %+v: want an answer, active, no loss", last)
	}
}

// A prober that was not scheduled (a busy host) does not count its own
// stall against the paths: the outstanding heartbeats get the time back.
// (Checked with PF at the first miss, where one stalled tick would
// otherwise be enough to make every path suspect.)
func TestStalledProberCountsNoMisses(t *testing.T) {
	hb := DefaultHeartbeat
	hb.PFThreshold = 0
	f := newFakeProber(t, hb, pri, sec)
	f.keepAlive(time.Second, pri, sec)
	for len(f.inflight[pri.Name]) == 0 || len(f.inflight[sec.Name]) == 0 {
		f.step(5 * time.Millisecond)
		if len(f.inflight[pri.Name]) > 0 && len(f.inflight[sec.Name]) > 0 {
			break
		}
		f.answer(pri) // keep them apart until both are in flight at once
		f.answer(sec)
	}
	f.stall(2 * time.Second)
	f.answer(pri)
	f.answer(sec)
	f.keepAlive(time.Second, pri, sec)
	if a, b := f.states(pri), f.states(sec); len(a)+len(b) != 0 {
		t.Fatalf("a stalled prober reported %v / %v", a, b)
	}
}

// When a path becomes suspect, the alternates are probed at once, so one
// can be confirmed (heard after the suspicion began) without waiting a
// heartbeat interval.
func TestRFC7829_SuspectPathProbesAlternatesAtOnce(t *testing.T) {
	f := newFakeProber(t, DefaultHeartbeat, pri, sec)
	f.keepAlive(time.Second, pri, sec)
	for i := 0; i < 200; i++ {
		f.drop(pri)
		f.step(5 * time.Millisecond)
		if len(f.states(pri)) > 0 {
			break
		}
		f.answer(sec)
	}
	if got := f.states(pri); len(got) != 1 || got[0] != PotentiallyFailed {
		t.Fatalf("primary %v", got)
	}
	rs := f.pr.timer[1].recent
	if len(f.inflight[sec.Name]) != 1 || !rs[len(rs)-1].at.Equal(f.now) {
		t.Fatalf("no heartbeat sent to the alternate when the primary became suspect (in flight %v)", f.inflight[sec.Name])
	}
}

// Loss is measured over the recent heartbeats that had their chance.
func TestLossMeasuredOverSettledHeartbeats(t *testing.T) {
	f := newFakeProber(t, DefaultHeartbeat, pri)
	f.keepAlive(time.Second, pri)
	for i := range 40 {
		if i%10 == 0 {
			f.missOne(pri)
		}
		f.keepAlive(200*time.Millisecond, pri)
	}
	tm := f.pr.timer[0]
	loss := tm.loss(f.now, DefaultHeartbeat)
	if loss < 0.01 || loss > 0.15 {
		t.Fatalf("loss %.3f over %d heartbeats, want about 4 lost", loss, len(tm.recent))
	}
}

// A path that recovered from an outage is judged on how it does since:
// the heartbeats lost while it was dead are not counted as its loss.
func TestLossSinceRecoveryOnly(t *testing.T) {
	f := newFakeProber(t, DefaultHeartbeat, pri)
	f.keepAlive(time.Second, pri)
	for range 20 { // dead for a while: inactive
		f.drop(pri)
		f.step(50 * time.Millisecond)
	}
	if got := f.states(pri); len(got) != 2 || got[1] != Inactive {
		t.Fatalf("states %v", got)
	}
	f.keepAlive(2*time.Second, pri)
	last := f.events[len(f.events)-1]
	if !last.Answer || last.Loss != 0 {
		t.Fatalf("after recovery %+v: want no loss", last)
	}
}

// One heartbeat lost just after a recovery is not loss enough to make the
// path worse than a clean one (lossMargin): a fraction over the few
// heartbeats since would keep traffic off a good primary for seconds.
func TestOneLossAfterRecoveryIsNotWorse(t *testing.T) {
	f := newFakeProber(t, DefaultHeartbeat, pri)
	f.keepAlive(time.Second, pri)
	for range 20 { // dead for a while: inactive
		f.drop(pri)
		f.step(50 * time.Millisecond)
	}
	f.keepAlive(2*time.Second, pri) // back, and confirmed active again
	if st := f.pr.timer[0].state; st != Active {
		t.Fatalf("not active again after the recovery: %v", st)
	}
	f.missOne(pri)
	f.keepAlive(time.Second, pri) // the lost one is past RTOMax: counted
	last := f.events[len(f.events)-1]
	if !last.Answer || last.Loss <= 0 || last.Loss >= lossMargin {
		t.Fatalf("after recovery and one lost heartbeat %+v: want a loss above 0 and below the margin %v", last, lossMargin)
	}
}
