package transport

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchPacketSize = 1400
	benchSPI        = 0x9000
	sentinelSPI     = 0xfffffff0 // seq carries the run number
)

var benchRuns atomic.Uint32

// BenchmarkThroughput pushes 1400-byte ESP packets from namespace A to B
// over veth, reading and writing with the same batch size. One op is one
// packet: ns/op is the sender's cost, rx-pkt/s what the receiver got, and
// allocs/op covers both sides. UDP runs with UDP_SEGMENT where the kernel
// has it, and again without ("nogso") for comparison.
func BenchmarkThroughput(b *testing.B) {
	bed := newTestbed(b)
	for _, tr := range transports {
		p := newPair(b, bed, tr.v6, tr.udp)
		for _, bs := range []int{1, 32, 128} {
			b.Run(fmt.Sprintf("%s/batch=%d", tr.name, bs), func(b *testing.B) {
				benchPair(b, p, bs)
			})
		}
		if u, ok := p.a.(*UDPConn); ok && u.gso {
			for _, bs := range []int{32, 128} {
				b.Run(fmt.Sprintf("%s-nogso/batch=%d", tr.name, bs), func(b *testing.B) {
					u.gso = false
					defer func() { u.gso = true }()
					benchPair(b, p, bs)
				})
			}
		}
	}
}

func benchPair(b *testing.B, p *pair, bs int) {
	run := benchRuns.Add(1)
	to := netip.AddrPortFrom(p.dstB[0], p.portB)
	out := make([]Datagram, bs)
	for i := range out {
		out[i] = Datagram{Buf: espPacket(benchSPI, uint32(i+1), benchPacketSize), Local: p.srcA[0], Remote: to}
	}

	// The receiver counts until it sees this run's sentinel, so packets the
	// kernel dropped cannot make it wait forever, and sentinels left over
	// from an earlier run cannot stop it early.
	var received int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, bs)
		msgs := make([]Datagram, bs)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		for {
			for i := range msgs {
				msgs[i].Buf = bufs[i]
			}
			n, err := p.b.ReadBatch(msgs)
			if err != nil {
				return
			}
			for _, m := range msgs[:n] {
				switch binary.BigEndian.Uint32(m.Buf) {
				case benchSPI:
					received++
				case sentinelSPI:
					if binary.BigEndian.Uint32(m.Buf[4:]) == run {
						return
					}
				}
			}
		}
	}()

	b.SetBytes(benchPacketSize)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		n, err := p.a.WriteBatch(out[:min(bs, b.N-sent)])
		if err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	sentinel := []Datagram{{Buf: espPacket(sentinelSPI, run, 16), Remote: to}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		if _, err := p.a.WriteBatch(sentinel); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
			waiting = false
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx-pkt/s")
	b.ReportMetric(float64(received)/elapsed.Seconds(), "rx-pkt/s")
	b.ReportMetric(100*float64(int64(b.N)-received)/float64(b.N), "loss-%")
}
