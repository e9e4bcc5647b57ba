package enroll

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/internal/etcdkv"
	etcdtest "github.com/roamsec/roamsec/test/etcd"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/pki"
)

// The tests' etcd client: internal/etcdkv's, as the gateway's main
// installs it. (etcdkv imports this package, so its Dialer cannot be used
// from this package's own tests.)
func init() {
	EtcdDialer = func(c EtcdConfig) (EtcdKV, error) {
		kv, err := etcdkv.Open(etcdkv.Config{Endpoints: c.Endpoints, CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile, DialTimeout: c.Timeout, Dial: c.Dial})
		if err != nil {
			return nil, err
		}
		return kv, nil
	}
}

// startEtcd is a real etcd in a fresh network namespace, listening on
// the namespace's loopback; nil if etcd is not installed or we are not
// root (the file backend's tests still run).
func startEtcd(t testing.TB) *etcdtest.Server {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil || os.Geteuid() != 0 {
		t.Log("no etcd (package etcd-server) or not root: the etcd backend is not tested")
		return nil
	}
	return etcdtest.Start(t, netns.NewNS(t), netip.MustParseAddr("127.0.0.1"))
}

func mustEtcd(t testing.TB) *etcdtest.Server {
	t.Helper()
	srv := startEtcd(t)
	if srv == nil {
		t.Skip("needs etcd (etcd-server) and root")
	}
	return srv
}

// openEtcd is a client of srv of its own (its own connection), the keys
// under prefix.
func openEtcd(t testing.TB, srv *etcdtest.Server, prefix string) *EtcdHost {
	t.Helper()
	h, err := OpenEtcdHost(EtcdConfig{Endpoints: srv.Endpoints, Prefix: prefix, Dial: srv.Dial, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Issue 13: gateways on different machines share the Host through etcd;
// of 16 gateways (each its own client, its own connection) racing on one
// key, the compare-and-swap on the key's ModRevision lets exactly one
// admit it, and the others are refused "used". Five keys, five races.
func TestEtcdRacingGatewaysAdmitExactlyOne(t *testing.T) {
	srv := mustEtcd(t)
	const gateways = 16
	hosts := make([]*EtcdHost, gateways)
	for i := range hosts {
		hosts[i] = openEtcd(t, srv, "/race/")
	}
	for round := range 5 {
		k := issue(t, hosts[0], "alice", 0)
		var ok, used atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := request(k)
				q.Gateway = fmt.Sprintf("gw-%d", i)
				<-start
				_, err := h.Admit(q)
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
		if ok.Load() != 1 || used.Load() != gateways-1 {
			t.Fatalf("round %d: admitted %d, refused as used %d; want 1 and %d", round, ok.Load(), used.Load(), gateways-1)
		}
	}
}

// A revoke racing an admission: the key ends either used (and is not
// reported revoked) or revoked (and was not admitted), never both.
func TestEtcdRevokeRacingAdmitIsOneOrTheOther(t *testing.T) {
	srv := mustEtcd(t)
	a, b := openEtcd(t, srv, "/revoke/"), openEtcd(t, srv, "/revoke/")
	for round := range 10 {
		k := issue(t, a, fmt.Sprintf("user%d", round), 0)
		var admitErr, revokeErr error
		var revoked []Record
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, admitErr = a.Admit(request(k)) }()
		go func() { defer wg.Done(); revoked, revokeErr = b.Revoke(k.User) }()
		wg.Wait()
		if (admitErr == nil) == (revokeErr == nil && len(revoked) == 1) {
			t.Fatalf("round %d: admit %v, revoke %v (%d revoked): want exactly one to win", round, admitErr, revokeErr, len(revoked))
		}
		if admitErr != nil && ReasonOf(admitErr) != ReasonRevoked {
			t.Fatalf("round %d: admission lost with %v, want revoked", round, admitErr)
		}
	}
}

// Issue writes many keys in transactions below etcd's --max-txn-ops; a
// down server is a store error, not a hang.
func TestEtcdIssueManyAndServerDown(t *testing.T) {
	srv := mustEtcd(t)
	h := openEtcd(t, srv, "/many/")
	keys, _, err := h.Issue("bob", 250, ObjectiveStrict, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := h.List()
	if err != nil || len(recs) != 250 {
		t.Fatalf("list: %d keys, %v; want 250", len(recs), err)
	}
	for _, r := range recs {
		if r.Secret != nil || r.State != StateValid || r.Objective != ObjectiveStrict {
			t.Fatalf("listed %+v", r)
		}
	}
	down, err := OpenEtcdHost(EtcdConfig{Endpoints: []string{"http://127.0.0.1:1"}, Dial: srv.Dial, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if _, err := down.Admit(request(keys[0])); ReasonOf(err) != ReasonStore {
		t.Fatalf("server down: %v, want a store error", err)
	}
}

// BenchmarkEtcdAdmit is the Host's share of one admission through etcd
// (one client, etcd in a namespace on this machine): a range read, the
// signature check, and the compare-and-swap transaction (etcd's fsync of
// its WAL included).
func BenchmarkEtcdAdmit(b *testing.B) {
	srv := mustEtcd(b)
	h := openEtcd(b, srv, "/bench/")
	keys, _, err := h.Issue("alice", 1000, ObjectiveESP, 0)
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if i == len(keys) {
			b.StopTimer()
			keys, _, err = h.Issue("alice", 1000, ObjectiveESP, 0)
			if err != nil {
				b.Fatal(err)
			}
			i = 0
			b.StartTimer()
		}
		if _, err := h.Admit(request(keys[i])); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// What etcd holds under the prefix may be written by anyone with access:
// whatever the value, decoding and judging it is an error or a decision,
// never a panic.
func FuzzEtcdRecord(f *testing.F) {
	k, _ := auth.GenerateOneTime("alice")
	good, _ := json.Marshal(&Record{KeyID: hex.EncodeToString(k.KeyID()), User: "alice", PublicKey: k.PublicKey(), State: StateValid})
	f.Add(good)
	f.Add([]byte(`{"key_id":"00","user":"alice","public_key":"AAAA","state":"used"}`))
	f.Add([]byte(`{"user":"alice","state":"valid","expires":"not a time"}`))
	f.Add([]byte(`[`))
	q := request(k)
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decode([]byte("/x/key"), bytes.Clone(v))
		if err != nil {
			if ReasonOf(err) != ReasonStore {
				t.Fatalf("decode error %v is not a store error", err)
			}
			return
		}
		if err := judge(r, q, "key", time.Now()); err == nil && r.State != StateUsed {
			t.Fatalf("admitted without marking used: %+v", r)
		}
	})
}

// BenchmarkEtcdAdmitParallel is admissions from 8 gateways at once (a
// client each), on different keys: etcd batches their WAL writes.
func BenchmarkEtcdAdmitParallel(b *testing.B) {
	srv := mustEtcd(b)
	h := openEtcd(b, srv, "/benchp/")
	var reqs []AdmitRequest
	for len(reqs) < b.N {
		keys, _, err := h.Issue("alice", min(b.N-len(reqs), 1000), ObjectiveESP, 0)
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			reqs = append(reqs, request(k))
		}
	}
	hosts := make(chan *EtcdHost, 8)
	for range 8 {
		hosts <- openEtcd(b, srv, "/benchp/")
	}
	var next atomic.Int64
	b.SetParallelism(4) // × GOMAXPROCS 2: 8 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		h := <-hosts
		for pb.Next() {
			if _, err := h.Admit(reqs[next.Add(1)-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// ike.one_time.etcd's TLS files: etcd serving https and wanting client
// certificates admits through a client with the CA, certificate and key;
// without a client certificate the store refuses to work (a store
// error), and a CA file that is not there is an error at open.
func TestEtcdOverTLSWithClientCertificates(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs etcd (etcd-server) and root")
	}
	dir := t.TempDir()
	ca, err := pki.NewCA("etcd CA", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	caFile, _ := ca.Write(dir, "ca")
	lo := netip.MustParseAddr("127.0.0.1")
	srvLeaf, err := ca.IssueWith(pki.Options{CN: "etcd", Alg: pki.ECDSAP256, IPs: []netip.Addr{lo}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	cliLeaf, err := ca.IssueWith(pki.Options{CN: "gw-a", Alg: pki.ECDSAP256, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, _ := srvLeaf.Write(dir, "server")
	cliCert, cliKey, _ := cliLeaf.Write(dir, "client")
	srv := etcdtest.StartTLS(t, netns.NewNS(t), caFile, srvCert, srvKey, lo)
	h, err := OpenEtcdHost(EtcdConfig{Endpoints: srv.Endpoints, CAFile: caFile, CertFile: cliCert, KeyFile: cliKey, Dial: srv.Dial, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	k := issue(t, h, "alice", 0)
	if _, err := h.Admit(request(k)); err != nil {
		t.Fatalf("admit over TLS: %v", err)
	}
	anon, err := OpenEtcdHost(EtcdConfig{Endpoints: srv.Endpoints, CAFile: caFile, Dial: srv.Dial, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.List(); ReasonOf(err) != ReasonStore {
		t.Fatalf("without a client certificate: %v, want a store error", err)
	}
	if _, err := OpenEtcdHost(EtcdConfig{Endpoints: srv.Endpoints, CAFile: filepath.Join(dir, "none.crt")}); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}
