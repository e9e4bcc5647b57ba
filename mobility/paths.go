// Package mobility keeps one SA alive across interface switches: it knows
// the paths between road warrior and gateway, follows their state from
// authenticated signals (SCTP path heartbeats, RFC 4960 §8; netlink link
// and address events; ESP-level probes where there is no kernel SCTP), and
// moves the SA's outer addresses to a live path without renegotiation.
package mobility

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// State of a path, as RFC 4960 §8 and RFC 7829 name them.
type State uint8

const (
	Unconfirmed       State = iota // never answered yet (or came back and not yet confirmed)
	Active                         // answering
	PotentiallyFailed              // missed heartbeats, below the failure threshold (RFC 7829)
	Inactive                       // failed: link down, address gone, or Path.Max.Retrans exceeded
)

func (s State) String() string {
	return [...]string{"unconfirmed", "active", "potentially-failed", "inactive"}[s]
}

// Path is one (local address, peer address) pair: our uplink address and
// the gateway's address on that network, so traffic on the path tests it.
type Path struct {
	Name  string
	Local netip.Addr // our outer address on this uplink
	Peer  netip.Addr // the peer's outer address reached over it
	Link  string     // our interface carrying it (for netlink events), optional
}

func (p Path) String() string { return fmt.Sprintf("%s (%v -> %v)", p.Name, p.Local, p.Peer) }

// Policy says when to leave and when to come back.
type Policy struct {
	// LeaveOnPF moves traffic off a path as soon as it is potentially
	// failed (RFC 7829 §3), not only when it is inactive.
	LeaveOnPF bool
	// SwitchBack is how long the primary must have been active before
	// traffic returns to it; 0 returns at once, negative never.
	SwitchBack time.Duration
}

// Event is a detector's news about a path, which it names by its local or
// its peer address (an SCTP notification knows only the peer address, a
// netlink event only the local one or the link).
type Event struct {
	Local, Peer netip.Addr
	Link        string
	State       State
	Source      string // "sctp", "netlink", "probe", ...
	// Time is when it happened (the detector's clock: the answer's
	// arrival, the timeout's expiry), not when the Set hears of it.
	Time time.Time
	// Answer marks an event that reports one answered heartbeat (the
	// prober sends one per answer; SCTP notifications report changes
	// only). Such a path is a destination for leaving a potentially
	// failed one only if it answered after that path became suspect.
	Answer bool
	// Measured, when set, carries the detector's loss and smoothed RTT of
	// the path (RFC 4960 §6.3.1 SRTT), which the Set compares before
	// moving traffic.
	Measured bool
	Loss     float64 // fraction of recent heartbeats never answered
	RTT      time.Duration
	// Adopt, from netlink, is the path's new local address: the path's
	// own address is gone from its link (named by Link) and this one, of
	// the same family, is there. The path keeps its name and peer, takes
	// the address, and is in State until heartbeats confirm it.
	Adopt netip.Addr
}

// Switch is a decision to move traffic from one path to another.
type Switch struct {
	From, To Path
	Reason   string
	// Detected is when the event that caused the switch happened (the
	// detector's time), so a switch can report how long detection took.
	Detected time.Time
	Time     time.Time
	// N numbers the switches of one Set from 1: each is logged once with
	// its number, so the log and the status count can be compared.
	N int
}

// Change is one path's state transition, with the time it happened.
type Change struct {
	Path     Path
	From, To State
	Source   string
	Time     time.Time
}

// Outcome is what one event or tick did: the state transitions it caused
// and the switch it decided, if any.
type Outcome struct {
	Changes  []Change
	Switch   Switch
	Switched bool
	// Adopted are the paths that took a new local address (Event.Adopt),
	// as they are now; detectors and routes must follow.
	Adopted []Adoption
}

// Adoption is a path's move to a new local address.
type Adoption struct {
	Old  netip.Addr
	Path Path
	Time time.Time
}

// PathStatus is one path's state for status output.
type PathStatus struct {
	Path
	State   State
	Since   time.Time
	Primary bool
	InUse   bool
	Source  string // detector of the last change
	// Heard is the last answered heartbeat (zero if the detector does
	// not report answers); Loss and RTT the detector's last measurement.
	Heard    time.Time
	Measured bool
	Loss     float64
	RTT      time.Duration
}

// Set is the paths to one peer and which of them carries traffic. It is
// pure decision logic: detectors feed it Events, the caller applies the
// Switches it returns. Safe for concurrent use.
type Set struct {
	mu      sync.Mutex
	paths   []pathState
	primary int
	active  int
	policy  Policy
	history []Switch
}

type pathState struct {
	Path
	state    State
	since    time.Time
	source   string
	heard    time.Time
	measured bool
	loss     float64
	rtt      time.Duration
}

// NewSet starts with every path unconfirmed and traffic on the primary.
func NewSet(paths []Path, primary int, p Policy, now time.Time) (*Set, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("mobility: no paths")
	}
	if primary < 0 || primary >= len(paths) {
		return nil, fmt.Errorf("mobility: primary %d out of range", primary)
	}
	s := &Set{primary: primary, active: primary, policy: p}
	for _, pa := range paths {
		if !pa.Local.IsValid() || !pa.Peer.IsValid() || pa.Local.Is4() != pa.Peer.Is4() {
			return nil, fmt.Errorf("mobility: path %s needs a local and a peer address of one family", pa.Name)
		}
		s.paths = append(s.paths, pathState{Path: pa, state: Unconfirmed, since: now})
	}
	return s, nil
}

// Active is the path traffic uses now.
func (s *Set) Active() Path {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[s.active].Path
}

// Status lists the paths in configured order.
func (s *Set) Status() []PathStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PathStatus, len(s.paths))
	for i, p := range s.paths {
		out[i] = PathStatus{Path: p.Path, State: p.state, Since: p.since, Primary: i == s.primary, InUse: i == s.active, Source: p.source,
			Heard: p.heard, Measured: p.measured, Loss: p.loss, RTT: p.rtt}
	}
	return out
}

// History is the switches made so far, oldest first.
func (s *Set) History() []Switch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Switch(nil), s.history...)
}

// Update applies an event and returns the switch it causes, if any.
func (s *Set) Update(ev Event) (Switch, bool) {
	o := s.Apply(ev)
	return o.Switch, o.Switched
}

// Apply applies an event: it records the matching paths' state and
// measurements and returns the transitions and the switch they cause.
// Every event that names a path is re-evaluated, not only state changes:
// an answer from an alternate is what confirms it as a destination.
func (s *Set) Apply(ev Event) Outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	var o Outcome
	touched := false
	for i := range s.paths {
		p := &s.paths[i]
		if !matches(p.Path, ev) {
			continue
		}
		touched = true
		if ev.Adopt.IsValid() {
			if ev.Adopt.Is4() != p.Local.Is4() || ev.Adopt == p.Local {
				continue
			}
			o.Adopted = append(o.Adopted, Adoption{Old: p.Local, Path: p.Path, Time: ev.Time})
			p.Local = ev.Adopt
			o.Adopted[len(o.Adopted)-1].Path.Local = ev.Adopt
			// Nothing heard from the new address yet.
			p.heard, p.measured = time.Time{}, false
		}
		if ev.Answer && ev.Time.After(p.heard) {
			p.heard = ev.Time
		}
		if ev.Measured {
			p.measured, p.loss, p.rtt = true, ev.Loss, ev.RTT
		}
		if p.state == ev.State || upOnActive(p.state, ev.State) {
			continue
		}
		o.Changes = append(o.Changes, Change{Path: p.Path, From: p.state, To: ev.State, Source: ev.Source, Time: ev.Time})
		p.state, p.since, p.source = ev.State, ev.Time, ev.Source
	}
	if touched {
		o.Switch, o.Switched = s.decide(ev.Time)
	}
	return o
}

// Tick re-evaluates time-based rules (switching back to the primary after
// it has been active for Policy.SwitchBack).
func (s *Set) Tick(now time.Time) (Switch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.decide(now)
}

// upOnActive: a link or address coming up (netlink reports Unconfirmed
// where heartbeats must confirm) says nothing against a path a detector
// already confirmed, so it does not demote it. Linux can report an IPv6
// link "up" twice (link, then the address leaving DAD), the second after
// kernel SCTP has confirmed the path, and SCTP, reporting changes only,
// would not say "active" again until the next flap.
func upOnActive(cur, ev State) bool { return ev == Unconfirmed && cur == Active }

func matches(p Path, ev Event) bool {
	return (ev.Local.IsValid() && ev.Local == p.Local) ||
		(ev.Peer.IsValid() && ev.Peer == p.Peer) ||
		(ev.Link != "" && ev.Link == p.Link)
}

// usable reports whether traffic may stay on a path.
func (s *Set) usable(i int) bool {
	switch s.paths[i].state {
	case Active:
		return true
	case PotentiallyFailed:
		return !s.policy.LeaveOnPF
	case Unconfirmed:
		// Traffic starts on an unconfirmed primary (nothing has been
		// heard yet), but never moves to an unconfirmed path.
		return i == s.active
	}
	return false
}

// Margins for "worse": measurements are noisy, so a path is worse only
// by a clear difference, never by a single lost heartbeat's worth.
const (
	lossMargin = 0.02                  // two percentage points
	rttMargin  = 50 * time.Millisecond // on top of twice the other's RTT
)

// worse reports whether path a is clearly worse than path b by the
// detectors' measurements (loss first, then RTT); paths without
// measurements compare equal.
func (s *Set) worse(a, b int) bool {
	pa, pb := &s.paths[a], &s.paths[b]
	if !pa.measured || !pb.measured {
		return false
	}
	if pa.loss > pb.loss+lossMargin {
		return true
	}
	return pa.rtt > 2*pb.rtt+rttMargin
}

// confirmed reports whether path i may receive traffic leaving path cur:
// it is active, not worse than cur, and, when cur is only potentially
// failed and i's detector reports answers, it answered after cur became
// suspect. RFC 7829 §3 leaves a PF path for an active one; an alternate
// last heard before the silence began may be as stalled as cur (a busy
// host delays every answer alike), so it proves nothing yet.
func (s *Set) confirmed(i, cur int, now time.Time) bool {
	p, c := &s.paths[i], &s.paths[cur]
	if i == cur || p.state != Active {
		return false
	}
	if c.state == Inactive {
		return true // anything alive beats a dead path
	}
	if s.worse(i, cur) {
		return false
	}
	if p.heard.IsZero() {
		// A detector that reports changes only (kernel SCTP): an alternate
		// that itself came back less than settle ago may be as suspect as
		// cur (jitter striking every path in turn); leaving for it would
		// ping-pong. A dead cur (Inactive) is left at once all the same.
		return now.Sub(p.since) >= settle
	}
	return p.heard.After(c.since)
}

// settle is how long an alternate known only by state changes must have
// been active to take traffic from a potentially-failed path.
const settle = time.Second

func (s *Set) decide(now time.Time) (Switch, bool) {
	cur := s.active
	pri := &s.paths[s.primary]
	if cur != s.primary && s.switchBackDue(now) {
		return s.switchTo(s.primary, fmt.Sprintf("%s (the primary) active since %s and not worse", pri.Name, pri.since.Format(time.StampMilli)), pri.since, now), true
	}
	if s.usable(cur) {
		return Switch{}, false
	}
	next := s.best(cur, now)
	if next < 0 {
		return Switch{}, false // nowhere better to go: stay and hope
	}
	c := &s.paths[cur]
	return s.switchTo(next, fmt.Sprintf("%s %s (%s)", c.Name, c.state, c.source), c.since, now), true
}

// switchBackDue: traffic returns to the primary once it has been active
// for Policy.SwitchBack without interruption, and only if it is not worse
// than the path in use (a lossy primary does not take traffic back from a
// clean alternate).
func (s *Set) switchBackDue(now time.Time) bool {
	pri := &s.paths[s.primary]
	if pri.state != Active || s.policy.SwitchBack < 0 || now.Sub(pri.since) < s.policy.SwitchBack {
		return false
	}
	return s.paths[s.active].state != Active || !s.worse(s.primary, s.active)
}

// best is where traffic leaving cur goes: the primary if it is confirmed,
// else the confirmed path with the least loss (then the lowest RTT; ties
// in configured order); -1 if none.
func (s *Set) best(cur int, now time.Time) int {
	if s.confirmed(s.primary, cur, now) {
		return s.primary
	}
	next := -1
	for i := range s.paths {
		if !s.confirmed(i, cur, now) {
			continue
		}
		if next < 0 || s.better(i, next) {
			next = i
		}
	}
	return next
}

func (s *Set) better(a, b int) bool {
	pa, pb := &s.paths[a], &s.paths[b]
	if !pa.measured || !pb.measured {
		return false
	}
	if pa.loss != pb.loss {
		return pa.loss < pb.loss
	}
	return pa.rtt < pb.rtt
}

func (s *Set) switchTo(i int, reason string, detected, now time.Time) Switch {
	sw := Switch{From: s.paths[s.active].Path, To: s.paths[i].Path, Reason: reason, Detected: detected, Time: now, N: len(s.history) + 1}
	s.active = i
	s.history = append(s.history, sw)
	return sw
}
