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
		{ev: Event{Peer: pri.Peer, State: PotentiallyFailed, Time: at(1300)}, wantTo: "lte"},
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

// answer is a prober's report of one answered heartbeat on p at ms, with
// its measured loss.
func answer(p Path, ms int, loss float64) Event {
	return Event{Peer: p.Peer, State: Active, Source: "probe", Time: at(ms), Answer: true, Measured: true, Loss: loss, RTT: time.Millisecond}
}

func suspect(p Path, ms int, loss float64) Event {
	return Event{Peer: p.Peer, State: PotentiallyFailed, Source: "probe", Time: at(ms), Measured: true, Loss: loss, RTT: time.Millisecond}
}

// The rules that tell loss and load from death, each as a sequence of a
// prober's events and the switches it must (not) cause.
func TestDetectorRules(t *testing.T) {
	lp := Policy{LeaveOnPF: true, SwitchBack: 2 * time.Second}
	cases := []struct {
		name  string
		steps []step
	}{
		{"RFC 7829: leave a suspect path only for an alternate heard after the suspicion began", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0)},
			{ev: suspect(pri, 300, 0)},               // sec last heard at 10: it may be as stalled
			{ev: answer(sec, 305, 0), wantTo: "lte"}, // now it is confirmed
		}},
		{"a busy host: every path late alike, no switch", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0)},
			{ev: suspect(pri, 300, 0)}, {ev: suspect(sec, 310, 0)},
			{ev: answer(pri, 900, 0)}, {ev: answer(sec, 901, 0)},
			{ev: Event{Time: at(5000)}, tick: true},
		}},
		{"a worse path is not chosen over a suspect one that is fine", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0.20)},
			{ev: suspect(pri, 300, 0)},
			{ev: answer(sec, 305, 0.20)}, // answered, but loses a fifth of its heartbeats
		}},
		{"kernel SCTP (changes only): leave a suspect path only for an alternate active for a second", []step{
			{ev: Event{Peer: pri.Peer, State: Active, Source: "sctp", Time: at(0)}},
			{ev: Event{Peer: sec.Peer, State: PotentiallyFailed, Source: "sctp", Time: at(100)}},
			{ev: Event{Peer: sec.Peer, State: Active, Source: "sctp", Time: at(200)}},
			{ev: Event{Peer: pri.Peer, State: PotentiallyFailed, Source: "sctp", Time: at(700)}}, // sec back 0.5 s ago: stay
			{ev: Event{Time: at(1250)}, tick: true, wantTo: "lte"},                               // now it has settled
		}},
		{"kernel SCTP: a dead path is left at once, however recent the alternate", []step{
			{ev: Event{Peer: pri.Peer, State: Active, Source: "sctp", Time: at(0)}},
			{ev: Event{Peer: sec.Peer, State: Active, Source: "sctp", Time: at(200)}},
			{ev: Event{Peer: pri.Peer, State: Inactive, Source: "sctp", Time: at(300)}, wantTo: "lte"},
		}},
		{"a dead path is left for any live one, worse or not", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0.20)},
			{ev: Event{Peer: pri.Peer, State: Inactive, Source: "probe", Time: at(300), Measured: true}, wantTo: "lte"},
		}},
		{"of several alternates the least lossy is chosen", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0.05)}, {ev: answer(ter, 10, 0.01)},
			{ev: Event{Link: "wlan0", State: Inactive, Source: "netlink", Time: at(300)}, wantTo: "eth"},
		}},
		{"switch back only to a primary that is not worse than the path in use", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0)},
			{ev: Event{Link: "wlan0", State: Inactive, Source: "netlink", Time: at(100)}, wantTo: "lte"},
			{ev: answer(pri, 1000, 0.03)}, {ev: answer(sec, 1001, 0)},
			{ev: Event{Time: at(5000)}, tick: true},       // 3 % loss against 0 %: stay
			{ev: answer(pri, 6000, 0.01), wantTo: "wifi"}, // good again, active since 1000
		}},
		{"switch back waits for the hold time after the primary's last suspicion", []step{
			{ev: answer(pri, 0, 0)}, {ev: answer(sec, 10, 0)},
			{ev: Event{Link: "wlan0", State: Inactive, Source: "netlink", Time: at(100)}, wantTo: "lte"},
			{ev: answer(pri, 1000, 0)},
			{ev: suspect(pri, 2500, 0)}, {ev: answer(pri, 2600, 0)},
			{ev: Event{Time: at(4000)}, tick: true},
			{ev: Event{Time: at(4600)}, tick: true, wantTo: "wifi"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, lp, c.steps) })
	}
}

// Every switch is numbered, once, in order, and every state transition
// carries the time it happened (the detector's), not when it was applied.
func TestSwitchesNumberedAndChangesTimed(t *testing.T) {
	s, err := NewSet([]Path{pri, sec}, 0, Policy{LeaveOnPF: true, SwitchBack: 0}, t0)
	if err != nil {
		t.Fatal(err)
	}
	var n []int
	var changes []Change
	for _, ev := range []Event{
		answer(pri, 0, 0), answer(sec, 5, 0),
		{Link: "wlan0", State: Inactive, Source: "netlink", Time: at(100)},
		answer(pri, 200, 0),
		{Peer: pri.Peer, State: Inactive, Source: "probe", Time: at(300)},
		answer(pri, 400, 0),
	} {
		o := s.Apply(ev)
		changes = append(changes, o.Changes...)
		if o.Switched {
			n = append(n, o.Switch.N)
		}
	}
	if len(n) != 4 || n[0] != 1 || n[3] != 4 || len(s.History()) != 4 {
		t.Fatalf("switch numbers %v, history %d", n, len(s.History()))
	}
	if len(changes) != 6 || !changes[2].Time.Equal(at(100)) || changes[2].From != Active || changes[2].To != Inactive || changes[2].Source != "netlink" {
		t.Fatalf("changes %+v", changes)
	}
}

// A link coming up again (netlink: Unconfirmed) does not demote a path a
// detector confirmed meanwhile: kernel SCTP, which reports changes only,
// would not confirm it again, and traffic would never switch back.
func TestLinkUpDoesNotDemoteAConfirmedPath(t *testing.T) {
	s := run(t, Policy{SwitchBack: time.Second}, []step{
		{ev: Event{Peer: pri.Peer, State: Active, Source: "sctp", Time: at(0)}},
		{ev: Event{Peer: sec.Peer, State: Active, Source: "sctp", Time: at(0)}},
		{ev: Event{Link: pri.Link, State: Inactive, Source: "netlink", Time: at(1000)}, wantTo: "lte"},
		{ev: Event{Link: pri.Link, State: Unconfirmed, Source: "netlink", Time: at(1100)}},
		{ev: Event{Peer: pri.Peer, State: Active, Source: "sctp", Time: at(1150)}},
		{ev: Event{Link: pri.Link, State: Unconfirmed, Source: "netlink", Time: at(1160)}}, // IPv6: the address left DAD
		{ev: Event{Time: at(2200)}, tick: true, wantTo: "wifi"},
	})
	if st := s.Status()[0]; st.State != Active {
		t.Fatalf("primary %s, want active", st.State)
	}
}
