package enroll

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
)

// Target is the gateway's side (seed 002 steps 2–4 with the Host in the
// same process, its database shared with other gateways through the
// file's lock or through etcd's compare-and-swap): an
// ike.OneTimeAuthority.
type Target struct {
	Host    Store
	Acct    *Accounting // nil: no accounting log
	Gateway string      // our name in the database and the log
	// The authorization: where admitted keys' virtual addresses come from.
	VirtualPool, VirtualPool6 netip.Prefix
	DNS                       []netip.Addr
	Log                       *slog.Logger

	mu       sync.Mutex
	tunnels  map[string]admitted // by the identity's String, as ike.Child.Peer names it
	admitted uint64
	refused  map[Reason]uint64
}

// Counts are the keys admitted and refused (by reason) since start.
type Counts struct {
	Admitted uint64            `json:"admitted"`
	Refused  map[string]uint64 `json:"refused,omitempty"`
}

// Counts returns the counters.
func (t *Target) Counts() Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := Counts{Admitted: t.admitted}
	for r, n := range t.refused {
		if c.Refused == nil {
			c.Refused = map[string]uint64{}
		}
		c.Refused[string(r)] = n
	}
	return c
}

func (t *Target) countRefused(r Reason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refused == nil {
		t.refused = map[Reason]uint64{}
	}
	t.refused[r]++
}

type admitted struct {
	keyID, user string
	objective   Objective
}

// Admit is ike.OneTimeAuthority: the Host validates and marks the key
// used; we authorize the user with the key's objective.
func (t *Target) Admit(r ike.OneTimeRequest) (*ike.Peer, error) {
	base := Event{Gateway: t.Gateway, Remote: r.Remote.String(), Request: fmt.Sprintf("%016x_%016x", r.SPIi, r.SPIr)}
	keyID, user, err := auth.ParseOneTimeIdentity(r.ID)
	if err == nil {
		base.KeyID, base.User = hex.EncodeToString(keyID), user
	}
	t.log(base, EvRequest)
	var rec Record
	if err != nil {
		err = &Refusal{ReasonMalformed, err.Error()}
	} else {
		rec, err = t.Host.Admit(AdmitRequest{KeyID: keyID, User: user, RawKey: r.RawKey, Verify: r.Verify,
			Gateway: t.Gateway, Remote: r.Remote.String()})
	}
	if err != nil {
		e := base
		e.Reason, e.Detail = ReasonOf(err), err.Error()
		t.countRefused(e.Reason)
		t.log(e, EvRefused)
		return nil, err
	}
	defer clear(rec.Secret)
	base.Objective = rec.Objective
	t.log(base, EvVerified)
	t.log(base, EvMarkedUsed)
	props, err := rec.Objective.ESPProposals()
	if err != nil {
		e := base
		e.Reason, e.Detail = ReasonStore, err.Error()
		t.countRefused(e.Reason)
		t.log(e, EvRefused)
		return nil, err
	}
	p := &ike.Peer{PSK: append([]byte(nil), rec.Secret...), VirtualPool: t.VirtualPool, VirtualPool6: t.VirtualPool6,
		DNS: t.DNS, ESPProposals: props, OneTime: true}
	t.mu.Lock()
	if t.tunnels == nil {
		t.tunnels = map[string]admitted{}
	}
	t.tunnels[r.ID.String()] = admitted{base.KeyID, user, rec.Objective}
	t.admitted++
	t.mu.Unlock()
	t.log(base, EvAuthorized)
	return p, nil
}

func (t *Target) log(e Event, kind string) {
	e.Event = kind
	if err := t.Acct.Log(e); err != nil && t.Log != nil {
		t.Log.Error("one-time keys: accounting log", "err", err)
	}
	if t.Log != nil {
		t.Log.Info("one-time key "+kind, "key_id", e.KeyID, "user", e.User, "remote", e.Remote, "reason", string(e.Reason), "detail", e.Detail)
	}
}

// ChildUp logs a one-time key's Child SA installed (tunnel up); other
// peers' are ignored. Called under the IKE endpoint's lock: it only
// appends a line.
func (t *Target) ChildUp(c *ike.Child) {
	if a, ok := t.lookup(c); ok {
		e := Event{KeyID: a.keyID, User: a.user, Objective: a.objective, Gateway: t.Gateway, Child: c.Name, Proposal: c.Proposal}
		if len(c.VirtualIP) > 0 {
			e.VirtualIP = c.VirtualIP[0].String()
		}
		t.log(e, EvTunnelUp)
	}
}

// ChildDown logs a one-time key's Child SA removed, with what it carried.
func (t *Target) ChildDown(c *ike.Child) {
	if a, ok := t.lookup(c); ok {
		e := Event{KeyID: a.keyID, User: a.user, Objective: a.objective, Gateway: t.Gateway, Child: c.Name}
		if c.In != nil {
			in := c.In.Counters.Snapshot()
			e.BytesIn, e.PacketsIn = in.Bytes, in.Packets
		}
		if c.Out != nil {
			out := c.Out.Counters.Snapshot()
			e.BytesOut, e.PacketsOut = out.Bytes, out.Packets
		}
		t.log(e, EvTunnelDown)
	}
}

func (t *Target) lookup(c *ike.Child) (admitted, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.tunnels[c.Peer]
	return a, ok
}
