// Command benchscale is make bench-scale: the load generator (test/loadgen)
// against the real gateway daemon on a network-namespace bed. It reports,
// it does not assert:
//   - handshakes per second with the gateway on 1 core and on 2 cores
//     (taskset and GOMAXPROCS; the generator shares the machine),
//   - the time to bring up -n road warriors (the 2-core run),
//   - the gateway's RSS per established road warrior,
//   - packets per second and Mbit/s with traffic spread over all SAs
//     against traffic on one SA (into a sink behind the gateway, and
//     echoed back through the gateway's outbound path),
//   - the gateway's CPU while the -n idle peers are kept alive by DPD.
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/loadgen"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

func main() {
	n := flag.Int("n", 10000, "road warriors")
	window := flag.Int("window", 48, "handshakes in flight")
	dpd := flag.Duration("dpd", 10*time.Second, "the gateway's DPD (the idle-CPU phase measures its cost)")
	idle := flag.Duration("idle", 30*time.Second, "how long to measure the idle gateway's CPU")
	blast := flag.Duration("blast", 5*time.Second, "how long each traffic phase sends")
	payload := flag.Int("payload", 1200, "UDP payload bytes of the traffic")
	senders := flag.Int("senders", 2, "generator goroutines sealing ESP")
	flag.IntVar(&probes, "probes", 7, "paced probes per traffic phase searching the highest rate carried with under 0.1% loss (0: the flood only)")
	flag.DurationVar(&probeTime, "probe", 2*time.Second, "how long each paced probe sends")
	flag.IntVar(&tunQLen, "tunqlen", 0, "set the gateway TUN's txqueuelen to this before the traffic (a diagnostic; 0: the device's default)")
	flag.IntVar(&burst, "burst", 1, "datagrams in a row through each road warrior (1: each through the next)")
	flag.Float64Var(&rate, "rate", 0, "packets per second the first send of each traffic phase (the one -profile profiles) offers; 0: a flood")
	flag.StringVar(&heapOut, "heapprofile", "", "write the gateway's heap profile (daemon.HeapProfileEnv, SIGUSR1) here with every road warrior up, and print its top")
	flag.BoolVar(&memOnly, "memonly", false, "stop after the memory figures (no traffic, idle, churn phases)")
	flag.DurationVar(&settle, "settle", 0, "after the status, read the gateway's RSS again this much later (the Go runtime's forced GC every 2 minutes and its scavenger return what the status left)")
	flag.StringVar(&perfOut, "perf", "", "record the gateway with perf(1) into this file during the 2-core bring-up, and stop after it")
	flag.StringVar(&profDir, "profile", "", "write both processes' CPU, block and mutex profiles of each bring-up and traffic phase into this directory (gw-PHASE.*, gen-PHASE.*)")
	flag.StringVar(&prebuilt, "gateway", "", "the gateway binary to run (default: go build ./cmd/gateway)")
	flag.BoolVar(&trafficOnly, "trafficonly", false, "stop after the traffic phases (no idle, churn, rekey storm)")
	flag.Parse()
	// The generator holds every road warrior's endpoint, certificate and
	// SAs: a large live heap the collector would walk again and again
	// while handshakes allocate (14 % of the generator's CPU in a 2-core
	// bring-up profile). It shares the cores with the gateway it measures,
	// so it trades memory for CPU, the default GOGC four times over.
	debug.SetGCPercent(400)
	if err := run(*n, *window, *dpd, *idle, *blast, *payload, *senders); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(1)
	}
}

type bench struct {
	bed     *netns.Bed
	dir     string
	bin     string
	cfg     string
	gen     *loadgen.Gen
	n       int
	window  int
	payload int
	senders int
	probes  int
	probe   time.Duration
	rate    float64
	burst   int
	// idleGW, idleGen: each process's CPU in cores with no traffic.
	idleGW, idleGen float64
}

// perfOut, if set, is where perf(1) records the gateway's 2-core bring-up.
var perfOut string

// probes and probeTime shape the paced search of each traffic phase.
var (
	probes    int
	probeTime time.Duration
	rate      float64
	burst     int
	tunQLen   int
)

// prebuilt, if set, is the gateway binary (no build inside the bench);
// trafficOnly stops after the traffic phases.
var (
	prebuilt    string
	trafficOnly bool
)

// heapOut, if set, is where the gateway writes its heap profile once every
// road warrior is up; memOnly stops there.
var (
	heapOut string
	memOnly bool
	settle  time.Duration
)

// heapProfile has the gateway write its heap profile to heapOut
// (SIGUSR1) and prints the profile's top entries by bytes in use.
func heapProfile(gw *rig.Proc, bin string) error {
	os.Remove(heapOut)
	if err := syscall.Kill(gw.PID(), syscall.SIGUSR1); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(heapOut); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no heap profile from the gateway:\n%s", gw.Log())
		}
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", "-sample_index=inuse_space", bin, heapOut).CombinedOutput()
	fmt.Printf("gateway heap in use (%s):\n%s", heapOut, out)
	return err
}

// startPerf records pid with call graphs until the returned stop runs.
func startPerf(pid int) (stop func(), err error) {
	cmd := exec.Command("perf", "record", "-g", "-p", strconv.Itoa(pid), "-o", perfOut)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}, nil
}

func run(n, window int, dpd, idle, blast time.Duration, payload, senders int) error {
	b := &bench{n: n, window: window, payload: payload, senders: senders, probes: probes, probe: probeTime, rate: rate, burst: burst}
	var err error
	if b.bed, err = netns.NewStandalone(); err != nil {
		return err
	}
	defer b.bed.Close()
	if b.dir, err = os.MkdirTemp("", "roamsec-bench-scale-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	fmt.Printf("bench-scale: %d road warriors; traffic in bursts of %d per road warrior; load: %s\n", n, burst, uptime())
	t0 := time.Now()
	addrs, err := b.bed.AddLoadAddrs(n)
	if err != nil {
		return err
	}
	fmt.Printf("  %d addresses on the load namespace in %v\n", n, time.Since(t0).Round(time.Millisecond))
	p, err := loadgen.NewPKI()
	if err != nil {
		return err
	}
	if heapOut != "" {
		if heapOut, err = filepath.Abs(heapOut); err != nil {
			return err
		}
		os.Setenv(daemon.HeapProfileEnv, heapOut) // the gateway inherits it
	}
	if b.cfg, err = p.WriteGatewayConfig(b.dir, loadgen.GatewayOptions{DPD: dpd}); err != nil {
		return err
	}
	if b.bin = prebuilt; b.bin == "" {
		if b.bin, err = loadgen.BuildGateway(b.dir); err != nil {
			return err
		}
	}
	if err := profileSetup(); err != nil {
		return err
	}
	t0 = time.Now()
	gwID, _ := auth.ParseIdentity(loadgen.GatewayID)
	cfg := loadgen.Config{Addrs: addrs, Gateway: netns.GWPrimary4, GatewayID: gwID, RemoteTS: []netip.Prefix{netns.ServerNet4},
		Identity: func(i int) (auth.Identity, *auth.Credential, error) { return p.RoadWarrior(i, addrs[i]) },
		CAs:      []*x509.Certificate{p.CA.Cert}}
	if err := b.bed.RW.Do(func() (err error) { b.gen, err = loadgen.New(cfg); return err }); err != nil {
		return err
	}
	defer b.gen.Close()
	fmt.Printf("  %d identities and certificates issued, endpoints created in %v\n", n, time.Since(t0).Round(time.Millisecond))

	// Handshakes per second: a fresh gateway on 1 core, then on 2.
	for _, cpus := range []string{"0", "0,1"} {
		if perfOut != "" && cpus == "0" {
			continue // a profile of the 2-core bring-up only
		}
		gw, err := loadgen.StartGateway(b.bed, b.bin, b.cfg, cpus)
		if err != nil {
			return err
		}
		rss0 := rssKB(gw.PID())
		gwCPU0, genCPU0 := cpuTicks(gw.PID()), cpuTicks(os.Getpid())
		stopPerf := func() {}
		if perfOut != "" && cpus != "0" {
			if stopPerf, err = startPerf(gw.PID()); err != nil {
				return err
			}
		}
		stopProf, err := phaseProfile(gw, "up-cpus"+strings.ReplaceAll(cpus, ",", ""))
		if err != nil {
			return err
		}
		r := b.gen.Up(context.Background(), nil, window, 30*time.Second)
		stopPerf()
		if err := stopProf(); err != nil {
			return err
		}
		gwCPU, genCPU := cpuTicks(gw.PID())-gwCPU0, cpuTicks(os.Getpid())-genCPU0
		rate := float64(r.Up) / r.Elapsed.Seconds()
		// On a shared machine the rate follows the load; the gateway's CPU
		// time per handshake (ticks are 10 ms) does much less.
		fmt.Printf("gateway on cpus %s: %d up, %d failed in %v: %.0f handshakes/s (window %d); CPU during it: gateway %.0f%%, generator %.0f%% of a core; gateway CPU per handshake %.2f ms (%.0f handshakes per gateway CPU-second); load: %s\n",
			cpus, r.Up, r.Failed, r.Elapsed.Round(time.Millisecond), rate, window,
			float64(gwCPU)/r.Elapsed.Seconds(), float64(genCPU)/r.Elapsed.Seconds(),
			10*float64(gwCPU)/float64(max(r.Up, 1)), float64(r.Up)/(float64(max(gwCPU, 1))/100), uptime())
		for e, k := range r.Errors {
			fmt.Printf("    %d× %s\n", k, e)
		}
		if cpus == "0" {
			if err := gw.Stop(30 * time.Second); err != nil {
				return err
			}
			continue
		}
		if perfOut != "" {
			return stop(gw)
		}
		err = b.established(gw, rss0, r, dpd, idle, blast)
		if serr := stop(gw); err == nil {
			err = serr
		}
		return err
	}
	return nil
}

// established measures with every road warrior up on the 2-core gateway.
func (b *bench) established(gw *rig.Proc, rss0 int, r loadgen.UpResult, dpd, idle, blast time.Duration) error {
	fmt.Printf("time to bring up %d road warriors: %v\n", b.n, r.Elapsed.Round(time.Millisecond))
	// Before any status: `status -json` with every Child SA builds its
	// whole answer in memory, garbage the RSS below includes.
	time.Sleep(time.Second)
	rssUp := rssKB(gw.PID())
	fmt.Printf("gateway RSS before any status: %d KB: %.1f KB per road warrior\n", rssUp, float64(rssUp-rss0)/float64(max(r.Up, 1)))
	st, err := loadgen.GatewayStatus(b.bed, b.bin, b.cfg)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	rss := rssKB(gw.PID())
	fmt.Printf("gateway: status says %d IKE SAs, %d Child SAs; RSS %d KB before, %d KB after: %.1f KB per road warrior\n",
		st.IKE.IKESAs, len(st.Children), rss0, rss, float64(rss-rss0)/float64(max(r.Up, 1)))
	if settle > 0 {
		time.Sleep(settle)
		rss = rssKB(gw.PID())
		fmt.Printf("gateway RSS %v after the status: %d KB: %.1f KB per road warrior\n", settle, rss, float64(rss-rss0)/float64(max(r.Up, 1)))
	}
	if heapOut != "" {
		if err := heapProfile(gw, b.bin); err != nil {
			return err
		}
	}
	if memOnly {
		return nil
	}

	all := make([]int, b.n)
	for i := range all {
		all[i] = i
	}
	if tunQLen > 0 {
		// A diagnostic: the echo phases lose packets at this queue (the
		// kernel's, of packets routed into the TUN until the gateway reads them).
		if out, err := b.bed.GW.Run("ip", "link", "set", "roamsec0", "txqueuelen", strconv.Itoa(tunQLen)); err != nil {
			return fmt.Errorf("txqueuelen: %v: %s", err, out)
		}
	}
	b.measureIdle(gw, 5*time.Second)
	for _, echo := range []bool{false, true} {
		for _, set := range [][]int{all, all[:1]} {
			if err := b.trafficPhase(gw, set, echo, blast); err != nil {
				return err
			}
		}
	}
	if trafficOnly {
		return nil
	}

	// Idle: DPD keeps the peers; the gateway's CPU over idle.
	cpu0 := cpuTicks(gw.PID())
	t0 := time.Now()
	time.Sleep(idle)
	cpu := cpuTicks(gw.PID()) - cpu0
	el := time.Since(t0)
	st, err = loadgen.GatewayStatus(b.bed, b.bin, b.cfg)
	if err != nil {
		return err
	}
	fmt.Printf("idle %v with %d peers (gateway DPD %v): gateway CPU %.1f%% of a core; %d IKE SAs still up, IKE counters %+v; generator %+v; load: %s\n",
		el.Round(time.Millisecond), b.gen.Stats().Up, dpd, 100*float64(cpu)/100/el.Seconds(), st.IKE.IKESAs, *st.IKE.Counters, b.gen.Stats(), uptime())
	if err := b.churn(all); err != nil {
		return err
	}
	// What the storm left: both sides' counts once the retransmissions
	// have had their time.
	time.Sleep(idle)
	if st, err = loadgen.GatewayStatus(b.bed, b.bin, b.cfg); err != nil {
		return err
	}
	fmt.Printf("%v after the storm: gateway %d IKE SAs, IKE counters %+v; generator %+v; load: %s\n",
		idle, st.IKE.IKESAs, *st.IKE.Counters, b.gen.Stats(), uptime())
	return nil
}

// churn: a tenth of the fleet (at most 1,000) disconnects (DELETE) and
// connects again; then every road warrior rekeys its Child SA at once
// (a rekey storm, what jitter keeps from happening by itself).
func (b *bench) churn(all []int) error {
	k := max(1, min(b.n/10, 1000))
	r := b.gen.Up(context.Background(), all[:k], b.window, 30*time.Second)
	st, err := loadgen.GatewayStatus(b.bed, b.bin, b.cfg)
	if err != nil {
		return err
	}
	fmt.Printf("churn: %d road warriors disconnected and reconnected in %v (%.0f/s), %d failed; gateway: %d IKE SAs, %d established since start; load: %s\n",
		k, r.Elapsed.Round(time.Millisecond), float64(r.Up)/r.Elapsed.Seconds(), r.Failed, st.IKE.IKESAs, st.IKE.Established, uptime())
	before := make([]uint64, len(all))
	for _, i := range all {
		before[i] = b.gen.RekeysOf(i)
	}
	t0 := time.Now()
	for _, i := range all {
		b.gen.Rekey(i, false)
	}
	done := 0
	for deadline := t0.Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		done = 0
		for _, i := range all {
			if b.gen.RekeysOf(i) > before[i] {
				done++
			}
		}
		if done == len(all) {
			break
		}
	}
	st, err = loadgen.GatewayStatus(b.bed, b.bin, b.cfg)
	if err != nil {
		return err
	}
	fmt.Printf("rekey storm: %d of %d Child SAs rekeyed in %v; gateway: %d IKE SAs, %d Child SA rekeys since start, IKE counters %+v; generator %+v; load: %s\n",
		done, len(all), time.Since(t0).Round(time.Millisecond), st.IKE.IKESAs, st.IKE.ChildRekeys, *st.IKE.Counters, b.gen.Stats(), uptime())
	return nil
}

func stop(gw *rig.Proc) error {
	t0 := time.Now()
	err := gw.Stop(30 * time.Second)
	fmt.Printf("gateway SIGTERM to exit: %v\n", time.Since(t0).Round(time.Millisecond))
	return err
}

func rssKB(pid int) int {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

// cpuTicks is utime+stime of pid (clock ticks, 100 per second on Linux).
func cpuTicks(pid int) int {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	k, _ := strconv.Atoi(f[12])
	return u + k
}

func uptime() string {
	out, _ := exec.Command("uptime").Output()
	s := string(out)
	if i := strings.Index(s, "load average:"); i >= 0 {
		return strings.TrimSpace(s[i+len("load average:"):])
	}
	return strings.TrimSpace(s)
}
