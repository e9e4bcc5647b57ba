package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// The failover proof matrix of issue 16: IKEv2 between the two real
// daemons, in both modes (RFC 3554 address sets and virtual address), one
// cell per way the primary path dies, each with an established TCP
// connection through the tunnel whose data is checked while the primary is
// still dead and again after the return to it. Every cell asserts:
//   - traffic resumes (a UDP echo stream answered after the death);
//   - the same SAs carry it: the IKE SPIs and every Child SA's inbound and
//     outbound SPIs, on both daemons, are the same after the failover and
//     the return as before (a failover moves the SA, RFC 3554 §3; it does
//     not renegotiate it);
//   - the established TCP connection (the server writes a checked byte
//     stream to the road warrior's primary or virtual address, rig.TCPStream)
//     moves while the primary is still dead and survives, every byte checked;
//   - the road warrior's status counts exactly the switches its log shows
//     (issue 16 item 4: "9 switches counted, 8 logged").
//
// Cells the existing tests already cover are skipped in the normal run
// (ROAMSEC_MATRIX_TRIALS=N runs every cell N times and prints the table):
//   - RFC 3554, gateway-side silent drop: TestOuterTCPToPrimarySurvivesGatewaySideDrop
//     (outer_test.go) — established TCP to the primary address, data
//     checked, no new IKE SA, the gateway's view of the live paths;
//   - virtual address, link down on the road warrior's side:
//     TestVirtualIKEFailover (virtual_ike_test.go) — UDP and established
//     TCP, no new IKE SA.
// Both modes' link down for UDP and SPIs (RFC 3554) is also in
// TestIKEFailoverKeepsTheNegotiatedSA. The cells past DPD (both paths
// dead, gateway SIGKILL and restart, road-warrior SIGSTOP then SIGCONT:
// longTrial) renegotiate, exactly once, and the TCP stream must survive
// that too; in RFC 3554 mode TestReconnectAfterLongOutage runs them in the
// normal suite. The lossy primary (lossyTrial) runs in both modes.

// matrixTrials is ROAMSEC_MATRIX_TRIALS (measuring mode) or 0.
func matrixTrials() int { return envTrials("ROAMSEC_MATRIX_TRIALS", 0) }

// silentDropAt drops everything on ns's end of the primary link, both
// ways (netdev ingress and egress hooks); the link stays up and nothing
// tells either side. It is gatewaySideDrop for any end.
func silentDropAt(ns *netns.NS) rig.Death {
	const table = "roamsec_matrix_drop"
	script := fmt.Sprintf("table netdev %[2]s {\n\tchain in {\n\t\ttype filter hook ingress device %[1]q priority -500; policy drop;\n\t}\n"+
		"\tchain out {\n\t\ttype filter hook egress device %[1]q priority -500; policy drop;\n\t}\n}\n", netns.IfPrimary, table)
	return rig.Death{
		Kill: func() error {
			cmd := ns.Command("nft", "-f", "-")
			cmd.Stdin = strings.NewReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nft: %v: %s", err, out)
			}
			return nil
		},
		Restore: func() error {
			_, err := ns.Run("nft", "delete", "table", "netdev", table)
			return err
		},
	}
}

// matrixCell is one way the primary path dies; covered names the existing
// test that already proves it in that mode (skipped in the normal run).
type matrixCell struct {
	death   rig.Death
	covered map[string]string // mode -> test
	// oneWay: the road warrior's own sending on the primary still works,
	// so the gateway alone may route around the dead direction (RFC 3554
	// mode: to the road warrior's other address, once it sees the
	// primary's path dead) and the road warrior need not switch.
	oneWay bool
	// long: a fault that outlasts DPD (longTrial: the SAs are
	// renegotiated, exactly once); lossy: a primary that only loses
	// (lossyTrial: nothing dies, nothing may move to a worse path).
	long  *fault
	lossy bool
}

// name is the cell's row in the table.
func (m matrixCell) name() string {
	if m.long != nil {
		return m.long.name
	}
	return m.death.Name
}

func matrixCells(bed *netns.Bed) []matrixCell {
	gwDrop, rwDrop := silentDropAt(bed.GW), silentDropAt(bed.RW)
	gwDrop.Name, rwDrop.Name = "silent drop, gateway side", "silent drop, road-warrior side"
	cells := []matrixCell{
		{gwDrop, map[string]string{"rfc3554": "TestOuterTCPToPrimarySurvivesGatewaySideDrop"}, false, nil, false},
		{rwDrop, nil, false, nil, false},
		{rig.Death{Name: "one way: gateway to road warrior dropped",
			Kill:    func() error { return bed.RW.BlockIngress(netns.IfPrimary) },
			Restore: func() error { return bed.RW.UnblockIngress(netns.IfPrimary) }}, nil, true, nil, false},
		{rig.Death{Name: "primary link down",
			Kill:    func() error { return bed.RW.LinkDown(netns.IfPrimary) },
			Restore: func() error { return bed.RW.LinkUp(netns.IfPrimary) }}, map[string]string{"virtual": "TestVirtualIKEFailover"}, false, nil, false},
		{death: rig.Death{Name: lossyCellName}, lossy: true},
	}
	// The faults longer than DPD; in RFC 3554 mode TestReconnectAfterLongOutage
	// runs them in the normal suite.
	for _, f := range faults() {
		cells = append(cells, matrixCell{long: &f, covered: map[string]string{"rfc3554": "TestReconnectAfterLongOutage"}})
	}
	return cells
}

// matrixResult is one trial of one cell.
type matrixResult struct {
	outage     time.Duration // death to the first echo answered after it
	resumed    bool
	spisKept   bool
	tcpMoved   bool          // the established TCP stream moved while the primary was dead
	tcpStall   time.Duration // its longest stall from the death until it moved (or the restore)
	tcpOK      bool          // it survived: intact and flowing after the return to the primary
	logged     int           // "path switch" lines the trial added to the road warrior's log
	counted    int           // switches the trial added to its status count
	err        error
	spiChanges string
}

// saIdentity is every SPI of the connection as one side holds it: its IKE
// SAs' SPI pairs and its Child SAs' inbound/outbound SPIs, sorted.
func saIdentity(st daemon.Status) []string {
	var ids []string
	if st.IKE != nil {
		for _, sa := range st.IKE.SAs {
			ids = append(ids, "ike "+sa.SPIi+"/"+sa.SPIr)
		}
	}
	for _, ch := range st.Children {
		ids = append(ids, "child "+ch.SPIIn+"/"+ch.SPIOut)
	}
	slices.Sort(ids)
	return ids
}

func bothIdentities(c *reconnectCase) (string, error) {
	rw, err := statusOf("roadwarrior", c.rwCfg)
	if err != nil {
		return "", err
	}
	gw, err := statusOf("gateway", c.gwCfg)
	if err != nil {
		return "", err
	}
	return "rw[" + strings.Join(saIdentity(rw), " ") + "] gw[" + strings.Join(saIdentity(gw), " ") + "]", nil
}

// switchesLoggedCounted is the road warrior's "path switch" log lines and
// its status's switch count.
func switchesLoggedCounted(c *reconnectCase) (logged, counted int, err error) {
	st, err := statusOf("roadwarrior", c.rwCfg)
	if err != nil {
		return 0, 0, err
	}
	if st.Mobility == nil {
		return 0, 0, fmt.Errorf("road warrior status has no mobility")
	}
	return strings.Count(c.rw.Log(), `msg="path switch"`), st.Mobility.Switches, nil
}

// baseline is what a trial compares against afterwards: both daemons'
// SA identities and the road warrior's switches logged and counted.
type baseline struct {
	ids             string
	logged, counted int
}

func takeBaseline(c *reconnectCase) (baseline, error) {
	ids, err := bothIdentities(c)
	if err != nil {
		return baseline{}, err
	}
	logged, counted, err := switchesLoggedCounted(c)
	return baseline{ids, logged, counted}, err
}

// switches fills r's switch columns with what came since b.
func (b baseline) switches(c *reconnectCase, r *matrixResult) {
	logged, counted, err := switchesLoggedCounted(c)
	if err != nil && r.err == nil {
		r.err = err
	}
	r.logged, r.counted = logged-b.logged, counted-b.counted
}

// spis fills r's SPI columns: kept, or what changed since b.
func (b baseline) spis(c *reconnectCase, r *matrixResult) {
	after, err := bothIdentities(c)
	if err != nil && r.err == nil {
		r.err = err
	}
	r.spisKept = err == nil && after == b.ids
	if !r.spisKept {
		r.spiChanges = fmt.Sprintf("before %s, after %s", b.ids, after)
	}
}

// trialStream starts a trial's 10 ms UDP echo stream and checks that the
// established TCP stream flows before the fault (named in the error).
func trialStream(c *reconnectCase, tcp *rig.TCPStream, fault string) (*rig.Stream, error) {
	s, err := rig.StartStream(c.bed, 10*time.Millisecond)
	if err != nil {
		return nil, err
	}
	if ok, _ := grows(tcp, 10*time.Second); !ok {
		s.Close()
		return nil, fmt.Errorf("no TCP traffic before the %s", fault)
	}
	return s, nil
}

// grows reports whether s receives another 64 KiB within d, and when it
// had (zero if not).
func grows(s *rig.TCPStream, d time.Duration) (bool, time.Time) {
	from := s.Received()
	if rig.WaitFor(d, func() bool { return s.Received() > from+64<<10 }) {
		return true, time.Now()
	}
	return false, time.Time{}
}

// matrixTrial kills the primary while a UDP echo stream runs, waits for
// the stream to resume, checks that the established TCP stream moves
// while the primary is still dead, restores it, waits for the road
// warrior to use the primary again and checks the TCP stream once more.
// Its timeouts are generous: the machine is shared; the outage is
// measured, never asserted beyond them.
func matrixTrial(t *testing.T, c *reconnectCase, d rig.Death, tcp *rig.TCPStream) (r matrixResult) {
	if !rig.WaitFor(30*time.Second, func() bool { return pathsActive(t, c.rwCfg) == 2 && primaryInUse(t, c.rwCfg) }) {
		r.err = fmt.Errorf("not on an active primary with both paths active before the trial: %+v", status(t, "roadwarrior", c.rwCfg).Mobility)
		return r
	}
	base, err := takeBaseline(c)
	if err != nil {
		r.err = err
		return r
	}
	s, err := trialStream(c, tcp, "death")
	if err != nil {
		r.err = err
		return r
	}
	defer s.Close()
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(time.Time{}).IsZero() }) {
		r.err = fmt.Errorf("no UDP traffic before the death")
		return r
	}
	time.Sleep(300 * time.Millisecond)
	if err := d.Kill(); err != nil {
		r.err = err
		return r
	}
	dead := time.Now()
	var movedAt time.Time
	r.resumed = rig.WaitFor(30*time.Second, func() bool { return !s.FirstReplyAfter(dead).IsZero() })
	if r.resumed {
		r.outage = s.FirstReplyAfter(dead).Sub(dead)
		// The established connection must move while the primary is
		// still dead, not only once it is back (issue 16 item 3).
		r.tcpMoved, movedAt = grows(tcp, 20*time.Second)
		if !r.tcpMoved {
			var seen any = "no status"
			if st, err := statusOf("gateway", c.gwCfg); err == nil && st.IKE != nil && len(st.IKE.SAs) == 1 {
				seen = st.IKE.SAs[0].PeerEndpoints
			}
			r.err = fmt.Errorf("the established TCP stream stood still for 20 s after the UDP stream resumed, primary still dead; the gateway's view of the road warrior's endpoints: %+v", seen)
		}
	} else {
		r.err = fmt.Errorf("no traffic within 30 s of the death")
	}
	restored := time.Now()
	if err := d.Restore(); err != nil && r.err == nil {
		r.err = err
	}
	// The stall: the longest gap between reads from the death until the
	// stream had demonstrably moved (or the restore).
	to := restored
	if r.tcpMoved {
		to = movedAt
	}
	r.tcpStall = tcp.Stall(dead, to)
	if !rig.WaitFor(30*time.Second, func() bool { return primaryInUse(t, c.rwCfg) }) && r.err == nil {
		r.err = fmt.Errorf("no return to the primary within 30 s of the restore")
	}
	// Survived: flowing again after the return, every byte checked.
	flowing, _ := grows(tcp, 30*time.Second)
	r.tcpOK = flowing && tcp.Err() == nil
	if !r.tcpOK && r.err == nil {
		r.err = fmt.Errorf("the established TCP stream did not survive (error %v)", tcp.Err())
	}
	// Let a switch in flight land in both the log and the count.
	time.Sleep(500 * time.Millisecond)
	base.spis(c, &r)
	base.switches(c, &r)
	return r
}

// TestFailoverMatrix runs the cells in both modes, one trial each (the
// cells already covered elsewhere are skipped); ROAMSEC_MATRIX_TRIALS=N
// runs every cell N times and logs a table per mode (make bench-matrix).
func TestFailoverMatrix(t *testing.T) {
	trials := matrixTrials()
	measuring := trials > 0
	if !measuring {
		trials = 1
	}
	modes := []struct {
		name    string
		configs func(t *testing.T) (gwCfg, rwCfg string)
	}{
		// Short DPD in both modes (2 s, 3 retransmissions from 250 ms):
		// the faults longer than DPD stay under 10 s each.
		{"rfc3554", reconnectConfigs},
		{"virtual", func(t *testing.T) (string, string) {
			gw, rw := virtualIKEConfigs(t)
			withFastDPD(t, "  dpd: 10s\n", gw, rw)
			return gw, rw
		}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			bed := netns.New(t)
			gwCfg, rwCfg := mode.configs(t)
			gw, rw := up(t, bed, gwCfg, rwCfg)
			c := &reconnectCase{bed: bed, gw: gw, rw: rw, gwCfg: gwCfg, rwCfg: rwCfg, owner: t}
			waitOneConnection(t, c, 30*time.Second)
			if err := rig.EchoServer(bed); err != nil {
				t.Fatal(err)
			}
			m := &matrixMode{name: mode.name, c: c, trials: trials}
			defer m.closeTCP()
			var rows []string
			for _, cell := range matrixCells(bed) {
				if by := cell.covered[mode.name]; by != "" && !measuring {
					t.Logf("%s: covered by %s, skipped (ROAMSEC_MATRIX_TRIALS=N runs it)", cell.name(), by)
					continue
				}
				var results []matrixResult
				t.Run(strings.ReplaceAll(cell.name(), " ", "_"), func(t *testing.T) { m.runCell(t, cell, &results) })
				rows = append(rows, matrixRow(cell.name(), results))
			}
			if measuring {
				t.Logf("failover matrix, %s mode, IKEv2, %d trials per cell (outage: death to first echo answered; after a fault past DPD: its end to the first; lossy: longest gap):\n%-40s | %-26s | %-17s | %-30s | %s\n%s",
					mode.name, trials, "cell", "outage median (min-max)", "SPIs", "TCP moved/survived, stall med", "switches logged/counted", strings.Join(rows, "\n"))
			}
		})
	}
}

// matrixMode is one mode's bed while its cells run: the connection and
// the established TCP stream every cell carries (dialled again when a
// cell broke it).
type matrixMode struct {
	name   string
	c      *reconnectCase
	trials int
	tcp    *rig.TCPStream
}

func (m *matrixMode) closeTCP() {
	if m.tcp != nil {
		m.tcp.Close()
		m.tcp = nil
	}
}

// dial starts the TCP stream, bound to the address the road warrior's
// traffic comes from: its primary address (RFC 3554: the hard case, the
// gateway's outer destination is that address) or its virtual address
// (read again: a reconnect may lease another one).
func (m *matrixMode) dial(t *testing.T) {
	m.closeTCP()
	local := netns.RWPrimary4
	if m.name == "virtual" {
		vip := status(t, "roadwarrior", m.c.rwCfg).IKE.VirtualIP
		if len(vip) != 1 {
			t.Fatalf("virtual addresses %v, want one", vip)
		}
		local = netip.MustParseAddr(vip[0])
	}
	tcp, err := rig.StartTCPStream(m.c.bed, local, 1400, 5*time.Millisecond)
	if err != nil {
		t.Fatalf("%v\nrw:\n%s\ngw:\n%s", err, m.c.rw.Log(), m.c.gw.Log())
	}
	m.tcp = tcp
}

// runCell runs a cell's trials and checks each, appending to results as
// it goes (a trial that ends the subtest keeps the ones before it).
func (m *matrixMode) runCell(t *testing.T, cell matrixCell, results *[]matrixResult) {
	c := m.c
	for i := range m.trials {
		if m.tcp == nil {
			m.dial(t)
		}
		var r matrixResult
		switch {
		case cell.long != nil:
			r = longTrial(t, c, cell.long, m.tcp)
		case cell.lossy:
			r = lossyTrial(t, c, m.tcp)
		default:
			r = matrixTrial(t, c, cell.death, m.tcp)
		}
		*results = append(*results, r)
		t.Logf("trial %d: outage %v, resumed %v, SPIs kept %v, TCP moved %v (stall %v), survived %v, switches logged %d counted %d",
			i+1, r.outage.Round(time.Millisecond), r.resumed, r.spisKept, r.tcpMoved, r.tcpStall.Round(time.Millisecond), r.tcpOK, r.logged, r.counted)
		if r.err != nil {
			t.Errorf("trial %d: %v", i+1, r.err)
		}
		// A failover moves the SAs (RFC 3554 §3); only a fault past DPD
		// renegotiates them (the gateway deleted them, RFC 7296 §2.4).
		if !r.spisKept && cell.long == nil {
			t.Errorf("trial %d: the failover renegotiated: %s", i+1, r.spiChanges)
		}
		if cell.long != nil {
			t.Logf("trial %d: SAs %s", i+1, r.spiChanges)
		}
		if r.logged != r.counted {
			t.Errorf("trial %d: %d path switches logged, %d counted", i+1, r.logged, r.counted)
		}
		if r.logged == 0 && !cell.oneWay && cell.long == nil && !cell.lossy {
			t.Errorf("trial %d: no path switch logged", i+1)
		}
		if !r.tcpOK {
			m.closeTCP() // the next trial needs a connection that flows
		}
	}
	if t.Failed() {
		t.Logf("rw:\n%s\ngw:\n%s", c.rw.Log(), c.gw.Log())
	}
}

// matrixRow is one line of the table: the outage's median and range over
// the trials that resumed, how many trials kept their SPIs and their TCP
// connection, and the switches logged against those counted.
func matrixRow(cell string, rs []matrixResult) string {
	if len(rs) == 0 {
		return fmt.Sprintf("%-40s | no trial ran", cell)
	}
	var outages []time.Duration
	var stalls []time.Duration
	var kept, moved, tcp, logged, counted int
	for _, r := range rs {
		stalls = append(stalls, r.tcpStall)
		if r.tcpMoved {
			moved++
		}
		if r.resumed {
			outages = append(outages, r.outage)
		}
		if r.spisKept {
			kept++
		}
		if r.tcpOK {
			tcp++
		}
		logged += r.logged
		counted += r.counted
	}
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	out := "no recovery"
	if len(outages) > 0 {
		slices.Sort(outages)
		out = fmt.Sprintf("%s (%s-%s), %d/%d", ms(outages[len(outages)/2]), ms(outages[0]), ms(outages[len(outages)-1]), len(outages), len(rs))
	}
	slices.Sort(stalls)
	tcpCol := fmt.Sprintf("%d/%d moved, %d/%d survived, %s", moved, len(rs), tcp, len(rs), ms(stalls[len(stalls)/2]))
	spis := fmt.Sprintf("kept %d, new %d", kept, len(rs)-kept)
	return fmt.Sprintf("%-40s | %-26s | %-17s | %-30s | %d/%d", cell, out, spis, tcpCol, logged, counted)
}
