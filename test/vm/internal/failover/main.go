// Command failover is the failover scenario that runs inside the VM (real
// kernel, kernel SCTP available). For each address family asked for
// (-families: IPv4, IPv6 or both, one after the other) it builds the test
// bed, starts the gateway and the road warrior with that family's configs
// (the road warrior's mobility paths are of that family, so its path set
// is driven by that family's kernel SCTP association), streams UDP through
// the tunnel to the server's address of that family, and runs trials of
// both kinds of death of rig.Deaths: the primary link goes down; the link
// stays up but an nftables netdev ingress rule drops everything on both
// ends (netns.Bed.Blackhole's rule, as on the host bed, put in by the
// same NS.BlockIngress; the death is timed from the road warrior's end,
// see deaths). Each trial checks that traffic resumes over the secondary, that the
// road warrior's SAs are the same ones (same SPIs) with the outbound SA's
// outer destination moved to the gateway's secondary address of that
// family, that a silent drop's switch came from an SCTP notification, and
// that traffic returns to the primary once it is restored (and the SAs
// with it). It prints one RESULT line per trial (times, the detector
// that caused the failover, the switches in the trial: 2 unless TCG's
// jitter made a live path potentially failed for a moment, whose switches
// are then printed) and PASS or FAIL with the medians; it exits non-zero
// on FAIL.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

func main() {
	bin := flag.String("bin", "/usr/local/bin", "directory of the gateway and roadwarrior binaries")
	gwCfg := flag.String("gw", "/etc/roamsec/gateway.yaml", "gateway config (its sctp_listen must hold the gateway's addresses of every family run)")
	rwCfg := flag.String("rw", "/etc/roamsec/roadwarrior.yaml", "road warrior config with IPv4 mobility paths")
	rw6Cfg := flag.String("rw6", "/etc/roamsec/roadwarrior6.yaml", "road warrior config with IPv6 mobility paths")
	families := flag.String("families", "4,6", "address families to run, in order: 4, 6 or 4,6")
	trials := flag.Int("trials", 3, "trials per kind of death and family")
	flag.Parse()
	var fams []family
	for _, f := range strings.Split(*families, ",") {
		switch strings.TrimSpace(f) {
		case "4":
			fams = append(fams, family{"IPv4", netns.Srv4, *rwCfg, netns.GWPrimary4, netns.GWSecondary4, netns.RWPrimary4, netns.RWSecondary4})
		case "6":
			fams = append(fams, family{"IPv6", netns.Srv6, *rw6Cfg, netns.GWPrimary6, netns.GWSecondary6, netns.RWPrimary6, netns.RWSecondary6})
		default:
			fmt.Printf("FAIL: -families %q: want 4, 6 or 4,6\n", *families)
			os.Exit(2)
		}
	}
	var summary []string
	failed := false
	for _, f := range fams {
		s, err := run(*bin, *gwCfg, f, *trials)
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", f.name, err)
			failed = true
			continue
		}
		summary = append(summary, s)
	}
	if failed {
		fmt.Println("FAIL:", strings.Join(summary, "; "))
		os.Exit(1)
	}
	fmt.Println("PASS:", strings.Join(summary, "; "))
}

// family is one address family's run: the server address the stream goes
// to, the road warrior config whose mobility paths are of this family, and
// the bed's addresses of this family on both paths.
type family struct {
	name                   string
	srv                    netip.Addr
	rwCfg                  string
	gwPrimary, gwSecondary netip.Addr
	rwPrimary, rwSecondary netip.Addr
}

var spiRe = regexp.MustCompile(`spi=(0x[0-9a-f]+)`)

// status is the part of `roadwarrior status -json` the checks read.
type status struct {
	SAs []struct {
		SPI   string `json:"spi"`
		Dir   string `json:"dir"`
		Outer string `json:"outer"`
	} `json:"sas"`
	Mobility *struct {
		KernelSCTP string       `json:"kernel_sctp"`
		Paths      []pathStatus `json:"paths"`
	} `json:"mobility"`
}

type pathStatus struct {
	Name  string `json:"name"`
	Local string `json:"local"`
	Peer  string `json:"peer"`
	State string `json:"state"`
	InUse bool   `json:"in_use"`
}

func readStatus(bin, cfg string) (status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, code, err := rig.Run(ctx, nil, filepath.Join(bin, "roadwarrior"), "status", "-config", cfg, "-json")
	var st status
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d", code)
	}
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	if err == nil && st.Mobility == nil {
		err = errors.New("no mobility section")
	}
	if err != nil {
		return st, fmt.Errorf("roadwarrior status: %v: %s", err, out)
	}
	return st, nil
}

// spis is the SA set, "spi/dir" sorted.
func (st status) spis() []string {
	var s []string
	for _, sa := range st.SAs {
		s = append(s, sa.SPI+"/"+sa.Dir)
	}
	slices.Sort(s)
	return s
}

// paths are the road warrior's paths of family f (a dual-stack config
// has one path set per family).
func (st status) paths(f family) (ps []pathStatus) {
	for _, p := range st.Mobility.Paths {
		if a, err := netip.ParseAddr(p.Peer); err == nil && a.Is4() == f.srv.Is4() {
			ps = append(ps, p)
		}
	}
	return ps
}

// inUse is the name and peer of the path of family f in use.
func (st status) inUse(f family) (string, string) {
	for _, p := range st.paths(f) {
		if p.InUse {
			return p.Name, p.Peer
		}
	}
	return "", ""
}

// outerDsts are the outer destinations of the road-warrior-mode outbound
// SAs (outer "src=inner dst=A,B"): where the tunnel's ESP goes now.
func (st status) outerDsts() []string {
	var ds []string
	for _, sa := range st.SAs {
		if sa.Dir != "out" || !strings.HasPrefix(sa.Outer, "src=inner dst=") {
			continue
		}
		d := strings.Fields(strings.TrimPrefix(sa.Outer, "src=inner dst="))
		if len(d) > 0 && d[0] != "inner" {
			ds = append(ds, strings.Split(d[0], ",")...)
		}
	}
	return ds
}

// onPath checks that the road warrior's traffic of family f uses the
// path to gw: the path in use is gw's, the road-warrior-mode outbound SAs
// send to gw and not to the other address of f, and the SAs are want.
func (f family) onPath(bin string, gw netip.Addr, want []string) error {
	st, err := readStatus(bin, f.rwCfg)
	if err != nil {
		return err
	}
	if got := st.spis(); !slices.Equal(got, want) {
		return fmt.Errorf("SAs changed: %v -> %v", want, got)
	}
	other := f.gwPrimary
	if gw == f.gwPrimary {
		other = f.gwSecondary
	}
	name, peer := st.inUse(f)
	if peer != gw.String() {
		return fmt.Errorf("path in use is %s (%s), want the one to %s", name, peer, gw)
	}
	dsts := st.outerDsts()
	if len(dsts) == 0 || !slices.Contains(dsts, gw.String()) || slices.Contains(dsts, other.String()) {
		return fmt.Errorf("outbound SAs' outer destinations %v, want %s and not %s", dsts, gw, other)
	}
	return nil
}

func run(bin, gwCfg string, f family, trials int) (string, error) {
	fmt.Printf("=== %s: paths %s -> %s (primary), %s -> %s; stream to %s\n", f.name, f.rwPrimary, f.gwPrimary, f.rwSecondary, f.gwSecondary, f.srv)
	bed, err := newBed()
	if err != nil {
		return "", fmt.Errorf("test bed: %w", err)
	}
	defer bed.Close()
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 60*time.Second, "-config", gwCfg)
	if err != nil {
		return "", err
	}
	defer gw.Stop(10 * time.Second)
	rw, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 60*time.Second, "-config", f.rwCfg)
	if err != nil {
		return "", err
	}
	defer rw.Stop(10 * time.Second)
	if err := rig.EchoServer(bed); err != nil {
		return "", err
	}
	stream, err := rig.StartStreamTo(bed, f.srv, 20*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer stream.Close()
	if !rig.WaitFor(30*time.Second, func() bool { return !stream.FirstReplyAfter(time.Time{}).IsZero() }) {
		return "", fmt.Errorf("no traffic to %s through the tunnel:\n%s\n%s", f.srv, rw.Log(), gw.Log())
	}
	// This family's SCTP association, bound to this family's addresses,
	// and both of its paths confirmed by heartbeats: the secondary must
	// be active before it can be a failover destination.
	assoc := regexp.MustCompile(`SCTP association up.* local="?\[` + regexp.QuoteMeta(f.rwPrimary.String()) + ` ` + regexp.QuoteMeta(f.rwSecondary.String()) + `\]`)
	if !rig.WaitFor(30*time.Second, func() bool { return assoc.MatchString(rw.Log()) }) {
		return "", fmt.Errorf("no %s SCTP association:\n%s\n%s", f.name, rw.Log(), gw.Log())
	}
	var st status
	if !rig.WaitFor(30*time.Second, func() bool {
		st, err = readStatus(bin, f.rwCfg)
		if err != nil || len(st.paths(f)) != 2 {
			return false
		}
		for _, p := range st.paths(f) {
			if p.State != "active" {
				return false
			}
		}
		return true
	}) {
		return "", fmt.Errorf("the %s paths are not both active (%+v, %v):\n%s", f.name, st.Mobility, err, rw.Log())
	}
	if st.Mobility.KernelSCTP != "yes" {
		return "", fmt.Errorf("kernel SCTP %q, want yes", st.Mobility.KernelSCTP)
	}
	spis := st.spis()
	if err := f.onPath(bin, f.gwPrimary, spis); err != nil {
		return "", fmt.Errorf("before the trials: %w", err)
	}
	logSPIs := slices.Compact(slices.Sorted(slices.Values(spiRe.FindAllString(rw.Log(), -1))))

	failed := 0
	var summary []string
	for _, d := range deaths(bed) {
		var overs, backs, kills []time.Duration
		for i := range trials {
			r, err := trial(bin, bed, rw, stream, f, d, spis)
			if errors.Is(err, rig.ErrTrial) {
				fmt.Printf("RESULT family=%s death=%q trial=%d failed: %v\n", f.name, d.Name, i+1, err)
				printSwitches(f, r.log)
				failed++
				continue
			}
			if err != nil {
				return "", fmt.Errorf("%s trial %d: %w\n%s", d.Name, i+1, err, rw.Log())
			}
			overs, backs, kills = append(overs, r.over), append(backs, r.back), append(kills, r.kill)
			fmt.Printf("RESULT family=%s death=%q trial=%d failover_ms=%d back_ms=%d kill_ms=%d switch=%s switches=%d\n",
				f.name, d.Name, i+1, r.over.Milliseconds(), r.back.Milliseconds(), r.kill.Milliseconds(), r.cause, r.switches)
			if r.switches != 2 {
				printSwitches(f, r.log)
			}
		}
		summary = append(summary, fmt.Sprintf("%s %s: failover median %v, back median %v, kill took %v (%d trials)", f.name, d.Name, median(overs), median(backs), median(kills), len(overs)))
	}
	stream.Close()
	after := slices.Compact(slices.Sorted(slices.Values(spiRe.FindAllString(rw.Log(), -1))))
	for _, l := range strings.Split(rw.Log(), "\n") {
		if strings.Contains(l, "path switch") || strings.Contains(l, "mobility") || strings.Contains(l, "sctp") {
			fmt.Println("LOG", f.name, "rw", l)
		}
	}
	for _, l := range strings.Split(gw.Log(), "\n") {
		if strings.Contains(l, "mobility") {
			fmt.Println("LOG", f.name, "gw", l)
		}
	}
	if !slices.Equal(logSPIs, after) {
		return "", fmt.Errorf("SAs installed during the trials: %v -> %v", logSPIs, after)
	}
	if failed > 0 {
		return "", fmt.Errorf("%d trials failed; %s", failed, strings.Join(summary, "; "))
	}
	return fmt.Sprintf("%s same SAs %v; %s", f.name, spis, strings.Join(summary, "; ")), nil
}

// timedDeath is a rig.Death that may know when the path died better
// than its Kill's return.
type timedDeath struct {
	rig.Death
	deadAt *time.Time // set by Kill, or nil
}

// deaths are rig.Deaths(bed). The silent drop's Kill there is
// bed.Blackhole: one nft process per end, 150-700 ms each under TCG. The
// road warrior's end goes first, and from then on nothing comes back to
// it over the primary: the path is dead for every round trip, the
// heartbeats' included. So here the same rule is installed by the same
// netns.NS.BlockIngress one end at a time, and the death is timed from
// the road warrior's end. Restore stays bed.Unblackhole. Both are
// retried on an interrupted netlink dump (see newBed).
func deaths(bed *netns.Bed) []timedDeath {
	var ds []timedDeath
	for _, d := range rig.Deaths(bed) {
		td := timedDeath{Death: d}
		if strings.Contains(d.Name, "nftables") {
			at := new(time.Time)
			td.deadAt = at
			td.Kill = func() error {
				if err := bed.RW.BlockIngress(netns.IfPrimary); err != nil {
					return err
				}
				*at = time.Now()
				if err := bed.GW.BlockIngress(netns.IfPrimary); err != nil {
					bed.RW.UnblockIngress(netns.IfPrimary)
					return err
				}
				return nil
			}
		}
		td.Death = retryInterrupted(td.Death)
		ds = append(ds, td)
	}
	return ds
}

// trialResult is one trial's measurements; log is the road warrior's
// log during the trial.
type trialResult struct {
	over, back, kill time.Duration
	cause            string // the detector that caused the failover
	switches         int    // path switches in the trial, 2 normally
	log              string
}

// trial runs one rig.TrialTo of d and checks the SAs on the secondary
// and back on the primary.
func trial(bin string, bed *netns.Bed, rw *rig.Proc, stream *rig.Stream, f family, d timedDeath, spis []string) (trialResult, error) {
	var r trialResult
	// mark: the log at the trial's start; killed: at the death (a
	// spurious switch can come between, see below).
	mark, killed := len(rw.Log()), 0
	kd := d.Death
	kd.Kill = func() error {
		// After a spurious switch during the settle time, kill only
		// once traffic is back on the primary, so that the failover
		// measured is a real one.
		if !rig.WaitFor(10*time.Second, func() bool { return rig.OnPrimaryTo(bed, f.srv) }) {
			return errors.New("not on the primary at the death")
		}
		killed = len(rw.Log())
		t0 := time.Now()
		err := d.Kill()
		r.kill = time.Since(t0)
		return err
	}
	o := rig.TrialOptions{OnSecondary: func() error {
		// The switch is logged once the routes have moved too, which
		// can be just after the first answer.
		rig.WaitFor(2*time.Second, func() bool {
			r.cause = switchCause(rw.Log()[killed:])
			return r.cause != "none"
		})
		if strings.Contains(d.Name, "silent") && r.cause != "sctp" {
			return fmt.Errorf("the switch to the secondary came from %q, want an SCTP notification (the silent drop is invisible to netlink)", r.cause)
		}
		return f.onPath(bin, f.gwSecondary, spis)
	}}
	if d.deadAt != nil {
		o.DeadAt = func() time.Time { return *d.deadAt }
	}
	var err error
	r.over, r.back, err = rig.TrialTo(bed, stream, f.srv, kd, time.Second, 30*time.Second, o)
	if err != nil {
		r.log = rw.Log()[mark:]
		return r, err
	}
	// Back on the primary, with the same SAs. Under TCG a heartbeat now
	// and then misses its RTO (100-400 ms) and makes a live path
	// potentially failed for a moment (leave_on_pf then leaves it,
	// switch_back returns): that is allowed, before the death or after
	// the return, and shows as more than 2 switches in the trial.
	var perr error
	ok := rig.WaitFor(5*time.Second, func() bool { perr = f.onPath(bin, f.gwPrimary, spis); return perr == nil })
	r.log = rw.Log()[mark:]
	r.switches = len(switchRe.FindAllString(r.log, -1))
	if !ok {
		return r, fmt.Errorf("back on the primary: %v: %w", perr, rig.ErrTrial)
	}
	return r, nil
}

// newBed builds the bed, again when a netlink dump in its IPv6 readiness
// check was interrupted by the kernel changing addresses meanwhile
// (vishvananda/netlink returns ErrDumpInterrupted then; seen under TCG).
func newBed() (*netns.Bed, error) {
	for try := 1; ; try++ {
		bed, err := netns.NewStandalone()
		if err == nil || try == 3 || !errors.Is(err, netlink.ErrDumpInterrupted) {
			return bed, err
		}
		fmt.Printf("test bed: %v; building it again\n", err)
	}
}

// retryInterrupted wraps d's Kill and Restore to try again when
// netns.NS.LinkUp's IPv6 readiness check fails on an interrupted netlink
// dump (see newBed): the link is up then, only the wait failed.
func retryInterrupted(d rig.Death) rig.Death {
	retry := func(fn func() error) func() error {
		return func() error {
			for try := 1; ; try++ {
				err := fn()
				if err == nil || try == 3 || !errors.Is(err, netlink.ErrDumpInterrupted) {
					return err
				}
				fmt.Printf("%s: %v; again\n", d.Name, err)
			}
		}
	}
	return rig.Death{Name: d.Name, Kill: retry(d.Kill), Restore: retry(d.Restore)}
}

var switchRe = regexp.MustCompile(`msg="path switch".*`)

// printSwitches prints the path switches, path state changes and SCTP
// events in log.
func printSwitches(f family, log string) {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "path switch") || strings.Contains(l, "path state") || strings.Contains(l, "SCTP") {
			fmt.Println("TRIAL", f.name, "rw", l)
		}
	}
}

var causeRe = regexp.MustCompile(`msg="path switch".* reason="[^"]*\((\w+)\)"`)

// switchCause is the detector named by the first path switch in log
// ("sctp", "netlink", ...), or "none".
func switchCause(log string) string {
	for _, l := range strings.Split(log, "\n") {
		if m := causeRe.FindStringSubmatch(l); m != nil {
			return m[1]
		}
	}
	return "none"
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}
