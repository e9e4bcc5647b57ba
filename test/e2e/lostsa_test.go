package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// A gateway whose DPD is shorter than the road warrior's (the operator
// chose it; the road warrior keeps the 30 s default) deletes the road
// warrior's SAs during a SIGSTOP that is still short by the road
// warrior's own measure, and a restarted gateway has none at all: in
// both cases the road warrior must not send into SAs nobody holds until
// its own DPD (30 s) and retransmissions run out. It checks liveness at
// once (on waking; when every path went silent), the gateway answers
// INVALID_IKE_SPI (RFC 7296 §2.21.4), and the road warrior connects
// again: the log says so, and there is exactly one connection after.
func TestRoadWarriorReconnectsWhenTheGatewayLostTheSA(t *testing.T) {
	for _, f := range []fault{faults()[1], faults()[2]} {
		t.Run(strings.ReplaceAll(f.name, " ", "_"), func(t *testing.T) {
			bed := netns.New(t)
			gwCfg, rwCfg := reconnectConfigs(t)
			b, err := os.ReadFile(rwCfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(rwCfg, []byte(strings.Replace(string(b), fastDPD, "  dpd: 30s\n", 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			gw, rw := up(t, bed, gwCfg, rwCfg)
			c := &reconnectCase{bed: bed, gw: gw, rw: rw, gwCfg: gwCfg, rwCfg: rwCfg}
			waitOneConnection(t, c, 20*time.Second)
			if err := rig.EchoServer(bed); err != nil {
				t.Fatal(err)
			}
			s, err := rig.StartStream(bed, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			f.start(t, c)
			if f.name != "gateway SIGKILL and restart" {
				// Long enough for the gateway's DPD (2 s + 3.75 s) to delete.
				if !rig.WaitFor(10*time.Second, func() bool { return strings.Contains(c.gw.Log(), "IKE SA failed") }) {
					c.rw.Send(syscall.SIGCONT)
					t.Fatalf("the gateway's DPD did not end the IKE SA during the SIGSTOP\n%s", c.gw.Log())
				}
			}
			over := f.end(t, c)
			// Well under the road warrior's own DPD (30 s): the recovery
			// cannot come from it.
			if !rig.WaitFor(25*time.Second, func() bool { return !s.FirstReplyAfter(over).IsZero() }) {
				t.Fatalf("no traffic within 25 s of the fault's end (the road warrior's DPD is 30 s)\nrw:\n%s\ngw:\n%s", c.rw.Log(), c.gw.Log())
			}
			t.Logf("%s: traffic back %v after the fault ended", f.name, s.FirstReplyAfter(over).Sub(over).Round(time.Millisecond))
			if !strings.Contains(c.rw.Log(), "INVALID_IKE_SPI") {
				t.Errorf("the road warrior's log does not say the gateway answered INVALID_IKE_SPI\n%s", c.rw.Log())
			}
			waitOneConnection(t, c, 30*time.Second)
		})
	}
}
