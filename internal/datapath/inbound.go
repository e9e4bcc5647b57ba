package datapath

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// inBatch is one transport read's worth of ESP on its way in.
type inBatch struct {
	done  sync.Mutex
	bases [][]byte // the receive buffers, handed to ReadBatch each time
	msgs  []transport.Datagram
	n     int
	out   [][]byte // inner packets with tun.Offset bytes of headroom, for tun.Write
	// heads are spare buffers for the first packet of each coalesced
	// read (UDP GRO), where the TUN's GRO can append the ones after it.
	heads [][]byte
}

// groBufs is how many receive buffers a batch of a GRO transport has, each
// with room for transport.GROSegments packets; groHeads of its coalesced
// reads get a head buffer.
const (
	groBufs  = 16
	groHeads = 32
)

// groConn is a transport that can coalesce on receive (*transport.UDPConn).
type groConn interface{ EnableGRO() error }

// Inbound buffers are large: the TUN's GRO may coalesce following packets
// into a buffer's spare capacity, which is what makes TCP through the TUN
// cheap for the kernel.
const inBufSize = 65535 + 64

// inSlots is how many packets one batch of c holds, and how many of
// them get a receive buffer.
func (d *Datapath) inSlots(c transport.Conn) (slots, bufs int) {
	if d.gro[c] {
		return groBufs * transport.GROSegments, groBufs
	}
	return c.BatchSize(), c.BatchSize()
}

func (d *Datapath) newInBatches(c transport.Conn) chan *inBatch {
	slots, nbufs := d.inSlots(c)
	free := make(chan *inBatch, d.cfg.InFlight)
	for range d.cfg.InFlight {
		b := &inBatch{bases: make([][]byte, nbufs), msgs: make([]transport.Datagram, slots), out: make([][]byte, 0, slots)}
		for i := range b.bases {
			b.bases[i] = make([]byte, inBufSize)
		}
		if d.gro[c] {
			b.heads = make([][]byte, groHeads)
			for i := range b.heads {
				b.heads[i] = make([]byte, inBufSize)
			}
		}
		free <- b
	}
	return free
}

// inPipe is one transport's inbound pipeline: its reader, its TUN writer
// and the batches between them.
type inPipe struct {
	c        transport.Conn
	free, q  chan *inBatch
	inFlight atomic.Int64 // batches handed on and not yet written to the TUN
	// Written by the TUN writer only: inner packets of the batches it
	// writes together (the reader has its own, for batches it handles).
	out [][]byte
}

func (d *Datapath) newInPipe(c transport.Conn) *inPipe {
	slots, _ := d.inSlots(c)
	return &inPipe{
		c: c, free: d.newInBatches(c), q: make(chan *inBatch, d.cfg.InFlight),
		out: make([][]byte, 0, maxCoalesce+slots),
	}
}

func (d *Datapath) readESP(stop <-chan struct{}, p *inPipe) error {
	defer close(p.q)
	var b *inBatch
	for {
		if b == nil {
			select {
			case b = <-p.free:
			case <-stop:
				return errStopped
			}
		}
		for i, buf := range b.bases {
			b.msgs[i] = transport.Datagram{Buf: buf} // the rest is room for the packets of coalesced reads
		}
		n, err := p.c.ReadBatch(b.msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return errStopped
			}
			return err
		}
		d.espReceived.Add(uint64(n))
		b.n = n
		if handledInline(b.msgs[:n], datagramLen) && p.inFlight.Load() == 0 {
			// As readTUN: nothing ahead of this batch, so it is opened
			// and written here, without waking two other goroutines.
			d.open(b)
			d.writeOut(b.out)
			clear(b.out)
			b.out = b.out[:0]
			continue
		}
		p.inFlight.Add(1)
		b.done.Lock()
		p.q <- b
		d.inWork <- b
		b = nil
	}
}

func datagramLen(m *transport.Datagram) int { return len(m.Buf) }

func (d *Datapath) open(b *inBatch) {
	b.out = b.out[:0]
	hr := headRoom{heads: b.heads}
	for i := range b.n {
		m := &b.msgs[i]
		if m.IKE {
			if d.cfg.OnIKE != nil {
				d.cfg.OnIKE(m.Buf, m.Local, m.Remote)
			} else {
				d.ikeDropped.Add(1)
			}
			continue
		}
		inner, _, err := d.cfg.SAD.DecapsulateFrom(m.Remote, m.Local, m.Buf)
		if err != nil {
			hr.lost(m)
			continue // counted on the SA and the SAD
		}
		// The inner packet starts tunnel.HeaderLen bytes into the ESP
		// packet: that header becomes the TUN write's headroom.
		b.out = append(b.out, hr.place(m, m.Buf[:tunnel.HeaderLen+len(inner)]))
	}
}

// headRoom keeps the TUN's GRO working on coalesced reads (UDP GRO). Their
// packets are slices of one buffer, each capped at its own end but the
// last, so the TUN's GRO cannot append a flow's next packets to one of
// them: it would overwrite the packets after it. So the packet that starts
// a GRO run (the first of a read, or one after a packet that ended a run)
// is copied into a head buffer with room; the following ones are appended
// to it. That is one or two copies per read of up to 64 packets.
type headRoom struct {
	heads  [][]byte
	left   int  // packets of the current coalesced read still to come
	newRun bool // the next packet of the read starts a new GRO run
}

func (h *headRoom) next(m *transport.Datagram) (inRead, first bool) {
	if m.Segs > 1 {
		h.left, h.newRun = m.Segs, false
		first = true
	}
	if h.left == 0 {
		return false, false
	}
	h.left--
	return true, first
}

// lost notes a packet of a read that is not written: the next one cannot
// continue its run.
func (h *headRoom) lost(m *transport.Datagram) {
	if in, _ := h.next(m); in {
		h.newRun = true
	}
}

// place returns pkt, or its copy in a head buffer.
func (h *headRoom) place(m *transport.Datagram, pkt []byte) []byte {
	in, first := h.next(m)
	if !in {
		return pkt // a datagram of its own: it has the buffer's room
	}
	need := first || h.newRun
	h.newRun = endsGRORun(pkt[tunnel.HeaderLen:])
	if need && h.left > 0 && len(h.heads) > 0 { // the last one has room
		pkt = h.heads[0][:copy(h.heads[0], pkt)]
		h.heads = h.heads[1:]
	}
	return pkt
}

// endsGRORun reports whether nothing can be appended to inner by the TUN's
// TCP GRO (wireguard-go's tun): a TCP segment with any flag but ACK (PSH
// ends a run), or a packet that is neither TCP nor UDP.
func endsGRORun(inner []byte) bool {
	if len(inner) < 1 {
		return true
	}
	var proto byte
	hl := 0
	switch inner[0] >> 4 {
	case 4:
		if len(inner) < 20 {
			return true
		}
		proto, hl = inner[9], int(inner[0]&0x0f)*4
	case 6:
		if len(inner) < 40 {
			return true
		}
		proto, hl = inner[6], 40
	default:
		return true
	}
	switch proto {
	case 17: // UDP: a run ends on a shorter datagram, rarely mid-read
		return false
	case 6:
		const flags, ack = 13, 0x10
		return len(inner) <= hl+flags || inner[hl+flags] != ack
	}
	return true
}

// writeTUN writes opened batches to the TUN in reading order; batches
// already opened when it gets to them are written together, which also
// gives the TUN's GRO more to coalesce.
func (d *Datapath) writeTUN(p *inPipe) {
	held := make([]*inBatch, 0, d.cfg.InFlight)
	for b := range p.q {
		b.done.Lock()
		p.out = append(p.out, b.out...)
		held = append(held, b)
	more:
		for len(p.out) < maxCoalesce {
			select {
			case nb, ok := <-p.q:
				if !ok {
					break more
				}
				nb.done.Lock()
				p.out = append(p.out, nb.out...)
				held = append(held, nb)
			default:
				break more
			}
		}
		d.writeOut(p.out)
		clear(p.out)
		p.out = p.out[:0]
		for i, hb := range held {
			clear(hb.out)
			hb.out = hb.out[:0]
			hb.done.Unlock()
			p.inFlight.Add(-1)
			p.free <- hb
			held[i] = nil
		}
		held = held[:0]
	}
}

func (d *Datapath) writeOut(out [][]byte) {
	if len(out) == 0 {
		return
	}
	if _, err := d.cfg.TUN.Write(out, tun.Offset); err != nil {
		if !errors.Is(err, os.ErrClosed) {
			d.log.Debug("tun write", "err", err)
		}
		return
	}
	d.tunWritten.Add(uint64(len(out)))
}
