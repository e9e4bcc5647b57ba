package rig

import (
	"errors"
	"fmt"
	"net/netip"
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

// OnPrimaryTo is OnPrimary for the server address srv, IPv4 or IPv6: the
// route to srv has the primary address of srv's family as its source.
func OnPrimaryTo(bed *netns.Bed, srv netip.Addr) bool {
	want := netns.RWPrimary4
	if srv.Is6() {
		want = netns.RWPrimary6
	}
	out, _ := bed.RW.Run("ip", "route", "get", srv.String())
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "src" {
			return f[i+1] == want.String()
		}
	}
	return false
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
	return trial(bed, s, func() bool { return OnPrimary(bed) }, d, settle, timeout, TrialOptions{})
}

// TrialOptions are TrialTo's extras; the zero value is Trial's behaviour.
type TrialOptions struct {
	// DeadAt, if not nil, is asked once Kill has returned when the path
	// died; without it the path is dead once Kill returns. A Kill that
	// takes long (two nft processes take up to a second under emulation)
	// can know better, e.g. when the road warrior's end began to drop.
	DeadAt func() time.Time
	// OnSecondary, if not nil, runs once traffic has resumed after the
	// death, before the restore (to check where the SAs point, say); its
	// error (wrapped in ErrTrial) fails the trial after the restore.
	OnSecondary func() error
}

// TrialTo is Trial for a stream to the server address srv (StartStreamTo),
// IPv4 or IPv6: "on the primary" is OnPrimaryTo(bed, srv).
func TrialTo(bed *netns.Bed, s *Stream, srv netip.Addr, d Death, settle, timeout time.Duration, o TrialOptions) (over, back time.Duration, err error) {
	return trial(bed, s, func() bool { return OnPrimaryTo(bed, srv) }, d, settle, timeout, o)
}

func trial(bed *netns.Bed, s *Stream, onPrimary func() bool, d Death, settle, timeout time.Duration, o TrialOptions) (over, back time.Duration, err error) {
	if !WaitFor(timeout, onPrimary) {
		return 0, 0, errors.New("not on the primary before the trial")
	}
	time.Sleep(settle)
	if err := d.Kill(); err != nil {
		return 0, 0, err
	}
	dead := time.Now() // the path is dead once Kill returns
	if o.DeadAt != nil {
		dead = o.DeadAt()
	}
	if !WaitFor(timeout, func() bool { return !s.FirstReplyAfter(dead).IsZero() }) {
		d.Restore()
		return 0, 0, fmt.Errorf("%s: failover: %w", d.Name, ErrTrial)
	}
	over = s.FirstReplyAfter(dead).Sub(dead)
	var checkErr error
	if o.OnSecondary != nil {
		checkErr = o.OnSecondary()
	}
	time.Sleep(settle)
	if err := d.Restore(); err != nil {
		return over, 0, err
	}
	if checkErr != nil {
		return over, 0, fmt.Errorf("%s: on the secondary: %v: %w", d.Name, checkErr, ErrTrial)
	}
	restored := time.Now()
	if !WaitFor(timeout, onPrimary) {
		return over, 0, fmt.Errorf("%s: no return to the primary: %w", d.Name, ErrTrial)
	}
	switched := time.Now()
	if !WaitFor(timeout, func() bool { return !s.FirstReplyAfter(switched).IsZero() }) {
		return over, 0, fmt.Errorf("%s: no traffic back on the primary: %w", d.Name, ErrTrial)
	}
	return over, s.FirstReplyAfter(switched).Sub(restored), nil
}
