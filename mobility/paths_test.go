package mobility

import (
	"net/netip"
	"testing"
	"time"
)

var (
	t0  = time.Unix(1_800_000_000, 0)
	pri = Path{Name: "wifi", Local: netip.MustParseAddr("192.0.2.2"), Peer: netip.MustParseAddr("192.0.2.1"), Link: "wlan0"}
	sec = Path{Name: "lte", Local: netip.MustParseAddr("198.51.100.2"), Peer: netip.MustParseAddr("198.51.100.1"), Link: "wwan0"}
	ter = Path{Name: "eth", Local: netip.MustParseAddr("203.0.113.7"), Peer: netip.MustParseAddr("203.0.113.1"), Link: "eth0"}
)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

type step struct {
	ev     Event
	tick   bool
	wantTo string // "" = no switch
}

func run(t *testing.T, p Policy, steps []step) *Set {
	t.Helper()
	s, err := NewSet([]Path{pri, sec, ter}, 0, p, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range steps {
		var sw Switch
		var ok bool
		if st.tick {
			sw, ok = s.Tick(st.ev.Time)
		} else {
			sw, ok = s.Update(st.ev)
		}
		got := ""
		if ok {
			got = sw.To.Name
		}
		if got != st.wantTo {
			t.Fatalf("step %d (%+v): switched to %q, want %q", i, st.ev, got, st.wantTo)
		}
	}
	return s
}

// RFC 4960 §8.2: a path whose heartbeats go unanswered past
// Path.Max.Retrans is inactive; traffic moves to an active alternate
// (the first in configured order), and an unconfirmed one is not a
// destination (§5.4: confirmed before use).
func TestRFC4960_8_2_FailoverToActiveAlternate(t *testing.T) {
	run(t, Policy{SwitchBack: -1}, []step{
		{ev: Event{Peer: pri.Peer, State: Active, Source: "sctp", Time: at(0)}},
		{ev: Event{Peer: pri.Peer, State: Inactive, Source: "sctp", Time: at(100)}}, // no alternate confirmed yet: stay
		{ev: Event{Peer: ter.Peer, State: Active, Source: "sctp", Time: at(150)}, wantTo: "eth"},
	})
	s := run(t, Policy{SwitchBack: -1}, []step{
		{ev: Event{Peer: sec.Peer, State: Active, Source: "sctp", Time: at(0)}},
		{ev: Event{Peer: ter.Peer, State: Active, Source: "sctp", Time: at(0)}},
		{ev: Event{Peer: pri.Peer, State: Inactive, Source: "sctp", Time: at(500)}, wantTo: "lte"},
	})
	h := s.History()
	if len(h) != 1 || h[0].From.Name != "wifi" || !h[0].Detected.Equal(at(500)) {
		t.Fatalf("history %+v", h)
	}
}

// RFC 7829 §3: with the potentially-failed state in use, traffic leaves a
// path at the first missed heartbeats instead of waiting for failure.
func TestRFC7829_LeaveOnPotentiallyFailed(t *testing.T) {
	steps := []step{
		{ev: Event{Peer: sec.Peer, State: Active, Time: at(0)}},
		{ev: Event{Peer: pri.Peer, State: PotentiallyFailed, Time: at(300)}, wantTo: "lte"},
	}
	run(t, Policy{LeaveOnPF: true, SwitchBack: -1}, steps)
	steps[1].wantTo = "" // without LeaveOnPF a PF path keeps traffic
	run(t, Policy{SwitchBack: -1}, steps)
}

// Netlink: a link going down or an address going away is a failure at
// once, named by link or local address.
func TestNetlinkEventsNameLinkOrLocalAddress(t *testing.T) {
	run(t, Policy{SwitchBack: -1}, []step{
		{ev: Event{Peer: sec.Peer, State: Active, Time: at(0)}},
		{ev: Event{Link: "wlan0", State: Inactive, Source: "netlink", Time: at(10)}, wantTo: "lte"},
	})
	run(t, Policy{SwitchBack: -1}, []step{
		{ev: Event{Peer: sec.Peer, State: Active, Time: at(0)}},
		{ev: Event{Local: pri.Local, State: Inactive, Source: "netlink", Time: at(10)}, wantTo: "lte"},
	})
}

// Switch-back policy: return to the primary once it has been active for
// SwitchBack; at once with 0; never when negative.
func TestSwitchBackPolicy(t *testing.T) {
	failover := []step{
		{ev: Event{Peer: sec.Peer, State: Active, Time: at(0)}},
		{ev: Event{Peer: pri.Peer, State: Inactive, Time: at(100)}, wantTo: "lte"},
	}
	run(t, Policy{SwitchBack: 2 * time.Second}, append(failover,
		step{ev: Event{Peer: pri.Peer, State: Active, Time: at(1000)}},
		step{ev: Event{Time: at(2500)}, tick: true}, // active 1.5 s: not yet
		step{ev: Event{Time: at(3000)}, tick: true, wantTo: "wifi"},
	))
	run(t, Policy{SwitchBack: 0}, append(failover,
		step{ev: Event{Peer: pri.Peer, State: Active, Time: at(1000)}, wantTo: "wifi"},
	))
	run(t, Policy{SwitchBack: -1}, append(failover,
		step{ev: Event{Peer: pri.Peer, State: Active, Time: at(1000)}},
		step{ev: Event{Time: at(99000)}, tick: true},
	))
	// Flapping: the primary dies again before SwitchBack passed; traffic
	// stays on the secondary and the clock starts over.
	run(t, Policy{SwitchBack: 2 * time.Second}, append(failover,
		step{ev: Event{Peer: pri.Peer, State: Active, Time: at(1000)}},
		step{ev: Event{Peer: pri.Peer, State: Inactive, Time: at(1500)}},
		step{ev: Event{Peer: pri.Peer, State: Active, Time: at(2000)}},
		step{ev: Event{Time: at(3500)}, tick: true},
		step{ev: Event{Time: at(4000)}, tick: true, wantTo: "wifi"},
	))
}

// All paths dead: traffic stays where it is (no oscillation, no switch to
// a path nobody has heard from).
func TestNoLivePathStays(t *testing.T) {
	run(t, Policy{SwitchBack: 0}, []step{
		{ev: Event{Peer: pri.Peer, State: Inactive, Time: at(0)}},
		{ev: Event{Peer: sec.Peer, State: Inactive, Time: at(0)}},
		{ev: Event{Peer: ter.Peer, State: Unconfirmed, Time: at(0)}},
	})
}

func TestNewSetRefusesBadPaths(t *testing.T) {
	bad := Path{Name: "x", Local: netip.MustParseAddr("192.0.2.2"), Peer: netip.MustParseAddr("2001:db8::1")}
	if _, err := NewSet([]Path{bad}, 0, Policy{}, t0); err == nil {
		t.Fatal("mixed families accepted")
	}
	if _, err := NewSet([]Path{pri}, 1, Policy{}, t0); err == nil {
		t.Fatal("primary out of range accepted")
	}
	if _, err := NewSet(nil, 0, Policy{}, t0); err == nil {
		t.Fatal("no paths accepted")
	}
}
