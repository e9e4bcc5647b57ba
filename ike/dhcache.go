package ike

import (
	"sync"
	"time"
)

// DHCache lets an endpoint reuse its Diffie-Hellman private value across
// IKE SAs: RFC 7296 §2.12 allows it ("an implementation MAY choose to
// reuse the same Diffie-Hellman exponential across multiple SAs"), at the
// price of the SAs it is reused across losing perfect forward secrecy
// from each other, which is why §2.12 says to bound the reuse: a value is
// used for at most Lifetime, then a fresh one is made. Each exchange
// still gets its own nonces, so every IKE SA still has its own keys
// (SKEYSEED covers Ni and Nr). For a fleet of initiators in one process
// (a load generator); a road warrior daemon has one IKE SA at a time and
// no use for it; a responder uses one, with a Lifetime of a second, while
// cookies are demanded (respondInit). Safe for concurrent use.
type DHCache struct {
	// Lifetime bounds a value's reuse; 0: one minute.
	Lifetime time.Duration

	mu   sync.Mutex
	keys map[dhGroup]cachedDH
}

type cachedDH struct {
	key  *dhKey
	made time.Time
}

// key returns the group's current value, making one if there is none or
// it is past its Lifetime.
func (c *DHCache) key(g dhGroup) (*dhKey, error) {
	life := c.Lifetime
	if life <= 0 {
		life = time.Minute
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.keys[g]; ok && now.Sub(e.made) < life {
		return e.key, nil
	}
	k, err := newDH(g)
	if err != nil {
		return nil, err
	}
	if c.keys == nil {
		c.keys = make(map[dhGroup]cachedDH)
	}
	c.keys[g] = cachedDH{key: k, made: now}
	return k, nil
}

// newInitiatorDH is our DH value for an IKE_SA_INIT request in group g:
// the configuration's DHCache's, or a fresh one.
func (e *Endpoint) newInitiatorDH(g dhGroup) (*dhKey, error) {
	if c := e.cfg.DHCache; c != nil {
		return c.key(g)
	}
	return newDH(g)
}
