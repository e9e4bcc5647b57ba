package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// Where the gateway sends ESP (tunnel/outer.go): RFC 3554's inner-derived
// destination only where the road warrior proved it receives and while
// that path lives; the NAT-mapped or freshest endpoint otherwise.

// gatewaySideDrop silently drops everything on the gateway's end of the
// primary link, both ways (nftables netdev ingress and egress hooks in
// the gateway's namespace); the link stays up and nothing tells the road
// warrior.
func gatewaySideDrop(bed *netns.Bed) (restore func() error, err error) {
	script := fmt.Sprintf("table netdev roamsec_outer_drop {\n\tchain in {\n\t\ttype filter hook ingress device %[1]q priority -500; policy drop;\n\t}\n"+
		"\tchain out {\n\t\ttype filter hook egress device %[1]q priority -500; policy drop;\n\t}\n}\n", netns.IfPrimary)
	cmd := bed.GW.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft: %v: %s", err, out)
	}
	return func() error {
		_, err := bed.GW.Run("nft", "delete", "table", "netdev", "roamsec_outer_drop")
		return err
	}, nil
}

// outerTrials is how many drops TestOuterTCPToPrimarySurvivesGatewaySideDrop
// runs: 1 in the normal suite; ROAMSEC_OUTER_TRIALS=5 measures a median
// (bench mode, see `make bench-outer`).
func outerTrials() int {
	if n, err := strconv.Atoi(os.Getenv("ROAMSEC_OUTER_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 1
}

// TestOuterTCPToPrimarySurvivesGatewaySideDrop: an established TCP
// connection bound to the road warrior's primary address (RFC 3554 mode,
// IKEv2) keeps flowing, data checked, while the primary path is silently
// dropped on the gateway's side: the road warrior's probes from the
// primary address stop reaching the gateway while those from the secondary
// go on, so the gateway sends ESP for the primary address over the
// secondary path (same SAs, no new IKE_SA_INIT). The stall is measured
// and logged, not asserted beyond "resumes while the path is still dead".
func TestOuterTCPToPrimarySurvivesGatewaySideDrop(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Count(gw.Log(), "Child SA installed") >= 2 }) {
		t.Fatalf("no Child SAs\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	// The monitoring SA must have carried probes on both paths before a
	// path can be called dead against the other.
	time.Sleep(time.Second)
	s, err := rig.StartTCPStream(bed, netns.RWPrimary4, 1400, 5*time.Millisecond)
	if err != nil {
		t.Fatalf("%v\nrw:\n%s\ngw:\n%s", err, rw.Log(), gw.Log())
	}
	defer s.Close()
	if !rig.WaitFor(5*time.Second, func() bool { return s.Received() > 100<<10 }) {
		t.Fatalf("TCP stream does not flow before the drop (%d bytes)\nrw:\n%s\ngw:\n%s", s.Received(), rw.Log(), gw.Log())
	}
	const outage = 8 * time.Second
	var stalls []time.Duration
	for i := range outerTrials() {
		time.Sleep(2 * time.Second) // back on the primary and settled
		restore, err := gatewaySideDrop(bed)
		if err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		before := s.Received()
		// The connection must move while the primary is still dead.
		resumed := rig.WaitFor(outage, func() bool {
			return s.FirstReadAfter(killed.Add(50*time.Millisecond)).After(killed) && s.Received() > before+64<<10
		})
		first := s.FirstReadAfter(killed.Add(50 * time.Millisecond))
		stall := s.Stall(killed, first)
		if resumed {
			time.Sleep(time.Until(killed.Add(outage)))
		}
		during := s.Received() - before
		if err := restore(); err != nil {
			t.Fatal(err)
		}
		if !resumed {
			t.Fatalf("trial %d: established TCP to the primary address stalled for the whole %v outage (%d bytes during it)\ngw:\n%s", i+1, outage, during, gw.Log())
		}
		stalls = append(stalls, stall)
		t.Logf("trial %d: TCP stall %v across a gateway-side silent drop of the primary; %d KiB received during the %v outage",
			i+1, stall.Round(time.Millisecond), during>>10, outage)
	}
	after := s.Received()
	if !rig.WaitFor(10*time.Second, func() bool { return s.Received() > after+64<<10 }) {
		t.Fatalf("TCP stream stopped after the primary came back\ngw:\n%s", gw.Log())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(gw.Log(), "IKE SA established"); n != 1 {
		t.Fatalf("%d IKE SAs established on the gateway, want 1 (no new IKE_SA_INIT)", n)
	}
	slices.Sort(stalls)
	t.Logf("TCP stall across a gateway-side silent drop: median %v of %d (min %v, max %v); %d MiB checked",
		stalls[len(stalls)/2].Round(time.Millisecond), len(stalls), stalls[0].Round(time.Millisecond), stalls[len(stalls)-1].Round(time.Millisecond), s.Received()>>20)
}
