package enroll

import (
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
)

// request is what a gateway would ask for key k: signed by k itself.
func request(k *auth.OneTimeKey) AdmitRequest {
	msg := []byte("signed octets")
	_, sig, _ := k.Credential().Sign(msg, []auth.HashAlg{auth.HashIdentity})
	spki, _ := auth.RawPublicKey(k.PublicKey())
	return AdmitRequest{KeyID: k.KeyID(), User: k.User, RawKey: spki, Gateway: "gw", Remote: "192.0.2.2:500",
		Verify: func(pub crypto.PublicKey) error { return auth.Verify(auth.MethodDigitalSignature, sig, msg, pub) }}
}

func issue(t testing.TB, h Store, user string, ttl time.Duration) *auth.OneTimeKey {
	t.Helper()
	keys, _, err := h.Issue(user, 1, ObjectiveESP, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return keys[0]
}

// Seed 002 §3 steps 2–3 and table 4: a valid key is validated and moved to
// used (invalid) once; every other state, or a request that is not the
// key holder's, is refused with its reason.
func TestSeed002HostStateTransitions(t *testing.T) {
	other, _ := auth.GenerateOneTime("alice")
	tests := []struct {
		name   string
		setup  func(h Store, k *auth.OneTimeKey) AdmitRequest
		want   Reason // "" admitted
		after  State
		expire time.Duration
	}{
		{name: "ValidKeyIsAdmittedAndBecomesUsed", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest { return request(k) }, after: StateUsed},
		{name: "UsedKeyIsRefused", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			if _, err := h.Admit(request(k)); err != nil {
				t.Fatal(err)
			}
			return request(k)
		}, want: ReasonUsed, after: StateUsed},
		{name: "RevokedKeyIsRefused", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			if _, err := h.Revoke(k.User); err != nil {
				t.Fatal(err)
			}
			return request(k)
		}, want: ReasonRevoked, after: StateRevoked},
		{name: "ExpiredKeyIsRefusedAndStaysUnused", expire: time.Hour, setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			setNow(h, func() time.Time { return time.Now().Add(2 * time.Hour) })
			return request(k)
		}, want: ReasonExpired, after: StateValid},
		{name: "UnknownKeyIsRefused", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest { return request(other) }, want: ReasonUnknownKey, after: StateValid},
		{name: "OtherUserInTheRequestIsRefused", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			r := request(k)
			r.User = "mallory"
			return r
		}, want: ReasonWrongUser, after: StateValid},
		{name: "ForgedSignatureIsRefusedAndDoesNotBurnTheKey", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			r := request(other)
			r.KeyID, r.User, r.RawKey = k.KeyID(), k.User, nil
			return r
		}, want: ReasonBadSignature, after: StateValid},
		{name: "SwappedRawKeyIsRefused", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			r := request(k)
			r.RawKey, _ = auth.RawPublicKey(other.PublicKey())
			return r
		}, want: ReasonKeyMismatch, after: StateValid},
		{name: "GarbledRawKeyIsRefused", setup: func(h Store, k *auth.OneTimeKey) AdmitRequest {
			r := request(k)
			r.RawKey = []byte{0x30, 0x00}
			return r
		}, want: ReasonKeyMismatch, after: StateValid},
	}
	for _, st := range stores(t) {
		for _, tt := range tests {
			t.Run(st.name+"/"+tt.name, func(t *testing.T) {
				h := st.open(t)
				k := issue(t, h, "alice", tt.expire)
				rec, err := h.Admit(tt.setup(h, k))
				switch {
				case tt.want == "" && err != nil:
					t.Fatalf("refused: %v", err)
				case tt.want == "" && len(rec.Secret) == 0:
					t.Fatal("admitted without the gateway secret")
				case tt.want != "" && ReasonOf(err) != tt.want:
					t.Fatalf("got %v, want reason %s", err, tt.want)
				}
				recs, _ := h.List()
				if len(recs) != 1 || recs[0].State != tt.after {
					t.Fatalf("state after: %+v, want %s", recs, tt.after)
				}
				if recs[0].Secret != nil {
					t.Fatal("List returned the gateway secret")
				}
			})
		}
	}
}

// setNow sets a store's clock.
func setNow(h Store, now func() time.Time) {
	switch h := h.(type) {
	case *Host:
		h.Now = now
	case *EtcdHost:
		h.Now = now
	}
}

type store struct {
	name string
	open func(t *testing.T) Store // a fresh, empty database
}

// stores are the backends every Host test runs on: the file, and etcd if
// it is installed and we may make a network namespace for it.
func stores(t *testing.T) []store {
	out := []store{{"file", func(t *testing.T) Store { return OpenHost(filepath.Join(t.TempDir(), "keys.json")) }}}
	if srv := startEtcd(t); srv != nil {
		n := 0
		out = append(out, store{"etcd", func(t *testing.T) Store {
			n++
			return openEtcd(t, srv, fmt.Sprintf("/test/%s/%d/", t.Name(), n))
		}})
	}
	return out
}

// Seed 002: a key pair creates a tunnel exactly once, whoever races for it:
// here 16 gateways, each with its own handle on the database (its own
// flock), at once.
func TestSeed002RacingGatewaysAdmitExactlyOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	k := issue(t, OpenHost(path), "alice", 0)
	var ok, used atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := OpenHost(path)
			<-start
			_, err := h.Admit(request(k))
			switch {
			case err == nil:
				ok.Add(1)
			case ReasonOf(err) == ReasonUsed:
				used.Add(1)
			default:
				t.Errorf("unexpected refusal: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 || used.Load() != 15 {
		t.Fatalf("admitted %d, refused as used %d; want 1 and 15", ok.Load(), used.Load())
	}
}

func TestIssueRefusesObjectivesWeDoNotCarry(t *testing.T) {
	for _, s := range []string{"native", "1", "ah", "2", "bogus"} {
		if _, err := ParseObjective(s); err == nil {
			t.Errorf("objective %q accepted", s)
		}
	}
	h := OpenHost(filepath.Join(t.TempDir(), "keys.json"))
	if _, _, err := h.Issue("alice", 0, ObjectiveESP, 0); err == nil {
		t.Error("count 0 accepted")
	}
	if _, _, err := h.Issue("has space", 1, ObjectiveESP, 0); err == nil {
		t.Error("user with a space accepted")
	}
	if p, err := ObjectiveStrict.ESPProposals(); err != nil || len(p) != 1 || p[0].String() != "aes256gcm16-esn-noesn" {
		t.Errorf("strict: %v %v", p, err)
	}
}

func TestCorruptDatabaseIsAStoreError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := writeFile(path, "{not json"); err != nil {
		t.Fatal(err)
	}
	k, _ := auth.GenerateOneTime("alice")
	_, err := OpenHost(path).Admit(request(k))
	if ReasonOf(err) != ReasonStore || !errors.As(err, new(*Refusal)) {
		t.Fatalf("got %v", err)
	}
}

var _ = ed25519.PublicKeySize

func BenchmarkIssue(b *testing.B) {
	dir := b.TempDir()
	n := 0
	for b.Loop() {
		// A fresh database per batch: the cost of one `enroll issue -count 100`.
		n++
		h := OpenHost(filepath.Join(dir, fmt.Sprintf("keys%d.json", n)))
		keys, _, err := h.Issue("alice", 100, ObjectiveESP, 0)
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			k.Zero()
		}
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// The database file is read from disk that an operator may edit: whatever
// it holds is an error or a database, never a panic.
func FuzzHostDatabase(f *testing.F) {
	f.Add(`{"version":1,"keys":[{"key_id":"00","user":"a","public_key":"AAAA","state":"valid"}]}`)
	f.Add(`{"version":2}`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, s string) {
		path := filepath.Join(t.TempDir(), "keys.json")
		if err := writeFile(path, s); err != nil {
			t.Fatal(err)
		}
		k, _ := auth.GenerateOneTime("a")
		h := OpenHost(path)
		h.Admit(request(k))
		h.List()
	})
}

// BenchmarkAdmit is the Host's share of one one-time IKE_AUTH: lock, read
// the database (10 or 1,000 keys), verify, mark used, write and fsync.
func BenchmarkAdmit(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("%d-keys", n), func(b *testing.B) { benchAdmit(b, n) })
	}
}

func benchAdmit(b *testing.B, n int) {
	h := OpenHost(filepath.Join(b.TempDir(), "keys.json"))
	keys, _, err := h.Issue("alice", n, ObjectiveESP, 0)
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]AdmitRequest, len(keys))
	for i, k := range keys {
		reqs[i] = request(k)
	}
	i := 0
	for b.Loop() {
		if i == len(reqs) {
			// Every key used: make them valid again, off the clock.
			b.StopTimer()
			h.update(func(d *db) (bool, error) {
				for _, r := range d.Keys {
					r.State = StateValid
				}
				return true, nil
			})
			i = 0
			b.StartTimer()
		}
		if _, err := h.Admit(reqs[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
