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
	Time        time.Time
}

// Switch is a decision to move traffic from one path to another.
type Switch struct {
	From, To Path
	Reason   string
	// Detected is when the event that caused the switch happened (the
	// detector's time), so a switch can report how long detection took.
	Detected time.Time
	Time     time.Time
}

// PathStatus is one path's state for status output.
type PathStatus struct {
	Path
	State   State
	Since   time.Time
	Primary bool
	InUse   bool
	Source  string // detector of the last change
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
	state  State
	since  time.Time
	source string
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
		out[i] = PathStatus{Path: p.Path, State: p.state, Since: p.since, Primary: i == s.primary, InUse: i == s.active, Source: p.source}
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
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for i := range s.paths {
		p := &s.paths[i]
		if !matches(p.Path, ev) || p.state == ev.State {
			continue
		}
		p.state, p.since, p.source = ev.State, ev.Time, ev.Source
		changed = true
	}
	if !changed {
		return Switch{}, false
	}
	return s.decide(ev.Time, ev.Source)
}

// Tick re-evaluates time-based rules (switching back to the primary after
// it has been active for Policy.SwitchBack).
func (s *Set) Tick(now time.Time) (Switch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.decide(now, "timer")
}

func matches(p Path, ev Event) bool {
	return (ev.Local.IsValid() && ev.Local == p.Local) ||
		(ev.Peer.IsValid() && ev.Peer == p.Peer) ||
		(ev.Link != "" && ev.Link == p.Link)
}

// usable reports whether traffic may stay on (or go to) a path.
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

func (s *Set) decide(now time.Time, source string) (Switch, bool) {
	cur := s.active
	pri := &s.paths[s.primary]
	if cur != s.primary && pri.state == Active && s.policy.SwitchBack >= 0 && now.Sub(pri.since) >= s.policy.SwitchBack {
		return s.switchTo(s.primary, fmt.Sprintf("%s (the primary) active since %s", pri.Name, pri.since.Format(time.StampMilli)), pri.since, now), true
	}
	if s.usable(cur) {
		return Switch{}, false
	}
	// Leave: the primary if it is active, else the first active path, in
	// configured order.
	next := -1
	if s.paths[s.primary].state == Active {
		next = s.primary
	} else {
		for i := range s.paths {
			if i != cur && s.paths[i].state == Active {
				next = i
				break
			}
		}
	}
	if next < 0 {
		return Switch{}, false // nowhere better to go: stay and hope
	}
	c := &s.paths[cur]
	return s.switchTo(next, fmt.Sprintf("%s %s (%s)", c.Name, c.state, c.source), c.since, now), true
}

func (s *Set) switchTo(i int, reason string, detected, now time.Time) Switch {
	sw := Switch{From: s.paths[s.active].Path, To: s.paths[i].Path, Reason: reason, Detected: detected, Time: now}
	s.active = i
	s.history = append(s.history, sw)
	return sw
}
