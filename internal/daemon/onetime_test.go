package daemon

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
)

// Seed 002 / issue 13: the borrowed machine keeps no secret: the profile
// is built in memory from the code (nothing read or written), and once
// IKE_AUTH is over the private key and the gateway secret are zeros.
func TestOneTimeProfileInMemoryAndKeyZeroedAfterIKEAuth(t *testing.T) {
	k, _ := auth.GenerateOneTime("alice")
	var stderr bytes.Buffer
	f := oneTimeFlags{code: k.Code(), remoteTS: "203.0.113.0/24", socket: t.TempDir() + "/rw.sock", tun: "roamsec0"}
	o, p, code := f.prepare([]string{"192.0.2.1"}, nil, &stderr, true)
	if p == nil {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	defer p.close()
	s := p.setup.IKE
	if s.Gateway != "192.0.2.1" || !s.ID.Equal(k.Identity()) || s.Credential == nil || !s.Credential.Raw || !bytes.Equal(s.PSK, k.GatewaySecret()) {
		t.Fatalf("profile: id %v gateway %s credential %v", s.ID, s.Gateway, s.Credential)
	}
	seen := 0
	next := o.progress(func(ike.Progress) { seen++ })
	next(ike.Progress{Kind: ike.EvIKEAuth})
	if bytes.Equal(s.PSK, make([]byte, len(s.PSK))) {
		t.Fatal("zeroed before IKE_AUTH was over")
	}
	next(ike.Progress{Kind: ike.EvIKEEstablished})
	if !bytes.Equal(s.PSK, make([]byte, len(s.PSK))) || !bytes.Equal(s.Credential.Key.(ed25519.PrivateKey), make([]byte, ed25519.PrivateKeySize)) {
		t.Fatal("key material left after IKE_AUTH")
	}
	if seen != 2 {
		t.Fatalf("%d events passed on", seen)
	}
}

func TestOneTimeCodeTypoExitCode(t *testing.T) {
	var stderr bytes.Buffer
	f := oneTimeFlags{code: "AAAAA-BBBBB-CCCCC", remoteTS: "203.0.113.0/24"}
	if _, p, code := f.prepare([]string{"gw.example"}, nil, &stderr, true); p != nil || code != ExitOneTimeCode || !strings.Contains(stderr.String(), "not valid") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, p, code := f.prepare(nil, nil, &stderr, true); p != nil || code != ExitUsage {
		t.Fatalf("without GATEWAY: exit %d", code)
	}
}
