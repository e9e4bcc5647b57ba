package ike

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// toyMethod is an EAP method for the tests (type 254, experimental, RFC
// 3748 §5.8): it echoes the server's challenge, and its MSK is fixed.
type toyMethod struct {
	msk   []byte
	done  bool
	wiped bool
}

func (m *toyMethod) Type() uint8 { return 254 }
func (m *toyMethod) Respond(req []byte) ([]byte, error) {
	m.done = true
	return eapPacket(2, req[1], 254, req[5:]), nil
}
func (m *toyMethod) MSK() []byte {
	if !m.done {
		return nil
	}
	return m.msk
}
func (m *toyMethod) Wipe() { m.wiped = true }

// toyBackend is the AAA server: an Identity response gets a challenge,
// a right echo Access-Accept with the MSK and authorization, anything
// else Reject; err makes every relay fail (no server answers).
type toyBackend struct {
	msk    []byte
	authz  Authorization
	err    error
	relays atomic.Int32
	users  []string
}

func (b *toyBackend) Relay(ctx context.Context, conv *EAPConversation, msg []byte) (EAPAnswer, error) {
	b.relays.Add(1)
	if b.err != nil {
		return EAPAnswer{}, b.err
	}
	switch {
	case len(msg) > 5 && msg[4] == 1:
		b.users = append(b.users, string(msg[5:]))
		conv.State = []byte("s1")
		return EAPAnswer{Verdict: EAPContinue, Msg: eapPacket(1, 7, 254, []byte("challenge"))}, nil
	case bytes.Equal(conv.State, []byte("s1")) && bytes.Equal(msg, eapPacket(2, 7, 254, []byte("challenge"))):
		z := b.authz
		return EAPAnswer{Verdict: EAPAccept, Msg: []byte{3, 7, 0, 4}, MSK: bytes.Clone(b.msk), Authz: &z}, nil
	}
	return EAPAnswer{Verdict: EAPReject, Msg: []byte{4, 7, 0, 4}}, nil
}

// eapConfigs: the gateway proves itself with its certificate and relays
// EAP to the backend; the road warrior answers with m.
func eapConfigs(t *testing.T, back *toyBackend, m func() *toyMethod) (Config, Config) {
	rw, gw := certConfigs(t, ModeVirtual)
	rw.Credential = nil
	rw.EAPClient = func() EAPMethod { return m() }
	gw.Peers = []Peer{{EAP: true, VirtualPool: netip.MustParsePrefix("100.64.0.0/24")}}
	gw.EAP = back
	return rw, gw
}

func failedWith(t *testing.T, p *pair, target error) {
	t.Helper()
	waitFor(t, "the road warrior's failure", func() bool {
		select {
		case pr := <-p.prog:
			return pr.Kind == EvFailed && errors.Is(pr.Err, target)
		default:
		}
		return false
	})
}

// TestEAP_RFC7296_2_16: the whole EAP exchange between our two sides: the
// IKE identity as the EAP identity, the challenge relayed, AUTH from the
// MSK both ways; the Framed-IP-Address becomes the virtual address and
// the Child SAs carry the authorization; the method is wiped.
func TestEAP_RFC7296_2_16(t *testing.T) {
	// The peer's MSK is 64 bytes, the last 32 zero (EAP-MSCHAPv2's, RFC
	// 3079); the RADIUS server's MS-MPPE keys give the first 32: the same
	// HMAC key (RFC 2104 pads keys with zeros).
	msk := append(bytes.Repeat([]byte{0x5a}, 32), make([]byte, 32)...)
	back := &toyBackend{msk: msk[:32], authz: Authorization{VirtualIP4: netip.MustParseAddr("100.64.0.77"), Class: [][]byte{[]byte("gold")}}}
	var m *toyMethod
	rw, gw := eapConfigs(t, back, func() *toyMethod { m = &toyMethod{msk: msk}; return m })
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	g := p.gp.snapshot()[0]
	if g.AAA == nil || g.AAA.User != "rw1@roamsec.example" || string(g.AAA.Class[0]) != "gold" {
		t.Fatalf("gateway's Child SA authorization %+v", g.AAA)
	}
	r := p.rp.snapshot()[0]
	if len(r.VirtualIP) != 1 || r.VirtualIP[0] != netip.MustParseAddr("100.64.0.77") {
		t.Fatalf("road warrior's virtual address %v, want the Framed-IP-Address", r.VirtualIP)
	}
	if len(back.users) != 1 || back.users[0] != "rw1@roamsec.example" || back.relays.Load() != 2 {
		t.Fatalf("backend saw users %v in %d relays", back.users, back.relays.Load())
	}
	if !m.wiped {
		t.Fatal("the method was not wiped")
	}
	if s := p.gw.Counters(); s.EAPAccepted != 1 || s.EAPRejected != 0 {
		t.Fatalf("counters %+v", s)
	}
}

// TestEAPAskIdentity_RFC3748_5_1: a policy that asks for the EAP
// identity relays the peer's answer, not its IKE identity, as the user.
func TestEAPAskIdentity_RFC3748_5_1(t *testing.T) {
	msk := append(bytes.Repeat([]byte{0x5a}, 32), make([]byte, 32)...)
	back := &toyBackend{msk: msk}
	rw, gw := eapConfigs(t, back, func() *toyMethod { return &toyMethod{msk: msk} })
	rw.EAPIdentity = "carol"
	gw.Peers[0].EAPAskIdentity = true
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	if len(back.users) != 1 || back.users[0] != "carol" {
		t.Fatalf("the AAA server saw users %v, want the EAP identity carol", back.users)
	}
	if g := p.gp.snapshot()[0]; g.AAA == nil || g.AAA.User != "carol" {
		t.Fatalf("authorization %+v", g.AAA)
	}
}

// TestEAPRefusals: a server's Reject, a server that never answers, an MSK
// that does not match the server's (a wrong AUTH after EAP-Success) and
// an identity without an EAP policy all end without a Child SA, the road
// warrior told so.
func TestEAPRefusals(t *testing.T) {
	msk := bytes.Repeat([]byte{0x5a}, 32)
	for _, c := range []struct {
		name   string
		back   *toyBackend
		method func() *toyMethod
		edit   func(gw *Config)
		want   error
		relays int32 // the backend's, when it is one
	}{
		{"reject", &toyBackend{msk: msk}, func() *toyMethod { return &toyMethod{msk: msk} }, func(gw *Config) {
			gw.EAP = rejecter{}
		}, ErrAuthRefused, 0},
		{"no server answers", &toyBackend{err: errors.New("radius: no server answered")}, func() *toyMethod { return &toyMethod{msk: msk} }, nil, ErrAuthRefused, 1},
		{"wrong MSK", &toyBackend{msk: msk}, func() *toyMethod { return &toyMethod{msk: bytes.Repeat([]byte{1}, 32)} }, nil, ErrAuthRefused, 2},
		{"no EAP policy", &toyBackend{msk: msk}, func() *toyMethod { return &toyMethod{msk: msk} }, func(gw *Config) {
			gw.Peers[0].EAP = false
		}, ErrAuthRefused, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rw, gw := eapConfigs(t, c.back, c.method)
			if c.edit != nil {
				c.edit(&gw)
			}
			p := newPair(t, rw, gw)
			p.connect(t)
			failedWith(t, p, c.want)
			time.Sleep(50 * time.Millisecond)
			if gi, _ := p.gp.counts(); gi != 0 {
				t.Fatal("the gateway installed a Child SA")
			}
			if n := c.back.relays.Load(); n != c.relays {
				t.Fatalf("%d relays to the backend, want %d", n, c.relays)
			}
			if s := p.gw.Counters(); (c.name == "reject") != (s.EAPRejected == 1) {
				t.Fatalf("EAP rejections counted: %d", s.EAPRejected)
			}
		})
	}
}

type rejecter struct{}

func (rejecter) Relay(context.Context, *EAPConversation, []byte) (EAPAnswer, error) {
	return EAPAnswer{Verdict: EAPReject, Msg: []byte{4, 1, 0, 4}}, nil
}

// TestEAPCloseWaitsForRelays: Close returns only after an EAP relay in
// flight gave up (ctx ended): no goroutine outlives the endpoint.
func TestEAPCloseWaitsForRelays(t *testing.T) {
	started := make(chan struct{})
	var ended atomic.Bool
	rw, gw := eapConfigs(t, nil, func() *toyMethod { return &toyMethod{} })
	gw.EAP = blocker{started: started, ended: &ended}
	p := newPair(t, rw, gw)
	p.connect(t)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no relay")
	}
	p.gw.Close()
	if !ended.Load() {
		t.Fatal("Close returned before the relay ended")
	}
}

type blocker struct {
	started chan struct{}
	ended   *atomic.Bool
}

func (b blocker) Relay(ctx context.Context, _ *EAPConversation, _ []byte) (EAPAnswer, error) {
	close(b.started)
	<-ctx.Done()
	b.ended.Store(true)
	return EAPAnswer{}, ctx.Err()
}
