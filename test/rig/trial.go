package rig

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// OnPrimary reports whether new flows from the road warrior to the server
// start from its primary address (RFC 3554 mode: the route's source).
func OnPrimary(bed *netns.Bed) bool {
	out, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String())
	return strings.Contains(out, "src "+netns.RWPrimary4.String())
}

// Death is one way to kill the primary path and bring it back.
type Death struct {
	Name          string
	Kill, Restore func() error
}

// Deaths are the two kinds every failover measurement uses: the link goes
// down; the link stays up but silently drops everything (nftables).
func Deaths(bed *netns.Bed) []Death {
	return []Death{
		{"link down", func() error { return bed.RW.LinkDown(netns.IfPrimary) }, func() error { return bed.RW.LinkUp(netns.IfPrimary) }},
		{"silent drop (link up, nftables drop)", func() error { return bed.Blackhole(netns.IfPrimary) }, func() error { return bed.Unblackhole(netns.IfPrimary) }},
	}
}

// ErrTrial is a trial whose traffic did not resume (failover or return).
var ErrTrial = errors.New("traffic did not resume")

// Trial kills the primary path while stream runs, measures the time to
// the first answer to a datagram sent after the death (over), restores
// the path, and measures the time from the restore to the first answer
// once new flows start from the primary again (back). timeout bounds
// each wait. A trial that does not recover returns ErrTrial (wrapped).
func Trial(bed *netns.Bed, s *Stream, d Death, settle, timeout time.Duration) (over, back time.Duration, err error) {
	if !WaitFor(timeout, func() bool { return OnPrimary(bed) }) {
		return 0, 0, errors.New("not on the primary before the trial")
	}
	time.Sleep(settle)
	if err := d.Kill(); err != nil {
		return 0, 0, err
	}
	dead := time.Now() // the path is dead once Kill returns
	if !WaitFor(timeout, func() bool { return !s.FirstReplyAfter(dead).IsZero() }) {
		d.Restore()
		return 0, 0, fmt.Errorf("%s: failover: %w", d.Name, ErrTrial)
	}
	over = s.FirstReplyAfter(dead).Sub(dead)
	time.Sleep(settle)
	if err := d.Restore(); err != nil {
		return over, 0, err
	}
	restored := time.Now()
	if !WaitFor(timeout, func() bool { return OnPrimary(bed) }) {
		return over, 0, fmt.Errorf("%s: no return to the primary: %w", d.Name, ErrTrial)
	}
	switched := time.Now()
	if !WaitFor(timeout, func() bool { return !s.FirstReplyAfter(switched).IsZero() }) {
		return over, 0, fmt.Errorf("%s: no traffic back on the primary: %w", d.Name, ErrTrial)
	}
	return over, s.FirstReplyAfter(switched).Sub(restored), nil
}
