package enroll

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/roamsec/roamsec/ike/auth"
)

// EtcdConfig is where an EtcdHost's keys are: ike.one_time.etcd.
type EtcdConfig struct {
	Endpoints []string // URLs, e.g. https://192.0.2.10:2379
	Prefix    string   // "": DefaultEtcdPrefix
	// TLS (all optional): the CA that signs the servers' certificates,
	// and our client certificate and key.
	CAFile, CertFile, KeyFile string
	Timeout                   time.Duration // per operation; 0: 5 s
	// Dial, if set, makes the connections (tests: inside a network
	// namespace); nil: the system's.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// DefaultEtcdPrefix is where the keys live when the configuration names
// no prefix.
const DefaultEtcdPrefix = "/roamsec/onetime/"

// etcdTxnOps is how many keys one Issue transaction writes: below the
// server's --max-txn-ops (128 by default), which bounds the compares and
// the puts of a transaction each.
const etcdTxnOps = 100

// EtcdHost is the Host's database in etcd, for gateways on different
// machines: one etcd key per key pair (PREFIX + key ID in hex, the
// Record's JSON as the value). Admit reads the key, judges it like the
// file does, and writes it used in a transaction that succeeds only if
// the key's ModRevision is still the one read: etcd's compare-and-swap,
// so of racing gateways exactly one admits and the others read "used".
type EtcdHost struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration
	Now     func() time.Time
}

var _ Store = (*EtcdHost)(nil)

// OpenEtcdHost connects to etcd (lazily: a server that is down is an
// error of the first operation, not of this call).
func OpenEtcdHost(c EtcdConfig) (*EtcdHost, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	var tc *tls.Config
	if c.CAFile != "" || c.CertFile != "" {
		var err error
		info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}
		if tc, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	cc := clientv3.Config{Endpoints: c.Endpoints, TLS: tc, DialTimeout: timeout, Logger: zap.NewNop()}
	if c.Dial != nil {
		cc.DialOptions = []grpc.DialOption{grpc.WithContextDialer(c.Dial)}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	prefix := c.Prefix
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	return &EtcdHost{cli: cli, prefix: prefix, timeout: timeout, Now: time.Now}, nil
}

// Close closes the client.
func (h *EtcdHost) Close() error { return h.cli.Close() }

func (h *EtcdHost) key(id string) string { return h.prefix + id }

func (h *EtcdHost) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.timeout)
}

func storeErr(err error) error {
	var r *Refusal
	if errors.As(err, &r) {
		return err
	}
	return &Refusal{ReasonStore, "etcd: " + err.Error()}
}

// decode reads one stored record; the value's bytes (which hold the
// gateway secret) are zeroed.
func decode(k, v []byte) (*Record, error) {
	defer clear(v)
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, &Refusal{ReasonStore, fmt.Sprintf("etcd key %s: not a one-time key record: %v", k, err)}
	}
	return &r, nil
}

func encode(r *Record) (string, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	defer clear(data)
	return string(data), nil // Go strings cannot be zeroed: the copy lives until collected
}

// Issue stores the new keys, each only if its etcd key does not exist
// yet (CreateRevision 0), in transactions of up to etcdTxnOps keys. If a
// transaction fails, the keys already stored by this call are deleted.
func (h *EtcdHost) Issue(user string, n int, obj Objective, ttl time.Duration) ([]*auth.OneTimeKey, []Record, error) {
	keys, recs, err := newKeys(user, n, obj, ttl, h.Now().UTC())
	if err != nil {
		return nil, nil, err
	}
	var done []string
	for lo := 0; lo < len(recs) && err == nil; lo += etcdTxnOps {
		var cmps []clientv3.Cmp
		var puts []clientv3.Op
		for i := lo; i < min(lo+etcdTxnOps, len(recs)); i++ {
			k := h.key(recs[i].KeyID)
			v, eerr := encode(&recs[i])
			if eerr != nil {
				err = eerr
				break
			}
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			puts = append(puts, clientv3.OpPut(k, v))
		}
		if err != nil {
			break
		}
		ctx, cancel := h.ctx()
		resp, terr := h.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		cancel()
		switch {
		case terr != nil:
			err = storeErr(terr)
		case !resp.Succeeded:
			err = errors.New("a key ID already issued (a 1 in 2^64 collision): issue again")
		default:
			for _, p := range puts {
				done = append(done, string(p.KeyBytes()))
			}
		}
	}
	if err != nil {
		for _, k := range done {
			ctx, cancel := h.ctx()
			h.cli.Delete(ctx, k)
			cancel()
		}
	}
	return issued(keys, recs, err)
}

// get is one key's record and its ModRevision (nil: none).
func (h *EtcdHost) get(id string) (*Record, int64, error) {
	ctx, cancel := h.ctx()
	defer cancel()
	resp, err := h.cli.Get(ctx, h.key(id))
	if err != nil {
		return nil, 0, storeErr(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	kv := resp.Kvs[0]
	r, err := decode(kv.Key, kv.Value)
	return r, kv.ModRevision, err
}

// cas writes r over the key if its ModRevision is still rev.
func (h *EtcdHost) cas(r *Record, rev int64) (bool, error) {
	k := h.key(r.KeyID)
	v, err := encode(r)
	if err != nil {
		return false, err
	}
	ctx, cancel := h.ctx()
	defer cancel()
	resp, err := h.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).Then(clientv3.OpPut(k, v)).Commit()
	if err != nil {
		return false, storeErr(err)
	}
	return resp.Succeeded, nil
}

// casTries bounds Admit's and Revoke's retries after a lost
// compare-and-swap: the loser re-reads and finds the key used or
// revoked, so a second try settles it; more only if the key keeps
// changing under us.
const casTries = 4

// Admit is Host.Admit through etcd: read, judge, then put the used
// record only if nobody changed the key since the read. A gateway that
// loses the race re-reads the key and is refused "used" (or "revoked").
func (h *EtcdHost) Admit(q AdmitRequest) (Record, error) {
	id := hex.EncodeToString(q.KeyID)
	for range casTries {
		r, rev, err := h.get(id)
		if err != nil {
			return Record{}, err
		}
		if r == nil {
			return Record{}, &Refusal{ReasonUnknownKey, "key ID " + id + " was never issued here"}
		}
		if err := judge(r, q, id, h.Now().UTC()); err != nil {
			clear(r.Secret)
			return Record{}, err
		}
		ok, err := h.cas(r, rev)
		if err != nil || !ok {
			clear(r.Secret)
		}
		if err != nil {
			return Record{}, err
		}
		if ok {
			return *r, nil
		}
	}
	return Record{}, &Refusal{ReasonStore, "key " + id + ": changed under us " + fmt.Sprint(casTries) + " times"}
}

// scan is every stored record with its ModRevision (secrets zeroed).
func (h *EtcdHost) scan() ([]Record, []int64, error) {
	ctx, cancel := h.ctx()
	defer cancel()
	resp, err := h.cli.Get(ctx, h.prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, nil, storeErr(err)
	}
	var out []Record
	var revs []int64
	for _, kv := range resp.Kvs {
		r, err := decode(kv.Key, kv.Value)
		if err != nil {
			return nil, nil, err
		}
		clear(r.Secret)
		r.Secret = nil
		out, revs = append(out, *r), append(revs, kv.ModRevision)
	}
	return out, revs, nil
}

// List is every key (without the gateway secrets), by key ID.
func (h *EtcdHost) List() ([]Record, error) {
	out, _, err := h.scan()
	return out, err
}

// Revoke revokes the valid keys whose key ID or user is sel, each by
// compare-and-swap: a key admitted meanwhile stays used (and is not
// among those returned).
func (h *EtcdHost) Revoke(sel string) ([]Record, error) {
	recs, _, err := h.scan()
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, s := range recs {
		if (s.KeyID != sel && s.User != sel) || s.State != StateValid {
			continue
		}
		for range casTries {
			r, rev, err := h.get(s.KeyID)
			if err != nil {
				return out, err
			}
			if r == nil || r.State != StateValid {
				break
			}
			r.State, r.Revoked = StateRevoked, h.Now().UTC()
			ok, err := h.cas(r, rev)
			clear(r.Secret)
			r.Secret = nil
			if err != nil {
				return out, err
			}
			if ok {
				out = append(out, *r)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no valid key with key ID or user %q", sel)
	}
	return out, nil
}
