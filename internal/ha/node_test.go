package ha

import (
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
func (c *fakeCtx) ImportSA(data []byte, jump uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.imported[string(data)] = jump
	return nil
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
	key := func() *[KeyLen]byte { k := new([KeyLen]byte); k[3] = 7; return k }
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
	if want := fmt.Sprint(map[string]uint64{"sa-two": 2000, "sa-three": 2000}); got != want {
		t.Fatalf("imported %s, want %s", got, want)
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

// TestWrongClusterKeyIsCountedNotApplied: a peer with another cluster key
// gets no record in and its heartbeats do not count (the standby has heard
// no peer: only the service network keeps it from taking over); the
// refusals are counted.
func TestWrongClusterKeyIsCountedNotApplied(t *testing.T) {
	holder := new(atomic.Int32)
	p1, p2 := freePort(t), freePort(t)
	lo := netip.MustParseAddr("127.0.0.1")
	mk := func(id int32, me, peer uint16, keyByte byte, c *fakeCtx) *Node {
		k := new([KeyLen]byte)
		k[0] = keyByte
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
