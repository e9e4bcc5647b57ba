package ike

import (
	"bytes"
	"testing"
	"time"
)

// TestDHCacheReuseIsBounded_RFC7296_2_12: an initiator may reuse its DH
// value across SAs, for a bounded time; each group has its own value.
func TestDHCacheReuseIsBounded_RFC7296_2_12(t *testing.T) {
	c := &DHCache{Lifetime: time.Hour}
	a, err := c.key(dhECP256)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.key(dhECP256)
	if !bytes.Equal(a.public(), b.public()) {
		t.Error("within its lifetime the value was not reused")
	}
	x, _ := c.key(dhCurve25519)
	if x.group != dhCurve25519 || bytes.Equal(x.public(), a.public()) {
		t.Error("another group got the first group's value")
	}
	c.mu.Lock()
	e := c.keys[dhECP256]
	e.made = e.made.Add(-2 * time.Hour)
	c.keys[dhECP256] = e
	c.mu.Unlock()
	d, _ := c.key(dhECP256)
	if bytes.Equal(a.public(), d.public()) {
		t.Error("past its lifetime the value was still reused")
	}
}
