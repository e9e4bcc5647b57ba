package ike

import (
	"crypto/ed25519"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
)

// testAuthority is a Host of one key, valid once.
type testAuthority struct {
	key   *auth.OneTimeKey
	used  atomic.Bool
	props []ESPProposal
	last  atomic.Pointer[OneTimeRequest]
}

func (a *testAuthority) Admit(r OneTimeRequest) (*Peer, error) {
	a.last.Store(&r)
	if !r.ID.Equal(a.key.Identity()) {
		return nil, errors.New("unknown key")
	}
	if err := r.Verify(a.key.PublicKey()); err != nil {
		return nil, err
	}
	if !a.used.CompareAndSwap(false, true) {
		return nil, errors.New("used")
	}
	return &Peer{PSK: a.key.GatewaySecret(), VirtualPool: netip.MustParsePrefix("100.64.1.0/24"), ESPProposals: a.props}, nil
}

// oneTimeConfigs: a road warrior with only a code, a gateway with no
// peers but the authority.
func oneTimeConfigs(t *testing.T) (Config, Config, *testAuthority, *auth.OneTimeKey) {
	k, err := auth.GenerateOneTime("alice")
	if err != nil {
		t.Fatal(err)
	}
	a := &testAuthority{key: k}
	rw := Config{LocalID: k.Identity(), Credential: k.Credential(), PSK: k.GatewaySecret(), Mode: ModeVirtual,
		RemoteTS: []netip.Prefix{lan}, LocalAddrs: []netip.Addr{rwAddr}, UDPEncap: true}
	gw := Config{LocalID: mustID(t, "gw.roamsec.example"), LocalTS: []netip.Prefix{lan}, LocalAddrs: []netip.Addr{gwAddr},
		UDPEncap: true, OneTime: a}
	return rw, gw, a, k
}

func waitOneTimeEvent(t *testing.T, p *pair, what string, ok func(Progress) bool) Progress {
	t.Helper()
	var got Progress
	waitFor(t, what, func() bool {
		select {
		case pr := <-p.prog:
			if ok(pr) {
				got = pr
				return true
			}
		default:
		}
		return false
	})
	return got
}

// RFC 7670 §3 + RFC 7427/8420: the road warrior signs with Ed25519 over a
// raw public key; the gateway hands the request (key ID, user, the raw key,
// the SPIs) to the authority, answers with a shared key MIC under the
// key's gateway secret, and the road warrior gets an address from the pool.
func TestOneTimeKeyAuthenticates_RFC7670_RFC8420(t *testing.T) {
	rw, gw, a, k := oneTimeConfigs(t)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	c := p.rp.snapshot()[0]
	if len(c.VirtualIP) != 1 || !netip.MustParsePrefix("100.64.1.0/24").Contains(c.VirtualIP[0]) {
		t.Fatalf("virtual address %v", c.VirtualIP)
	}
	r := a.last.Load()
	if r == nil || r.SPIi == 0 || r.SPIr == 0 || len(r.Nonce) == 0 || !r.ID.Equal(k.Identity()) {
		t.Fatalf("request: %+v", r)
	}
	if pub, err := auth.ParseRawPublicKey(r.RawKey); err != nil || !k.PublicKey().Equal(pub.(ed25519.PublicKey)) {
		t.Fatalf("raw public key (CERT 15): %v", err)
	}
	if g := p.gp.snapshot()[0]; !strings.HasPrefix(g.Peer, "keyid:") {
		t.Errorf("gateway's Child SA peer %q", g.Peer)
	}
}

// A gateway that also takes any identity its CAs certify (a peer without
// an ID) still sends one-time keys to the authority.
func TestOneTimeKeyBesideWildcardCertificatePeer(t *testing.T) {
	rw, gw, _, _ := oneTimeConfigs(t)
	gw.Peers = []Peer{{VirtualPool: netip.MustParsePrefix("100.64.0.0/24")}}
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
}

// Seed 002: valid once. The second IKE SA with the same key gets
// AUTHENTICATION_FAILED.
func TestOneTimeKeySecondUseRefused(t *testing.T) {
	rw, gw, _, _ := oneTimeConfigs(t)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.connect(t)
	waitOneTimeEvent(t, p, "the second use refused", func(pr Progress) bool { return pr.Kind == EvFailed && errors.Is(pr.Err, ErrAuthRefused) })
}

// A gateway without the key's secret cannot pass itself off as the one the
// code was issued for (RFC 7296 §2.15: the responder's AUTH).
func TestOneTimeKeyImpostorGatewayRefused_RFC7296_2_15(t *testing.T) {
	rw, gw, a, _ := oneTimeConfigs(t)
	gw.OneTime = impostor{a}
	p := newPair(t, rw, gw)
	p.connect(t)
	waitOneTimeEvent(t, p, "the impostor refused", func(pr Progress) bool { return pr.Kind == EvFailed && errors.Is(pr.Err, ErrPeerAuth) })
}

type impostor struct{ a *testAuthority }

func (i impostor) Admit(r OneTimeRequest) (*Peer, error) {
	p, err := i.a.Admit(r)
	if err == nil {
		p.PSK = []byte("not the secret derived from the code!")
	}
	return p, err
}

// Seed 002 table 3: the objective maps to the proposals allowed: a key
// held to AES-GCM-256 refuses a road warrior that offers only AES-GCM-128,
// and takes AES-GCM-256 from one that offers everything.
func TestOneTimeObjectiveLimitsESPProposals(t *testing.T) {
	strict := []ESPProposal{mustESP("aes256gcm16-esn-noesn")[0]}
	rw, gw, a, _ := oneTimeConfigs(t)
	a.props = strict
	rw.ESPProposals = mustESP("aes128gcm16")
	p := newPair(t, rw, gw)
	p.connect(t)
	waitOneTimeEvent(t, p, "the Child SA refused", func(pr Progress) bool { return pr.Kind == EvFailed || pr.Kind == EvChildFailed })
	if n, _ := p.gp.counts(); n != 0 {
		t.Fatalf("gateway installed %d Child SAs with a cipher the objective does not allow", n)
	}

	rw, gw, a, _ = oneTimeConfigs(t)
	a.props = strict
	p = newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	if got := p.gp.snapshot()[0].Proposal; !strings.HasPrefix(got, "aes256gcm16") {
		t.Fatalf("proposal %q, want aes256gcm16", got)
	}
}

// The objective holds for the IKE SA's life: a Child SA rekey the gateway
// starts offers only the objective's proposals, even to a road warrior
// that prefers another cipher (RFC 7296 §2.8: the rekey negotiates anew).
func TestOneTimeObjectiveHoldsInGatewayRekey_RFC7296_2_8(t *testing.T) {
	rw, gw, a, _ := oneTimeConfigs(t)
	a.props = []ESPProposal{mustESP("aes256gcm16-esn-noesn")[0]}
	rw.ESPProposals = mustESP("aes128gcm16-aes256gcm16-esn-noesn")
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	before := p.rp.snapshot()[0]
	p.gw.Rekey(false)
	waitFor(t, "child rekeyed by the gateway", func() bool { s := p.rp.snapshot(); return len(s) == 1 && s[0] != before })
	checkPaired(t, p, 1)
	for _, c := range append(p.gp.snapshot(), p.rp.snapshot()...) {
		if !strings.HasPrefix(c.Proposal, "aes256gcm16") {
			t.Fatalf("rekeyed Child SA %s uses %s, outside the objective", c.Name, c.Proposal)
		}
	}
}

// verifyOnly admits the key every time (no state): the IKE side's cost
// alone; the Host's (lock, file, fsync) is enroll's BenchmarkAdmit.
type verifyOnly struct{ key *auth.OneTimeKey }

func (v verifyOnly) Admit(r OneTimeRequest) (*Peer, error) {
	if err := r.Verify(v.key.PublicKey()); err != nil {
		return nil, err
	}
	return &Peer{PSK: v.key.GatewaySecret(), VirtualPool: netip.MustParsePrefix("100.64.0.0/8")}, nil
}

// BenchmarkOneTimeHandshake is BenchmarkHandshake with a one-time key:
// Ed25519 signature (RFC 8420) verified, shared key MIC answered.
func BenchmarkOneTimeHandshake(b *testing.B) {
	t := &testing.T{}
	rwC, gwC, _, k := oneTimeConfigs(t)
	gwC.OneTime = verifyOnly{k}
	rwC.IKEProposals, gwC.IKEProposals = mustIKE("aes256gcm16-prfsha256-ecp256"), mustIKE("aes256gcm16-prfsha256-ecp256")
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
	rw.Close()
	gw.Close()
}

// Seed 002 and 004 together: a one-time key's IKE SA is not exported
// (ErrNotTransferable) and ExportAll leaves it out without an error; its
// policy exists only where the key was admitted.
func TestOneTimeKeySANotTransferred(t *testing.T) {
	rw, gw, _, _ := oneTimeConfigs(t)
	gw.Peers = []Peer{{VirtualPool: netip.MustParsePrefix("100.64.0.0/24")}} // a wildcard an importer could mistake it for
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	sas := p.gw.SAs()
	if len(sas) != 1 {
		t.Fatalf("%d IKE SAs", len(sas))
	}
	p.gw.mu.Lock()
	var spiI uint64
	for _, s := range p.gw.sas {
		spiI = s.spiI
	}
	p.gw.mu.Unlock()
	if _, err := p.gw.ExportSA(spiI); !errors.Is(err, ErrNotTransferable) {
		t.Fatalf("ExportSA: %v, want ErrNotTransferable", err)
	}
	if all, err := p.gw.ExportAll(); err != nil || len(all) != 0 {
		t.Fatalf("ExportAll: %d records, %v; want none and no error", len(all), err)
	}
}
