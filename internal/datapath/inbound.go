package datapath

import (
	"errors"
	"net"
	"os"
	"sync"

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
}

// Inbound buffers are large: the TUN's GRO may coalesce following packets
// into a buffer's spare capacity, which is what makes TCP through the TUN
// cheap for the kernel.
const inBufSize = 65535 + 64

func (d *Datapath) newInBatches(c transport.Conn) chan *inBatch {
	bs := c.BatchSize()
	free := make(chan *inBatch, d.cfg.InFlight)
	for range d.cfg.InFlight {
		b := &inBatch{bases: make([][]byte, bs), msgs: make([]transport.Datagram, bs), out: make([][]byte, 0, bs)}
		for i := range b.bases {
			b.bases[i] = make([]byte, inBufSize)
		}
		free <- b
	}
	return free
}

func (d *Datapath) readESP(stop <-chan struct{}, c transport.Conn, free, q chan *inBatch) error {
	defer close(q)
	for {
		var b *inBatch
		select {
		case b = <-free:
		case <-stop:
			return errStopped
		}
		for i := range b.msgs {
			b.msgs[i] = transport.Datagram{Buf: b.bases[i]}
		}
		n, err := c.ReadBatch(b.msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return errStopped
			}
			return err
		}
		d.espReceived.Add(uint64(n))
		b.n = n
		b.done.Lock()
		q <- b
		d.inWork <- b
	}
}

func (d *Datapath) open(b *inBatch) {
	b.out = b.out[:0]
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
			continue // counted on the SA and the SAD
		}
		// The inner packet starts tunnel.HeaderLen bytes into the ESP
		// packet: that header becomes the TUN write's headroom.
		b.out = append(b.out, m.Buf[:tunnel.HeaderLen+len(inner)])
	}
}

func (d *Datapath) writeTUN(free, q chan *inBatch) {
	for b := range q {
		b.done.Lock()
		if len(b.out) > 0 {
			if _, err := d.cfg.TUN.Write(b.out, tun.Offset); err != nil {
				if !errors.Is(err, os.ErrClosed) {
					d.log.Debug("tun write", "err", err)
				}
			} else {
				d.tunWritten.Add(uint64(len(b.out)))
			}
		}
		clear(b.out)
		b.out = b.out[:0]
		b.done.Unlock()
		free <- b
	}
}
