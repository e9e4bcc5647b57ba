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
	free := make(chan *outBatch, d.cfg.InFlight)
	for range d.cfg.InFlight {
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
	for {
		var b *outBatch
		select {
		case b = <-free:
		case <-stop:
			return errStopped
		}
		n, err := d.cfg.TUN.Read(b.bufs, b.sizes, tun.Offset)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			return err
		}
		if n == 0 {
			free <- b
			continue
		}
		d.tunRead.Add(uint64(n))
		b.n = n
		b.done.Lock()
		q <- b // order first, so the writer waits on this batch next
		d.outWork <- b
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

// sendESP writes sealed batches in reading order, grouping consecutive
// packets that go through the same socket into one sendmmsg.
func (d *Datapath) sendESP(free, q chan *outBatch) {
	conns := d.conns()
	pending := make(map[transport.Conn][]transport.Datagram, len(conns))
	for _, c := range conns {
		pending[c] = make([]transport.Datagram, 0, d.cfg.TUN.BatchSize())
	}
	for b := range q {
		b.done.Lock()
		for i := range b.n {
			r := &b.res[i]
			if r.sa == nil {
				continue
			}
			c := d.connFor(r.sa, r.dst)
			if c == nil {
				d.noTransport.Add(1)
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
			pending[c] = append(pending[c], transport.Datagram{Buf: r.esp, Local: r.src, Remote: netip.AddrPortFrom(r.dst, port)})
		}
		for c, ds := range pending {
			if len(ds) == 0 {
				continue
			}
			d.write(c, ds)
			clear(ds) // drop references to the SAs' buffers
			pending[c] = ds[:0]
		}
		b.done.Unlock()
		free <- b
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

func (d *Datapath) connFor(sa *tunnel.SA, dst netip.Addr) transport.Conn {
	switch {
	case sa.UDPEncap && dst.Is4():
		return d.cfg.UDP4
	case sa.UDPEncap:
		return d.cfg.UDP6
	case dst.Is4():
		return d.cfg.ESP4
	}
	return d.cfg.ESP6
}
