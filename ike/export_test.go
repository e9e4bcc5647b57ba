package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/ikectx"
	"github.com/roamsec/roamsec/internal/hactx"
	"github.com/roamsec/roamsec/tunnel"
)

// sealWith seals one test packet on out and returns the ESP packet and
// its sequence number.
func sealWith(t testing.TB, out *tunnel.SA) ([]byte, uint32) {
	t.Helper()
	src, dst := firstAddr(out.Selector.Local), firstAddr(out.Selector.Remote)
	pkt := udpPacket(src, dst)
	buf := make([]byte, tunnel.HeaderLen+len(pkt)+tunnel.MaxTrailer)
	copy(buf[tunnel.HeaderLen:], pkt)
	esp, err := out.Seal(buf, len(pkt))
	if err != nil {
		t.Fatalf("seal on %#x: %v", out.SPI, err)
	}
	return append([]byte(nil), esp...), binary.BigEndian.Uint32(esp[4:8])
}

// standby is a second gateway endpoint with the first one's
// configuration, not on the wire yet.
func (p *pair) standby(t *testing.T, gwCfg Config) (*Endpoint, *plane) {
	t.Helper()
	pl := new(plane)
	gwCfg.Send, gwCfg.Install, gwCfg.Remove = p.w.send(gwAddr), pl.install, pl.remove
	gwCfg.Log = testLog(t)
	e, err := New(gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, pl
}

// takeOver puts e on the wire in the gateway's place: the old one is
// gone, as after a crash (it sends nothing more, and nothing reaches it).
func (p *pair) takeOver(e *Endpoint) {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	p.w.owners[gwAddr], p.w.owners[gwAddr2] = e, e
}

func TestContextMovesToAnotherGateway_Seed004(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 2)
	var sent = map[uint32]uint32{} // gateway's outbound SPI -> last sequence number it sent
	var replayable []byte          // ESP the old gateway accepted
	var replaySPI uint32
	for _, c := range p.gp.snapshot() {
		for range 5 {
			_, seq := sealWith(t, c.Out)
			sent[c.Out.SPI] = seq
		}
	}
	for _, c := range p.rp.snapshot() {
		esp, _ := sealWith(t, c.Out)
		for _, g := range p.gp.snapshot() {
			if g.In.SPI == c.Out.SPI {
				if _, err := g.In.Open(rwAddr, esp); err != nil {
					t.Fatal(err)
				}
				replayable, replaySPI = esp, g.In.SPI
			}
		}
	}

	all, err := p.gw.ExportAll()
	if err != nil || len(all) != 1 {
		t.Fatalf("ExportAll = %d SAs, %v", len(all), err)
	}
	one, err := p.gw.ExportSA(all[0].SPI)
	if err != nil {
		t.Fatal(err)
	}
	var spiI uint64
	p.rwSA(t, func(s *ikeSA) { spiI = s.spiI })
	if all[0].SPI != spiI || len(one) == 0 {
		t.Fatalf("exported SPI %016x, the road warrior's SPIi is %016x", all[0].SPI, spiI)
	}
	for len(p.prog) > 0 {
		<-p.prog // the connection's own IKE_SA_INIT, before the move
	}
	const jump = 1000
	gw2, pl2 := p.standby(t, gw)
	var mu sync.Mutex
	var changes []Change
	gw2.cfg.Changed = func(c Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() }
	if err := gw2.ImportSA(all[0].Data, jump); err != nil {
		t.Fatal(err)
	}
	p.takeOver(gw2)
	p.gp = pl2

	// The same SPIs, keys that work both ways.
	checkPaired(t, p, 2)
	for _, c := range pl2.snapshot() {
		last, ok := sent[c.Out.SPI]
		if !ok {
			t.Fatalf("imported outbound SPI %#x is not one the old gateway had", c.Out.SPI)
		}
		// checkPaired sealed one packet: the first after the jump.
		if got := c.Out.LastSeq(); got != uint64(last)+jump+1 {
			t.Errorf("outbound %#x: last sequence %d, want %d (exported %d + jump %d + 1): a number may be sent twice (RFC 4303 §3.3.3)",
				c.Out.SPI, got, last+jump+1, last, jump)
		}
		if c.In.SPI == replaySPI {
			if _, err := c.In.Open(rwAddr, replayable); err == nil {
				t.Error("ESP the old gateway accepted opened again on the new one (RFC 4303 §3.4.3 replay)")
			}
		}
	}
	mu.Lock()
	if len(changes) == 0 || changes[len(changes)-1] != (Change{ChangeCreated, spiI}) {
		t.Errorf("changes %v, want the import reported as created with SPI %016x", changes, spiI)
	}
	mu.Unlock()

	// IKE goes on over the imported SA: a rekey from either side, no new
	// IKE_SA_INIT.
	inits := 0
	for len(p.prog) > 0 {
		if (<-p.prog).Kind == EvIKESAInit {
			inits++
		}
	}
	before := pl2.snapshot()
	p.rw.Rekey(false)
	waitFor(t, "Child SAs rekeyed over the imported IKE SA", func() bool {
		_, removed := pl2.counts()
		return removed == 2
	})
	checkPaired(t, p, 2)
	for _, c := range before {
		if c.In.Alive() {
			t.Error("the imported Child SA outlived its rekey")
		}
	}
	gw2.Rekey(true)
	waitFor(t, "IKE SA rekeyed by the new gateway", func() bool {
		n := gw2.ikeSPIs()
		return len(n) == 1 && len(p.rw.ikeSPIs()) == 1 && p.rw.ikeSPIs()[0] != spiI
	})
	for len(p.prog) > 0 {
		if (<-p.prog).Kind == EvIKESAInit {
			inits++
		}
	}
	if inits != 0 {
		t.Errorf("%d IKE_SA_INIT after the takeover", inits)
	}
}

func TestImportRefusals(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	all, err := p.gw.ExportAll()
	if err != nil || len(all) != 1 {
		t.Fatal(all, err)
	}
	data := all[0].Data
	mut := func(f func(r *ikectx.SA)) []byte {
		r, err := ikectx.Decode(append([]byte(nil), data...))
		if err != nil {
			t.Fatal(err)
		}
		f(r)
		b, err := ikectx.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	otherPeers := gw
	otherPeers.Peers = []Peer{{ID: mustID(t, "rw2@roamsec.example"), PSK: []byte("another key, long enough to pass")}}
	for _, tc := range []struct {
		name string
		to   *Endpoint
		data []byte
		want error
	}{
		{"already here", p.gw, data, ErrSAExists},
		{"another IKE SA with this SPIi here", p.gw, mut(func(r *ikectx.SA) { r.SPIr++; r.Children[0].SPIIn++ }), ErrSAExists},
		{"no policy for the peer", nil, data, ErrNoPolicy},
		{"virtual address outside the pool", p.gw, mut(func(r *ikectx.SA) {
			r.SPIi++
			r.SPIr++
			r.Children[0].SPIIn++
			r.VIP = []netip.Addr{netip.MustParseAddr("100.64.9.9")}
		}), ErrNoPolicy},
		{"on an address this gateway does not have", p.gw, mut(func(r *ikectx.SA) {
			r.SPIi++
			r.SPIr++
			r.Children[0].SPIIn++
			r.Local = netip.MustParseAddr("203.0.113.77")
		}), ErrNoPolicy},
		{"road warrior's side", p.gw, mut(func(r *ikectx.SA) { r.Initiator = true }), nil},
		{"unknown cipher", p.gw, mut(func(r *ikectx.SA) { r.SPIi++; r.SPIr++; r.Children[0].SPIIn++; r.Encr = 12 }), nil},
		{"ESP key of the wrong length", p.gw, mut(func(r *ikectx.SA) {
			r.SPIi++
			r.SPIr++
			r.Children[0].SPIIn++
			r.Children[0].KeyIn = r.Children[0].KeyIn[1:]
		}), nil},
		{"not a record", p.gw, []byte(`{"v":2}`), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			to := tc.to
			if to == nil {
				to, _ = p.standby(t, otherPeers)
			}
			before := len(to.ikeSPIs())
			err := to.ImportSA(append([]byte(nil), tc.data...), 0)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("ImportSA = %v, want %v", err, tc.want)
			}
			if len(to.ikeSPIs()) != before {
				t.Fatal("a refused import left an IKE SA behind")
			}
		})
	}
	if got := len(p.gp.snapshot()); got != 1 {
		t.Fatalf("the gateway's data path has %d Child SAs after refused imports, want its own 1", got)
	}
}

func TestExportBusyDuringChildExchange_RFC7296_2_8(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.w.hold() // the rekey's request stays in flight
	p.gw.Rekey(false)
	var spiI uint64
	p.gwSA(t, func(s *ikeSA) { spiI = s.spiI })
	if _, err := p.gw.ExportSA(spiI); !errors.Is(err, ErrBusy) {
		t.Fatalf("ExportSA during CREATE_CHILD_SA = %v, want ErrBusy", err)
	}
	p.w.release()
	if _, err := p.gw.ExportSA(1); !errors.Is(err, ErrNoSuchSA) {
		t.Fatalf("ExportSA of an unknown SPI = %v", err)
	}
}

// many returns n exported IKE SAs: one real one, its SPIs changed.
func many(t testing.TB, one []byte, n int) [][]byte {
	r, err := ikectx.Decode(one)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, n)
	for i := range out {
		x := *r
		x.SPIi, x.SPIr = r.SPIi+uint64(i), r.SPIr+uint64(i)
		x.Children = append([]ikectx.Child(nil), r.Children...)
		for j := range x.Children {
			x.Children[j].SPIIn = 0x10000 + uint32(i*len(x.Children)+j)
			x.Children[j].Name = fmt.Sprintf("x#%d/%d", i, j)
		}
		if out[i], err = ikectx.Encode(&x); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// BenchmarkContextGetPut1000: `context get --all` and `context put` of
// 1,000 road warriors' IKE SAs (two Child SAs each): export, seal, open,
// import into a fresh gateway.
func BenchmarkContextGetPut1000(b *testing.B) {
	const n = 1000
	all, gw := oneExported(b)
	recs := many(b, all[0].Data, n)
	key, _ := hactx.Parse([]byte(strings.Repeat("42", 32)))
	full := newBenchGW(b, gw)
	for _, r := range recs {
		if err := full.ImportSA(r, 0); err != nil {
			b.Fatal(err)
		}
	}
	sealedOne, _ := key.Seal("context", all[0].Data)
	var file []byte
	b.Run("get", func(b *testing.B) {
		for range b.N {
			exp, err := full.ExportAll()
			if err != nil || len(exp) != n {
				b.Fatal(len(exp), err)
			}
			raw := make([][]byte, 0, n)
			for _, x := range exp {
				raw = append(raw, x.Data)
			}
			file, _ = key.Seal("context", hactx.Join(raw))
		}
		b.ReportMetric(float64(len(file)), "bytes/file")
	})
	b.Run("put", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			to := newBenchGW(b, gw)
			b.StartTimer()
			pt, err := key.Open("context", file)
			if err != nil {
				b.Fatal(err)
			}
			got, _ := hactx.Split(pt)
			for _, r := range got {
				if err := to.ImportSA(r, 1<<20); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			to.Close()
			b.StartTimer()
		}
	})
	b.Logf("one IKE SA with two Child SAs: %d bytes sealed (%d in clear)", len(sealedOne), len(all[0].Data))
}

// FuzzImportSA feeds the gateway's import whatever it may be given: a
// real export, changed. Malformed or inconsistent input is an error,
// never a panic, and a refusal leaves nothing behind.
func FuzzImportSA(f *testing.F) {
	all, gw := oneExported(f)
	f.Add(all[0].Data)
	f.Add([]byte(`{"v":1}`))
	to := newBenchGW(f, gw)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := to.ImportSA(b, 1); err != nil {
			return
		}
		to.Reset() // the next input starts from an empty gateway
	})
}

func newBenchGW(b testing.TB, gw Config) *Endpoint {
	gw.Send = func([]byte, netip.Addr, netip.AddrPort, bool) error { return nil }
	gw.Install = func(*Child) error { return nil }
	gw.Remove = func(*Child) {}
	gw.Log = testLog(b)
	e, err := New(gw)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return e
}

// TestImportResyncsPeerMessageIDs_RFC6311: the road warrior's liveness
// checks that the old gateway answered after the export moved its
// message ID on; the new gateway takes its next request (authenticated)
// instead of dropping it as out of window until the peer gives up.
func TestImportResyncsPeerMessageIDs_RFC6311(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	all, err := p.gw.ExportAll()
	if err != nil || len(all) != 1 {
		t.Fatal(all, err)
	}
	p.inform(t, rwAddr) // answered by the old gateway, after the export
	p.inform(t, rwAddr)
	gw2, _ := p.standby(t, gw)
	if err := gw2.ImportSA(all[0].Data, 0); err != nil {
		t.Fatal(err)
	}
	p.takeOver(gw2)
	p.inform(t, rwAddr) // two IDs ahead of the export: taken
	p.inform(t, rwAddr) // and the window goes on from there
	// Only the first request after the import may jump, and only ahead.
	gw2.mu.Lock()
	for _, s := range gw2.sas {
		if s.resync || s.resyncs(s.peerNext+1) {
			t.Error("still resynchronizing after an authenticated request")
		}
	}
	gw2.mu.Unlock()
}

// TestChangesNameEverySAChange: what a standby hears (Config.Changed) for
// each step of an IKE SA's life, always with the SPIi ExportSA takes.
func TestChangesNameEverySAChange(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	var mu sync.Mutex
	var got []Change
	gw.Changed = func(c Change) { mu.Lock(); got = append(got, c); mu.Unlock() }
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	var spiI uint64
	p.rwSA(t, func(s *ikeSA) { spiI = s.spiI })
	seen := func(want Change) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range got {
			if c == want {
				return true
			}
		}
		return false
	}
	waitFor(t, "created", func() bool { return seen(Change{ChangeCreated, spiI}) })
	if _, err := p.gw.ExportSA(spiI); err != nil {
		t.Fatalf("ExportSA of the SPI the change named: %v", err)
	}
	p.inform(t, rwAddr)
	waitFor(t, "message ID", func() bool { return seen(Change{ChangeMessageID, spiI}) })
	mu.Lock()
	got = nil
	mu.Unlock()
	p.rw.Rekey(false)
	waitFor(t, "child rekeyed", func() bool { return seen(Change{ChangeChild, spiI}) })
	p.rw.Rekey(true)
	var newSPI uint64
	waitFor(t, "IKE SA rekeyed", func() bool {
		n := p.rw.ikeSPIs()
		if len(n) == 1 && n[0] != spiI {
			newSPI = n[0]
		}
		return newSPI != 0 && seen(Change{ChangeCreated, newSPI}) && seen(Change{ChangeDeleted, spiI})
	})
	if _, err := p.gw.ExportSA(newSPI); err != nil {
		t.Fatalf("ExportSA after the IKE rekey: %v", err)
	}
	if _, err := p.gw.ExportSA(spiI); !errors.Is(err, ErrNoSuchSA) {
		t.Fatalf("ExportSA of the rekeyed-away SA: %v", err)
	}
}

// oneExported connects a road warrior (RFC 3554 mode, with its
// host-to-host Child SA) and returns the gateway's export of its IKE SA
// and the gateway's config.
func oneExported(t testing.TB) ([]ExportedSA, Config) {
	t.Helper()
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	src := newPair(t, rw, gw)
	if _, err := src.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(src.gp.snapshot()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no IKE SA")
		}
	}
	all, err := src.gw.ExportAll()
	if err != nil || len(all) != 1 {
		t.Fatal(all, err)
	}
	return all, gw
}

// TestDropAllSendsNoDelete: a gateway that becomes an HA pair's standby
// forgets its IKE SAs and their Child SAs without a DELETE (RFC 7296
// §1.4.1 would end them at the peer, which the other gateway now
// serves); the peer's SAs stay up.
func TestDropAllSendsNoDelete(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	var sent atomic.Int32
	p.gw.mu.Lock()
	send := p.gw.cfg.Send
	p.gw.cfg.Send = func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) error {
		sent.Add(1)
		return send(msg, local, remote, natT)
	}
	p.gw.mu.Unlock()
	if n := p.gw.DropAll(); n != 1 {
		t.Fatalf("DropAll dropped %d IKE SAs, want 1", n)
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("DropAll sent %d messages, want none", n)
	}
	if c := p.gp.snapshot(); len(c) != 0 || len(p.gw.SAs()) != 0 {
		t.Fatalf("after DropAll: %d Child SAs installed, %d IKE SAs", len(c), len(p.gw.SAs()))
	}
	if len(p.rw.SAs()) != 1 || len(p.rp.snapshot()) == 0 {
		t.Fatal("the road warrior lost its SAs: something reached it")
	}
}
