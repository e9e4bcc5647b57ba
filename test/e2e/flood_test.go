package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/flood"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// The IKE side under attack (issue 11), small scale: from the server's
// namespace, an attacker with sixteen real addresses answers cookies on UDP
// 500 and on UDP 4500 (non-ESP marker), two of them sending RFC 7383
// fragment sets that never complete, while spoofed IKE_SA_INIT comes from
// addresses nobody has; ESP flows through an established tunnel
// meanwhile. The gateway's bounds are configured small, so each one is hit.
// A real road warrior still connects during the attack; the gateway's RSS
// stays under the bound the configuration implies; status counts each kind
// of drop; SIGTERM ends the gateway within 2 s with the half-open SAs
// still there.

const floodLimits = `  cookie_threshold: 16
  half_open_max: 500
  half_open_per_source: 64
  half_open_timeout: 4s
  fragment_memory: 1048576
  fragment_memory_per_sa: 65536
  queue: 256
`

// floodRSSBound is the gateway's configured memory bound: its Go runtime
// gets it as GOMEMLIMIT (as a unit's Environment= would give it), so the
// collector keeps garbage down as the process nears it; what the IKE side
// may hold live within the limits above (500 half-open SAs of about 5 KiB,
// 1 MiB of fragments, 512 KiB of queue) fits well inside. Unbounded, the
// same flood holds tens of thousands of half-open SAs and every fragment.
const floodRSSBound = 96 << 20

func TestIKEFloodBounded(t *testing.T) {
	if os.Getenv("FLOOD_GCTRACE") != "" {
		t.Setenv("GODEBUG", "gctrace=1")
	}
	t.Setenv("GOMEMLIMIT", fmt.Sprint(floodRSSBound)) // inherited by the daemons
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	data, _ := os.ReadFile(gwCfg)
	cfg := strings.Replace(string(data), "log: {level: debug}", "log: {level: info}", 1)
	cfg = strings.Replace(cfg, "  dpd: 2s\n", "  dpd: 2s\n"+floodLimits, 1)
	os.WriteFile(gwCfg, []byte(cfg), 0o600)
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Count(rw.Log(), "Child SA installed") >= 2 }) {
		t.Fatalf("no Child SAs\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	srcs, err := flood.AddSources(bed.Srv, netns.IfServer, netip.MustParsePrefix("100.64.0.0/24"), 16)
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.GW.AddRoute(netip.MustParsePrefix("100.64.0.0/10"), netns.Srv4); err != nil {
		t.Fatal(err)
	}
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	base, err := gw.RSS()
	if err != nil {
		t.Fatal(err)
	}

	target := netns.GWPrimary4
	// One address sends more than its share could hold; eleven more
	// together more than the table holds.
	heavy := &flood.CookieAttack{Target: target, Port: 500, Sources: srcs[:1], Rate: 600}
	cookies500 := &flood.CookieAttack{Target: target, Port: 500, Sources: srcs[1:12], Rate: 1100}
	frags := &flood.CookieAttack{Target: target, Port: 500, Sources: srcs[12:14], Rate: 20, Fragments: 64, FragSize: 8000}
	cookies4500 := &flood.CookieAttack{Target: target, Port: 4500, Sources: srcs[14:], Rate: 300}
	spoof := &flood.Spoof{Target: target, From: netip.MustParsePrefix("100.96.0.0/12"), Rate: 1000}
	ctx, stop := context.WithCancel(context.Background())
	var attackers sync.WaitGroup
	errs := make(chan error, 5)
	defer func() { stop(); attackers.Wait() }()
	// The heavy address alone first: once the others flood too, the IKE
	// queue serves every address in turn (datapath's initLane), so no one
	// address gets its IKE_SA_INIT handled much faster than the table
	// turns over; alone, it reaches its half-open share.
	attackers.Go(func() { errs <- heavy.Run(ctx, bed.Srv) })
	if !rig.WaitFor(20*time.Second, func() bool {
		time.Sleep(200 * time.Millisecond) // a status call each turn, not back to back
		return gatewayStatus(t, bed, gwCfg).IKE.Counters.Drops["per_source_cap"] > 0
	}) {
		t.Errorf("one address flooding alone never met its half-open share (%d attempts): %v", heavy.Counts.Sent.Load(), gatewayStatus(t, bed, gwCfg).IKE.Counters.Drops)
	}
	for _, a := range []*flood.CookieAttack{cookies500, frags, cookies4500} {
		attackers.Go(func() { errs <- a.Run(ctx, bed.Srv) })
	}
	attackers.Go(func() { errs <- spoof.Run(ctx, bed.Srv) })

	var maxRSS int64
	var rssMu sync.Mutex
	rssDone := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-rssDone:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if r, err := gw.RSS(); err == nil {
				rssMu.Lock()
				maxRSS = max(maxRSS, r)
				rssMu.Unlock()
			}
		}
	})
	defer func() { close(rssDone); sampler.Wait() }()

	// ESP through the established tunnel while the flood runs.
	time.Sleep(time.Second)
	s, err := rig.StartStream(bed, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	s.Close()
	sent, answered := s.Counts()
	t.Logf("ESP during the flood: %d of %d datagrams echoed", answered, sent)
	if answered < sent*9/10 {
		t.Errorf("ESP during the flood: only %d of %d datagrams echoed", answered, sent)
	}

	// A real road warrior connects during the flood: the daemon restarted.
	if err := rw.Stop(5 * time.Second); err != nil {
		t.Fatalf("road warrior stop: %v", err)
	}
	t0 := time.Now()
	rw2, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 30*time.Second, "-config", rwCfg)
	if err != nil {
		t.Fatalf("road warrior during the flood: %v\ngw:\n%s", err, tail(gw.Log(), 40))
	}
	t.Cleanup(func() { rw2.Stop(5 * time.Second) })
	if !rig.WaitFor(30*time.Second, func() bool { return strings.Contains(rw2.Log(), "Child SA installed") }) {
		t.Fatalf("road warrior has no Child SA during the flood\nrw:\n%s\ngw:\n%s", rw2.Log(), tail(gw.Log(), 40))
	}
	t.Logf("road warrior connected during the flood in %v", time.Since(t0).Round(time.Millisecond))
	if out, err := bed.RW.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", netns.Srv4.String()); err != nil {
		t.Errorf("ping through the new tunnel during the flood: %v\n%s", err, out)
	}

	st := gatewayStatus(t, bed, gwCfg)
	c := st.IKE.Counters
	t.Logf("attack: heavy %v; 500 %v; fragments %v; 4500 %v; spoofed %v", &heavy.Counts, &cookies500.Counts, &frags.Counts, &cookies4500.Counts, &spoof.Counts)
	t.Logf("gateway: %d half-open, cookie mode %v (%d switches), %d cookies, %d fragment bytes, drops %v", c.HalfOpen, c.CookieMode, c.CookieSwitches, c.Cookies, c.FragmentBytes, c.Drops)
	if c.HalfOpen == 0 || c.HalfOpen > 500 || !c.CookieMode || c.CookieSwitches == 0 || c.Cookies == 0 {
		t.Errorf("half-open %d (bound 500), cookie mode %v, %d switches, %d cookies: want some, within the bound, cookies on", c.HalfOpen, c.CookieMode, c.CookieSwitches, c.Cookies)
	}
	for _, r := range []string{"per_source_cap", "half_open_cap", "fragment_memory"} {
		if c.Drops[r] == 0 {
			t.Errorf("no %s drops counted: %v", r, c.Drops)
		}
	}
	if c.FragmentBytes > 1<<20 {
		t.Errorf("%d bytes of fragments held, bound 1 MiB", c.FragmentBytes)
	}
	rssMu.Lock()
	peak := maxRSS
	rssMu.Unlock()
	t.Logf("gateway RSS %d MiB before, %d MiB at most during the flood (bound %d MiB)", base>>20, peak>>20, floodRSSBound>>20)
	if peak > floodRSSBound {
		t.Errorf("gateway RSS %d MiB, above the bound %d MiB", peak>>20, floodRSSBound>>20)
	}

	if os.Getenv("FLOOD_GCTRACE") != "" {
		for _, l := range strings.Split(gw.Log(), "\n") {
			if strings.HasPrefix(l, "gc ") {
				t.Log(l)
			}
		}
	}
	// SIGTERM with the half-open SAs there, the flood still on.
	t0 = time.Now()
	err = gw.Stop(2 * time.Second)
	t.Logf("gateway stopped %v after SIGTERM with %d half-open SAs", time.Since(t0).Round(time.Millisecond), c.HalfOpen)
	if err != nil {
		t.Errorf("gateway did not end within 2 s of SIGTERM: %v", err)
	}
	stop()
	attackers.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("attacker: %v", err)
		}
	}
}

func gatewayStatus(t *testing.T, bed *netns.Bed, gwCfg string) daemon.Status {
	t.Helper()
	out, errOut, code := runCLI(t, bed.GW, "gateway", "status", "-json", "-config", gwCfg)
	var st daemon.Status
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.IKE == nil || st.IKE.Counters == nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	return st
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return fmt.Sprint(strings.Join(l, "\n"))
}
