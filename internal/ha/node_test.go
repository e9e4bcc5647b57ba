package ha

import (
	"github.com/roamsec/roamsec/internal/hactx"

	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNet is one node's view of a shared service network: holder says
// which node holds the address.
type fakeNet struct {
	id     int32
	holder *atomic.Int32
	adds   atomic.Int32
}

func (f *fakeNet) Add([]Service) error    { f.holder.Store(f.id); f.adds.Add(1); return nil }
func (f *fakeNet) Remove([]Service) error { f.holder.CompareAndSwap(f.id, 0); return nil }
func (f *fakeNet) Announce([]Service) error {
	return nil
}
func (f *fakeNet) probe(ctx context.Context, _ []Service, wait time.Duration) (bool, error) {
	h := f.holder.Load()
	return h != 0 && h != f.id, nil
}

type fakeCtx struct {
	mu       sync.Mutex
	recs     map[uint64][]byte
	imported map[string]uint64 // data -> jump
	floors   *SeqFloors
	dropped  int
}

func (c *fakeCtx) ExportAll() ([]Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Record
	for spi, d := range c.recs {
		out = append(out, Record{spi, append([]byte{}, d...)})
	}
	return out, nil
}
func (c *fakeCtx) ExportSA(spi uint64) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.recs[spi]
	if !ok {
		return nil, ErrGone
	}
	return append([]byte{}, d...), nil
}
func (c *fakeCtx) ImportSA(data []byte, f *SeqFloors) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.imported[string(data)] = f.Jump
	c.floors = f
	return nil
}
func (c *fakeCtx) DropAll() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropped++
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPairReplicatesAndTakesOver runs two nodes over loopback TCP with a
// fake service network: the first becomes active, the second joins as
// standby and receives the records and checkpoints; when the active
// stops, the standby takes over and imports every record with the jump;
// a switchover hands it back.
func TestPairReplicatesAndTakesOver(t *testing.T) {
	key := func() *hactx.Key {
		raw := make([]byte, hactx.KeyLen)
		raw[3] = 7
		k, _ := hactx.FromBytes(raw)
		return k
	}
	holder := new(atomic.Int32)
	a1, a2 := netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("127.0.0.1:0")
	p1, p2 := freePort(t), freePort(t)
	a1, a2 = netip.AddrPortFrom(a1.Addr(), p1), netip.AddrPortFrom(a2.Addr(), p2)
	ctxA := &fakeCtx{recs: map[uint64][]byte{1: []byte("sa-one"), 2: []byte("sa-two")}, imported: map[string]uint64{}}
	ctxB := &fakeCtx{recs: map[uint64][]byte{}, imported: map[string]uint64{}}
	var seq atomic.Uint64
	seq.Store(5000)
	mk := func(id int32, me, peer netip.AddrPort, c *fakeCtx, counters func() []Checkpoint) *Node {
		fn := &fakeNet{id: id, holder: holder}
		n, err := New(Config{Listen: me, Peer: peer, Key: key(), Priority: 100, Services: []Service{{netip.MustParsePrefix("192.0.2.100/24"), "x"}},
			Heartbeat: 20 * time.Millisecond, DeadAfter: 60 * time.Millisecond, CheckpointPackets: 1000, CheckpointInterval: 50 * time.Millisecond,
			Net: fn, Probe: fn.probe, Context: c, Counters: counters})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	A := mk(1, a1, a2, ctxA, func() []Checkpoint { return []Checkpoint{{SPI: 0xabc, Outbound: true, Seq: seq.Load()}} })
	B := mk(2, a2, a1, ctxB, nil)
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan struct{})
	go func() { A.Run(ctx1); close(done1) }()
	waitFor(t, "A active", func() bool { return A.Status().Role == "active" })
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	done2 := make(chan struct{})
	go func() { B.Run(ctx2); close(done2) }()
	defer func() { stop2(); <-done2 }()
	waitFor(t, "B standby with both records", func() bool { s := B.Status(); return s.Role == "standby" && s.Records == 2 })
	ctxA.mu.Lock()
	ctxA.recs[3] = []byte("sa-three")
	delete(ctxA.recs, 1)
	ctxA.mu.Unlock()
	A.Changed(3)
	A.Changed(1)
	seq.Store(9000)
	waitFor(t, "B with records 2 and 3 and the checkpoint", func() bool {
		B.mu.Lock()
		defer B.mu.Unlock()
		return len(B.records) == 2 && B.records[3] != nil && B.records[1] == nil && B.cps[cpKey{0xabc, true}] == 9000
	})
	if s := A.Status(); s.SentBytes == 0 || s.Role != "active" {
		t.Fatalf("A status %+v", s)
	}
	stop1()
	<-done1
	// The takeover is done (records imported) once status shows it.
	waitFor(t, "B's takeover done", func() bool { return B.Status().LastTakeover != nil })
	ctxB.mu.Lock()
	got := fmt.Sprint(ctxB.imported)
	ctxB.mu.Unlock()
	// The jump of the rule (SeqJump): the 1,000-packet checkpoints plus
	// the peak rate seen (at least MinRate) over a heartbeat and
	// dead_after (80 ms), doubled.
	B.mu.Lock()
	jump := B.cfg.SeqJump(B.peakRate, B.lastTO.silence)
	B.mu.Unlock()
	if want := fmt.Sprint(map[string]uint64{"sa-two": jump, "sa-three": jump}); got != want || jump < 2*(1000+uint64(MinRate*0.08)) {
		t.Fatalf("imported %s, want %s (at least the MinRate bound)", got, want)
	}
	ctxB.mu.Lock()
	cp := ctxB.floors.Out[0xabc]
	ctxB.mu.Unlock()
	if cp != 9000 {
		t.Fatalf("outbound floor %d, want the checkpoint 9000", cp)
	}
	if holder.Load() != 2 {
		t.Fatalf("address held by %d, want B", holder.Load())
	}
	// A comes back: it joins as standby, never takes the address.
	A = mk(1, a1, a2, ctxA, nil)
	ctx1, stop1 = context.WithCancel(context.Background())
	defer stop1()
	done1 = make(chan struct{})
	go func() { A.Run(ctx1); close(done1) }()
	defer func() { stop1(); <-done1 }()
	waitFor(t, "A standby", func() bool {
		return A.Status().Role == "standby" && A.Status().Connected && B.Status().PeerRole == "standby"
	})
	if err := B.Switchover(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A active again, B standby", func() bool {
		return A.Status().Role == "active" && A.Status().LastTakeover != nil && B.Status().Role == "standby"
	})
	if holder.Load() != 1 {
		t.Fatalf("address held by %d, want A", holder.Load())
	}
	if to := A.Status().LastTakeover; to == nil || !to.Planned {
		t.Fatalf("A's takeover %+v, want planned", to)
	}
	// B keeps its SAs until A says it is active, then drops them.
	waitFor(t, "B dropping its IKE SAs once A is active", func() bool {
		ctxB.mu.Lock()
		defer ctxB.mu.Unlock()
		return ctxB.dropped > 0
	})
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := (&netListen{}).listen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return netip.MustParseAddrPort(l.Addr().String()).Port()
}

type netListen struct{}

func (netListen) listen() (interface {
	Close() error
	Addr() net.Addr
}, error) {
	return net.Listen("tcp", "127.0.0.1:0")
}

// TestSeqJumpRule: the jump covers checkpoint_packets plus what the
// fastest SA sends in a heartbeat and the sync link's silence (at least
// dead_after), at least at MinRate, doubled (ARCHITECTURE.md, the
// seq-jump rule).
func TestSeqJumpRule(t *testing.T) {
	c := Config{Heartbeat: 50 * time.Millisecond, DeadAfter: 150 * time.Millisecond, CheckpointPackets: 10000}
	for _, tc := range []struct {
		name    string
		rate    float64
		silence time.Duration
		want    uint64
	}{
		{"IdleSAsStillAssumeMinRate", 0, 150 * time.Millisecond, 2 * (10000 + MinRate/5)},
		{"SlowSAsAssumeMinRate", 1000, 150 * time.Millisecond, 2 * (10000 + MinRate/5)},
		{"AFasterSARaisesIt", 1e6, 150 * time.Millisecond, 2 * (10000 + 200000)},
		{"SilenceBelowDeadAfterCountsAsDeadAfter", 0, 10 * time.Millisecond, 2 * (10000 + MinRate/5)},
		{"ASplitSyncLinksSilenceCounts", 0, 10 * time.Second, 2 * (10000 + MinRate*10.05)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.SeqJump(tc.rate, tc.silence); got != tc.want {
				t.Fatalf("SeqJump(%v) = %d, want %d", tc.rate, got, tc.want)
			}
		})
	}
	// Whatever the rate, more than a heartbeat's packets past the
	// checkpoint threshold.
	for _, r := range []float64{0, 5e4, 3e5, 2e6} {
		if j := c.SeqJump(r, 0); j < c.CheckpointPackets+uint64(max(r, MinRate)*c.Heartbeat.Seconds()) {
			t.Fatalf("rate %v: jump %d does not cover a heartbeat", r, j)
		}
	}
}

// TestWrongClusterKeyIsCountedNotApplied: a peer with another cluster key
// gets no record in and its heartbeats do not count (the standby has heard
// no peer: only the service network keeps it from taking over); the
// refusals are counted.
func TestWrongClusterKeyIsCountedNotApplied(t *testing.T) {
	holder := new(atomic.Int32)
	p1, p2 := freePort(t), freePort(t)
	lo := netip.MustParseAddr("127.0.0.1")
	mk := func(id int32, me, peer uint16, keyByte byte, c *fakeCtx) *Node {
		raw := make([]byte, hactx.KeyLen)
		raw[0] = keyByte
		k, _ := hactx.FromBytes(raw)
		fn := &fakeNet{id: id, holder: holder}
		n, err := New(Config{Listen: netip.AddrPortFrom(lo, me), Peer: netip.AddrPortFrom(lo, peer), Key: k, Priority: 100,
			Heartbeat: 20 * time.Millisecond, DeadAfter: 60 * time.Millisecond, CheckpointPackets: 1000, CheckpointInterval: time.Second,
			Net: fn, Probe: fn.probe, Context: c})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	A := mk(1, p1, p2, 1, &fakeCtx{recs: map[uint64][]byte{9: []byte("secret state")}, imported: map[string]uint64{}})
	B := mk(2, p2, p1, 2, &fakeCtx{recs: map[uint64][]byte{}, imported: map[string]uint64{}})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { A.Run(ctx) })
	waitFor(t, "A active", func() bool { return A.Status().Role == "active" })
	wg.Go(func() { B.Run(ctx) })
	defer func() { stop(); wg.Wait() }()
	waitFor(t, "auth drops counted on both", func() bool { return A.Status().Drops["auth"] > 0 && B.Status().Drops["auth"] > 0 })
	waitFor(t, "B isolated: no heartbeat authenticated, A seen on the service network", func() bool { return B.Status().Isolated })
	if s := B.Status(); s.Records != 0 || s.PeerRole != "" || s.Role == "active" {
		t.Fatalf("B applied something from a peer with another key: %+v", s)
	}
}
