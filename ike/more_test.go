package ike

import (
	"crypto/x509"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/test/pki"
)

// certConfigs: both sides authenticate with ECDSA certificates from one
// test CA; the road warrior's certificate names its addresses (RFC 3554
// §4 authority from subjectAltName).
func certConfigs(t testing.TB, mode Mode) (Config, Config) {
	ca, err := pki.NewCA("test CA", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	rwLeaf, err := ca.Issue("rw1", pki.ECDSAP256, nil, []netip.Addr{rwAddr, rwAddr2}, []string{"rw1@roamsec.example"})
	if err != nil {
		t.Fatal(err)
	}
	gwLeaf, err := ca.Issue("gw", pki.ECDSAP256, []string{"gw.roamsec.example"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rwCred, _ := auth.NewCredential(rwLeaf.Key, []*x509.Certificate{rwLeaf.Cert})
	gwCred, _ := auth.NewCredential(gwLeaf.Key, []*x509.Certificate{gwLeaf.Cert})
	rw, gw := pskConfigs(t, mode)
	rw.PSK, rw.Credential, rw.CAs = nil, rwCred, []*x509.Certificate{ca.Cert}
	gw.Credential, gw.CAs = gwCred, []*x509.Certificate{ca.Cert}
	gw.Peers = []Peer{{VirtualPool: netip.MustParsePrefix("100.64.0.0/24")}} // any identity the CA vouches for; addresses from the certificate
	return rw, gw
}

// TestCertificatesAndFragments_RFC7383: certificate authentication with
// IKE_AUTH messages larger than the fragment size: both directions are
// sent as SKF fragments and reassembled; the addresses the certificate
// names are authorized (RFC 3554 §4).
func TestCertificatesAndFragments_RFC7383(t *testing.T) {
	rw, gw := certConfigs(t, ModeRFC3554)
	rw.FragmentSize, gw.FragmentSize = 300, 300
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.w.mu.Lock()
	frags := 0
	for _, m := range p.w.log {
		if len(m) > 16 && message.PayloadType(m[16]) == message.PayloadSKF {
			frags++
		}
	}
	p.w.mu.Unlock()
	if frags < 4 {
		t.Fatalf("%d SKF fragments on the wire, want IKE_AUTH request and response fragmented", frags)
	}
}

// TestCookie_RFC7296_2_6: above the half-open threshold the responder
// answers IKE_SA_INIT with a COOKIE and keeps no state; the initiator
// repeats its request with the cookie and the exchange completes.
func TestCookie_RFC7296_2_6(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	gw.CookieThreshold = -1 // always
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.gw.mu.Lock()
	defer p.gw.mu.Unlock()
	if p.gw.Stats.Cookies != 1 {
		t.Fatalf("cookies sent: %d, want 1", p.gw.Stats.Cookies)
	}
}

// TestInvalidKE_RFC7296_1_2: the initiator guesses X25519, the responder
// wants P-256: INVALID_KE_PAYLOAD names the group and the initiator
// starts again with it.
func TestInvalidKE_RFC7296_1_2(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.IKEProposals = mustIKE("aes128gcm16-prfsha256-x25519", "aes256gcm16-prfsha256-ecp256")
	gw.IKEProposals = mustIKE("aes256gcm16-prfsha256-ecp256")
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
}

// syncWire delivers messages in one goroutine: what a benchmark and a
// fuzz target want.
type syncWire struct {
	owners map[netip.Addr]*Endpoint
	queue  []queued
}

type queued struct {
	to     *Endpoint
	msg    []byte
	local  netip.Addr
	remote netip.AddrPort
	natT   bool
}

func (w *syncWire) send(from netip.Addr) func([]byte, netip.Addr, netip.AddrPort, bool) error {
	return func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) error {
		port := uint16(500)
		if natT {
			port = 4500
		}
		if to := w.owners[remote.Addr()]; to != nil {
			w.queue = append(w.queue, queued{to: to, msg: append([]byte(nil), msg...), local: remote.Addr(), remote: netip.AddrPortFrom(from, port), natT: natT})
		}
		return nil
	}
}

// pump delivers until nothing is left; it returns the time spent in the
// endpoint gw.
func (w *syncWire) pump(gw *Endpoint) time.Duration {
	var d time.Duration
	for len(w.queue) > 0 {
		q := w.queue[0]
		w.queue = w.queue[1:]
		t0 := time.Now()
		q.to.Handle(q.msg, q.local, q.remote, q.natT)
		if q.to == gw {
			d += time.Since(t0)
		}
	}
	return d
}

func newSync(tb testing.TB, rwCfg, gwCfg Config) (*syncWire, *Endpoint, *Endpoint, *plane, *plane) {
	w := &syncWire{owners: map[netip.Addr]*Endpoint{}}
	rp, gp := new(plane), new(plane)
	rwCfg.Initiator = true
	rwCfg.Send, rwCfg.Install, rwCfg.Remove, rwCfg.Log = w.send(rwAddr), rp.install, rp.remove, testLogTB(tb)
	gwCfg.Send, gwCfg.Install, gwCfg.Remove, gwCfg.Log = w.send(gwAddr), gp.install, gp.remove, testLogTB(tb)
	rw, err := New(rwCfg)
	if err != nil {
		tb.Fatal(err)
	}
	gw, err := New(gwCfg)
	if err != nil {
		tb.Fatal(err)
	}
	w.owners[rwAddr], w.owners[gwAddr] = rw, gw
	return w, rw, gw, rp, gp
}

// BenchmarkHandshake: IKE_SA_INIT + IKE_AUTH with the first Child SA,
// PSK, both ends in one goroutine; gw-µs/handshake is the responder's
// share (what a gateway core spends per road warrior).
func BenchmarkHandshake(b *testing.B) {
	for _, prop := range []string{"aes256gcm16-prfsha256-ecp256", "aes128gcm16-prfsha256-x25519"} {
		b.Run(prop, func(b *testing.B) {
			t := &testing.T{}
			rwC, gwC := pskConfigs(t, ModeVirtual)
			rwC.IKEProposals, gwC.IKEProposals = mustIKE(prop), mustIKE(prop)
			gwC.Peers[0].VirtualPool = netip.MustParsePrefix("100.64.0.0/8")
			w, rw, gw, rp, _ := newSync(b, rwC, gwC)
			var gwTime time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500)); err != nil {
					b.Fatal(err)
				}
				gwTime += w.pump(gw)
			}
			b.StopTimer()
			if rp.installs != b.N {
				b.Fatalf("%d Child SAs for %d handshakes", rp.installs, b.N)
			}
			b.ReportMetric(float64(gwTime.Microseconds())/float64(b.N), "gw-µs/handshake")
			gw.Close()
		})
	}
}

// BenchmarkGatewayMemoryPerTunnel: heap held by the gateway per
// established road warrior (IKE SA, Child SA pair and its tunnel SAs).
func BenchmarkGatewayMemoryPerTunnel(b *testing.B) {
	t := &testing.T{}
	rwC, gwC := pskConfigs(t, ModeVirtual)
	gwC.Peers[0].VirtualPool = netip.MustParsePrefix("100.64.0.0/8")
	const n = 2000
	w, rw, gw, rp, gp := newSync(b, rwC, gwC)
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for j := 0; j < n; j++ {
			rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
			w.pump(gw)
			// Forget the initiator's side so only the gateway's state
			// stays: its IKE SAs destroyed here, which stops their
			// timers (those held them before), and the Child SAs its
			// plane kept.
			rw.mu.Lock()
			for _, s := range rw.sas {
				s.destroy(DownHandedOver) // no DELETE: the gateway's side stays up
			}
			rw.mu.Unlock()
			rp.mu.Lock()
			clear(rp.children)
			rp.removed = nil
			rp.mu.Unlock()
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/tunnel")
		if len(gp.snapshot()) == 0 {
			b.Fatal("no tunnels")
		}
		gw.Close()
		w, rw, gw, rp, gp = newSync(b, rwC, gwC)
	}
}

func testLogTB(testing.TB) *slog.Logger { return slog.New(slog.DiscardHandler) }
