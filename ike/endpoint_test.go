package ike

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// The state machine between two endpoints in one process, wired by
// goroutines instead of sockets, with a data path that only records the
// Child SAs. The namespace tests in test/e2e run the same code over real
// sockets and against strongSwan.

var (
	rwAddr  = netip.MustParseAddr("192.0.2.2")
	rwAddr2 = netip.MustParseAddr("198.51.100.2")
	gwAddr  = netip.MustParseAddr("192.0.2.1")
	gwAddr2 = netip.MustParseAddr("198.51.100.1")
	lan     = netip.MustParsePrefix("203.0.113.0/24")
)

type plane struct {
	mu       sync.Mutex
	children map[string]*Child // by name
	removed  []*Child
	installs int
}

func (p *plane) install(c *Child) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.children == nil {
		p.children = map[string]*Child{}
	}
	p.children[c.Name] = c
	p.installs++
	return nil
}

func (p *plane) remove(c *Child) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.children[c.Name] == c {
		delete(p.children, c.Name)
		if n := c.Sibling(); n != nil {
			p.children[c.Name] = n // as the daemon does
		}
	}
	p.removed = append(p.removed, c)
}

func (p *plane) counts() (installs, removed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.installs, len(p.removed)
}

func (p *plane) snapshot() []*Child {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Child
	for _, c := range p.children {
		out = append(out, c)
	}
	return out
}

// wire connects endpoints: a message sent to an address is handed to the
// endpoint owning it, asynchronously (as a socket would), unless drop
// says otherwise.
type wire struct {
	mu     sync.Mutex
	owners map[netip.Addr]*Endpoint
	drop   atomic.Bool
	sent   atomic.Int64
	log    [][]byte // everything sent, in order
	// blocked drops what one address sends to another ({from, to}).
	blocked map[[2]netip.Addr]bool
	// holding keeps messages in held until release delivers them at once.
	holding bool
	held    []func()
}

func (w *wire) hold() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.holding = true
}

// flush delivers what is held, one after the other, and keeps holding
// what that sends.
func (w *wire) flush() {
	w.mu.Lock()
	held := w.held
	w.held = nil
	w.mu.Unlock()
	for _, f := range held {
		f()
	}
}

func (w *wire) release() {
	w.mu.Lock()
	held := w.held
	w.holding, w.held = false, nil
	w.mu.Unlock()
	for _, f := range held {
		go f()
	}
}

func (w *wire) block(from, to netip.Addr, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.blocked == nil {
		w.blocked = map[[2]netip.Addr]bool{}
	}
	w.blocked[[2]netip.Addr{from, to}] = on
}

func (w *wire) send(from netip.Addr) func([]byte, netip.Addr, netip.AddrPort, bool) error {
	return func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) error {
		w.sent.Add(1)
		if w.drop.Load() {
			return nil
		}
		if !local.IsValid() {
			local = from
		}
		w.mu.Lock()
		to := w.owners[remote.Addr()]
		w.log = append(w.log, append([]byte(nil), msg...))
		if w.blocked[[2]netip.Addr{local, remote.Addr()}] {
			to = nil
		}
		w.mu.Unlock()
		if to == nil {
			return nil
		}
		port := uint16(500)
		if natT {
			port = 4500
		}
		m := append([]byte(nil), msg...)
		deliver := func() { to.Handle(m, remote.Addr(), netip.AddrPortFrom(local, port), natT) }
		w.mu.Lock()
		if w.holding {
			w.held = append(w.held, deliver)
			w.mu.Unlock()
			return nil
		}
		w.mu.Unlock()
		go deliver()
		return nil
	}
}

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type pair struct {
	w      *wire
	rw, gw *Endpoint
	rp, gp *plane
	prog   chan Progress
}

func newPair(t testing.TB, rwCfg, gwCfg Config) *pair {
	t.Helper()
	p := &pair{w: &wire{owners: map[netip.Addr]*Endpoint{}}, rp: new(plane), gp: new(plane), prog: make(chan Progress, 100)}
	rwCfg.Initiator = true
	rwCfg.Send, rwCfg.Install, rwCfg.Remove = p.w.send(rwAddr), p.rp.install, p.rp.remove
	rwCfg.Log = testLog(t)
	rwCfg.Progress = func(pr Progress) {
		select {
		case p.prog <- pr:
		default:
		}
	}
	gwCfg.Send, gwCfg.Install, gwCfg.Remove = p.w.send(gwAddr), p.gp.install, p.gp.remove
	gwCfg.Log = testLog(t)
	var err error
	if p.rw, err = New(rwCfg); err != nil {
		t.Fatal(err)
	}
	if p.gw, err = New(gwCfg); err != nil {
		t.Fatal(err)
	}
	p.w.owners[rwAddr], p.w.owners[rwAddr2] = p.rw, p.rw
	p.w.owners[gwAddr], p.w.owners[gwAddr2] = p.gw, p.gw
	t.Cleanup(func() { p.rw.Close(); p.gw.Close() })
	return p
}

func (p *pair) connect(t *testing.T) {
	t.Helper()
	if _, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500)); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustID(t testing.TB, s string) auth.Identity {
	id, err := auth.ParseIdentity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func pskConfigs(t testing.TB, mode Mode) (Config, Config) {
	psk := []byte("a test key that is long enough, 32+ bytes")
	rw := Config{LocalID: mustID(t, "rw1@roamsec.example"), RemoteID: mustID(t, "gw.roamsec.example"), PSK: psk,
		Mode: mode, LocalTS: []netip.Prefix{netip.PrefixFrom(rwAddr, 32), netip.PrefixFrom(rwAddr2, 32)},
		RemoteTS: []netip.Prefix{lan}, LocalAddrs: []netip.Addr{rwAddr, rwAddr2}, UDPEncap: true}
	gw := Config{LocalID: mustID(t, "gw.roamsec.example"), LocalTS: []netip.Prefix{lan}, LocalAddrs: []netip.Addr{gwAddr, gwAddr2}, UDPEncap: true,
		Peers: []Peer{{ID: mustID(t, "rw1@roamsec.example"), PSK: psk,
			Addresses:   []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")},
			VirtualPool: netip.MustParsePrefix("100.64.0.0/24")}}}
	return rw, gw
}

// checkPaired asserts that each Child SA on one side has its mirror on the
// other (SPIs crossed) and that the keys agree: a packet sealed by one
// side's outbound SA opens on the other's inbound SA.
func checkPaired(t *testing.T, p *pair, n int) {
	t.Helper()
	// mirrors pairs each road-warrior Child SA with the gateway's (SPIs
	// crossed); the two sides install a rekey one after the other, so
	// wait until they agree.
	mirrors := func() map[*Child]*Child {
		rs, gs := p.rp.snapshot(), p.gp.snapshot()
		if len(rs) != n || len(gs) != n {
			return nil
		}
		m := map[*Child]*Child{}
		for _, rc := range rs {
			for _, gc := range gs {
				if gc.In.SPI == rc.Out.SPI && gc.Out.SPI == rc.In.SPI {
					m[rc] = gc
				}
			}
		}
		if len(m) != n {
			return nil
		}
		return m
	}
	waitFor(t, "mirrored Child SAs on both sides", func() bool { return mirrors() != nil })
	for rc, gc := range mirrors() {
		for _, dir := range []struct {
			out, in *tunnel.SA
			src     netip.Addr
		}{{rc.Out, gc.In, rwAddr}, {gc.Out, rc.In, gwAddr}} {
			src, dst := firstAddr(dir.out.Selector.Local), firstAddr(dir.out.Selector.Remote)
			pkt := udpPacket(src, dst)
			buf := make([]byte, tunnel.HeaderLen+len(pkt)+tunnel.MaxTrailer)
			copy(buf[tunnel.HeaderLen:], pkt)
			esp, err := dir.out.Seal(buf, len(pkt))
			if err != nil {
				t.Fatalf("seal on %#x: %v", dir.out.SPI, err)
			}
			if _, err := dir.in.Open(dir.src, esp); err != nil {
				t.Fatalf("open on %#x of what %#x sealed: %v", dir.in.SPI, dir.out.SPI, err)
			}
		}
	}
}

func firstAddr(s tunnel.AddrSet) netip.Addr {
	ps := s.Entries()
	return ps[0].Addr()
}

func udpPacket(src, dst netip.Addr) []byte {
	b := make([]byte, 28)
	b[0], b[3], b[8], b[9] = 0x45, 28, 64, 17
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	b[20], b[21], b[22], b[23], b[25] = 0x30, 0x39, 0x30, 0x39, 8
	return b
}

func TestPSKVirtualAddress_RFC7296(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	c := p.rp.snapshot()[0]
	if len(c.VirtualIP) != 1 || !netip.MustParsePrefix("100.64.0.0/24").Contains(c.VirtualIP[0]) {
		t.Fatalf("virtual address %v, want one from 100.64.0.0/24 (§2.19)", c.VirtualIP)
	}
	if !c.Selector.Local.Contains(c.VirtualIP[0]) || c.Selector.Local.Contains(rwAddr) {
		t.Errorf("TSi not narrowed to the virtual address (§2.9): %v", c.Selector)
	}
}

func TestRFC3554AddressSetOneSAPair_RFC3554_3(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 2) // the network pair and the host-to-host pair
	for _, c := range p.gp.snapshot() {
		for _, a := range []netip.Addr{rwAddr, rwAddr2} {
			if !c.Selector.Remote.Contains(a) {
				t.Errorf("%s: selector %v does not cover %v: one SA pair must cover every address", c.Name, c.Selector, a)
			}
		}
		if c.HostToHost != strings.HasSuffix(c.Name, "/hosts") {
			t.Errorf("%s: HostToHost = %v", c.Name, c.HostToHost)
		}
		if !c.In.PeerAddrs.Contains(rwAddr2) {
			t.Errorf("%s: inbound SA does not accept ESP from the secondary address %v", c.Name, rwAddr2)
		}
	}
}

func TestUnauthorizedAddressRefused_RFC3554_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	// Peer authenticated, but claiming an address outside its pools.
	rw.LocalTS = append(rw.LocalTS, netip.MustParsePrefix("192.0.2.77/32"), netip.MustParsePrefix("203.0.113.9/32"))
	p := newPair(t, rw, gw)
	p.connect(t)
	var failed Progress
	waitFor(t, "the Child SA refused", func() bool {
		select {
		case pr := <-p.prog:
			if pr.Kind == EvFailed {
				failed = pr
				return true
			}
		default:
		}
		return false
	})
	var ne *NotifyError
	if !errors.As(failed.Err, &ne) || ne.Type != message.TS_UNACCEPTABLE {
		t.Fatalf("failure %v, want TS_UNACCEPTABLE", failed.Err)
	}
	time.Sleep(50 * time.Millisecond)
	if installs, _ := p.gp.counts(); installs != 0 {
		t.Fatalf("gateway installed %d Child SAs for a peer claiming an address it does not own", installs)
	}
}

func TestWrongPSKRefused_RFC7296_2_15(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.PSK = []byte("not the gateway's key, but long enough anyway")
	p := newPair(t, rw, gw)
	p.connect(t)
	waitFor(t, "authentication failure", func() bool {
		select {
		case pr := <-p.prog:
			return pr.Kind == EvFailed && errors.Is(pr.Err, ErrAuthRefused)
		default:
		}
		return false
	})
	gi, _ := p.gp.counts()
	ri, _ := p.rp.counts()
	if gi != 0 || ri != 0 {
		t.Fatal("Child SA installed despite a wrong PSK")
	}
}

func TestRekeyChildAndIKE_RFC7296_2_8(t *testing.T) {
	for _, pfs := range []bool{false, true} {
		t.Run(map[bool]string{false: "no PFS", true: "PFS"}[pfs], func(t *testing.T) {
			rw, gw := pskConfigs(t, ModeVirtual)
			rw.PFS, gw.PFS = pfs, pfs
			p := newPair(t, rw, gw)
			p.connect(t)
			checkPaired(t, p, 1)
			before := p.rp.snapshot()[0]
			p.rw.Rekey(false)
			waitFor(t, "rekeyed child", func() bool {
				s := p.rp.snapshot()
				_, removed := p.gp.counts()
				return len(s) == 1 && s[0] != before && removed == 1
			})
			checkPaired(t, p, 1)
			if before.In.Alive() || before.Out.Alive() {
				t.Error("old Child SA keys not zeroed after the rekey")
			}
			// The IKE SA rekey keeps the Child SA and moves on new SPIs.
			old := p.rw.ikeSPIs()
			p.rw.Rekey(true)
			waitFor(t, "rekeyed IKE SA", func() bool { n := p.rw.ikeSPIs(); return len(n) == 1 && n[0] != old[0] && len(p.gw.ikeSPIs()) == 1 })
			after := p.rp.snapshot()[0]
			// The Child SA survives, and the new IKE SA works: rekey again.
			p.gw.Rekey(false)
			waitFor(t, "child rekeyed over the new IKE SA", func() bool { s := p.rp.snapshot(); return len(s) == 1 && s[0] != after })
			checkPaired(t, p, 1)
			// A gateway-initiated rekey keeps the virtual address, so the
			// new outbound SA still sends to the road warrior's outer
			// address, not to the inner one.
			g := p.gp.snapshot()[0]
			if len(g.VirtualIP) != 1 || g.Out.Outer().DstFromInner {
				t.Fatalf("gateway's rekeyed Child SA: virtual %v, outer %+v", g.VirtualIP, g.Out.Outer())
			}
		})
	}
}

func (e *Endpoint) ikeSPIs() []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []uint64
	for spi, s := range e.sas {
		if s.state == stEstablished {
			out = append(out, spi)
		}
	}
	return out
}

func TestDeadPeerDetection_RFC7296_2_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.DPD, rw.RetransmitTimeout, rw.RetransmitTries = 50*time.Millisecond, 20*time.Millisecond, 2
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.w.drop.Store(true)
	waitFor(t, "the road warrior to declare the gateway dead", func() bool { return len(p.rp.snapshot()) == 0 })
	if p.rw.Established() {
		t.Fatal("IKE SA still up")
	}
}

func TestDeleteHonoured_RFC7296_1_4_1(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.rw.Close() // sends DELETE
	waitFor(t, "the gateway to remove the SAs", func() bool { return len(p.gp.snapshot()) == 0 && !p.gw.Established() })
}

func TestRetransmitAnsweredFromCache_RFC7296_2_1(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	// Replay the road warrior's IKE_AUTH request: it is answered from the
	// cache and creates nothing.
	p.w.mu.Lock()
	var auth []byte
	for _, m := range p.w.log {
		if len(m) > 18 && m[18] == 35 && m[19]&0x20 == 0 { // IKE_AUTH request
			auth = m
		}
	}
	p.w.mu.Unlock()
	if auth == nil {
		t.Fatal("no IKE_AUTH request seen")
	}
	installs, _ := p.gp.counts()
	p.gw.Handle(auth, gwAddr, netip.AddrPortFrom(rwAddr, 4500), true)
	p.gw.mu.Lock()
	answered := p.gw.Stats.Answered
	p.gw.mu.Unlock()
	if now, _ := p.gp.counts(); answered != 1 || now != installs {
		t.Fatalf("replayed IKE_AUTH: answered %d (want 1), installs %d -> %d", answered, installs, now)
	}
}
