package tun

import (
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// reflectStats is what the reflector saw.
type reflectStats struct {
	reads, batched int // Read calls; those returning more than one packet
	maxBatch       int
	readPkts       int // packets Read returned
	written        int // packets handed to Write
}

// reflect turns the TUN into a loop: a TCP packet to far address a comes
// back in from b and one to b from a, both addressed to local. A local
// client dialling a thus talks to a local server that sees b as its peer,
// and every segment crosses the TUN twice: out through Read, back in
// through Write, in batches as a VPN data path would move them.
func reflect(d *Device, a, b, local netip.Addr, st *reflectStats) error {
	bufs := make([][]byte, d.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, BufferSize)
	}
	sizes := make([]int, len(bufs))
	out := make([][]byte, 0, len(bufs))
	for {
		n, err := d.Read(bufs, sizes, Offset)
		if err != nil && !errors.Is(err, ErrTooManySegments) {
			return err
		}
		st.reads++
		st.readPkts += n
		st.maxBatch = max(st.maxBatch, n)
		if n > 1 {
			st.batched++
		}
		out = out[:0]
		for i := range n {
			pkt := bufs[i][Offset : Offset+sizes[i]]
			p, ok := parse(pkt)
			if !ok || p.proto != protoTCP {
				continue // e.g. MLD reports
			}
			switch p.dst {
			case a:
				readdress(pkt, b, local)
			case b:
				readdress(pkt, a, local)
			default:
				continue
			}
			// Full capacity lets Write coalesce into this buffer.
			out = append(out, bufs[i][:Offset+sizes[i]])
		}
		if len(out) == 0 {
			continue
		}
		if _, err := d.Write(out, Offset); err != nil {
			return err
		}
		st.written += len(out)
	}
}

// linkStats returns the TUN's packet counters: tx is what the kernel sent
// into it (one per super-packet), rx what it took from Write (one per
// coalesced packet).
func linkStats(t *testing.T, ns *netns.NS) (tx, rx uint64) {
	t.Helper()
	var ls []struct {
		Stats64 struct {
			Rx struct{ Packets uint64 } `json:"rx"`
			Tx struct{ Packets uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	ipJSON(t, ns, &ls, "-s", "link", "show", "dev", tunName)
	if len(ls) != 1 {
		t.Fatalf("no stats for %s", tunName)
	}
	return ls[0].Stats64.Tx.Packets, ls[0].Stats64.Rx.Packets
}

// TestTCPOffload pushes a TCP bulk transfer through the TUN and back. With
// the wireguard backend the kernel hands the TUN TSO super-packets that Read
// splits into batches, and Write coalesces them again; with water every
// packet is one read and one write. Both must deliver the stream intact.
func TestTCPOffload(t *testing.T) {
	const size = 16 << 20
	for _, bk := range backends {
		for _, f := range families {
			t.Run(string(bk)+"/"+f.name, func(t *testing.T) {
				e := setup(t, bk)
				a, b, local := host(f.far, 7), host(f.far, 8), f.local.Addr()

				var st reflectStats
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					reflect(e.d, a, b, local, &st) // ends when the device closes
				}()

				var ln net.Listener
				if err := e.ns.Do(func() (err error) {
					ln, err = net.Listen("tcp", netip.AddrPortFrom(local, 0).String())
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
				tx0, rx0 := linkStats(t, e.ns)

				srvSum := make(chan []byte, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						srvSum <- nil
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(30 * time.Second))
					if peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); peer != b {
						t.Errorf("server sees peer %v, want %v", peer, b)
					}
					h := sha256.New()
					io.Copy(h, c)
					srvSum <- h.Sum(nil)
				}()

				var c net.Conn
				if err := e.ns.Do(func() (err error) {
					c, err = net.DialTimeout("tcp", netip.AddrPortFrom(a, port).String(), 5*time.Second)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				data := random(size)
				start := time.Now()
				if _, err := c.Write(data); err != nil {
					t.Fatal(err)
				}
				c.Close()
				got := <-srvSum
				elapsed := time.Since(start)
				want := sha256.Sum256(data)
				if string(got) != string(want[:]) {
					t.Fatal("server received a different stream")
				}
				tx1, rx1 := linkStats(t, e.ns)
				e.d.Close()
				wg.Wait()

				t.Logf("%d MiB in %v: %d reads returned %d packets (%d reads batched, max %d); kernel sent %d skbs into the TUN; %d packets written came in as %d skbs",
					size>>20, elapsed.Round(time.Millisecond), st.reads, st.readPkts, st.batched, st.maxBatch, tx1-tx0, st.written, rx1-rx0)
				if bk == Water {
					if st.maxBatch != 1 {
						t.Errorf("water read %d packets at once", st.maxBatch)
					}
					return
				}
				if st.maxBatch < 2 {
					t.Errorf("no batched reads: TSO not in effect")
				}
				if tx1-tx0 >= uint64(st.readPkts) {
					t.Errorf("kernel sent %d skbs for %d packets read: no super-packets", tx1-tx0, st.readPkts)
				}
				if rx1-rx0 >= uint64(st.written) {
					t.Errorf("%d packets written arrived as %d skbs: no coalescing", st.written, rx1-rx0)
				}
			})
		}
	}
}
