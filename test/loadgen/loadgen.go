// Package loadgen is a fleet of IKEv2 road warriors in one process: each
// has its own address (its outer and, RFC 3554 mode, its inner address),
// its own identity and certificate, and its own ike.Endpoint (the
// project's initiator, as a road warrior daemon drives it). The Child
// SAs they negotiate live in the generator's own SAD and outbound table;
// the generator seals and opens ESP itself over one UDP 4500 socket, so a
// single process can hold 10,000 tunnels to a real gateway and spread
// traffic over them, connect, disconnect and rekey them.
//
// New must run inside the load namespace (netns.NS.Do): the sockets it
// opens stay there, whatever goroutine uses them later.
package loadgen

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// Config describes the fleet.
type Config struct {
	// Addrs: one road warrior per address, already on a local interface
	// (netns.Bed.AddLoadAddrs).
	Addrs     []netip.Addr
	Gateway   netip.Addr // its IKE (500) and ESP-in-UDP (4500) address
	GatewayID auth.Identity
	// RemoteTS is offered as TSr: the networks behind the gateway.
	RemoteTS []netip.Prefix
	// Identity and Credential of road warrior i (one certificate each, so
	// INITIAL_CONTACT of one never replaces another's IKE SA).
	Identity func(i int) (auth.Identity, *auth.Credential, error)
	CAs      []*x509.Certificate

	DPD           time.Duration // road warriors' own liveness checks; 0: off (the gateway's still run)
	ChildLifetime time.Duration
	IKELifetime   time.Duration
	// Shards run the IKE messages received (Handle: DH, signatures) in
	// parallel, each road warrior always on the same shard; 0: GOMAXPROCS.
	Shards int
	Log    *slog.Logger
}

// Gen is a running fleet.
type Gen struct {
	cfg  Config
	rws  []*roadWarrior
	byIP map[netip.Addr]*roadWarrior
	sad  *tunnel.SAD
	gw   netip.AddrPort // UDP 4500

	ike500 *transport.IKEConn
	udp    *transport.UDPConn
	shards []chan ikeMsg

	up      atomic.Int64 // road warriors with an installed Child SA
	ikeDrop atomic.Uint64
	espBad  atomic.Uint64
	espRx   atomic.Uint64

	// chains: the road warriors all meet the same gateway, so they share
	// its validated certificate chain (auth.ChainCache); each still
	// verifies the gateway's AUTH signature, as any initiator must.
	chains auth.ChainCache
	// dh: their DH values, each reused across the fleet's IKE SAs for a
	// minute (RFC 7296 §2.12), so a handshake costs the generator one DH
	// computation, not two.
	dh ike.DHCache

	readers, workers sync.WaitGroup
	once             sync.Once
}

type ikeMsg struct {
	rw     *roadWarrior
	b      []byte
	local  netip.Addr
	remote netip.AddrPort
	natT   bool
}

// New opens the sockets (call it in the load namespace) and creates one
// endpoint per address; nothing is sent until Up.
func New(cfg Config) (*Gen, error) {
	if len(cfg.Addrs) == 0 || !cfg.Gateway.IsValid() || cfg.Identity == nil {
		return nil, errors.New("loadgen: Config needs Addrs, Gateway and Identity")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Shards <= 0 {
		cfg.Shards = runtime.GOMAXPROCS(0)
	}
	g := &Gen{cfg: cfg, byIP: make(map[netip.Addr]*roadWarrior, len(cfg.Addrs)), sad: &tunnel.SAD{},
		gw: netip.AddrPortFrom(cfg.Gateway, transport.NATTPort)}
	var err error
	if g.ike500, err = transport.ListenIKE(netip.AddrPortFrom(netip.IPv4Unspecified(), 500)); err != nil {
		return nil, fmt.Errorf("loadgen: UDP 500: %w", err)
	}
	if g.udp, err = transport.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), transport.NATTPort)); err != nil {
		g.ike500.Close()
		return nil, fmt.Errorf("loadgen: UDP 4500: %w", err)
	}
	for i, a := range cfg.Addrs {
		rw, err := g.newRoadWarrior(i, a)
		if err != nil {
			g.closeSockets()
			return nil, err
		}
		g.rws = append(g.rws, rw)
		g.byIP[a] = rw
	}
	for range cfg.Shards {
		ch := make(chan ikeMsg, shardQueue)
		g.shards = append(g.shards, ch)
		g.workers.Go(func() {
			for m := range ch {
				m.rw.ep.Handle(m.b, m.local, m.remote, m.natT)
			}
		})
	}
	g.readers.Go(func() { g.read(g.ike500.ReadBatch, false) })
	g.readers.Go(func() { g.read(g.udp.ReadBatch, true) })
	return g, nil
}

// shardQueue is how many IKE messages wait for one shard; when it is full
// the socket's reader waits (and the socket's buffer fills), as a real
// road warrior would be slow, rather than the generator losing answers
// its road warriors then retransmit for.
const shardQueue = 4096

// Len is the number of road warriors.
func (g *Gen) Len() int { return len(g.rws) }

// Addr is road warrior i's address.
func (g *Gen) Addr(i int) netip.Addr { return g.rws[i].addr }

// send is every endpoint's Config.Send.
func (g *Gen) send(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) error {
	if natT {
		return g.udp.SendIKE(msg, local, remote)
	}
	return g.ike500.SendIKE(msg, local, remote)
}

// read serves one socket until it closes: IKE to its road warrior's shard
// (waiting while the shard is full), ESP opened and counted here.
func (g *Gen) read(readBatch func([]transport.Datagram) (int, error), udp4500 bool) {
	msgs := make([]transport.Datagram, 64)
	bufs := make([][]byte, len(msgs))
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	for {
		for i := range msgs {
			msgs[i].Buf = bufs[i][:cap(bufs[i])]
		}
		n, err := readBatch(msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		for _, m := range msgs[:n] {
			if m.IKE {
				g.dispatchIKE(m, udp4500)
				continue
			}
			g.openESP(m)
		}
		for i := range msgs {
			bufs[i] = msgs[i].Buf[:cap(msgs[i].Buf)]
		}
	}
}

func (g *Gen) dispatchIKE(m transport.Datagram, natT bool) {
	rw := g.byIP[m.Local]
	if rw == nil {
		g.ikeDrop.Add(1)
		return
	}
	// The reader's buffer is reused: the shard gets a copy.
	g.shards[rw.i%len(g.shards)] <- ikeMsg{rw: rw, b: append([]byte(nil), m.Buf...), local: m.Local, remote: m.Remote, natT: natT}
}

// openESP decapsulates with the generator's SAD and credits the road
// warrior the inner packet is for (RFC 3554 mode: its own address).
func (g *Gen) openESP(m transport.Datagram) {
	inner, _, err := g.sad.DecapsulateFrom(m.Remote, m.Local, m.Buf)
	if err != nil || len(inner) < 20 || inner[0]>>4 != 4 {
		g.espBad.Add(1)
		return
	}
	rw := g.byIP[netip.AddrFrom4([4]byte(inner[16:20]))]
	if rw == nil {
		g.espBad.Add(1)
		return
	}
	rw.rx.Add(1)
	g.espRx.Add(1)
}

// Stats are the generator's counters.
type Stats struct {
	Up          int    // road warriors with a Child SA installed
	ESPReceived uint64 // inner packets opened
	ESPBad      uint64 // ESP that did not open (unknown SPI, ICV, replay) or was not for one of us
	IKEDropped  uint64 // IKE messages for no road warrior
	SADLen      int
}

// Stats reads the counters.
func (g *Gen) Stats() Stats {
	return Stats{Up: int(g.up.Load()), ESPReceived: g.espRx.Load(), ESPBad: g.espBad.Load(),
		IKEDropped: g.ikeDrop.Load(), SADLen: g.sad.Len()}
}

// Close ends every road warrior's IKE SA (DELETE to the gateway), closes
// the sockets and joins the goroutines.
func (g *Gen) Close() {
	g.once.Do(func() {
		for _, rw := range g.rws {
			rw.ep.Close()
		}
		g.closeSockets()
		g.readers.Wait() // a reader waiting on a shard gets through: the shards still run
		for _, ch := range g.shards {
			close(ch)
		}
		g.workers.Wait()
	})
}

func (g *Gen) closeSockets() {
	g.ike500.Close()
	g.udp.Close()
}

// UpResult is what a bring-up achieved.
type UpResult struct {
	Up, Failed int
	Elapsed    time.Duration
	Errors     map[string]int // by error text, for the report
}

// Up connects road warriors idx (all when nil), at most window handshakes
// in flight, each given timeout to get its Child SA installed. It returns
// when all have finished, one way or the other, or ctx ends.
func (g *Gen) Up(ctx context.Context, idx []int, window int, timeout time.Duration) UpResult {
	if idx == nil {
		idx = make([]int, len(g.rws))
		for i := range idx {
			idx[i] = i
		}
	}
	start := time.Now()
	work := make(chan int)
	var mu sync.Mutex
	res := UpResult{Errors: map[string]int{}}
	var wg sync.WaitGroup
	for range max(window, 1) {
		wg.Go(func() {
			for i := range work {
				err := g.rws[i].connect(ctx, g.cfg.Gateway, timeout)
				mu.Lock()
				if err != nil {
					res.Failed++
					res.Errors[err.Error()]++
				} else {
					res.Up++
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, i := range idx {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// Disconnect ends road warrior i's IKE SA: DELETE to the gateway, its
// Child SAs out of the generator's SAD.
func (g *Gen) Disconnect(i int) { g.rws[i].ep.Reset() }

// Rekey starts a rekey of road warrior i's Child SAs, or of its IKE SA.
func (g *Gen) Rekey(i int, ikeSA bool) { g.rws[i].ep.Rekey(ikeSA) }

// IsUp reports whether road warrior i has a Child SA installed.
func (g *Gen) IsUp(i int) bool { return g.rws[i].out.Load() != nil }

// Received is how many inner packets road warrior i got.
func (g *Gen) Received(i int) uint64 { return g.rws[i].rx.Load() }

// Installs is how many Child SAs road warrior i installed (new and rekeyed).
func (g *Gen) Installs(i int) uint64 { return g.rws[i].installs.Load() }

// RekeysOf counts rekeyed Child SAs of road warrior i.
func (g *Gen) RekeysOf(i int) uint64 { return g.rws[i].rekeys.Load() }
