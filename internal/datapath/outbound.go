package datapath

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// outBatch is one TUN read's worth of packets on their way out.
type outBatch struct {
	done  sync.Mutex // held while the batch waits for a worker
	bufs  [][]byte   // inner packet at [tunnel.HeaderLen:], room for the trailer after
	sizes []int
	n     int
	res   []sealed
}

type sealed struct {
	esp      []byte
	sa       *tunnel.SA
	src, dst netip.Addr
	port     uint16 // 0: the SA's PeerPort
}

func (d *Datapath) newOutBatches() chan *outBatch {
	bs := d.cfg.TUN.BatchSize()
	// Segments of a TUN GSO read are at most one MTU; ESP adds its header
	// in front (the TUN offset is exactly that headroom) and the trailer.
	size := tunnel.HeaderLen + d.cfg.TUN.MTU() + tunnel.MaxTrailer + 64
	free := make(chan *outBatch, d.outFlight)
	for range d.outFlight {
		b := &outBatch{bufs: make([][]byte, bs), sizes: make([]int, bs), res: make([]sealed, bs)}
		for i := range b.bufs {
			b.bufs[i] = make([]byte, size)
		}
		free <- b
	}
	return free
}

// The TUN offset and the ESP header are the same 16 bytes: a packet read
// from the TUN is sealed where it lies.
var _ = [1]struct{}{}[tun.Offset-tunnel.HeaderLen]

func (d *Datapath) readTUN(stop <-chan struct{}, free, q chan *outBatch) error {
	defer close(q)
	inline := d.newSender()
	var b *outBatch
	for {
		if b == nil {
			select {
			case b = <-free:
			case <-stop:
				return errStopped
			}
		}
		n, err := d.cfg.TUN.Read(b.bufs, b.sizes, tun.Offset)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			return err
		}
		if n == 0 {
			continue
		}
		d.tunRead.Add(uint64(n))
		b.n = n
		if handledInline(b.sizes[:n], intLen) && d.outInFlight.Load() == 0 {
			// Nothing queued ahead of this batch, so sending it from here
			// keeps the order; it saves the two goroutine wake-ups of the
			// hand-off, which cost more than sealing a few packets.
			d.seal(b)
			inline.send(b)
			continue
		}
		d.outInFlight.Add(1)
		b.done.Lock()
		q <- b // order first, so the writer waits on this batch next
		d.outWork <- b
		b = nil
	}
}

func (d *Datapath) seal(b *outBatch) {
	for i := range b.n {
		s, _, err := d.cfg.SPD.Encapsulate(b.bufs[i][:cap(b.bufs[i])], b.sizes[i], &d.outDrops)
		if err != nil || s.SA == nil {
			// DISCARD, no SA, or BYPASS: a packet routed into the TUN
			// cannot be sent in clear from here; all are counted drops.
			if err == nil {
				d.outDrops.Drop(tunnel.DropPolicy)
			}
			b.res[i] = sealed{}
			continue
		}
		b.res[i] = sealed{esp: s.ESP, sa: s.SA, src: s.Src, dst: s.Dst, port: s.Port}
	}
}

const (
	// inlineMax: a read of at most this many packets, with nothing in
	// flight, is sealed and sent by the reader itself (small packets:
	// VoIP, games, DNS, ACKs). Larger reads go to the crypto workers so
	// that bulk traffic uses every core.
	inlineMax = 8
	// inlineBytes: a read of any number of packets totalling at most this
	// many bytes is handled inline too. Small packets at a high rate come
	// in reads of tens of packets, each sealed or opened in well under a
	// microsecond, while handing a batch over wakes a worker and the
	// writer (each wake-up several µs of futex and scheduler work, the
	// largest user-side cost in the 64-byte profiles); bulk reads
	// (1400-byte packets, GSO/GRO runs of 64) still go to the workers.
	inlineBytes = 8 << 10
	// maxCoalesce is how many packets the writer gathers from batches
	// already done before it sends: one sendmmsg's worth.
	maxCoalesce = 128
)

// handledInline reports whether a read (TUN packet sizes, or transport
// datagrams) is handled by its reader: at most inlineMax packets, or at
// most inlineBytes in all. One rule for both directions.
func handledInline[T any](read []T, size func(*T) int) bool {
	if len(read) <= inlineMax {
		return true
	}
	total := 0
	for i := range read {
		if total += size(&read[i]); total > inlineBytes {
			return false
		}
	}
	return true
}

func intLen(n *int) int { return *n }

// sender groups consecutive packets that go through the same socket into
// one sendmmsg. Each goroutine that sends owns one.
type sender struct {
	d       *Datapath
	conns   []transport.Conn
	pending [][]transport.Datagram // by index into conns
}

func (d *Datapath) newSender() *sender {
	s := &sender{d: d, conns: d.conns()}
	s.pending = make([][]transport.Datagram, len(s.conns))
	for i := range s.pending {
		// The writer adds whole batches while under maxCoalesce.
		s.pending[i] = make([]transport.Datagram, 0, maxCoalesce+d.cfg.TUN.BatchSize())
	}
	return s
}

// add queues b's sealed packets; flush sends them.
func (s *sender) add(b *outBatch) {
	for i := range b.n {
		r := &b.res[i]
		if r.sa == nil {
			continue
		}
		c := s.d.connIndex(r.sa, r.dst)
		if c < 0 {
			s.d.noTransport.Add(1)
			continue
		}
		port := uint16(0)
		if r.sa.UDPEncap {
			// Where the peer's ESP came from (a NAT's mapping,
			// RFC 3948), else the negotiated port.
			port = r.sa.PeerPort
			if r.port != 0 {
				port = r.port
			}
		}
		s.pending[c] = append(s.pending[c], transport.Datagram{Buf: r.esp, Local: r.src, Remote: netip.AddrPortFrom(r.dst, port)})
	}
}

func (s *sender) flush() {
	for i, ds := range s.pending {
		if len(ds) == 0 {
			continue
		}
		s.d.write(s.conns[i], ds)
		clear(ds) // drop references to the SAs' buffers
		s.pending[i] = ds[:0]
	}
}

func (s *sender) send(b *outBatch) {
	s.add(b)
	s.flush()
}

// sendESP writes sealed batches in reading order. Batches that are already
// sealed when it gets to them go out together, up to one socket batch, so
// a pipeline that fell behind catches up with fewer system calls.
func (d *Datapath) sendESP(free, q chan *outBatch) {
	s := d.newSender()
	held := make([]*outBatch, 0, d.outFlight)
	for b := range q {
		b.done.Lock()
		s.add(b)
		held = append(held, b)
		queued := b.n
	more:
		for queued < maxCoalesce {
			select {
			case nb, ok := <-q:
				if !ok {
					break more
				}
				nb.done.Lock() // in order: sealed by now or soon
				s.add(nb)
				held = append(held, nb)
				queued += nb.n
			default:
				break more
			}
		}
		s.flush()
		for i, hb := range held {
			hb.done.Unlock()
			d.outInFlight.Add(-1)
			free <- hb
			held[i] = nil
		}
		held = held[:0]
	}
}

func (d *Datapath) write(c transport.Conn, ds []transport.Datagram) {
	for len(ds) > 0 {
		n, err := c.WriteBatch(ds)
		d.espSent.Add(uint64(n))
		if err == nil {
			return
		}
		// Skip the datagram that failed (no route on that uplink, say)
		// and keep going with the rest.
		d.sendErrs.Add(1)
		d.logSendErr(ds[n], err)
		ds = ds[n+1:]
	}
}

// logSendErr makes failing sends visible without flooding the log: at
// most one line every 10 s, with the running count (Stats.SendErrs).
func (d *Datapath) logSendErr(dg transport.Datagram, err error) {
	now := time.Now().UnixNano()
	last := d.sendErrLogged.Load()
	if last != 0 && now-last < int64(10*time.Second) || !d.sendErrLogged.CompareAndSwap(last, now) {
		return
	}
	d.log.Warn("ESP send failed", "local", dg.Local, "remote", dg.Remote, "err", err, "send_errors", d.sendErrs.Load())
}

// connIndex returns the index in d.conns() of the socket for sa towards
// dst, or -1 if there is none.
func (d *Datapath) connIndex(sa *tunnel.SA, dst netip.Addr) int {
	var want transport.Conn
	switch {
	case sa.UDPEncap && dst.Is4():
		want = d.cfg.UDP4
	case sa.UDPEncap:
		want = d.cfg.UDP6
	case dst.Is4():
		want = d.cfg.ESP4
	default:
		want = d.cfg.ESP6
	}
	if want == nil {
		return -1
	}
	for i, c := range d.connList {
		if c == want {
			return i
		}
	}
	return -1
}
