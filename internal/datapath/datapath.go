// Package datapath runs the tunnel: TUN ↔ SPD/SAD ↔ ESP transports.
//
// It is split the way wireguard-go's device is: one goroutine reads a batch
// of packets, the batch goes both to a work queue served by one crypto
// worker per core and, in reading order, to a writer that waits for each
// batch to be done before sending it. Packets therefore leave in the order
// they came in (and so in sequence-number order per SA), while encryption
// and decryption use every core. Batches, buffers and datagram slices are
// preallocated and recycled through free lists, so the steady state does
// not allocate, and a bounded number of batches in flight bounds memory.
//
// Small packets (VoIP, games, DNS, ACKs) mostly arrive one per read, and
// handing each over costs two goroutine wake-ups, more than sealing it.
// So a reader whose read holds few packets while nothing of its direction
// is in flight processes and sends it itself; only larger reads, or reads
// behind others, go through the workers. Writers that find several
// batches done send them with one system call.
package datapath

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// Config wires a datapath. Conns are optional by family and kind; a
// packet whose SA needs a missing one is dropped and counted.
type Config struct {
	TUN        *tun.Device
	ESP4, ESP6 transport.Conn // raw IP protocol 50
	UDP4, UDP6 transport.Conn // ESP in UDP (RFC 3948)
	SPD        *tunnel.SPD
	SAD        *tunnel.SAD
	Log        *slog.Logger
	Workers    int // crypto workers; 0 = one per core
	InFlight   int // batches in flight per direction and reader; 0 = 4
	// OnIKE receives IKE messages that arrived on a UDP socket (RFC 3948
	// non-ESP marker). Nil drops them. It must copy msg.
	OnIKE func(msg []byte, local netip.Addr, remote netip.AddrPort)
}

// Stats are the datapath's own counters; per-SA counters live on the SAs
// and the inbound totals on the SAD.
type Stats struct {
	TunRead, TunWritten   uint64 // packets
	ESPSent, ESPReceived  uint64
	OutDrops              tunnel.CountersSnapshot // outbound drops that belong to no SA
	NoTransport, SendErrs uint64
	IKEDropped            uint64
	// ESPPacketSocket counts the raw ESP packets of ESPSent that left
	// through the AF_PACKET socket (transport.ESPConn.EnablePacketSend).
	ESPPacketSocket uint64
}

// Datapath is a running tunnel data path.
type Datapath struct {
	cfg      Config
	log      *slog.Logger
	outDrops tunnel.Counters

	// Each written per batch by a different goroutine: a cache line
	// each, so the readers and writers do not bounce one between cores.
	tunRead, tunWritten   paddedCounter
	espSent, espReceived  paddedCounter
	noTransport, sendErrs atomic.Uint64
	sendErrLogged         atomic.Int64 // unix ns of the last "ESP send failed" line
	ikeDropped            atomic.Uint64

	outWork chan *outBatch
	inWork  chan *inBatch

	connList []transport.Conn // the configured transports, fixed by New
	// gro: the transports that coalesce on receive (UDP GRO); read-only
	// after New.
	gro map[transport.Conn]bool

	// Batches handed to the pipeline and not yet written, outbound; a
	// reader that sees none processes a small batch itself.
	outInFlight atomic.Int64
	outFlight   int // outbound batches
}

// paddedCounter is an atomic counter alone on its (64-byte) cache line.
type paddedCounter struct {
	atomic.Uint64
	_ [56]byte
}

// New checks cfg and returns a datapath ready to Run.
func New(cfg Config) (*Datapath, error) {
	if cfg.TUN == nil || cfg.SPD == nil || cfg.SAD == nil {
		return nil, errors.New("datapath: TUN, SPD and SAD are required")
	}
	if cfg.ESP4 == nil && cfg.ESP6 == nil && cfg.UDP4 == nil && cfg.UDP6 == nil {
		return nil, errors.New("datapath: no transport")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	d := &Datapath{
		cfg: cfg, log: cfg.Log,
		outFlight: cfg.InFlight,
		outWork:   make(chan *outBatch, cfg.InFlight*4),
		inWork:    make(chan *inBatch, cfg.InFlight*4),
	}
	d.gro = make(map[transport.Conn]bool)
	for _, c := range []transport.Conn{cfg.ESP4, cfg.ESP6, cfg.UDP4, cfg.UDP6} {
		if c == nil {
			continue
		}
		d.connList = append(d.connList, c)
		// Our receive buffers hold 64 KiB and we keep our own list of
		// them: what UDP GRO needs (transport.UDPConn.EnableGRO).
		if g, ok := c.(groConn); ok {
			if err := g.EnableGRO(); err != nil {
				d.log.Debug("no UDP GRO", "err", err)
			} else {
				d.gro[c] = true
			}
		}
	}
	return d, nil
}

// Stats returns a snapshot of the counters.
func (d *Datapath) Stats() Stats {
	return Stats{
		TunRead: d.tunRead.Load(), TunWritten: d.tunWritten.Load(),
		ESPSent: d.espSent.Load(), ESPReceived: d.espReceived.Load(),
		OutDrops:    d.outDrops.Snapshot(),
		NoTransport: d.noTransport.Load(), SendErrs: d.sendErrs.Load(),
		IKEDropped:      d.ikeDropped.Load(),
		ESPPacketSocket: d.packetSocketSent(),
	}
}

// packetSocketSent sums the raw ESP transports' packet-socket sends.
func (d *Datapath) packetSocketSent() uint64 {
	var n uint64
	for _, c := range []transport.Conn{d.cfg.ESP4, d.cfg.ESP6} {
		if c != nil {
			n += c.Stats().PacketSent
		}
	}
	return n
}

// Run moves packets until ctx ends or the TUN device fails. On return the
// TUN device and the transports are closed.
func (d *Datapath) Run(ctx context.Context) error {
	errc := make(chan error, 1+len(d.conns()))
	stop := make(chan struct{})
	var stopOnce sync.Once
	shutdown := func() {
		stopOnce.Do(func() {
			close(stop)
			d.cfg.TUN.Close()
			for _, c := range d.conns() {
				c.Close()
			}
		})
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		shutdown()
	}()

	// Readers stop when their TUN or socket is closed; only then are the
	// work queues closed, so every queued batch is still finished by a
	// worker and no writer waits forever on one.
	var readers, rest sync.WaitGroup
	for range d.cfg.Workers {
		rest.Go(d.worker)
	}
	// Outbound: TUN → seal → transports.
	outQ := make(chan *outBatch, d.outFlight)
	outFree := d.newOutBatches()
	readers.Go(func() { errc <- d.readTUN(stop, outFree, outQ) })
	rest.Go(func() { d.sendESP(outFree, outQ) })
	// Inbound: each transport → open → TUN.
	for _, c := range d.conns() {
		p := d.newInPipe(c)
		readers.Go(func() { errc <- d.readESP(stop, p) })
		rest.Go(func() { d.writeTUN(p) })
	}
	go func() {
		readers.Wait()
		close(d.outWork)
		close(d.inWork)
	}()

	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		if isClosed(first) {
			first = nil
		} else {
			d.log.Error("datapath stopped", "err", first)
		}
	}
	shutdown()
	readers.Wait()
	rest.Wait()
	return first
}

func (d *Datapath) conns() []transport.Conn { return d.connList }

func isClosed(err error) bool {
	return err == nil || errors.Is(err, os.ErrClosed) || errors.Is(err, errStopped)
}

var errStopped = errors.New("datapath stopped")

// worker runs crypto for batches of either direction until both queues
// are closed and drained.
func (d *Datapath) worker() {
	outWork, inWork := d.outWork, d.inWork
	for outWork != nil || inWork != nil {
		select {
		case b, ok := <-outWork:
			if !ok {
				outWork = nil
				continue
			}
			d.seal(b)
			b.done.Unlock()
		case b, ok := <-inWork:
			if !ok {
				inWork = nil
				continue
			}
			d.open(b)
			b.done.Unlock()
		}
	}
}
