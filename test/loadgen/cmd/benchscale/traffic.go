package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/loadgen"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// maxLoss is the loss under which a paced rate counts as carried (the
// 0.1 % of make bench's UDP search).
const maxLoss = 0.001

// drainWait: after a traffic phase's send, the queues drain before
// anything is counted.
const drainWait = 300 * time.Millisecond

type trafficResult struct {
	sent, got       uint64
	elapsed         time.Duration
	gwCPU, genCPU   int    // clock ticks during the send and the drain
	drops           string // the kernel's drop counters that grew
	dp0, dp         daemon.DatapathStatus
	offered, loss   float64
	delivered, secs float64
}

// trafficPhase measures and reports one traffic phase: the flood (the
// generator as fast as it can), then the highest paced rate carried with
// under maxLoss lost, and what each process spent per packet at it (the
// two share the machine's cores).
func (b *bench) trafficPhase(gw *rig.Proc, set []int, echo bool, blast time.Duration) error {
	what, tag := "into the sink", "sink"
	if echo {
		what, tag = "echoed back", "echo"
	}
	stopProf, err := phaseProfile(gw, fmt.Sprintf("traffic-%d-%s", len(set), tag))
	if err != nil {
		return err
	}
	t, err := b.traffic(gw, set, echo, blast, b.rate)
	if perr := stopProf(); err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	how := "flood"
	if b.rate > 0 {
		how = fmt.Sprintf("offered %.0f/s", b.rate)
	}
	fmt.Printf("traffic over %d SAs, %s, %s: %.0f packets/s, %.1f Mbit/s (payload %d; %d sent, %d arrived); CPU: gateway %.0f%%, generator %.0f%% of a core; load: %s\n",
		len(set), what, how, t.delivered, t.delivered*float64(b.payload)*8/1e6, b.payload, t.sent, t.got,
		float64(t.gwCPU)/t.secs, float64(t.genCPU)/t.secs, uptime())
	gwUS, genUS := b.perPacket(t)
	fmt.Printf("    gateway: %s; drops by the kernel: %s; CPU per packet arrived, the idle background taken off: gateway %.1f µs, generator %.1f µs\n",
		datapathDelta(t.dp0, t.dp), t.drops, gwUS, genUS)
	if b.probes == 0 {
		return nil
	}
	best, n, err := b.lossFree(gw, set, echo, t.offered)
	if err != nil {
		return err
	}
	if best == nil {
		fmt.Printf("    paced: no rate carried with under %.1f%% loss in %d probes; load: %s\n", 100*maxLoss, n, uptime())
		return nil
	}
	gwUS, genUS = b.perPacket(*best)
	fmt.Printf("    paced, under %.1f%% loss (%d probes of %v): %.0f packets/s, %.1f Mbit/s (offered %.0f, lost %.2f%%); per packet, background off: gateway %.1f µs, generator %.1f µs of CPU; load: %s\n",
		100*maxLoss, n, b.probe, best.delivered, best.delivered*float64(b.payload)*8/1e6, best.offered, 100*best.loss,
		gwUS, genUS, uptime())
	return nil
}

// lossFree searches the highest offered rate up to hi that set carries
// with under maxLoss lost: a binary search of b.probes probes. It returns
// the best probe (nil if none passed) and the number run.
func (b *bench) lossFree(gw *rig.Proc, set []int, echo bool, hi float64) (*trafficResult, int, error) {
	lo := 0.0
	var best *trafficResult
	n := 0
	for rate := hi / 2; n < b.probes; rate = (lo + hi) / 2 {
		t, err := b.traffic(gw, set, echo, b.probe, rate)
		if err != nil {
			return nil, n, err
		}
		n++
		if t.loss < maxLoss {
			lo = rate
			if best == nil || t.delivered > best.delivered {
				best = &t
			}
		} else {
			hi = rate
		}
	}
	return best, n, nil
}

// traffic sends for d over set at pps (0: as fast as it can) and counts
// what arrived: at a sink behind the gateway, or (echo) back at the
// generator.
func (b *bench) traffic(gw *rig.Proc, set []int, echo bool, d time.Duration, pps float64) (trafficResult, error) {
	var t trafficResult
	var sink *loadgen.Sink
	if err := b.bed.Srv.Do(func() (err error) {
		sink, err = loadgen.ListenSink(netip.AddrPortFrom(netns.Srv4, 9), echo)
		return err
	}); err != nil {
		return t, err
	}
	defer sink.Close()
	var err error
	if t.dp0, err = loadgen.GatewayCounters(b.bed, b.bin, b.cfg); err != nil {
		return t, err
	}
	drops0 := b.bed.Drops()
	gwCPU0, genCPU0 := cpuTicks(gw.PID()), cpuTicks(os.Getpid())
	rx0 := b.gen.Stats().ESPReceived
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t0 := time.Now()
	t.sent = b.gen.BlastAt(ctx, set, netip.AddrPortFrom(netns.Srv4, 9), b.payload, b.senders, pps, b.burst)
	cancel()
	t.elapsed = time.Since(t0)
	time.Sleep(drainWait)
	t.got = sink.Packets.Load()
	if echo {
		t.got = b.gen.Stats().ESPReceived - rx0
	}
	t.gwCPU, t.genCPU = cpuTicks(gw.PID())-gwCPU0, cpuTicks(os.Getpid())-genCPU0
	t.drops = netns.DropsSince(drops0, b.bed.Drops())
	if t.dp, err = loadgen.GatewayCounters(b.bed, b.bin, b.cfg); err != nil {
		return t, err
	}
	t.secs = t.elapsed.Seconds() + drainWait.Seconds()
	t.offered = float64(t.sent) / t.elapsed.Seconds()
	t.delivered = float64(t.got) / t.elapsed.Seconds()
	t.loss = 1 - float64(t.got)/float64(max(t.sent, 1))
	return t, nil
}

// datapathDelta is what the gateway's data path counted between a and b:
// where a packet the kernel handed it went.
func datapathDelta(a, b daemon.DatapathStatus) string {
	s := fmt.Sprintf("ESP received %d, TUN written %d, TUN read %d, ESP sent %d",
		b.ESPReceived-a.ESPReceived, b.TunWritten-a.TunWritten, b.TunRead-a.TunRead, b.ESPSent-a.ESPSent)
	for k, v := range b.Drops {
		if d := v - a.Drops[k]; d > 0 {
			s += fmt.Sprintf(", dropped %s %d", k, d)
		}
	}
	return s
}

// perPacket is each process's CPU per packet that arrived in t, in µs,
// without what it spends with no traffic at all (b.idleGW, b.idleGen:
// with 10,000 peers the gateway's DPD alone is a thousand exchanges a
// second, which would otherwise weigh on a slow rate's figure most).
func (b *bench) perPacket(t trafficResult) (gw, gen float64) {
	n := float64(max(t.got, 1))
	gw = (10_000*float64(t.gwCPU) - 1e6*b.idleGW*t.secs) / n
	gen = (10_000*float64(t.genCPU) - 1e6*b.idleGen*t.secs) / n
	return gw, gen
}

// measureIdle sets b.idleGW and b.idleGen: the CPU (in cores) the gateway
// and the generator spend over d with every road warrior up and no
// traffic.
func (b *bench) measureIdle(gw *rig.Proc, d time.Duration) {
	gw0, gen0 := cpuTicks(gw.PID()), cpuTicks(os.Getpid())
	t0 := time.Now()
	time.Sleep(d)
	secs := time.Since(t0).Seconds()
	b.idleGW = float64(cpuTicks(gw.PID())-gw0) / 100 / secs
	b.idleGen = float64(cpuTicks(os.Getpid())-gen0) / 100 / secs
	fmt.Printf("no traffic for %v: gateway %.1f%%, generator %.1f%% of a core (taken off the per-packet figures); load: %s\n",
		d, 100*b.idleGW, 100*b.idleGen, uptime())
}
