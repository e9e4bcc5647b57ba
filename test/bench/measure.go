package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

const (
	iperfPort = "5201"
	udpLen    = 64    // UDP payload bytes of the small-packet test
	maxLoss   = 0.001 // "without loss": less than 0.1% lost
)

// measurePath brings path id up on a fresh bed, measures it and tears
// everything down again, whatever happens.
func measurePath(ctx context.Context, o options, id, work string) (r pathResult) {
	r = pathResult{ID: id, Name: pathNames[id]}
	fail := func(err error) pathResult {
		r.Available = false
		r.Error = oneLine(err.Error())
		progress("%s %s: not available (%s)", id, r.Name, r.Error)
		return r
	}
	progress("%s %s: setting up", id, r.Name)
	var err error
	if o.build {
		if err := build(ctx, o, id); err != nil {
			return fail(fmt.Errorf("build: %w", err))
		}
	}
	// Wait up to -idle-wait for the machine to calm down (the previous
	// path's namespaces are freed asynchronously; other jobs may run).
	for deadline := time.Now().Add(o.idleWait); ; {
		if r.BackgroundCPUPercent, err = backgroundBusy(ctx); err != nil {
			return fail(err)
		}
		if r.BackgroundCPUPercent <= busyWarn || time.Now().After(deadline) {
			break
		}
		logf("%s: %.0f%% of the CPUs busy, waiting", id, r.BackgroundCPUPercent)
	}
	if r.BackgroundCPUPercent > busyWarn {
		progress("%s %s: warning: %.0f%% of the CPUs busy with other work: figures will be unreliable", id, r.Name, r.BackgroundCPUPercent)
	}
	dir := filepath.Join(work, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	bed, err := netns.NewStandalone()
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := bed.Close(); err != nil {
			progress("%s: bed teardown: %v", id, err)
		}
	}()
	env := &pathEnv{ctx: ctx, bed: bed, bin: o.bin, dir: dir, src: o.srcDir, peers: o.peers, wgTxQueue: o.wgTxQueue}
	if o.profile != "" {
		env.profile = filepath.Join(o.profile, id)
	}
	s, err := starters[id](env)
	if err != nil {
		return fail(err)
	}
	defer s.stop()
	r.Available = true

	srv, err := startDaemon(ctx, bed.Srv, nil, "iperf3", "-s", "-B", netns.Srv4.String(), "-p", iperfPort)
	if err != nil {
		return fail(err)
	}
	defer srv.stop()
	if err := waitListen(ctx, bed.Srv, srv); err != nil {
		return fail(err)
	}

	m := &meter{bed: bed, s: s}
	var total counters
	for i := range o.runs {
		before, err := m.snap()
		if err != nil {
			return fail(err)
		}
		gbps, err := tcpRun(ctx, bed, o.duration)
		if err != nil {
			return fail(fmt.Errorf("TCP run %d: %w", i+1, err))
		}
		after, err := m.snap()
		if err != nil {
			return fail(err)
		}
		if err := s.alive(); err != nil {
			return fail(err)
		}
		total.add(after.sub(before))
		r.TCPGbps = append(r.TCPGbps, gbps)
		progress("%s %s: TCP run %d/%d: %.2f Gbit/s", id, r.Name, i+1, o.runs, gbps)
	}
	r.TCPMedianGbps = median(r.TCPGbps)
	r.setCPU(total, s)
	if o.streams > 1 {
		for i := range o.runs {
			gbps, err := tcpRun(ctx, bed, o.duration, "-P", strconv.Itoa(o.streams))
			if err != nil {
				return fail(fmt.Errorf("TCP run %d with %d streams: %w", i+1, o.streams, err))
			}
			r.TCPStreams, r.TCPStreamsGbps = o.streams, append(r.TCPStreamsGbps, gbps)
			progress("%s %s: TCP run %d/%d, %d streams: %.2f Gbit/s", id, r.Name, i+1, o.runs, o.streams, gbps)
		}
		r.TCPStreamsMedianGbps = median(r.TCPStreamsGbps)
	}
	if len(s.peers) > 0 {
		srvs, err := startPeerServers(ctx, bed, s.peers)
		for _, d := range srvs {
			defer d.stop()
		}
		if err != nil {
			return fail(err)
		}
		for i := range o.runs {
			gbps, err := peersRun(ctx, bed, s.peers, o.duration)
			if err != nil {
				return fail(fmt.Errorf("TCP run %d with %d road warriors: %w", i+1, len(s.peers)+1, err))
			}
			r.Peers, r.PeersGbps = len(s.peers)+1, append(r.PeersGbps, gbps)
			progress("%s %s: TCP run %d/%d, %d road warriors: %.2f Gbit/s", id, r.Name, i+1, o.runs, r.Peers, gbps)
		}
		r.PeersMedianGbps = median(r.PeersGbps)
	}

	if o.udp {
		u, err := udpSearch(ctx, bed, o, func(format string, a ...any) {
			progress("%s %s: "+format, append([]any{id, r.Name}, a...)...)
		})
		if err != nil {
			r.UDPError = oneLine(err.Error())
			progress("%s %s: 64-byte UDP: %s", id, r.Name, r.UDPError)
		} else {
			r.UDP64 = u
		}
		if err := s.alive(); err != nil {
			return fail(err)
		}
	}
	if o.profile != "" && s.rw != nil {
		rate := o.udpCPURate
		if r.UDP64 != nil && r.UDP64.PPS > 0 {
			rate = r.UDP64.PPS
		}
		if err := profileRun(ctx, bed, s, o, id, rate); err != nil {
			progress("%s %s: profile: %v", id, r.Name, err)
		}
	}
	if o.udpCPURate > 0 && s.rw != nil {
		c, err := udpCPU(ctx, bed, m, o)
		if err != nil {
			r.UDPError = oneLine(err.Error())
		} else {
			r.UDPCPU = c
			progress("%s %s: 64-byte UDP at %s pps: CPU %.2f / %.2f µs per packet (rw / gw)", id, r.Name, kpps(o.udpCPURate), c.RWUsPerPacket, c.GWUsPerPacket)
		}
	}
	return r
}

// udpCPUResult is the tunnel processes' CPU time per 64-byte packet
// delivered at a fixed rate below the loss-free rate of every path: the
// per-packet cost, apart from where each path saturates.
type udpCPUResult struct {
	PPS           float64 `json:"pps"` // delivered
	LossPercent   float64 `json:"loss_percent"`
	RWUsPerPacket float64 `json:"rw_us_per_packet"`
	GWUsPerPacket float64 `json:"gw_us_per_packet"`
}

func udpCPU(ctx context.Context, bed *netns.Bed, m *meter, o options) (*udpCPUResult, error) {
	before, err := m.snap()
	if err != nil {
		return nil, err
	}
	p, err := udpRun(ctx, bed, o.udpDuration, o.udpCPURate)
	if err != nil {
		return nil, err
	}
	after, err := m.snap()
	if err != nil {
		return nil, err
	}
	d := after.sub(before)
	pk := p.DeliveredPPS * o.udpDuration.Seconds()
	if pk <= 0 {
		return nil, errors.New("no 64-byte packets delivered")
	}
	us := func(ticks uint64) float64 { return float64(ticks) / clkTck * 1e6 / pk }
	return &udpCPUResult{PPS: p.DeliveredPPS, LossPercent: p.LossPercent,
		RWUsPerPacket: us(d.rwTicks), GWUsPerPacket: us(d.gwTicks)}, nil
}

func (s *setup) alive() error {
	for _, d := range []*daemon{s.rw, s.gw} {
		if d != nil {
			if err := d.exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

// backgroundBusy samples how busy the CPUs are for a second, in percent.
func backgroundBusy(ctx context.Context) (float64, error) {
	b0, t0, err := systemCPU()
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Second):
	}
	b1, t1, err := systemCPU()
	if err != nil || t1 == t0 {
		return 0, err
	}
	return 100 * float64(b1-b0) / float64(t1-t0), nil
}

// waitListen waits until the iperf3 server listens in srv.
func waitListen(ctx context.Context, srv *netns.NS, d *daemon) error {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err := d.exited(); err != nil {
			return err
		}
		out, err := runIn(ctx, srv, "ss", "-Hltn", "sport = :"+iperfPort)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("iperf3 server not listening after 5s")
}

// iperf3 -J output, the parts we read. sum_sent/sum_received are TCP's;
// UDP has sum (3.12: the client's count of packets sent, and the server's
// of those lost).
type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumSent     iperfSum `json:"sum_sent"`
		SumReceived iperfSum `json:"sum_received"`
		Sum         iperfSum `json:"sum"`
	} `json:"end"`
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         float64 `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   float64 `json:"retransmits"`
	Packets       float64 `json:"packets"`
	LostPackets   float64 `json:"lost_packets"`
	LostPercent   float64 `json:"lost_percent"`
}

// iperf runs the iperf3 client in rw against srv, retrying while the server
// is still busy with the previous test.
func iperf(ctx context.Context, bed *netns.Bed, args ...string) (*iperfResult, error) {
	return iperfFrom(ctx, bed.RW, peerPort(1), args...)
}

// iperfFrom runs the iperf3 client in ns against the server on port.
func iperfFrom(ctx context.Context, ns *netns.NS, port int, args ...string) (*iperfResult, error) {
	args = append([]string{"-c", netns.Srv4.String(), "-p", strconv.Itoa(port), "-J"}, args...)
	var lastErr error
	for try := 0; try < 10; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
		}
		cmd := command(ctx, ns, "iperf3", args...)
		out, err := cmd.Output()
		logf("%s: iperf3 %s", ns.Name, strings.Join(args, " "))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var res iperfResult
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			if err == nil {
				err = jerr
			}
			lastErr = fmt.Errorf("iperf3 %s: %w: %s", strings.Join(args, " "), err, oneLine(string(out)))
			continue
		}
		if res.Error != "" {
			lastErr = fmt.Errorf("iperf3: %s", res.Error)
			if strings.Contains(res.Error, "busy") || strings.Contains(res.Error, "unable to connect") {
				continue
			}
			return nil, lastErr
		}
		if err != nil {
			return nil, fmt.Errorf("iperf3 %s: %w", strings.Join(args, " "), err)
		}
		return &res, nil
	}
	return nil, lastErr
}

func tcpRun(ctx context.Context, bed *netns.Bed, d time.Duration, extra ...string) (float64, error) {
	res, err := iperf(ctx, bed, append([]string{"-t", secs(d)}, extra...)...)
	if err != nil {
		return 0, err
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3: nothing received")
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// udpProbe is one 64-byte UDP run at a target rate.
type udpProbe struct {
	TargetPPS    float64 `json:"target_pps"` // 0: as fast as the sender goes
	SentPPS      float64 `json:"sent_pps"`
	DeliveredPPS float64 `json:"delivered_pps"`
	LossPercent  float64 `json:"loss_percent"`
}

func (p udpProbe) ok() bool { return p.LossPercent < maxLoss*100 }

func udpRun(ctx context.Context, bed *netns.Bed, d time.Duration, pps float64) (udpProbe, error) {
	rate := "0" // unlimited
	if pps > 0 {
		rate = strconv.FormatFloat(pps*udpLen*8, 'f', 0, 64)
	}
	res, err := iperf(ctx, bed, "-u", "-l", strconv.Itoa(udpLen), "-b", rate, "-t", secs(d), "-w", "4M")
	if err != nil {
		return udpProbe{}, err
	}
	s := res.End.Sum
	if s.Seconds <= 0 || s.Packets <= 0 {
		return udpProbe{}, errors.New("iperf3: no UDP packets sent")
	}
	return udpProbe{
		TargetPPS:    pps,
		SentPPS:      s.Packets / s.Seconds,
		DeliveredPPS: (s.Packets - s.LostPackets) / s.Seconds,
		LossPercent:  100 * s.LostPackets / s.Packets,
	}, nil
}

// udpResult is the highest 64-byte UDP rate delivered with < 0.1% loss.
type udpResult struct {
	PPS          float64    `json:"pps"` // delivered packets per second at that rate
	LossPercent  float64    `json:"loss_percent"`
	SenderBound  bool       `json:"sender_bound"` // no loss even at the sender's top speed
	ProbeSeconds float64    `json:"probe_seconds"`
	Probes       []udpProbe `json:"probes"`
}

// udpSearch first sends as fast as one iperf3 client can, which bounds the
// rate; if that loses packets it bisects between 0 and a little above the
// rate delivered then, until the bracket is within 5% or the probes are
// used up.
func udpSearch(ctx context.Context, bed *netns.Bed, o options, say func(string, ...any)) (*udpResult, error) {
	r := &udpResult{ProbeSeconds: o.udpDuration.Seconds()}
	probe := func(pps float64) (udpProbe, error) {
		var before map[string]uint64
		if o.verbose {
			before = bed.Drops()
		}
		p, err := udpRun(ctx, bed, o.udpDuration, pps)
		if err != nil {
			return p, err
		}
		if o.verbose {
			logf("drops during the probe: %s", netns.DropsSince(before, bed.Drops()))
		}
		r.Probes = append(r.Probes, p)
		verdict := "ok"
		if !p.ok() {
			verdict = "loss"
		}
		target := "max"
		if pps > 0 {
			target = kpps(pps)
		}
		say("64-byte UDP at %s pps: sent %s, delivered %s, loss %.3f%% (%s)",
			target, kpps(p.SentPPS), kpps(p.DeliveredPPS), p.LossPercent, verdict)
		return p, nil
	}
	top, err := probe(0)
	if err != nil {
		return nil, err
	}
	if top.ok() {
		r.PPS, r.LossPercent, r.SenderBound = top.DeliveredPPS, top.LossPercent, true
		return r, nil
	}
	// An overloaded path may deliver less than it could without loss
	// (receive livelock), so look a little above what got through.
	lo, hi := 0.0, min(top.SentPPS, 1.25*top.DeliveredPPS)
	for n := 1; n < o.udpProbes && (lo == 0 || hi-lo > 0.05*hi); n++ {
		mid := (lo + hi) / 2
		if lo == 0 && len(r.Probes) == 1 {
			mid = top.DeliveredPPS * 0.9 // most paths lose little just below it
		}
		p, err := probe(mid)
		if err != nil {
			return nil, err
		}
		if p.ok() {
			lo = mid
			if p.DeliveredPPS > r.PPS {
				r.PPS, r.LossPercent = p.DeliveredPPS, p.LossPercent
			}
		} else {
			hi = mid
		}
	}
	if r.PPS == 0 {
		return r, fmt.Errorf("no rate without loss found in %d probes", len(r.Probes))
	}
	return r, nil
}

func kpps(v float64) string {
	if v >= 1e6 {
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	}
	return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
}

// meter reads the counters a CPU-per-packet figure needs.
type meter struct {
	bed *netns.Bed
	s   *setup
}

type counters struct {
	rwTicks, gwTicks uint64 // tunnel processes' utime+stime
	sysBusy          uint64 // all CPUs, busy jiffies
	tcpSegs          uint64 // rw's TCP InSegs+OutSegs
	rwOuter, gwOuter uint64 // rx+tx packets on the primary link (rw, gw)
	rwTun, gwTun     uint64 // rx+tx packets on the tunnel interfaces
}

func (c counters) sub(b counters) counters {
	return counters{
		rwTicks: c.rwTicks - b.rwTicks, gwTicks: c.gwTicks - b.gwTicks,
		sysBusy: c.sysBusy - b.sysBusy, tcpSegs: c.tcpSegs - b.tcpSegs,
		rwOuter: c.rwOuter - b.rwOuter, gwOuter: c.gwOuter - b.gwOuter,
		rwTun: c.rwTun - b.rwTun, gwTun: c.gwTun - b.gwTun,
	}
}

func (c *counters) add(d counters) {
	c.rwTicks += d.rwTicks
	c.gwTicks += d.gwTicks
	c.sysBusy += d.sysBusy
	c.tcpSegs += d.tcpSegs
	c.rwOuter += d.rwOuter
	c.gwOuter += d.gwOuter
	c.rwTun += d.rwTun
	c.gwTun += d.gwTun
}

func (m *meter) snap() (counters, error) {
	var c counters
	var err error
	if m.s.rw != nil {
		if c.rwTicks, err = cpuTicks(m.s.rw.pid()); err != nil {
			return c, fmt.Errorf("rw tunnel process: %w", err)
		}
	}
	if m.s.gw != nil {
		if c.gwTicks, err = cpuTicks(m.s.gw.pid()); err != nil {
			return c, fmt.Errorf("gw tunnel process: %w", err)
		}
	}
	if c.sysBusy, _, err = systemCPU(); err != nil {
		return c, err
	}
	if c.tcpSegs, err = tcpSegments(m.bed.RW); err != nil {
		return c, err
	}
	rw, err := linkPackets(m.bed.RW)
	if err != nil {
		return c, err
	}
	gw, err := linkPackets(m.bed.GW)
	if err != nil {
		return c, err
	}
	c.rwOuter, c.gwOuter = rw[netns.IfPrimary], gw[netns.IfPrimary]
	c.rwTun, c.gwTun = rw[m.s.rwIf], gw[m.s.gwIf]
	return c, nil
}

// tcpSegments returns InSegs+OutSegs of the namespace's TCP MIB. With TSO
// and GRO these still count wire-sized segments, not super-packets.
func tcpSegments(ns *netns.NS) (uint64, error) {
	tcp, err := ns.SNMP("Tcp")
	if err != nil {
		return 0, err
	}
	return tcp["InSegs"] + tcp["OutSegs"], nil
}

// linkPackets returns rx+tx packets of every interface in the namespace
// (ip -s -j link).
func linkPackets(ns *netns.NS) (map[string]uint64, error) {
	out, err := runOut(context.Background(), "ip", "-n", ns.Name, "-s", "-j", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []struct {
		Ifname string `json:"ifname"`
		Stats  struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			TX struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("ip -s -j link: %w", err)
	}
	m := make(map[string]uint64, len(links))
	for _, l := range links {
		m[l.Ifname] = l.Stats.RX.Packets + l.Stats.TX.Packets
	}
	return m, nil
}
