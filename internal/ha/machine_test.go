package ha

import (
	"testing"
	"time"
)

// step is one input to the machine at a time offset from the start.
type step struct {
	at     time.Duration
	in     string // "hb", "tick", "probe", "handover", "switchover"
	role   Role   // hb
	prio   uint8  // hb
	epoch  uint64 // hb, handover
	seen   bool   // probe
	want   Action
	wantR  Role
	errOK  bool // switchover may fail
	wantEp uint64
}

func TestMachine(t *testing.T) {
	const dead = 150 * time.Millisecond
	ms := time.Millisecond
	cases := []struct {
		name     string
		prio     uint8
		tiebreak bool
		steps    []step
	}{
		{"JoinsAsStandbyWhenAnActiveIsHeard", 100, true, []step{
			{at: 10 * ms, in: "hb", role: RoleActive, prio: 50, epoch: 3, want: ActNone, wantR: RoleStandby, wantEp: 3},
			{at: 500 * ms, in: "hb", role: RoleActive, prio: 50, epoch: 3, want: ActNone, wantR: RoleStandby},
			{at: 600 * ms, in: "tick", want: ActNone, wantR: RoleStandby},
		}},
		{"AloneTakesOverAfterDeadAfterAndASilentProbe", 100, false, []step{
			{at: 100 * ms, in: "tick", want: ActNone, wantR: RoleJoining},
			{at: 160 * ms, in: "tick", want: ActProbe, wantR: RoleJoining},
			{at: 170 * ms, in: "tick", want: ActNone, wantR: RoleJoining},
			{at: 200 * ms, in: "probe", seen: false, want: ActTakeOver, wantR: RoleActive, wantEp: 1},
		}},
		{"HeartbeatLossAloneDoesNotTakeOverWhenTheActiveAnswersOnTheServiceNet", 100, true, []step{ // split sync link
			{at: 10 * ms, in: "hb", role: RoleActive, prio: 50, epoch: 1, wantR: RoleStandby},
			{at: 170 * ms, in: "tick", want: ActProbe, wantR: RoleStandby},
			{at: 220 * ms, in: "probe", seen: true, want: ActNone, wantR: RoleStandby},
			{at: 300 * ms, in: "tick", want: ActNone, wantR: RoleStandby},
			{at: 380 * ms, in: "tick", want: ActProbe, wantR: RoleStandby},
			{at: 430 * ms, in: "probe", seen: false, want: ActTakeOver, wantR: RoleActive, wantEp: 2},
		}},
		{"AHeartbeatDuringTheProbeCancelsTheTakeover", 100, true, []step{
			{at: 10 * ms, in: "hb", role: RoleActive, epoch: 1, wantR: RoleStandby},
			{at: 170 * ms, in: "tick", want: ActProbe, wantR: RoleStandby},
			{at: 190 * ms, in: "hb", role: RoleActive, epoch: 1, wantR: RoleStandby},
			{at: 220 * ms, in: "probe", seen: false, want: ActNone, wantR: RoleStandby},
		}},
		{"PriorityChoosesBetweenTwoJoiningNodesLowerWaits", 50, true, []step{
			{at: 10 * ms, in: "hb", role: RoleJoining, prio: 100, wantR: RoleJoining},
			{at: 160 * ms, in: "hb", role: RoleJoining, prio: 100, want: ActNone, wantR: RoleJoining},
			{at: 200 * ms, in: "hb", role: RoleActive, prio: 100, epoch: 1, wantR: RoleStandby, wantEp: 1},
		}},
		{"PriorityChoosesBetweenTwoJoiningNodesHigherProbes", 100, false, []step{
			{at: 10 * ms, in: "hb", role: RoleJoining, prio: 50, wantR: RoleJoining},
			{at: 160 * ms, in: "hb", role: RoleJoining, prio: 50, want: ActProbe, wantR: RoleJoining},
			{at: 200 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive, wantEp: 1},
		}},
		{"EqualPriorityTieBreakDecides", 100, false, []step{
			{at: 10 * ms, in: "hb", role: RoleJoining, prio: 100, wantR: RoleJoining},
			{at: 160 * ms, in: "hb", role: RoleJoining, prio: 100, want: ActNone, wantR: RoleJoining},
		}},
		{"NoPreemptionByPriority", 200, true, []step{
			{at: 10 * ms, in: "hb", role: RoleActive, prio: 1, epoch: 4, wantR: RoleStandby},
			{at: 1000 * ms, in: "hb", role: RoleActive, prio: 1, epoch: 4, wantR: RoleStandby},
			{at: 1100 * ms, in: "tick", want: ActNone, wantR: RoleStandby},
		}},
		{"TwoActivesTheLaterTakeoverStays", 100, true, []step{
			{at: 160 * ms, in: "tick", want: ActProbe},
			{at: 200 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive, wantEp: 1},
			{at: 300 * ms, in: "hb", role: RoleActive, prio: 1, epoch: 2, want: ActRelease, wantR: RoleStandby, wantEp: 2},
		}},
		{"TwoActivesTheHigherEpochKeepsTheAddress", 1, false, []step{
			{at: 160 * ms, in: "tick", want: ActProbe},
			{at: 200 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive, wantEp: 1},
			{at: 210 * ms, in: "handover", epoch: 5, want: ActNone, wantR: RoleActive},
			{at: 300 * ms, in: "hb", role: RoleActive, prio: 200, epoch: 0, want: ActNone, wantR: RoleActive},
		}},
		{"HandoverTakesOverWithoutProbe", 100, true, []step{
			{at: 10 * ms, in: "hb", role: RoleActive, epoch: 7, wantR: RoleStandby},
			{at: 20 * ms, in: "handover", epoch: 7, want: ActTakeOver, wantR: RoleActive, wantEp: 8},
		}},
		{"SwitchoverReleasesAndWaitsForThePeer", 100, true, []step{
			{at: 160 * ms, in: "tick", want: ActProbe},
			{at: 200 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive},
			{at: 210 * ms, in: "hb", role: RoleStandby, prio: 1, epoch: 1, wantR: RoleActive},
			{at: 220 * ms, in: "switchover", want: ActRelease, wantR: RoleStandby},
			{at: 230 * ms, in: "hb", role: RoleStandby, prio: 1, epoch: 1, want: ActNone, wantR: RoleStandby},
			{at: 250 * ms, in: "hb", role: RoleActive, prio: 1, epoch: 2, want: ActNone, wantR: RoleStandby, wantEp: 2},
		}},
		{"SwitchoverWithoutALiveStandbyIsRefused", 100, true, []step{
			{at: 160 * ms, in: "tick", want: ActProbe},
			{at: 200 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive},
			{at: 220 * ms, in: "switchover", errOK: true, want: ActNone, wantR: RoleActive},
		}},
		{"SwitchoverNotTakenUpIsTakenBack", 100, true, []step{
			{at: 160 * ms, in: "tick", want: ActProbe},
			{at: 200 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive},
			{at: 210 * ms, in: "hb", role: RoleStandby, prio: 1, epoch: 1, wantR: RoleActive},
			{at: 220 * ms, in: "switchover", want: ActRelease, wantR: RoleStandby},
			{at: 380 * ms, in: "tick", want: ActProbe, wantR: RoleStandby},
			{at: 400 * ms, in: "probe", want: ActTakeOver, wantR: RoleActive, wantEp: 2},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			m := NewMachine(t0, dead, c.prio, c.tiebreak)
			for i, s := range c.steps {
				now := t0.Add(s.at)
				var got Action
				switch s.in {
				case "hb":
					got = m.Heartbeat(now, s.role, s.prio, s.epoch)
				case "tick":
					got = m.Tick(now)
				case "probe":
					got = m.ProbeResult(now, s.seen)
				case "handover":
					got = m.Handover(now, s.epoch)
				case "switchover":
					var err error
					got, err = m.Switchover(now)
					if (err != nil) != s.errOK {
						t.Fatalf("step %d: switchover err = %v", i, err)
					}
				}
				if got != s.want {
					t.Fatalf("step %d (%s at %v): action %v, want %v", i, s.in, s.at, got, s.want)
				}
				if s.wantR != 0 && m.Role() != s.wantR {
					t.Fatalf("step %d (%s at %v): role %v, want %v", i, s.in, s.at, m.Role(), s.wantR)
				}
				if s.wantEp != 0 && m.Epoch() != s.wantEp {
					t.Fatalf("step %d: epoch %d, want %d", i, m.Epoch(), s.wantEp)
				}
			}
		})
	}
}
