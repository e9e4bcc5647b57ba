// Command swanbench measures strongSwan's failover on the namespace test
// bed the way test/failbench measures roamsec's, for comparison: one
// charon-systemd per namespace (rw, gw) with the userspace ESP backend
// kernel-libipsec, IKEv2 with PSK, AES-GCM-16 256, MOBIKE and DPD, virtual
// address mode (gw pool 100.64.0.0/24), the same 10 ms UDP stream from the
// road warrior to the server's echo port, and the same two kinds of path
// death: the primary link set down, and the primary silently dropping
// everything with the link up (nftables). For each, the time from the death
// to the first answer to a datagram sent after it, from the restore to
// traffic over the primary again, and whether the ESP SPIs changed.
//
//	scripts/deps-strongswan.sh   # once: strongSwan 5.9 packages
//	go run ./test/swanbench [-trials 10] [-drop-trials N] [-dpd 1s,10s] [-json]
//
// As root. Everything (charons, namespaces, temp dir) is torn down on exit,
// on error and on Ctrl-C; -logs DIR keeps a copy of the charon logs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/strongswan"
)

type options struct {
	trials, dropTrials int
	dpds               []time.Duration
	overCap, backCap   time.Duration
	logs               string
	hold               bool
}

func main() {
	var o options
	flag.IntVar(&o.trials, "trials", 10, "trials per kind of death")
	flag.IntVar(&o.dropTrials, "drop-trials", -1, "trials of the silent drop (default: -trials)")
	dpd := flag.String("dpd", "1s", "comma-separated dpd_delay values to run, e.g. 1s,10s (whole seconds)")
	flag.DurationVar(&o.overCap, "cap", 30*time.Second, "longest wait for traffic after a death; longer counts as no recovery")
	flag.DurationVar(&o.backCap, "back-cap", 10*time.Second, "longest wait for traffic over the primary after the restore")
	flag.StringVar(&o.logs, "logs", "", "copy the charon logs and configs into this directory")
	flag.BoolVar(&o.hold, "hold", false, "set up, print how to reach the daemons, and wait for Ctrl-C (debugging)")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	if o.dropTrials < 0 {
		o.dropTrials = o.trials
	}
	for _, s := range strings.Split(*dpd, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < time.Second || d%time.Second != 0 {
			fmt.Fprintf(os.Stderr, "swanbench: bad -dpd value %q (whole seconds, e.g. 1s)\n", s)
			os.Exit(2)
		}
		o.dpds = append(o.dpds, d)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	var all []result
	var err error
	for _, d := range o.dpds {
		var res []result
		res, err = run(ctx, o, d)
		all = append(all, res...)
		if err != nil {
			break
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "swanbench:", err)
	}
	if o.hold {
		os.Exit(map[bool]int{true: 1, false: 0}[err != nil])
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(all)
	} else if len(all) > 0 {
		printTable(os.Stdout, all, o)
	}
	if err != nil {
		os.Exit(1)
	}
}

// result is one kind of death under one DPD setting.
type result struct {
	Death      string         `json:"death"`
	DPD        string         `json:"dpd_delay"`
	Trials     int            `json:"trials"`
	Over       []float64      `json:"failover_ms"`
	Back       []float64      `json:"back_ms"`
	Failed     int            `json:"failed_trials"`    // no traffic within -cap of the death
	NoReturn   int            `json:"no_return_trials"` // not over the primary within -back-cap of the restore
	ESPChanged int            `json:"esp_spis_changed"` // of the trials that recovered
	IKEChanged int            `json:"ike_spis_changed"`
	Resets     int            `json:"resets"`      // re-initiations needed to get back onto the primary between trials
	PathsAfter map[string]int `json:"paths_after"` // the IKE SA's path after the failover, by trials
	Details    []trial        `json:"trials_detail"`
}

type trial struct {
	FailoverMS  float64 `json:"failover_ms,omitempty"`
	BackMS      float64 `json:"back_ms,omitempty"`
	Recovered   bool    `json:"recovered"`
	Returned    bool    `json:"returned_to_primary"`
	PathAfter   string  `json:"path_after_failover,omitempty"`
	Before      saState `json:"sa_before"`
	After       saState `json:"sa_after_failover"`
	AfterBack   saState `json:"sa_after_back"`
	ESPChanged  bool    `json:"esp_spis_changed"`
	IKEChanged  bool    `json:"ike_spis_changed"`
	BackESPDiff bool    `json:"esp_spis_changed_on_return"`
}

func printTable(w io.Writer, all []result, o options) {
	fmt.Fprintln(w, "\nstrongSwan 5.9 (charon-systemd, kernel-libipsec) failover on the namespace test bed")
	fmt.Fprintln(w, "(IKEv2 PSK, AES-GCM-16 256, MOBIKE, virtual IP; 10 ms UDP stream; default retransmission settings)")
	fmt.Fprintf(w, "%-37s %-5s %-22s %-22s %-14s %-9s %s\n",
		"death", "dpd", "failover med (min-max)", "back med (min-max)", "no recovery", "no return", "SPIs changed (ESP / IKE)")
	for _, r := range all {
		n := r.Trials - r.Failed
		fmt.Fprintf(w, "%-37s %-5s %-22s %-22s %-14s %-9s %s\n", r.Death, r.DPD, stat(r.Over), stat(r.Back),
			fmt.Sprintf("%d/%d", r.Failed, r.Trials), fmt.Sprintf("%d/%d", r.NoReturn, r.Trials),
			fmt.Sprintf("ESP %s, IKE %s", yesNo(r.ESPChanged, n), yesNo(r.IKEChanged, n)))
	}
	fmt.Fprintf(w, "failover: death -> first answer to a datagram sent after it; no recovery: none within %v.\n", o.overCap)
	fmt.Fprintf(w, "back: restore -> first answer to a datagram sent once the IKE SA and an installed Child SA are on the\n"+
		"primary again; no return: not within %v (strongSwan keeps a path that still works).\n", o.backCap)
	fmt.Fprintln(w, "SPIs changed: before the death vs 300 ms after the first answer, trials that recovered.")
	for _, r := range all {
		if len(r.PathsAfter) > 0 || r.Resets > 0 {
			fmt.Fprintf(w, "%s, dpd %s: path after failover %v; re-initiated %d times to start a trial on the primary\n",
				r.Death, r.DPD, r.PathsAfter, r.Resets)
		}
	}
}

func yesNo(k, n int) string {
	switch {
	case n == 0:
		return "n/a"
	case k == n:
		return fmt.Sprintf("yes (%d/%d)", k, n)
	case k == 0:
		return fmt.Sprintf("no (0/%d)", n)
	}
	return fmt.Sprintf("mixed (%d/%d)", k, n)
}

func stat(ms []float64) string {
	if len(ms) == 0 {
		return "n/a"
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	f := func(v float64) string {
		if v >= 10000 {
			return fmt.Sprintf("%.0fs", v/1000)
		}
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%s ms (%s-%s)", f(s[len(s)/2]), f(s[0]), f(s[len(s)-1]))
}

// env is one bed with its two daemons and the stream.
type env struct {
	bed    *netns.Bed
	rw, gw *strongswan.Charon
	stream *rig.Stream
}

func run(ctx context.Context, o options, dpd time.Duration) (res []result, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("run as root")
	}
	if err := strongswan.Available(); err != nil {
		return nil, err
	}
	sweepTempDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("roamsec-swanbench-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var e env
	defer func() {
		if e.stream != nil {
			e.stream.Close()
		}
		// rw first: its charon then cannot see the gateway vanish first.
		err = errors.Join(err, stopCharon(e.rw, 5*time.Second), stopCharon(e.gw, 5*time.Second))
		if o.logs != "" {
			err = errors.Join(err, keepLogs(dir, filepath.Join(o.logs, "dpd"+dpd.String())))
		}
		if e.bed != nil {
			err = errors.Join(err, e.bed.Close())
		}
	}()
	if e.bed, err = netns.NewStandalone(); err != nil {
		return nil, err
	}
	if e.gw, err = startCharon(ctx, e.bed.GW, "gw", filepath.Join(dir, "gw"), true, dpd); err != nil {
		return nil, err
	}
	if e.rw, err = startCharon(ctx, e.bed.RW, "rw", filepath.Join(dir, "rw"), false, dpd); err != nil {
		return nil, err
	}
	if err := e.rw.Initiate(ctx, ikeName, ""); err != nil { // the error has rw's log tail
		return nil, fmt.Errorf("%w\ngw log:\n%s", err, e.gw.Tail(40))
	}
	if err := rig.EchoServer(e.bed); err != nil {
		return nil, err
	}
	if e.stream, err = rig.StartStream(e.bed, 10*time.Millisecond); err != nil {
		return nil, err
	}
	if o.hold {
		st, _ := sas(ctx, e.rw)
		fmt.Fprintf(os.Stderr, "swanbench: holding; %s\n  namespaces: ip netns exec %s / %s / %s\n"+
			"  swanctl --list-sas --uri unix://%s/rw/charon.vici   (gw: %s/gw/charon.vici)\n  logs: %s/{rw,gw}/charon.log\n",
			st, e.bed.RW.Name, e.bed.GW.Name, e.bed.Srv.Name, dir, dir, dir)
		<-ctx.Done()
		return nil, nil
	}

	deaths := []struct {
		name          string
		trials        int
		kill, restore func() error
	}{
		{"link down", o.trials,
			func() error { return e.bed.RW.LinkDown(netns.IfPrimary) },
			func() error { return e.bed.RW.LinkUp(netns.IfPrimary) }},
		{"silent drop (link up, nftables drop)", o.dropTrials,
			func() error { return e.bed.Blackhole(netns.IfPrimary) },
			func() error { return e.bed.Unblackhole(netns.IfPrimary) }},
	}
	for _, d := range deaths {
		if d.trials == 0 {
			continue
		}
		r := result{Death: d.name, DPD: dpd.String(), Trials: d.trials}
		for i := range d.trials {
			fmt.Fprintf(os.Stderr, "swanbench: dpd %v, %s, trial %d/%d\n", dpd, d.name, i+1, d.trials)
			// On an error (or Ctrl-C) the finished trials are kept.
			partial := func() []result {
				if r.Trials = len(r.Details); r.Trials == 0 {
					return res
				}
				r.Death += " (partial)"
				return append(res, r)
			}
			reset, err := e.onPrimary(ctx)
			if err != nil {
				return partial(), err
			}
			if reset {
				r.Resets++
			}
			t, err := e.trial(ctx, o, d.kill, d.restore)
			if err != nil {
				return partial(), err
			}
			fmt.Fprintf(os.Stderr, "swanbench:   %s\n", t.summary())
			r.Details = append(r.Details, t)
			if t.Recovered {
				if r.PathsAfter == nil {
					r.PathsAfter = map[string]int{}
				}
				r.PathsAfter[t.PathAfter]++
				r.Over = append(r.Over, t.FailoverMS)
				if t.ESPChanged {
					r.ESPChanged++
				}
				if t.IKEChanged {
					r.IKEChanged++
				}
			} else {
				r.Failed++
			}
			if t.Returned {
				r.Back = append(r.Back, t.BackMS)
			} else {
				r.NoReturn++
			}
		}
		res = append(res, r)
	}
	return res, nil
}

func (t trial) summary() string {
	s := fmt.Sprintf("no recovery (then: %s)", t.After)
	if t.Recovered {
		s = fmt.Sprintf("failover %.0f ms via %s (ESP SPIs changed %v, IKE SPIs changed %v)",
			t.FailoverMS, t.PathAfter, t.ESPChanged, t.IKEChanged)
	}
	if t.Returned {
		s += fmt.Sprintf("; back over the primary %.0f ms after the restore", t.BackMS)
	} else {
		s += "; not back over the primary"
	}
	return s
}

// onPrimary waits until the road warrior's IKE SA is established on the
// primary with an installed Child SA, both IKE SAs are idle and the stream
// is answered; if that does not happen within 5 s, it re-initiates (reset
// true). Idle matters after a silent drop: a DPD exchange started in the
// drop keeps retransmitting (4 s, 7.2 s, 13 s, ... 165 s in all, default
// settings), each retransmission can fall into the next trial's drop, and
// after five the IKE SA is deleted in the middle of a later trial.
func (e *env) onPrimary(ctx context.Context) (reset bool, err error) {
	ok := func() bool {
		st, err := sas(ctx, e.rw)
		if err != nil || !st.up() || st.Local != netns.RWPrimary4.String() || len(st.Tasks) > 0 {
			return false
		}
		gw, err := sasOf(ctx, e.gw, gwIKEName)
		return err == nil && gw.IKEState == "ESTABLISHED" && len(gw.Tasks) == 0
	}
	answered := func() bool {
		t0 := time.Now()
		return waitFor(ctx, 2*time.Second, func() bool { return !e.stream.FirstReplyAfter(t0).IsZero() })
	}
	// Settled: on the primary, or up elsewhere (strongSwan does not move
	// back by itself, see trial); anything else may be a rekey in flight.
	settled := func() bool {
		st, err := sas(ctx, e.rw)
		return err == nil && st.up() && (st.Local != netns.RWPrimary4.String() || ok())
	}
	if waitFor(ctx, 5*time.Second, settled) && ok() && answered() {
		return false, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	st, _ := sas(ctx, e.rw)
	gw, _ := sasOf(ctx, e.gw, gwIKEName)
	fmt.Fprintf(os.Stderr, "swanbench:   not idle on the primary (rw: %s; gw: %s): re-initiating\n", st, gw)
	e.rw.Terminate(ctx, ikeName)
	if err := e.rw.Initiate(ctx, ikeName, ""); err != nil { // the error has rw's log tail
		return true, err
	}
	if !waitFor(ctx, 5*time.Second, ok) || !answered() {
		st, _ := sas(ctx, e.rw)
		return true, fmt.Errorf("not on the primary with traffic even after re-initiating (%s)\nrw log:\n%s\ngw log:\n%s",
			st, e.rw.Tail(60), e.gw.Tail(60))
	}
	return true, nil
}

// trial kills the primary path, measures death → first answer to a
// datagram sent after the death, restores the path and measures restore →
// first answer to a datagram sent once strongSwan is back on the primary.
func (e *env) trial(ctx context.Context, o options, kill, restore func() error) (t trial, err error) {
	primary := netns.RWPrimary4.String()
	if t.Before, err = sas(ctx, e.rw); err != nil {
		return t, err
	}
	time.Sleep(300 * time.Millisecond)
	if err := kill(); err != nil {
		return t, err
	}
	dead := time.Now()
	restored := false
	defer func() {
		if !restored {
			err = errors.Join(err, restore())
		}
	}()
	t.Recovered = waitFor(ctx, o.overCap, func() bool { return !e.stream.FirstReplyAfter(dead).IsZero() })
	if ctx.Err() != nil {
		return t, ctx.Err()
	}
	if t.Recovered {
		t.FailoverMS = ms(e.stream.FirstReplyAfter(dead).Sub(dead))
		time.Sleep(300 * time.Millisecond) // let a rekey after the move finish, as failbench waits
	}
	// After a failover: where the SAs went. Without one: their state at the
	// end of the wait (still on the dead path, DPD retransmitting).
	if t.After, err = sas(ctx, e.rw); err != nil {
		return t, err
	}
	t.PathAfter = t.After.Local + "-" + t.After.Remote
	if t.Recovered {
		t.ESPChanged = espChanged(t.Before, t.After)
		t.IKEChanged = t.After.IKESPIs != t.Before.IKESPIs
	}
	if !e.rw.Alive() || !e.gw.Alive() {
		return t, fmt.Errorf("a charon died\nrw log:\n%s\ngw log:\n%s", e.rw.Tail(40), e.gw.Tail(40))
	}

	if err := restore(); err != nil {
		return t, err
	}
	restored = true
	restoredAt := time.Now()
	// Back on the primary: the IKE SA's local address is the primary's and
	// an installed Child SA carries traffic from there. libipsec cannot
	// move an SA, so after a move the Child SA in use is a new one
	// (different SPIs from those used on the secondary).
	var onSecondary saState
	if t.Recovered {
		onSecondary = t.After
	}
	var switched time.Time
	t.Returned = waitFor(ctx, o.backCap, func() bool {
		st, err := sas(ctx, e.rw)
		if err != nil || !st.up() || st.Local != primary {
			return false
		}
		if t.Recovered && t.After.Local != primary && !espChanged(onSecondary, st) {
			return false
		}
		switched = time.Now()
		return true
	})
	if ctx.Err() != nil {
		return t, ctx.Err()
	}
	if t.Returned {
		t.Returned = waitFor(ctx, o.backCap-time.Since(restoredAt), func() bool {
			return !e.stream.FirstReplyAfter(switched).IsZero()
		})
	}
	if t.Returned {
		t.BackMS = ms(e.stream.FirstReplyAfter(switched).Sub(restoredAt))
		t.AfterBack, _ = sas(ctx, e.rw)
		t.BackESPDiff = espChanged(t.After, t.AfterBack)
	}
	return t, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// waitFor polls cond every 2 ms until it holds, d passes or ctx ends.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return ctx.Err() == nil && cond()
}

// sweepTempDirs removes temp dirs left by swanbench processes that died
// without cleaning up (killed with SIGKILL); their charons got SIGTERM
// through Pdeathsig, and netns.NewStandalone sweeps their namespaces.
func sweepTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "roamsec-swanbench-*-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), "roamsec-swanbench-%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// keepLogs copies the daemons' logs and configs out of the temp dir.
func keepLogs(dir, to string) error {
	var errs []error
	for _, who := range []string{"rw", "gw"} {
		if err := os.MkdirAll(filepath.Join(to, who), 0o755); err != nil {
			return err
		}
		for _, f := range []string{"charon.log", "strongswan.conf", "swanctl/swanctl.conf"} {
			data, err := os.ReadFile(filepath.Join(dir, who, f))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(to, who, filepath.Base(f)), data, 0o644)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
