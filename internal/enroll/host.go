package enroll

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
)

// State is a key pair's state in the Host's database (seed 002 §3 step 3:
// "update the state of the key pair ... from valid to invalid").
type State string

const (
	StateValid   State = "valid"
	StateUsed    State = "used"
	StateRevoked State = "revoked"
)

// Record is one key pair as the Host keeps it: the public half and the
// gateway's secret for it, never the private half.
type Record struct {
	KeyID     string    `json:"key_id"` // hex
	User      string    `json:"user"`
	Objective Objective `json:"objective"`
	PublicKey []byte    `json:"public_key"`     // Ed25519, 32 octets
	Secret    []byte    `json:"gateway_secret"` // our AUTH's shared key (auth.OneTimeKey.GatewaySecret)
	State     State     `json:"state"`
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires,omitzero"`
	Used      time.Time `json:"used,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`   // the gateway that admitted it
	UsedFrom  string    `json:"used_from,omitempty"` // the road warrior's address
	Revoked   time.Time `json:"revoked,omitzero"`
}

// Expired: still valid in the database, but past its expiry at now.
func (r *Record) Expired(now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// Status is State, with "expired" for a valid key past its expiry.
func (r *Record) Status(now time.Time) string {
	if r.State == StateValid && r.Expired(now) {
		return "expired"
	}
	return string(r.State)
}

// Reason is why the Host refused a key: stable names for the accounting
// log and the counters.
type Reason string

const (
	ReasonUnknownKey   Reason = "unknown_key"
	ReasonWrongUser    Reason = "wrong_user"    // the IDi's user is not the key's: tampered
	ReasonKeyMismatch  Reason = "key_mismatch"  // the raw public key sent is not the key's: tampered
	ReasonBadSignature Reason = "bad_signature" // tampered, or not the key's holder
	ReasonUsed         Reason = "used"
	ReasonRevoked      Reason = "revoked"
	ReasonExpired      Reason = "expired"
	ReasonMalformed    Reason = "malformed" // the identity is not a one-time key's
	ReasonStore        Reason = "store"     // the database could not be read or written
)

// Reasons is every Reason: a fixed label set for metrics.
func Reasons() []Reason {
	return []Reason{ReasonUnknownKey, ReasonWrongUser, ReasonKeyMismatch, ReasonBadSignature, ReasonUsed, ReasonRevoked,
		ReasonExpired, ReasonMalformed, ReasonStore}
}

// Refusal is the Host's typed refusal.
type Refusal struct {
	Reason Reason
	Detail string
}

func (r *Refusal) Error() string {
	if r.Detail == "" {
		return "one-time key refused: " + string(r.Reason)
	}
	return fmt.Sprintf("one-time key refused: %s: %s", r.Reason, r.Detail)
}

// ReasonOf is err's Reason, ReasonStore for any other error.
func ReasonOf(err error) Reason {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ReasonStore
}

// db is the database file: JSON, written whole to a temporary file and
// renamed over the old one, under an exclusive flock on a lock file
// beside it, so several gateway processes on one machine share it and
// each change is all or nothing.
type db struct {
	Version int       `json:"version"`
	Keys    []*Record `json:"keys"`
}

// Host is the key database at a path.
type Host struct {
	path string
	mu   sync.Mutex // flock is per open file; this orders our own goroutines too
	Now  func() time.Time
}

// OpenHost is the database at path (created by the first Issue).
func OpenHost(path string) *Host {
	return &Host{path: path, Now: time.Now}
}

// Path is the database file.
func (h *Host) Path() string { return h.path }

// update runs f on the database under the lock; if f returns write, the
// database is written back before the lock goes.
func (h *Host) update(f func(*db) (write bool, err error)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	lf, err := os.OpenFile(h.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return &Refusal{ReasonStore, err.Error()}
	}
	defer lf.Close()
	if err := flock(lf); err != nil {
		return &Refusal{ReasonStore, fmt.Sprintf("lock %s: %v", lf.Name(), err)}
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	d, err := h.read()
	if err != nil {
		return &Refusal{ReasonStore, err.Error()}
	}
	defer d.wipe()
	write, ferr := f(d)
	if write {
		if err := h.write(d); err != nil {
			return &Refusal{ReasonStore, err.Error()}
		}
	}
	return ferr
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

func (h *Host) read() (*db, error) {
	data, err := os.ReadFile(h.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &db{Version: 1}, nil
	}
	if err != nil {
		return nil, err
	}
	defer clear(data)
	var d db
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: not a one-time key database: %v", h.path, err)
	}
	if d.Version != 1 {
		return nil, fmt.Errorf("%s: database version %d, want 1", h.path, d.Version)
	}
	return &d, nil
}

func (h *Host) write(d *db) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	defer clear(data)
	tmp := h.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, h.path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if dir, err := os.Open(filepath.Dir(h.path)); err == nil {
		dir.Sync() // the rename itself durable
		dir.Close()
	}
	return nil
}

// wipe zeroes the gateway secrets read into memory.
func (d *db) wipe() {
	for _, r := range d.Keys {
		clear(r.Secret)
	}
}

func (d *db) find(keyID string) *Record {
	for _, r := range d.Keys {
		if r.KeyID == keyID {
			return r
		}
	}
	return nil
}

// Issue makes n key pairs for user with objective, valid for ttl (0:
// until used or revoked), and stores their public halves. The keys are
// returned for printing; the caller zeroes them.
func (h *Host) Issue(user string, n int, obj Objective, ttl time.Duration) ([]*auth.OneTimeKey, []Record, error) {
	keys, recs, err := newKeys(user, n, obj, ttl, h.Now().UTC())
	if err != nil {
		return nil, nil, err
	}
	err = h.update(func(d *db) (bool, error) {
		for i := range recs {
			if d.find(recs[i].KeyID) != nil {
				return false, fmt.Errorf("key ID %s already issued (a 1 in 2^64 collision): issue again", recs[i].KeyID)
			}
			r := recs[i]
			r.Secret = bytes.Clone(r.Secret)
			d.Keys = append(d.Keys, &r)
		}
		return true, nil
	})
	return issued(keys, recs, err)
}

// newKeys generates n key pairs and their records (with the gateway
// secrets: issued zeroes them).
func newKeys(user string, n int, obj Objective, ttl time.Duration, now time.Time) ([]*auth.OneTimeKey, []Record, error) {
	if n < 1 || n > 10000 {
		return nil, nil, fmt.Errorf("count %d: want 1 to 10000", n)
	}
	if _, err := obj.ESPProposals(); err != nil {
		return nil, nil, err
	}
	var keys []*auth.OneTimeKey
	var recs []Record
	for range n {
		k, err := auth.GenerateOneTime(user)
		if err != nil {
			for _, k := range keys {
				k.Zero()
			}
			return nil, nil, err
		}
		r := Record{KeyID: hex.EncodeToString(k.KeyID()), User: user, Objective: obj, PublicKey: k.PublicKey(),
			Secret: k.GatewaySecret(), State: StateValid, Issued: now}
		if ttl > 0 {
			r.Expires = now.Add(ttl)
		}
		keys, recs = append(keys, k), append(recs, r)
	}
	return keys, recs, nil
}

// issued zeroes the records' secrets (the store has its copies) and, if
// err, the keys too.
func issued(keys []*auth.OneTimeKey, recs []Record, err error) ([]*auth.OneTimeKey, []Record, error) {
	for i := range recs {
		clear(recs[i].Secret)
		recs[i].Secret = nil
	}
	if err != nil {
		for _, k := range keys {
			k.Zero()
		}
		return nil, nil, err
	}
	return keys, recs, nil
}

// Revoke revokes the valid keys whose key ID or user is sel; it returns
// those it revoked.
func (h *Host) Revoke(sel string) ([]Record, error) {
	var out []Record
	err := h.update(func(d *db) (bool, error) {
		now := h.Now().UTC()
		for _, r := range d.Keys {
			if (r.KeyID == sel || r.User == sel) && r.State == StateValid {
				r.State, r.Revoked = StateRevoked, now
				c := *r
				c.Secret = nil
				out = append(out, c)
			}
		}
		if len(out) == 0 {
			return false, fmt.Errorf("no valid key with key ID or user %q", sel)
		}
		return true, nil
	})
	return out, err
}

// List is every key (without the gateway secrets).
func (h *Host) List() ([]Record, error) {
	var out []Record
	err := h.update(func(d *db) (bool, error) {
		for _, r := range d.Keys {
			c := *r
			c.Secret = nil
			out = append(out, c)
		}
		return false, nil
	})
	return out, err
}

// AdmitRequest is a gateway's question to the Host (seed 002 steps 2–3).
type AdmitRequest struct {
	KeyID   []byte
	User    string
	RawKey  []byte // the CERT encoding 15 (SubjectPublicKeyInfo) the client sent, if any
	Verify  func(crypto.PublicKey) error
	Gateway string
	Remote  string
}

// Admit validates the request and, if the key is valid, marks it used,
// all under the database's lock: of any number of gateways racing on one
// key, exactly one gets nil. A request that fails the signature leaves the
// key valid (a forger must not burn the holder's key). The returned record
// holds the gateway secret: the caller zeroes it.
func (h *Host) Admit(q AdmitRequest) (Record, error) {
	id := hex.EncodeToString(q.KeyID)
	var out Record
	err := h.update(func(d *db) (bool, error) {
		r := d.find(id)
		if r == nil {
			return false, &Refusal{ReasonUnknownKey, "key ID " + id + " was never issued here"}
		}
		if err := judge(r, q, id, h.Now().UTC()); err != nil {
			return false, err
		}
		out = *r
		out.Secret = bytes.Clone(r.Secret)
		return true, nil
	})
	if err != nil {
		clear(out.Secret)
		return Record{}, err
	}
	return out, nil
}

// judge is seed 002 step 3 for the key r, the same for every store:
// the request's user and raw key must be the key's, its signature must
// verify (before the state is looked at, so a forger learns nothing and
// burns nothing), and the key must be valid and unexpired; then r is
// marked used, for the store to write back.
func judge(r *Record, q AdmitRequest, id string, now time.Time) error {
	if r.User != q.User {
		return &Refusal{ReasonWrongUser, fmt.Sprintf("key %s is %s's, the request says %q", id, r.User, q.User)}
	}
	pub := ed25519.PublicKey(r.PublicKey)
	if len(pub) != ed25519.PublicKeySize {
		return &Refusal{ReasonStore, "key " + id + ": malformed public key in the database"}
	}
	if q.RawKey != nil {
		sent, err := auth.ParseRawPublicKey(q.RawKey)
		if err != nil {
			return &Refusal{ReasonKeyMismatch, "key " + id + ": " + err.Error()}
		}
		if !pub.Equal(sent) {
			return &Refusal{ReasonKeyMismatch, "key " + id + ": the raw public key sent is not the one issued"}
		}
	}
	if q.Verify == nil {
		return &Refusal{ReasonBadSignature, "no signature to check"}
	}
	if err := q.Verify(pub); err != nil {
		return &Refusal{ReasonBadSignature, err.Error()}
	}
	switch {
	case r.State == StateUsed:
		return &Refusal{ReasonUsed, fmt.Sprintf("key %s was used at %s by %s from %s", id, r.Used.Format(time.RFC3339), r.UsedBy, r.UsedFrom)}
	case r.State == StateRevoked:
		return &Refusal{ReasonRevoked, fmt.Sprintf("key %s was revoked at %s", id, r.Revoked.Format(time.RFC3339))}
	case r.State != StateValid:
		return &Refusal{ReasonStore, fmt.Sprintf("key %s: unknown state %q", id, r.State)}
	case r.Expired(now):
		return &Refusal{ReasonExpired, fmt.Sprintf("key %s expired at %s", id, r.Expires.Format(time.RFC3339))}
	default:
		r.State, r.Used, r.UsedBy, r.UsedFrom = StateUsed, now, q.Gateway, q.Remote
	}
	return nil
}

// Close is Store's: the file is opened per operation.
func (h *Host) Close() error { return nil }

// Store is the Host's key database, whatever keeps it: the file (Host,
// gateways on one machine) or etcd (EtcdHost, gateways on several). Its
// Admit must be atomic: of gateways racing on one key, exactly one gets
// nil.
type Store interface {
	Issue(user string, n int, obj Objective, ttl time.Duration) ([]*auth.OneTimeKey, []Record, error)
	Revoke(sel string) ([]Record, error)
	List() ([]Record, error)
	Admit(q AdmitRequest) (Record, error)
	Close() error
}

var _ Store = (*Host)(nil)
