package enroll

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

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
	kv      EtcdKV
	prefix  string
	timeout time.Duration
	Now     func() time.Time
}

var _ Store = (*EtcdHost)(nil)

// EtcdKV is what EtcdHost needs of etcd's client (internal/etcdkv): this
// package does not import etcd's client, so the road warrior, which links
// it through internal/daemon, does not link etcd, gRPC and protobuf.
type EtcdKV interface {
	// CreateAll puts every key in one transaction if none exists.
	CreateAll(ctx context.Context, keys, values []string) (bool, error)
	Delete(ctx context.Context, key string) error
	// Get is the value and ModRevision; found false: no such key.
	Get(ctx context.Context, key string) (value []byte, rev int64, found bool, err error)
	// PutIfRevision writes if the key's ModRevision is still rev.
	PutIfRevision(ctx context.Context, key, value string, rev int64) (bool, error)
	// List is every key under prefix, sorted by key.
	List(ctx context.Context, prefix string) (keys, values [][]byte, revs []int64, err error)
	Close() error
}

// EtcdDialer connects to etcd; the gateway's main sets it (to
// internal/etcdkv). Nil in a binary without etcd's client.
var EtcdDialer func(EtcdConfig) (EtcdKV, error)

// ErrNoEtcd: this binary does not link etcd's client (EtcdDialer nil).
var ErrNoEtcd = errors.New("etcd: not built into this program (only the gateway links etcd's client)")

// OpenEtcdHost connects to etcd through EtcdDialer (lazily: a server that
// is down is an error of the first operation, not of this call).
func OpenEtcdHost(c EtcdConfig) (*EtcdHost, error) {
	if EtcdDialer == nil {
		return nil, ErrNoEtcd
	}
	if len(c.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	c.Timeout = timeout
	kv, err := EtcdDialer(c)
	if err != nil {
		return nil, err
	}
	prefix := c.Prefix
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	return &EtcdHost{kv: kv, prefix: prefix, timeout: timeout, Now: time.Now}, nil
}

// Close closes the client.
func (h *EtcdHost) Close() error { return h.kv.Close() }

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
		var ks, vs []string
		for i := lo; i < min(lo+etcdTxnOps, len(recs)); i++ {
			v, eerr := encode(&recs[i])
			if eerr != nil {
				err = eerr
				break
			}
			ks, vs = append(ks, h.key(recs[i].KeyID)), append(vs, v)
		}
		if err != nil {
			break
		}
		ctx, cancel := h.ctx()
		ok, terr := h.kv.CreateAll(ctx, ks, vs)
		cancel()
		switch {
		case terr != nil:
			err = storeErr(terr)
		case !ok:
			err = errors.New("a key ID already issued (a 1 in 2^64 collision): issue again")
		default:
			done = append(done, ks...)
		}
	}
	if err != nil {
		for _, k := range done {
			ctx, cancel := h.ctx()
			h.kv.Delete(ctx, k)
			cancel()
		}
	}
	return issued(keys, recs, err)
}

// get is one key's record and its ModRevision (nil: none).
func (h *EtcdHost) get(id string) (*Record, int64, error) {
	ctx, cancel := h.ctx()
	defer cancel()
	k := h.key(id)
	v, rev, found, err := h.kv.Get(ctx, k)
	if err != nil {
		return nil, 0, storeErr(err)
	}
	if !found {
		return nil, 0, nil
	}
	r, err := decode([]byte(k), v)
	return r, rev, err
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
	ok, err := h.kv.PutIfRevision(ctx, k, v, rev)
	if err != nil {
		return false, storeErr(err)
	}
	return ok, nil
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
	keys, values, revs, err := h.kv.List(ctx, h.prefix)
	if err != nil {
		return nil, nil, storeErr(err)
	}
	var out []Record
	for i := range keys {
		r, err := decode(keys[i], values[i])
		if err != nil {
			return nil, nil, err
		}
		clear(r.Secret)
		r.Secret = nil
		out = append(out, *r)
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
