package daemon

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"strings"
	"testing"
	"time"

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

func TestEnrollExpiresTakesDays(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "72h": 72 * time.Hour, "0": 0, "90m": 90 * time.Minute} {
		var d days
		if err := d.Set(in); err != nil || time.Duration(d) != want {
			t.Errorf("%q: %v %v, want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{"-1h", "xd", "1.5d", "soon"} {
		var d days
		if d.Set(in) == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// gateway enroll, as the Host: issue writes codes that decode, list shows
// them valid, revoke by user revokes them all, and a bad objective is a
// usage error.
func TestEnrollIssueListRevoke(t *testing.T) {
	dir := t.TempDir()
	db := dir + "/keys.json"
	var out, errb bytes.Buffer
	if code := Main("gateway", []string{"enroll", "issue", "dave", "-count", "2", "-expires", "7d", "-db", db, "-o", dir + "/codes"}, &out, &errb); code != ExitOK {
		t.Fatalf("issue: exit %d: %s", code, errb.String())
	}
	data, _ := os.ReadFile(dir + "/codes")
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		code, _, _ := strings.Cut(line, " ")
		if k, err := auth.ParseOneTimeCode(code); err != nil || k.User != "dave" {
			t.Fatalf("code %q: %v", code, err)
		}
	}
	if st, _ := os.Stat(dir + "/codes"); st.Mode().Perm() != 0o600 {
		t.Errorf("codes file mode %v", st.Mode())
	}
	out.Reset()
	Main("gateway", []string{"enroll", "list", "-db", db}, &out, &errb)
	if strings.Count(out.String(), " valid ") != 2 {
		t.Fatalf("list:\n%s", out.String())
	}
	out.Reset()
	if code := Main("gateway", []string{"enroll", "revoke", "dave", "-db", db}, &out, &errb); code != ExitOK || strings.Count(out.String(), "revoked key") != 2 {
		t.Fatalf("revoke: exit %d\n%s", code, out.String())
	}
	if code := Main("gateway", []string{"enroll", "issue", "dave", "-objective", "ah", "-db", db}, &out, &errb); code != ExitUsage {
		t.Fatalf("objective ah: exit %d", code)
	}
	if code := Main("roadwarrior", []string{"enroll", "list", "-db", db}, &out, &errb); code != ExitUsage {
		t.Fatalf("roadwarrior enroll: exit %d", code)
	}
}

func TestOneTimeCodeFromStandardInput(t *testing.T) {
	k, _ := auth.GenerateOneTime("frank")
	var stderr bytes.Buffer
	f := oneTimeFlags{code: "-", remoteTS: "203.0.113.0/24", socket: t.TempDir() + "/rw.sock", tun: "roamsec0"}
	o, p, code := f.prepare([]string{"192.0.2.1"}, strings.NewReader(k.Code()+"\n"), &stderr, true)
	if p == nil {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	defer p.close()
	defer o.zero()
	if !p.setup.IKE.ID.Equal(k.Identity()) {
		t.Fatalf("identity %v", p.setup.IKE.ID)
	}
	if _, p, code := f.prepare([]string{"192.0.2.1"}, strings.NewReader(""), &stderr, true); p != nil || code != ExitOneTimeCode {
		t.Fatalf("empty standard input: exit %d", code)
	}
}

// The Host is a file or etcd, never both at once.
func TestEnrollDbAndEtcdTogetherIsAUsageError(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main("gateway", []string{"enroll", "list", "-db", t.TempDir() + "/keys.json", "-etcd", "http://192.0.2.10:2379"}, &out, &errb)
	if code != ExitUsage || !strings.Contains(errb.String(), "not both") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
