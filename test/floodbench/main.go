// Command floodbench is `make bench-flood`: the gateway daemon, with its
// default IKE limits, under issue 11's full-scale floods, next to the same
// run with one peer and no attack. A run: the gateway and one road warrior
// on the netns bed; an iperf3 TCP run through the tunnel; the road warrior
// restarted -trials times (time to its Child SA); the gateway's RSS and
// CPU sampled; its status counters; SIGTERM timed. Under attack, from the
// server's namespace meanwhile: IKE_SA_INIT from spoofed sources at
// -spoof/s, a cookie-answering attacker at -cookies/s from -sources real
// addresses on UDP 500, another at -natt/s on UDP 4500 (non-ESP marker, so
// through the ESP sockets), and -fragsrc addresses sending fragment sets
// 2..64 of the largest size (never fragment 1). -floods runs the floods
// one at a time (each next to the same no-attack run, for its ratio), and
// the CPU of each process during the iperf3 run is reported: on a bed of
// two cores the attacker, iperf3 and both daemons share them, so the
// attacker's own CPU is shown beside the gateway's.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/flood"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

type options struct {
	spoof, cookies, natt, sources, fragSrc, fragRate, trials int
	iperf, warm                                              time.Duration
	memLimit, floods, profile, bin                           string
}

func main() {
	var o options
	flag.IntVar(&o.spoof, "spoof", 20000, "spoofed IKE_SA_INIT per second")
	flag.IntVar(&o.cookies, "cookies", 3000, "cookie-answering IKE_SA_INIT per second on UDP 500")
	flag.IntVar(&o.natt, "natt", 2000, "cookie-answering IKE_SA_INIT per second on UDP 4500")
	flag.IntVar(&o.sources, "sources", 400, "real attacker addresses for -cookies (400 × the default per-source cap 32 > the default half_open_max 10000)")
	flag.IntVar(&o.fragSrc, "fragsrc", 4, "attacker addresses sending fragment sets")
	flag.IntVar(&o.fragRate, "fragrate", 20, "half-open SAs per second that get fragment sets (all -fragsrc together)")
	flag.IntVar(&o.trials, "trials", 5, "road warrior reconnects per run")
	flag.DurationVar(&o.iperf, "iperf", 10*time.Second, "iperf3 TCP run length")
	flag.DurationVar(&o.warm, "warm", 5*time.Second, "attack time before measuring")
	flag.StringVar(&o.memLimit, "memlimit", "", "GOMEMLIMIT for the gateway (empty: none)")
	flag.StringVar(&o.floods, "floods", "all", "runs under attack after the no-attack one, comma-separated: all (every flood at once), spoof, cookie, natt, frag")
	flag.StringVar(&o.bin, "bin", "", "directory with gateway and roadwarrior binaries to run (empty: build this tree's), e.g. another commit's, for a before/after in one session")
	flag.StringVar(&o.profile, "profile", "", "directory for the gateway's CPU profile of each run's iperf3 window (RUN.cpu)")
	flag.Parse()
	if o.memLimit != "" {
		os.Setenv("GOMEMLIMIT", o.memLimit)
	}
	dir, err := os.MkdirTemp("", "roamsec-floodbench-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	if o.bin != "" {
		dir = o.bin
	} else if err := rig.Build(dir); err != nil {
		fail(err)
	}
	fmt.Printf("floodbench %s; load before: %s\n", time.Now().UTC().Format(time.RFC3339), uptime())
	var rows []result
	for _, f := range append([]string{""}, strings.Split(o.floods, ",")...) {
		if f != "" && !validFlood[f] {
			fail(fmt.Errorf("-floods: unknown flood %q", f))
		}
		r, err := run(dir, o, f)
		if err != nil {
			fail(err)
		}
		rows = append(rows, r)
	}
	fmt.Printf("load after: %s\n", uptime())
	report(rows)
}

var validFlood = map[string]bool{"all": true, "spoof": true, "cookie": true, "natt": true, "frag": true}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "floodbench:", err)
	os.Exit(1)
}

func uptime() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

type result struct {
	name              string
	mbits             float64
	retrans           float64
	connects          []time.Duration
	connectFails      int
	rssBefore, rssMax int64
	cpu               float64 // gateway, cores, during the measurement
	procCPU           procCPU // during the iperf3 run
	stop              time.Duration
	stopErr           error
	counters          *daemon.IKECounters
	rcvbuf            [2]int64      // the gateway namespace's UDP datagrams received, and dropped for a full socket buffer, during the measurement
	portDrops         map[int]int64 // the gateway's UDP sockets' drops by local port, since it started
	attack            string
	load              string
}

const gwCfg = `role: gateway
log: {level: info}
control_socket: %[1]s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 192.0.2.2/32, src: 192.0.2.1}
transport:
  listen: [192.0.2.1]
ike:
  id: gw.roamsec.example
  local_ts: [203.0.113.0/24]
  peers:
    - {id: rw1@roamsec.example, psk_file: psk, addresses: [192.0.2.2/32]}
`

const rwCfg = `role: roadwarrior
log: {level: info}
control_socket: %[1]s/rw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 192.0.2.2}
transport:
  listen: [192.0.2.2]
ike:
  id: rw1@roamsec.example
  gateway: 192.0.2.1
  gateway_id: gw.roamsec.example
  local_ts: [192.0.2.2/32]
  remote_ts: [203.0.113.0/24]
  psk_file: psk
`

// run is one run: flood "" is none.
func run(bin string, o options, flood string) (r result, err error) {
	r.name = "1 peer, no attack"
	if flood != "" {
		r.name = "under attack: " + flood
	}
	dir, err := os.MkdirTemp("", "roamsec-floodbench-run-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "psk"), []byte("roamsec-floodbench-psk-not-a-secret-0123\n"), 0o600)
	gp, _ := rig.WriteFile(dir, "gw.yaml", fmt.Sprintf(gwCfg, dir))
	rp, _ := rig.WriteFile(dir, "rw.yaml", fmt.Sprintf(rwCfg, dir))
	bed, err := netns.NewStandalone()
	if err != nil {
		return r, err
	}
	defer bed.Close()
	if o.profile != "" {
		name := flood
		if name == "" {
			name = "none"
		}
		os.Setenv(daemon.ProfileEnv, filepath.Join(o.profile, name))
		defer os.Unsetenv(daemon.ProfileEnv)
	}
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 20*time.Second, "-config", gp)
	if err != nil {
		return r, err
	}
	defer gw.Kill()
	os.Unsetenv(daemon.ProfileEnv) // the gateway's alone
	rw, err := startRW(bed, bin, rp)
	if err != nil {
		return r, err
	}
	srv := bed.Srv.Command("iperf3", "-s", "-B", netns.Srv4.String(), "-p", "5201")
	if err := srv.Start(); err != nil {
		return r, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	r.rssBefore, _ = gw.RSS()

	ctx, stop := context.WithCancel(context.Background())
	var attackers sync.WaitGroup
	defer func() { stop(); attackers.Wait() }()
	if flood != "" {
		desc, err := startAttack(ctx, &attackers, bed, o, flood)
		if err != nil {
			return r, err
		}
		r.attack = desc
		time.Sleep(o.warm)
	}
	r.load = uptime()
	udp0 := udpCounters(bed)
	sample := sampleGateway(gw)
	if o.profile != "" {
		gw.Send(syscall.SIGUSR2)
	}
	c0 := cpuNow(gw, rw)
	var ip iperfResult
	ip, err = iperfTCP(bed, o.iperf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "iperf3:", err)
	}
	r.procCPU = cpuNow(gw, rw).since(c0)
	r.procCPU.iperfClient, r.procCPU.iperfServer = ip.hostCPU/100, ip.remoteCPU/100
	r.mbits, r.retrans = ip.mbits, ip.retrans
	if o.profile != "" {
		gw.Send(syscall.SIGUSR2)
	}
	rw.Stop(5 * time.Second)
	for range o.trials {
		t0 := time.Now()
		p, err := startRW(bed, bin, rp)
		if err != nil {
			r.connectFails++
			continue
		}
		r.connects = append(r.connects, time.Since(t0))
		p.Stop(5 * time.Second)
	}
	r.rssMax, r.cpu = sample()
	udp1 := udpCounters(bed)
	r.rcvbuf = [2]int64{udp1[0] - udp0[0], udp1[1] - udp0[1]}
	r.portDrops = socketDrops(bed)
	st, err := status(bed, bin, gp)
	if err == nil {
		r.counters = st.IKE.Counters
	}
	t0 := time.Now()
	r.stopErr = gw.Stop(10 * time.Second)
	r.stop = time.Since(t0)
	return r, nil
}

// startRW starts the road warrior and waits for its Child SA.
func startRW(bed *netns.Bed, bin, cfg string) (*rig.Proc, error) {
	p, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 30*time.Second, "-config", cfg)
	if err != nil {
		return nil, err
	}
	if !rig.WaitFor(30*time.Second, func() bool { return strings.Contains(p.Log(), "Child SA installed") }) {
		p.Kill()
		return nil, fmt.Errorf("road warrior: no Child SA:\n%s", p.Log())
	}
	return p, nil
}

func startAttack(ctx context.Context, wg *sync.WaitGroup, bed *netns.Bed, o options, which string) (string, error) {
	n := o.sources + 8 + o.fragSrc
	srcs, err := flood.AddSources(bed.Srv, netns.IfServer, netip.MustParsePrefix("100.64.0.0/16"), n)
	if err != nil {
		return "", err
	}
	if err := bed.GW.AddRoute(netip.MustParsePrefix("100.64.0.0/10"), netns.Srv4); err != nil {
		return "", err
	}
	target := netns.GWPrimary4
	on := func(f string) bool { return which == "all" || which == f }
	var attacks []*flood.CookieAttack
	var desc []string
	if on("cookie") {
		attacks = append(attacks, &flood.CookieAttack{Target: target, Port: 500, Sources: srcs[:o.sources], Rate: o.cookies})
		desc = append(desc, fmt.Sprintf("cookie-answering %d/s from %d addresses on 500", o.cookies, o.sources))
	}
	if on("natt") {
		attacks = append(attacks, &flood.CookieAttack{Target: target, Port: 4500, Sources: srcs[o.sources : o.sources+8], Rate: o.natt})
		desc = append(desc, fmt.Sprintf("cookie-answering %d/s from 8 on 4500", o.natt))
	}
	if on("frag") {
		attacks = append(attacks, &flood.CookieAttack{Target: target, Port: 500, Sources: srcs[o.sources+8:], Rate: o.fragRate, Fragments: 64, FragSize: 65000})
		desc = append(desc, fmt.Sprintf("%d/s half-open SAs from %d addresses each sending fragments 2..64 of 65,000 B", o.fragRate, o.fragSrc))
	}
	for _, a := range attacks {
		wg.Go(func() {
			if err := a.Run(ctx, bed.Srv); err != nil {
				fmt.Fprintln(os.Stderr, "attack:", err)
			}
		})
	}
	if on("spoof") {
		spoof := &flood.Spoof{Target: target, From: netip.MustParsePrefix("100.96.0.0/12"), Rate: o.spoof}
		desc = append(desc, fmt.Sprintf("spoofed %d/s from 100.96.0.0/12", o.spoof))
		wg.Go(func() {
			if err := spoof.Run(ctx, bed.Srv); err != nil {
				fmt.Fprintln(os.Stderr, "spoof:", err)
			}
		})
	}
	return strings.Join(desc, "; "), nil
}

// procCPU is the CPU (cores) each process of the bed used during the
// iperf3 run, and the whole machine's (kernel work included: softirqs
// are nobody's).
type procCPU struct {
	gateway, roadwarrior, attacker, iperfClient, iperfServer, machine float64
}

type cpuSnap struct {
	at           time.Time
	gw, rw, self int64
	busy, total  int64 // /proc/stat, all CPUs
}

func cpuNow(gw, rw *rig.Proc) cpuSnap {
	s := cpuSnap{at: time.Now(), gw: cpuTicks(gw.PID()), rw: cpuTicks(rw.PID()), self: cpuTicks(os.Getpid())}
	b, _ := os.ReadFile("/proc/stat")
	if l, _, ok := strings.Cut(string(b), "\n"); ok {
		for i, f := range strings.Fields(l)[1:] {
			v, _ := strconv.ParseInt(f, 10, 64)
			s.total += v
			if i != 3 && i != 4 { // idle, iowait
				s.busy += v
			}
		}
	}
	return s
}

func (s cpuSnap) since(s0 cpuSnap) procCPU {
	secs := s.at.Sub(s0.at).Seconds() * 100 // USER_HZ 100
	c := procCPU{gateway: float64(s.gw-s0.gw) / secs, roadwarrior: float64(s.rw-s0.rw) / secs, attacker: float64(s.self-s0.self) / secs}
	if d := s.total - s0.total; d > 0 {
		c.machine = float64(s.busy-s0.busy) / float64(d) * float64(runtime.NumCPU())
	}
	return c
}

// sampleGateway samples the gateway's RSS every 100 ms until the returned
// function is called, which returns the peak and the CPU it used (cores).
func sampleGateway(gw *rig.Proc) func() (int64, float64) {
	done := make(chan struct{})
	var peak int64
	var wg sync.WaitGroup
	c0, t0 := cpuTicks(gw.PID()), time.Now()
	wg.Go(func() {
		for {
			if r, err := gw.RSS(); err == nil {
				peak = max(peak, r)
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return func() (int64, float64) {
		close(done)
		wg.Wait()
		c1 := cpuTicks(gw.PID())
		return peak, float64(c1-c0) / 100 / time.Since(t0).Seconds() // USER_HZ 100
	}
}

// udpCounters reads the gateway namespace's UDP InDatagrams and
// RcvbufErrors (/proc/net/snmp): what the kernel dropped because a
// socket's reader did not keep up never reaches the IKE queue's fairness.
func udpCounters(bed *netns.Bed) [2]int64 {
	out, err := bed.GW.Command("cat", "/proc/net/snmp").Output()
	if err != nil {
		return [2]int64{}
	}
	var names, vals []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "Udp:" {
			if names == nil {
				names = f
			} else {
				vals = f
			}
		}
	}
	var c [2]int64
	for i := range min(len(names), len(vals)) {
		switch names[i] {
		case "InDatagrams":
			c[0], _ = strconv.ParseInt(vals[i], 10, 64)
		case "RcvbufErrors":
			c[1], _ = strconv.ParseInt(vals[i], 10, 64)
		}
	}
	return c
}

// socketDrops sums the drops column of /proc/net/udp and udp6 in the
// gateway's namespace by local port (500: IKE; 4500: ESP and NAT-T IKE).
func socketDrops(bed *netns.Bed) map[int]int64 {
	d := map[int]int64{}
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		out, err := bed.GW.Command("cat", f).Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(out), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) < 13 {
				continue
			}
			_, port, _ := strings.Cut(fs[1], ":")
			p, _ := strconv.ParseInt(port, 16, 32)
			n, _ := strconv.ParseInt(fs[len(fs)-1], 10, 64)
			d[int(p)] += n
		}
	}
	return d
}

func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

type iperfResult struct {
	mbits, retrans     float64
	hostCPU, remoteCPU float64 // percent of one core: the client's, the server's
}

func iperfTCP(bed *netns.Bed, d time.Duration) (iperfResult, error) {
	var out []byte
	var err error
	for range 40 { // the server may take seconds to listen on a loaded machine
		out, err = bed.RW.Command("iperf3", "-c", netns.Srv4.String(), "-p", "5201", "-J", "-t", strconv.Itoa(int(d.Seconds()))).Output()
		if err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	var res struct {
		Error string `json:"error"` // iperf3 -J reports its failures here, exit status aside
		End   struct {
			SumSent     struct{ Retransmits float64 } `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return iperfResult{}, fmt.Errorf("%v %v: %s", err, jerr, out)
	}
	if res.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", res.Error)
	}
	e := res.End
	return iperfResult{e.SumReceived.BitsPerSecond / 1e6, e.SumSent.Retransmits, e.CPU.HostTotal, e.CPU.RemoteTotal}, nil
}

func status(bed *netns.Bed, bin, cfg string) (daemon.Status, error) {
	var st daemon.Status
	out, err := bed.GW.Command(filepath.Join(bin, "gateway"), "status", "-json", "-config", cfg).Output()
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil || st.IKE == nil || st.IKE.Counters == nil {
		return st, fmt.Errorf("status: %v", err)
	}
	return st, nil
}

func report(rows []result) {
	for _, r := range rows {
		fmt.Printf("\n== %s (load during: %s)\n", r.name, r.load)
		if r.attack != "" {
			fmt.Printf("attack: %s\n", r.attack)
		}
		fmt.Printf("iperf3 TCP through the tunnel: %.0f Mbit/s (%.0f retransmits), %.2fx the no-attack run\n", r.mbits, r.retrans, r.mbits/rows[0].mbits)
		c := r.procCPU
		fmt.Printf("CPU during iperf3, cores: gateway %.2f, road warrior %.2f, attacker %.2f, iperf3 client %.2f, server %.2f; machine %.2f of %d\n",
			c.gateway, c.roadwarrior, c.attacker, c.iperfClient, c.iperfServer, c.machine, runtime.NumCPU())
		var ms []string
		for _, c := range r.connects {
			ms = append(ms, strconv.FormatInt(c.Milliseconds(), 10))
		}
		fmt.Printf("road warrior connect (start to Child SA), ms: %s; failed: %d\n", strings.Join(ms, " "), r.connectFails)
		fmt.Printf("gateway RSS: %d MiB before, %d MiB peak; CPU %.2f cores\n", r.rssBefore>>20, r.rssMax>>20, r.cpu)
		if c := r.counters; c != nil {
			fmt.Printf("gateway IKE: %d half-open, cookie mode %v (%d switches), %d cookies, %d fragment bytes held, drops %v\n",
				c.HalfOpen, c.CookieMode, c.CookieSwitches, c.Cookies, c.FragmentBytes, c.Drops)
		}
		fmt.Printf("gateway UDP: %d datagrams received, %d dropped by the kernel (socket buffer full); drops by local port since start: %v\n", r.rcvbuf[0], r.rcvbuf[1], r.portDrops)
		fmt.Printf("SIGTERM to exit: %v (err %v)\n", r.stop.Round(time.Millisecond), r.stopErr)
	}
}
