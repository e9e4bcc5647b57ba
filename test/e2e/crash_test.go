package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// crashServeBound is how long after a restart the tunnel must carry
// traffic again. The goal is a second; the bound is generous because the
// machine's cores are shared, and the measured figures are logged.
const crashServeBound = 5 * time.Second

// A crash phase: how the test reaches the moment, then kills.
type crashPhase struct {
	name string
	// kill waits for a random moment of the phase in the running road
	// warrior p (started at t0) and SIGKILLs it; it returns what it did.
	kill func(t *testing.T, bed *netns.Bed, p *rig.Proc, rnd *rand.Rand) string
	// after undoes what the phase did to the bed (a downed link).
	after func(bed *netns.Bed)
}

// TestSIGKILLAtRandomMomentsThenServe kills the real road-warrior daemon
// with SIGKILL (which no process can catch: the OOM killer, systemctl
// kill, docker kill) at random moments — during start-up, connected,
// right inside a Child SA rekey, during a failover — and starts it again
// each time: the new instance must replace what the dead one left in the
// kernel (the RFC 3554 bypass rules), negotiate again (INITIAL_CONTACT
// replaces the gateway's old IKE SA), and carry traffic. At the end a
// clean stop leaves nothing behind. The gateway is killed the same way
// (serving, during its start-up, right after a rekey) and must be up
// again within the bound each time. ROAMSEC_CRASH_KILLS sets the number
// of road-warrior kills (default 8), ROAMSEC_CRASH_GATEWAY_KILLS the
// gateway's restarts (default 3: one per phase); `make bench-crash` runs
// 40 and 12. The seed is logged (ROAMSEC_CRASH_SEED repeats a run).
func TestSIGKILLAtRandomMomentsThenServe(t *testing.T) {
	kills := envInt("ROAMSEC_CRASH_KILLS", 8)
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("ROAMSEC_CRASH_SEED"), 10, 64); err == nil {
		seed = v
	}
	rnd := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d, %d kills", seed, kills)

	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "3s")
	// Short retransmissions, so that after a gateway kill the road
	// warrior's DPD gives up on the dead IKE SA in about 2 s rather than
	// after the default schedule (the restarted gateway drops the old
	// SPIs silently: "unknown IKE SPI").
	data, _ := os.ReadFile(rwCfg)
	os.WriteFile(rwCfg, []byte(strings.Replace(string(data), "  dpd: 2s\n", "  dpd: 2s\n  retransmit_timeout: 250ms\n  retransmit_tries: 3\n", 1)), 0o600)
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	s, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	phases := crashPhases()
	var serve []time.Duration
	var log strings.Builder
	var rw *rig.Proc
	for i := 0; i <= kills; i++ {
		t0 := time.Now()
		rw, err = rig.Launch(bed.RW, filepath.Join(bin, "roadwarrior"), "-config", rwCfg)
		if err != nil {
			t.Fatal(err)
		}
		first := i == 0 // the first start is not a restart
		ph := phases[i%len(phases)]
		var what string
		if i < kills && ph.name == "start-up" { // killed before it serves
			what = ph.kill(t, bed, rw, rnd)
			fmt.Fprintf(&log, "start %d: %s\n", i, what)
			continue
		}
		if !rig.WaitFor(crashServeBound, func() bool { return !s.FirstReplyAfter(t0).IsZero() || rw.Exited() }) || rw.Exited() {
			rw.Kill()
			t.Fatalf("start %d (after: %s): no traffic through the tunnel within %v of the start\nrw:\n%s\ngw:\n%s\n%s", i, what, crashServeBound, rw.Log(), gw.Log(), netState(bed))
		}
		d := s.FirstReplyAfter(t0).Sub(t0)
		if !first {
			serve = append(serve, d)
		}
		if i == kills {
			break
		}
		what = ph.kill(t, bed, rw, rnd)
		fmt.Fprintf(&log, "start %d: serving after %v; %s\n", i, d.Round(time.Millisecond), what)
		if ph.after != nil {
			ph.after(bed)
		}
	}
	// The gateway killed too, at random moments of its own: serving,
	// during its start-up (a second instance killed before or just after
	// its tunnel is up), right after a Child SA rekey. Each restart must be
	// up (its sockets and TUN device: "tunnel up") within crashServeBound;
	// the road warrior's traffic resumes once its DPD (2 s) has found the
	// old IKE SA dead and it has connected again.
	gwKills := envInt("ROAMSEC_CRASH_GATEWAY_KILLS", 3)
	var resume, gwUp []time.Duration
	killed := 0
	for i := range gwKills {
		what := killGatewayAt(t, bed, gw, gwCfg, i%3, rnd, &killed)
		t0 := time.Now()
		gw, err = rig.Start(bed.GW, filepath.Join(bin, "gateway"), crashServeBound, "-config", gwCfg)
		if err != nil {
			t.Fatalf("gateway restart %d (after: %s): %v", i, what, err)
		}
		up := time.Since(t0)
		gwUp = append(gwUp, up)
		if !rig.WaitFor(30*time.Second, func() bool { return !s.FirstReplyAfter(t0).IsZero() }) {
			t.Fatalf("gateway restart %d (after: %s): no traffic within 30 s\nrw:\n%s\ngw:\n%s", i, what, rw.Log(), gw.Log())
		}
		resume = append(resume, s.FirstReplyAfter(t0).Sub(t0))
		fmt.Fprintf(&log, "gateway: %s; restarted, tunnel up after %v; traffic again after %v\n", what, up.Round(time.Millisecond), resume[i].Round(time.Millisecond))
	}
	if len(gwUp) > 0 {
		sort.Slice(gwUp, func(a, b int) bool { return gwUp[a] < gwUp[b] })
		t.Logf("gateway: %d SIGKILLs over %d restarts; start → tunnel up min %v median %v max %v",
			killed, gwKills, gwUp[0].Round(time.Millisecond), gwUp[len(gwUp)/2].Round(time.Millisecond), gwUp[len(gwUp)-1].Round(time.Millisecond))
	}
	if err := rw.Stop(10 * time.Second); err != nil {
		t.Fatalf("clean stop after %d kills: %v\n%s", kills, err, rw.Log())
	}
	t.Logf("kills and restarts:\n%s", log.String())
	if rules, _ := bed.RW.Run("ip", "rule"); strings.Contains(rules, "fwmark") {
		t.Fatalf("rule left after the clean stop:\n%s", rules)
	}
	if links, _ := bed.RW.Run("ip", "-br", "link"); strings.Contains(links, "roamsec0") {
		t.Fatalf("TUN left after the clean stop:\n%s", links)
	}
	sort.Slice(serve, func(a, b int) bool { return serve[a] < serve[b] })
	if len(serve) > 0 {
		over := 0
		for _, d := range serve {
			if d > time.Second {
				over++
			}
		}
		t.Logf("%d kills, %d restarts that had to serve: start → first answer through the tunnel min %v median %v max %v; %d over 1 s",
			kills, len(serve), serve[0].Round(time.Millisecond), serve[len(serve)/2].Round(time.Millisecond), serve[len(serve)-1].Round(time.Millisecond), over)
	}
}

// killGatewayAt SIGKILLs the running gateway gw at a random moment of
// phase 0 (serving), 1 (then a new instance during its start-up, killed
// too) or 2 (right after a Child SA rekey), counting kills; it returns
// what it did.
func killGatewayAt(t *testing.T, bed *netns.Bed, gw *rig.Proc, cfg string, phase int, rnd *rand.Rand, killed *int) string {
	t.Helper()
	switch phase {
	case 2:
		n := strings.Count(gw.Log(), "Child SA rekeyed")
		if !rig.WaitFor(10*time.Second, func() bool { return strings.Count(gw.Log(), "Child SA rekeyed") > n }) {
			t.Fatalf("gateway: no Child SA rekey within 10 s:\n%s", gw.Log())
		}
		d := time.Duration(rnd.Int64N(int64(20 * time.Millisecond)))
		time.Sleep(d)
		gw.Kill()
		*killed++
		return fmt.Sprintf("SIGKILL %v after a Child SA rekey (rekey)", d.Round(time.Millisecond))
	}
	d := time.Duration(rnd.Int64N(int64(time.Second)))
	time.Sleep(d)
	gw.Kill()
	*killed++
	what := fmt.Sprintf("SIGKILL %v after serving", d.Round(time.Millisecond))
	if phase == 0 {
		return what
	}
	p, err := rig.Launch(bed.GW, filepath.Join(bin, "gateway"), "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	d = time.Duration(rnd.Int64N(int64(150 * time.Millisecond)))
	time.Sleep(d)
	up := strings.Contains(p.Log(), "tunnel up")
	p.Kill()
	*killed++
	return fmt.Sprintf("%s, then its next instance SIGKILLed %v after its start (start-up; tunnel up: %v)", what, d.Round(time.Millisecond), up)
}

func crashPhases() []crashPhase {
	return []crashPhase{
		{name: "start-up", kill: func(t *testing.T, bed *netns.Bed, p *rig.Proc, rnd *rand.Rand) string {
			d := time.Duration(rnd.Int64N(int64(150 * time.Millisecond)))
			time.Sleep(d)
			up := strings.Contains(p.Log(), "tunnel up")
			p.Kill()
			return fmt.Sprintf("SIGKILL %v after the start (start-up; tunnel up: %v)", d.Round(time.Millisecond), up)
		}},
		{name: "connected", kill: func(t *testing.T, bed *netns.Bed, p *rig.Proc, rnd *rand.Rand) string {
			d := time.Duration(rnd.Int64N(int64(time.Second)))
			time.Sleep(d)
			p.Kill()
			return fmt.Sprintf("SIGKILL %v after serving (connected)", d.Round(time.Millisecond))
		}},
		{name: "rekey", kill: func(t *testing.T, bed *netns.Bed, p *rig.Proc, rnd *rand.Rand) string {
			n := strings.Count(p.Log(), "Child SA rekeyed")
			if !rig.WaitFor(10*time.Second, func() bool { return strings.Count(p.Log(), "Child SA rekeyed") > n }) {
				p.Kill()
				t.Fatalf("no Child SA rekey within 10 s:\n%s", p.Log())
			}
			// The rekey's CREATE_CHILD_SA is done; its DELETE of the old
			// pair is in flight now.
			d := time.Duration(rnd.Int64N(int64(20 * time.Millisecond)))
			time.Sleep(d)
			p.Kill()
			return fmt.Sprintf("SIGKILL %v after a Child SA rekey completed, its DELETE in flight (rekey)", d.Round(time.Millisecond))
		}},
		{name: "failover", kill: func(t *testing.T, bed *netns.Bed, p *rig.Proc, rnd *rand.Rand) string {
			if err := bed.RW.LinkDown(netns.IfPrimary); err != nil {
				t.Fatal(err)
			}
			d := time.Duration(rnd.Int64N(int64(1500 * time.Millisecond)))
			time.Sleep(d)
			switched := strings.Contains(p.Log(), "path switch")
			p.Kill()
			return fmt.Sprintf("SIGKILL %v after the primary link went down (failover; switched: %v)", d.Round(time.Millisecond), switched)
		}, after: func(bed *netns.Bed) { bed.RW.LinkUp(netns.IfPrimary) }},
	}
}

// TestConnectCLIEndsCleanlyOnSIGPIPEAndSIGHUP: `roadwarrior connect gw |
// head -3` — once the reader has left, the next line written raises
// SIGPIPE; and closing the terminal sends SIGHUP. Either ends the
// connection as Ctrl-C does: DELETE to the gateway, exit 0, no TUN device
// and no rule left (the Go runtime's default would die at once on
// SIGPIPE and leave both the rules and the gateway's IKE SA).
func TestConnectCLIEndsCleanlyOnSIGPIPEAndSIGHUP(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })

	t.Run("SIGPIPE", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := bed.RW.Command(filepath.Join(bin, "roadwarrior"), "connect", netns.GatewayName, "-config", rwCfg)
		var errb strings.Builder
		cmd.Stdout, cmd.Stderr = w, &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// Read up to "connected", as head would read its lines, then leave.
		var out strings.Builder
		buf := make([]byte, 4096)
		for !strings.Contains(out.String(), "connected — Ctrl-C") {
			n, err := r.Read(buf)
			if err != nil {
				t.Fatalf("connect's output ended before it connected: %v\n%s\n%s", err, out.String(), errb.String())
			}
			out.Write(buf[:n])
		}
		r.Close()
		// Something to say: a path goes down, connect prints it. The
		// secondary, not the primary: the DELETE must not depend on the
		// failover having happened before connect ends (on a loaded
		// machine it may not have).
		if err := bed.RW.LinkDown(netns.IfSecondary); err != nil {
			t.Fatal(err)
		}
		defer bed.RW.LinkUp(netns.IfSecondary)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("after SIGPIPE: %v\n%s", err, errb.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("connect still running 20 s after its reader left\n%s", errb.String())
		}
		if !rig.WaitFor(5*time.Second, func() bool { return strings.Count(gw.Log(), "deleted by the peer") >= 1 }) {
			t.Fatalf("gateway did not get the DELETE:\n%s", gw.Log())
		}
		noLeftovers(t, bed.RW)
	})
	t.Run("SIGHUP", func(t *testing.T) {
		deletes := strings.Count(gw.Log(), "deleted by the peer")
		p := connect(t, bed, netns.GatewayName, "-config", rwCfg)
		waitConnected(t, p, gw.Log)
		p.cmd.Process.Signal(syscall.SIGHUP)
		if code := p.wait(15 * time.Second); code != 0 {
			t.Fatalf("after SIGHUP: exit %d\n%s", code, p)
		}
		if !strings.Contains(p.Stdout(), "disconnected (SIGHUP: the terminal closed): IKE SA deleted") {
			t.Fatalf("no disconnect line:\n%s", p)
		}
		if !rig.WaitFor(5*time.Second, func() bool { return strings.Count(gw.Log(), "deleted by the peer") > deletes }) {
			t.Fatalf("gateway did not get the DELETE:\n%s", gw.Log())
		}
		noLeftovers(t, bed.RW)
	})
}

// TestRoadWarriorRetriesAnUnresolvableGateway: a laptop boots before its
// network: the gateway's name does not resolve. The road-warrior daemon
// (not connect, which fails at once with exit 6) keeps its tunnel device
// up, says it retries, and connects once the name resolves.
func TestRoadWarriorRetriesAnUnresolvableGateway(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	data, _ := os.ReadFile(rwCfg)
	const late = "gw-late.example"
	os.WriteFile(rwCfg, []byte(strings.Replace(string(data), "gateway: 192.0.2.1", "gateway: "+late, 1)), 0o600)
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(10*time.Second, func() bool { return strings.Contains(rw.Log(), "cannot resolve the gateway's name yet; retrying") }) || rw.Exited() {
		t.Fatalf("no retry of the unresolvable name (exited: %v):\n%s", rw.Exited(), rw.Log())
	}
	time.Sleep(2 * time.Second)
	if rw.Exited() {
		t.Fatalf("the road warrior gave up:\n%s", rw.Log())
	}
	// The network comes: the name resolves (appended in place: `ip netns
	// exec` bind-mounted this file over /etc/hosts).
	f, err := os.OpenFile("/etc/netns/"+bed.RW.Name+"/hosts", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%s\t%s\n", netns.GWPrimary4, late)
	f.Close()
	resolvable := time.Now()
	if !rig.WaitFor(60*time.Second, func() bool { return strings.Count(rw.Log(), "Child SA installed") >= 2 }) {
		t.Fatalf("no Child SAs after the name became resolvable:\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	t.Logf("connected %v after the name became resolvable (retry back-off 1 s doubling to 30 s; Go rereads /etc/hosts at most every 5 s)", time.Since(resolvable).Round(time.Millisecond))
	if out, err := bed.RW.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", netns.Srv4.String()); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
}
