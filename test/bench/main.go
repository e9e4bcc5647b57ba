// Command bench measures throughput, CPU cost per packet and small-packet
// rate of three paths side by side, in one run, on the network-namespace
// test bed (test/netns), rw → gw → srv:
//
//	a  bare:         the veth path with plain routes, no tunnel
//	b  roamsec:      the roamsec gateway and road-warrior daemons
//	c  wireguard-go: userspace WireGuard (TUN with offloads) rw ↔ gw
//
// For each path: iperf3 TCP (server in srv, client in rw) for -duration,
// -runs times; the tunnel processes' CPU time (utime+stime from
// /proc/PID/stat) per packet moved; and the highest rate of 64-byte UDP
// datagrams delivered with less than 0.1% loss (binary search); TCP with 4
// parallel streams (-streams); on the roamsec paths TCP from 4 road
// warriors at once, one stream each (-peers); and the tunnel processes' CPU
// per 64-byte packet at a fixed 10k pps (-udp-cpu-rate). Each path
// gets a fresh bed, torn down before the next one (also on error and
// Ctrl-C). Run it with `make bench` (scripts/bench.sh), or as root:
//
//	go run ./test/bench [-paths a,b,c] [-duration 10s] [-runs 3] [-json]
//
// Only documentation addresses are used and no packet leaves the
// namespaces the bed creates.
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
	"runtime"
	"strings"
	"syscall"
	"time"
)

// goal is the target ratio roamsec / wireguard-go of TCP throughput.
const goal = 1.25

type options struct {
	paths           []string
	duration        time.Duration
	runs            int
	jsonOut         bool
	bin             string
	build           bool
	udp             bool
	udpDuration     time.Duration
	udpProbes       int
	verbose         bool
	streams         int     // parallel TCP streams of the extra TCP row; 0 or 1: none
	peers           int     // road warriors of the several-peers row (roamsec paths); 0 or 1: none
	udpCPURate      float64 // 64-byte UDP rate at which the tunnel's CPU per packet is measured; 0: not
	idleWait        time.Duration
	srcDir          string // module root, for go build and packaging/examples
	profileDuration time.Duration
	profile         string // directory for profiles under the 64-byte load; "": none
	wgTxQueue       int    // wireguard-go's TUN transmit queue; 0: its own (the tun driver's 500)
}

func main() {
	var o options
	var paths string
	flag.StringVar(&paths, "paths", "a,b,c,d", "paths to measure: a (bare veth), b (roamsec, ESP in UDP), c (wireguard-go), d (roamsec, raw ESP)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each iperf3 TCP run")
	flag.IntVar(&o.runs, "runs", 3, "iperf3 TCP runs per path")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as JSON instead of a table")
	flag.StringVar(&o.bin, "bin", os.Getenv("BIN"), "directory of the gateway, roadwarrior and wireguard-go binaries (default $BIN, else a temporary directory)")
	flag.BoolVar(&o.build, "build", true, "build the binaries into -bin first (go build)")
	flag.BoolVar(&o.udp, "udp", true, "measure 64-byte UDP packets per second")
	flag.DurationVar(&o.udpDuration, "udp-duration", 3*time.Second, "length of each 64-byte UDP probe")
	flag.IntVar(&o.udpProbes, "udp-probes", 8, "at most this many UDP probes per path (binary search)")
	flag.DurationVar(&o.idleWait, "idle-wait", 15*time.Second, "before each path, wait up to this long for the CPUs to be idle (figures taken on a busy machine are flagged)")
	flag.IntVar(&o.peers, "peers", 4, "also measure TCP from this many road warriors at once, one stream each (roamsec paths); 0 or 1 skips it")
	flag.IntVar(&o.streams, "streams", 4, "also measure TCP with this many parallel streams (iperf3 -P); 0 or 1 skips it")
	flag.Float64Var(&o.udpCPURate, "udp-cpu-rate", 10000, "also measure the tunnel processes' CPU per 64-byte packet at this fixed rate (pps); 0 skips it")
	flag.BoolVar(&o.verbose, "v", false, "log every step to stderr")
	flag.StringVar(&o.profile, "profile", "", "after the 64-byte search, profile the tunnel processes for -profile-duration at the loss-free rate and write the profiles to this directory: perf record (if installed) of both, and roamsec's own CPU, block and mutex profiles (SIGUSR2, daemon.ProfileEnv)")
	flag.DurationVar(&o.profileDuration, "profile-duration", 10*time.Second, "length of the profiled 64-byte run (-profile)")
	flag.IntVar(&o.wgTxQueue, "wg-txqueuelen", 0, "give wireguard-go's TUN devices this transmit queue (roamsec's default is tun.DefaultTxQueueLen); 0 leaves wireguard-go's own")
	flag.Parse()
	for _, p := range strings.Split(paths, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, ok := pathNames[p]; !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown path %q (want a, b, c or d)\n", p)
			os.Exit(2)
		}
		o.paths = append(o.paths, p)
	}
	if len(o.paths) == 0 || o.runs < 1 || o.duration < time.Second {
		fmt.Fprintln(os.Stderr, "bench: need at least one path, -runs >= 1 and -duration >= 1s")
		os.Exit(2)
	}

	// Ctrl-C and SIGTERM cancel ctx: the running step stops, its processes
	// are ended and the bed is torn down before we exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if interrupted {
		fmt.Fprintln(os.Stderr, "bench: interrupted; everything torn down")
		os.Exit(130)
	}
}

func run(ctx context.Context, o options) error {
	if o.verbose {
		logw = os.Stderr
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, c := range []string{"ip", "iperf3"} {
		if _, err := lookPath(c); err != nil {
			return fmt.Errorf("needs %s (scripts/bench.sh installs it): %w", c, err)
		}
	}
	var err error
	if o.srcDir, err = moduleRoot(); err != nil {
		return err
	}
	if o.bin == "" {
		dir, err := os.MkdirTemp("", "roamsec-bench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.bin = dir
	}
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return err
	}
	if o.profile != "" {
		if o.profile, err = filepath.Abs(o.profile); err != nil {
			return err
		}
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp("", "roamsec-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	rep := report{
		Machine:     machineInfo(),
		DurationSec: o.duration.Seconds(),
		Runs:        o.runs,
		Goal:        goal,
	}
	for _, id := range o.paths {
		if ctx.Err() != nil {
			break
		}
		r := measurePath(ctx, o, id, work)
		if ctx.Err() != nil {
			break // interrupted: this path's figures are incomplete
		}
		rep.Paths = append(rep.Paths, r)
	}
	if ctx.Err() != nil && len(rep.Paths) == 0 {
		return nil
	}
	rep.finish()
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.printTable(os.Stdout)
	return nil
}

var logw io.Writer = io.Discard

func logf(format string, args ...any) {
	fmt.Fprintf(logw, "bench: "+format+"\n", args...)
}

// progress is always shown on stderr: a run takes minutes.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// moduleRoot finds the directory holding go.mod, from the working directory
// upwards (go run keeps the caller's working directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/roamsec/roamsec") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("run from inside the roamsec module (no go.mod above %s)", dir)
		}
	}
}

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := runOut(context.Background(), "iperf3", "--version"); err == nil {
		m.Iperf3 = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	}
	return m
}
