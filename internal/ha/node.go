package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamsec/roamsec/internal/hactx"
)

// Record is one IKE SA's exported context (ike.ExportedSA).
type Record struct {
	SPI  uint64
	Data []byte
}

// Context is the IKE endpoint's side of the contract (ike.Endpoint's
// ExportSA/ExportAll/ImportSA). ExportSA of an SPI that no longer exists
// returns an error wrapping ErrGone. ImportSA installs a record with its
// sequence numbers past floors (it must raise them before the SA carries
// a packet). DropAll forgets every IKE SA without telling the peers (a
// node that becomes standby: the other carries them on).
type Context interface {
	ExportAll() ([]Record, error)
	ExportSA(spi uint64) ([]byte, error)
	ImportSA(data []byte, floors *SeqFloors) error
	DropAll() int
}

// PeerSyncer is a Context that resynchronises its peers after a takeover
// (RFC 6311: the message IDs the old active used after its last record,
// and the peers' outbound ESP counters by delta, the takeover's jump).
// The node calls it once the service addresses are up; it returns how
// many peers it asked.
type PeerSyncer interface {
	SyncPeers(delta uint64) int
}

// SeqFloors is what a takeover knows of the sequence numbers: the last
// checkpoint of each ESP SA, by SPI, and the jump (Config.SeqJump). An
// imported outbound SA starts past max(record, checkpoint) + Jump; an
// inbound one's replay window at max(record, checkpoint), all below seen.
type SeqFloors struct {
	Out  map[uint32]uint64
	In   map[uint32]uint64
	Jump uint64
}

// ErrGone: ExportSA of an IKE SA that has been deleted.
var ErrGone = errors.New("ha: no such IKE SA")

// Config is one node of the pair.
type Config struct {
	Listen    netip.AddrPort // our sync address
	Peer      netip.AddrPort // the other node's
	Key       *hactx.Key     // the cluster key; zeroed by Run's end
	Priority  uint8
	Services  []Service
	Heartbeat time.Duration
	DeadAfter time.Duration
	// Checkpoints go out when an SA has moved CheckpointPackets since its
	// last one, or every CheckpointInterval for any that moved.
	CheckpointPackets  uint64
	CheckpointInterval time.Duration
	Net                Net
	// Probe, if set, replaces the probe of the service network (tests).
	Probe   func(ctx context.Context, svcs []Service, wait time.Duration) (bool, error)
	Context Context
	// Counters, if set, lists the SAs' sequence state (the active's
	// checkpoints).
	Counters func() []Checkpoint
	Log      *slog.Logger
}

// MinRate is the packet rate (per second, per SA) the jump assumes at
// least: a burst that starts after the last checkpoint is not in the
// rates the standby saw. A 2-core gateway forwards well under this.
const MinRate = 200000

// SeqJump is what a takeover adds to every outbound sequence number past
// its last checkpoint: what the old active may have sent that the
// standby never heard of. An SA checkpoints once it has moved
// CheckpointPackets (checked every heartbeat: up to rate × Heartbeat
// more by then), and nothing sent since the sync link last delivered a
// frame (silence: at least DeadAfter for a dead active, longer after a
// split sync link) reached the standby: rate × silence more. rate is the
// fastest SA's highest rate seen between checkpoints, at least MinRate.
// Twice that is the margin: the jump costs nothing but sequence space, a
// number sent twice under one key is a nonce reused (RFC 4303 §3.3.3,
// RFC 4106 §3.1). CheckpointInterval bounds how stale a slow SA's
// checkpoint is, not the jump: CheckpointPackets bounds both cases.
func (c *Config) SeqJump(rate float64, silence time.Duration) uint64 {
	rate = max(rate, MinRate)
	window := (c.Heartbeat + max(c.DeadAfter, silence)).Seconds()
	return 2 * (c.CheckpointPackets + uint64(rate*window))
}

// Node is one running member of the pair.
type Node struct {
	cfg Config
	log *slog.Logger
	out *outLink

	wakes    chan wake
	received atomic.Uint64
	sent     atomic.Uint64
	ackedAt  atomic.Int64

	refreshPending atomic.Bool
	changedMu      sync.Mutex
	changed        map[uint64]bool
	renewedAt      time.Time           // main loop only
	handingOver    time.Time           // a switchover keeps the addresses since (main loop only)
	released       atomic.Uint64       // switchovers finished (HandOver waits for one)
	announceAgain  time.Time           // main loop only: the second announcement (RFC 5227 §2.3); zero: none due
	streamed       map[uint64][32]byte // active: a hash of each record last sent (main loop only)

	mu        sync.Mutex
	m         *Machine
	records   map[uint64][]byte // standby: the active's records
	pending   map[uint64][]byte // during a resync
	resyncing bool
	cps       map[cpKey]uint64
	cpSeen    map[cpKey]time.Time // standby: when each checkpoint came
	peakRate  float64             // standby: the fastest SA's highest rate seen, packets/s
	drops     map[string]uint64
	lastTO    takeover
	imported  int
	importErr string
	sentCPs   map[cpKey]uint64 // active: the values last checkpointed
	lastCPAt  time.Time
}

type cpKey struct {
	spi uint32
	out bool
}

// takeover is the last takeover's timings.
type takeover struct {
	at        time.Time     // decided
	silence   time.Duration // since the active was last heard
	addrUp    time.Duration // decision to addresses added
	announced time.Duration // decision to GARP/NA sent
	planned   bool
}

type wakeKind uint8

const (
	wakeHeartbeat wakeKind = iota + 1
	wakeHandover
	wakeProbe
	wakeConnected
	wakeChanged
	wakeSwitchover
	wakeRefresh
)

type wake struct {
	kind  wakeKind
	at    time.Time
	role  Role
	prio  uint8
	epoch uint64
	seen  bool
	spi   uint64
	reply chan error
}

// New checks cfg and returns a node; Run runs it.
func New(cfg Config) (*Node, error) {
	if cfg.Key == nil || !cfg.Listen.IsValid() || !cfg.Peer.IsValid() || cfg.Heartbeat <= 0 || cfg.DeadAfter < cfg.Heartbeat {
		return nil, fmt.Errorf("ha: want a key, listen and peer addresses, heartbeat > 0 and dead_after >= heartbeat")
	}
	if cfg.Net == nil {
		cfg.Net = Host{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	n := &Node{cfg: cfg, log: cfg.Log, wakes: make(chan wake, 256), records: map[uint64][]byte{}, cps: map[cpKey]uint64{}, cpSeen: map[cpKey]time.Time{},
		drops: map[string]uint64{}, sentCPs: map[cpKey]uint64{}}
	n.out = &outLink{wait: cfg.DeadAfter, sent: &n.sent}
	return n, nil
}

// tiebreak: between equal priorities the lower sync address wins.
func (c *Config) tiebreak() bool {
	if d := c.Listen.Addr().Compare(c.Peer.Addr()); d != 0 {
		return d < 0
	}
	return c.Listen.Port() < c.Peer.Port()
}

func (n *Node) wake(k wakeKind) { n.post(wake{kind: k, at: time.Now()}) }

// post hands an input to the main loop; a full queue drops heartbeats
// only (the next one comes a heartbeat later).
func (n *Node) post(w wake) {
	if w.kind == wakeHeartbeat {
		select {
		case n.wakes <- w:
		default:
		}
		return
	}
	n.wakes <- w
}

// Changed is the IKE endpoint's event: the IKE SA spi (or one of its
// Child SAs) was created, rekeyed, moved, deleted or its message IDs
// moved. The active streams the new record (or its deletion).
// It never blocks the caller (an IKE goroutine): SPIs that change again
// before the main loop gets to them are streamed once.
func (n *Node) Changed(spi uint64) {
	n.changedMu.Lock()
	if n.changed == nil {
		n.changed = map[uint64]bool{}
	}
	first := len(n.changed) == 0
	n.changed[spi] = true
	n.changedMu.Unlock()
	if first {
		select {
		case n.wakes <- wake{kind: wakeChanged}:
		default: // the loop is behind; takeChanged drains the set on the next wake
		}
	}
}

// streamChanged streams the changed IKE SAs (as the active; a standby
// just forgets them).
func (n *Node) streamChanged() {
	for _, spi := range n.takeChanged() {
		if n.role() == RoleActive {
			n.stream(spi)
		}
	}
}

// takeChanged empties the set of changed SPIs.
func (n *Node) takeChanged() []uint64 {
	n.changedMu.Lock()
	defer n.changedMu.Unlock()
	spis := slices.Sorted(maps.Keys(n.changed))
	clear(n.changed)
	return spis
}

// Refresh is an IKE event that names no SPI: the active compares every
// IKE SA's record with what it last streamed and sends the differences.
// Refreshes that pile up are served once.
func (n *Node) Refresh() {
	if n.refreshPending.CompareAndSwap(false, true) {
		select {
		case n.wakes <- wake{kind: wakeRefresh}:
		default:
			n.refreshPending.Store(false) // the loop is behind: the next event asks again
		}
	}
}

// Switchover asks the active to hand over to the standby (planned).
func (n *Node) Switchover(ctx context.Context) error {
	r := make(chan error, 1)
	select {
	case n.wakes <- wake{kind: wakeSwitchover, at: time.Now(), reply: r}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HandOver is a switchover that returns once it is done: the peer is
// active and this node has released the addresses and dropped its SAs.
// A stopping active calls it so that its peers' SAs live on (no DELETE).
func (n *Node) HandOver(ctx context.Context) error {
	before := n.released.Load()
	if err := n.Switchover(ctx); err != nil {
		return err
	}
	t := time.NewTicker(n.cfg.Heartbeat / 2)
	defer t.Stop()
	for n.released.Load() == before {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Run runs the node until ctx ends: the sync listener, the dial loop and
// the main loop, all joined before it returns. An active node releases
// the service addresses on the way out.
func (n *Node) Run(ctx context.Context) error {
	defer n.cfg.Key.Wipe()
	// The wildcard: the peer reaches us on the sync address, probes on
	// the service addresses (serveIn tells them apart).
	lc := net.ListenConfig{Control: n.userTimeout} // accepted connections inherit it
	ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", n.cfg.Listen.Port()))
	if err != nil {
		return fmt.Errorf("ha: sync listen %v: %w", n.cfg.Listen, err)
	}
	// Addresses a crashed run of ours left (their lifetime may not have
	// run out yet): we start as joining, never holding them.
	if err := n.cfg.Net.Remove(n.cfg.Services); err != nil {
		n.log.Warn("ha: removing stale service addresses", "err", err)
	}
	n.mu.Lock()
	n.m = NewMachine(time.Now(), n.cfg.DeadAfter, n.cfg.Priority, n.cfg.tiebreak())
	n.mu.Unlock()
	// The sync link outlives ctx by the hand-over below.
	links, stopLinks := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopLinks() // before wg.Wait: deferred calls run newest first
	wg.Go(func() { n.acceptLoop(links, ln) })
	wg.Go(func() { n.dialLoop(links) })
	n.loop(ctx, &wg)
	if n.role() == RoleActive {
		n.stopActive()
	}
	return nil
}

// stopActive: an active that stops (SIGTERM) hands over as a planned
// switchover would, so the standby takes over at once instead of after
// dead_after and a probe; without a live standby it just releases.
func (n *Node) stopActive() {
	err := n.switchover()
	if err == nil {
		n.finishHandover("stopping") // no loop left to wait for the peer's word
		return
	}
	n.log.Info("ha: stopping as the active without a standby to hand over to", "err", err)
	if err := n.cfg.Net.Remove(n.cfg.Services); err != nil {
		n.log.Warn("ha: releasing the service addresses", "err", err)
	}
}

func (n *Node) role() Role {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Role()
}

// loop owns the machine's decisions: every input comes through wakes or
// the heartbeat ticker; probes run in goroutines joined through wg.
func (n *Node) loop(ctx context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		var w wake
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.streamChanged() // any whose wake was dropped
			n.sendHeartbeat()
			n.renew(now)
			if !n.handingOver.IsZero() && now.Sub(n.handingOver) > n.cfg.DeadAfter+time.Second {
				n.finishHandover("the peer did not say it is active")
			}
			n.act(ctx, wg, n.locked(func(m *Machine) Action { return m.Tick(now) }), false)
			n.checkpoint(false)
			continue
		case w = <-n.wakes:
		}
		switch w.kind {
		case wakeHeartbeat:
			var was Role
			a := n.locked(func(m *Machine) Action { was, _, _ = m.Peer(); return m.Heartbeat(w.at, w.role, w.prio, w.epoch) })
			n.act(ctx, wg, a, false)
			if was == RoleActive && w.role != RoleActive && n.role() == RoleActive {
				n.resync() // two actives met and the other yielded: it has none of our state
			}
			if !n.handingOver.IsZero() && w.role == RoleActive {
				n.finishHandover("the peer is active")
			}
		case wakeHandover:
			n.act(ctx, wg, n.locked(func(m *Machine) Action { return m.Handover(w.at, w.epoch) }), true)
		case wakeProbe:
			n.act(ctx, wg, n.locked(func(m *Machine) Action { return m.ProbeResult(w.at, w.seen) }), false)
		case wakeConnected:
			n.sendHeartbeat()
			if n.role() == RoleActive {
				n.resync()
			}
		case wakeChanged:
			n.streamChanged()
		case wakeSwitchover:
			w.reply <- n.switchover()
		case wakeRefresh:
			n.refreshPending.Store(false)
			if n.role() == RoleActive {
				n.refresh()
			}
		}
	}
}

// renew extends the service addresses' lifetime while we are active
// (AddrLifetime), twice a lifetime at least.
func (n *Node) renew(now time.Time) {
	if n.role() != RoleActive {
		n.announceAgain = time.Time{}
		return
	}
	if now.Sub(n.renewedAt) < AddrLifetime*time.Second/4 {
		return
	}
	n.renewedAt = now
	if err := n.cfg.Net.Add(n.cfg.Services); err != nil {
		n.log.Error("ha: renewing the service addresses", "err", err)
	}
	if !n.announceAgain.IsZero() && !now.Before(n.announceAgain) {
		n.announceAgain = time.Time{}
		if err := n.cfg.Net.Announce(n.cfg.Services); err != nil {
			n.log.Warn("ha: announcing the service addresses again", "err", err)
		}
	}
}

func (n *Node) locked(f func(*Machine) Action) Action {
	n.mu.Lock()
	defer n.mu.Unlock()
	return f(n.m)
}

func (n *Node) sendHeartbeat() {
	n.mu.Lock()
	f := Frame{Type: FrameHeartbeat, Role: n.m.Role(), Priority: n.cfg.Priority, Epoch: n.m.Epoch()}
	n.mu.Unlock()
	n.out.send(&f)
}

// act carries out the machine's decision.
func (n *Node) act(ctx context.Context, wg *sync.WaitGroup, a Action, planned bool) {
	switch a {
	case ActProbe:
		wait := max(n.cfg.Heartbeat, 50*time.Millisecond)
		wg.Go(func() {
			seen, err := n.probe(ctx, wait)
			if err != nil {
				// A probe that cannot be sent proves nothing: count it as
				// seen, so a broken service link never makes a second active.
				n.log.Warn("ha: probing the service addresses", "err", err)
				seen = true
			}
			n.post(wake{kind: wakeProbe, at: time.Now(), seen: seen})
		})
	case ActTakeOver:
		n.takeOver(planned)
	case ActRelease:
		n.log.Info("ha: releasing the service addresses (the peer is active)")
		if err := n.cfg.Net.Remove(n.cfg.Services); err != nil {
			n.log.Error("ha: releasing the service addresses", "err", err)
		}
		n.dropAll()
	}
}

// dropAll forgets our IKE SAs on becoming standby: the active holds them
// now and streams its own back to us (ARCHITECTURE.md, HA).
func (n *Node) dropAll() {
	if n.cfg.Context != nil {
		if k := n.cfg.Context.DropAll(); k > 0 {
			n.log.Info("ha: standby: dropped our IKE SAs, the active carries them on", "ike_sas", k)
		}
	}
}
