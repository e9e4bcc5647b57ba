package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

type machine struct {
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu,omitempty"`
	Kernel string `json:"kernel,omitempty"`
	Iperf3 string `json:"iperf3,omitempty"`
}

type report struct {
	Machine     machine      `json:"machine"`
	DurationSec float64      `json:"tcp_duration_seconds"`
	Runs        int          `json:"tcp_runs"`
	Paths       []pathResult `json:"paths"`
	// RoamsecOverWireGuard is b/c of the TCP medians, when both ran.
	RoamsecOverWireGuard *float64 `json:"roamsec_over_wireguard,omitempty"`
	Goal                 float64  `json:"goal_roamsec_over_wireguard"`
	GoalMet              *bool    `json:"goal_met,omitempty"`
}

type pathResult struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	Available     bool       `json:"available"`
	Error         string     `json:"error,omitempty"`
	TCPGbps       []float64  `json:"tcp_gbps,omitempty"`
	TCPMedianGbps float64    `json:"tcp_median_gbps,omitempty"`
	RatioToBare   *float64   `json:"ratio_to_bare,omitempty"`
	RatioToWG     *float64   `json:"ratio_to_wireguard_go,omitempty"`
	CPU           *cpuResult `json:"cpu,omitempty"`
	UDP64         *udpResult `json:"udp64,omitempty"`
	// TCP with several parallel streams (iperf3 -P), per run and median.
	TCPStreams           int       `json:"tcp_streams,omitempty"`
	TCPStreamsGbps       []float64 `json:"tcp_streams_gbps,omitempty"`
	TCPStreamsMedianGbps float64   `json:"tcp_streams_median_gbps,omitempty"`
	// One TCP stream from each of several road warriors at once: the sum.
	Peers           int       `json:"peers,omitempty"`
	PeersGbps       []float64 `json:"peers_gbps,omitempty"`
	PeersMedianGbps float64   `json:"peers_median_gbps,omitempty"`
	// CPU per 64-byte packet at a fixed rate (-udp-cpu-rate).
	UDPCPU   *udpCPUResult `json:"udp64_cpu,omitempty"`
	UDPError string        `json:"udp64_error,omitempty"`
	// BackgroundCPUPercent is how busy the machine was, with nothing of
	// ours running, in the second before the path was set up.
	BackgroundCPUPercent float64 `json:"background_cpu_percent"`
}

// busyWarn is the background load above which a path's figures are
// flagged: the benchmark wants the machine to itself.
const busyWarn = 10.0

// cpuResult is the CPU cost over all TCP runs of a path. The packets are
// the inner packets moved: rw's TCP segments in and out, counted by its
// TCP stack as wire-sized segments even when TSO/GRO and the TUN offloads
// move them in 64 KB batches (the interface counters, kept for reference,
// count such batches as one packet).
type cpuResult struct {
	Packets uint64 `json:"packets"`
	// Tunnel process utime+stime per packet; absent for the bare path.
	RWUsPerPacket *float64 `json:"rw_us_per_packet,omitempty"`
	GWUsPerPacket *float64 `json:"gw_us_per_packet,omitempty"`
	RWSeconds     float64  `json:"rw_cpu_seconds,omitempty"`
	GWSeconds     float64  `json:"gw_cpu_seconds,omitempty"`
	// Busy time of every CPU of the machine (tunnels, iperf3, softirq)
	// per packet: comparable across all paths, the bare one included.
	AllUsPerPacket float64 `json:"all_cpus_us_per_packet"`
	// Interface counters, rx+tx packets (ip -s -j link).
	RWPrimaryPackets uint64 `json:"rw_primary_link_packets"`
	GWPrimaryPackets uint64 `json:"gw_primary_link_packets"`
	RWTunnelPackets  uint64 `json:"rw_tunnel_if_packets,omitempty"`
	GWTunnelPackets  uint64 `json:"gw_tunnel_if_packets,omitempty"`
}

func (r *pathResult) setCPU(t counters, s *setup) {
	if t.tcpSegs == 0 {
		return
	}
	pk := float64(t.tcpSegs)
	us := func(ticks uint64) float64 { return float64(ticks) / clkTck * 1e6 / pk }
	c := &cpuResult{
		Packets:          t.tcpSegs,
		AllUsPerPacket:   us(t.sysBusy),
		RWPrimaryPackets: t.rwOuter, GWPrimaryPackets: t.gwOuter,
		RWTunnelPackets: t.rwTun, GWTunnelPackets: t.gwTun,
	}
	if s.rw != nil {
		v := us(t.rwTicks)
		c.RWUsPerPacket, c.RWSeconds = &v, float64(t.rwTicks)/clkTck
	}
	if s.gw != nil {
		v := us(t.gwTicks)
		c.GWUsPerPacket, c.GWSeconds = &v, float64(t.gwTicks)/clkTck
	}
	r.CPU = c
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (rep *report) path(id string) *pathResult {
	for i := range rep.Paths {
		if rep.Paths[i].ID == id && rep.Paths[i].Available && rep.Paths[i].TCPMedianGbps > 0 {
			return &rep.Paths[i]
		}
	}
	return nil
}

// finish computes the ratios.
func (rep *report) finish() {
	if a := rep.path("a"); a != nil {
		for i := range rep.Paths {
			p := &rep.Paths[i]
			if p.Available && p.TCPMedianGbps > 0 {
				v := p.TCPMedianGbps / a.TCPMedianGbps
				p.RatioToBare = &v
			}
		}
	}
	if c := rep.path("c"); c != nil && c.Available && c.TCPMedianGbps > 0 {
		for i := range rep.Paths {
			if p := &rep.Paths[i]; p.ID != "a" && p.ID != "c" && p.Available {
				v := p.TCPMedianGbps / c.TCPMedianGbps
				p.RatioToWG = &v
			}
		}
	}
	if b, c := rep.path("b"), rep.path("c"); b != nil && c != nil {
		v := b.TCPMedianGbps / c.TCPMedianGbps
		met := v >= rep.Goal
		rep.RoamsecOverWireGuard, rep.GoalMet = &v, &met
	}
}

func (rep *report) printTable(w io.Writer) {
	m := rep.Machine
	fmt.Fprintf(w, "\nroamsec benchmark: %d CPUs", m.CPUs)
	if m.CPU != "" {
		fmt.Fprintf(w, " (%s)", m.CPU)
	}
	fmt.Fprintf(w, ", kernel %s, %s\n", m.Kernel, m.Iperf3)
	fmt.Fprintf(w, "TCP: iperf3 srv <- rw, %d x %gs; 64-byte UDP: highest rate with < %g%% loss\n\n",
		rep.Runs, rep.DurationSec, maxLoss*100)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tTCP Gbit/s per run\tmedian\t/bare\t/wg-go\tCPU µs/pkt rw\tgw\tall CPUs\t64B UDP pps\t")
	for _, p := range rep.Paths {
		label := p.ID + " " + p.Name
		if !p.Available {
			fmt.Fprintf(tw, "%s\tnot available (below)\t-\t-\t-\t-\t-\t-\t-\t\n", label)
			continue
		}
		runs := make([]string, len(p.TCPGbps))
		for i, g := range p.TCPGbps {
			runs[i] = fmt.Sprintf("%.2f", g)
		}
		bc := "-"
		if p.RatioToWG != nil {
			bc = fmt.Sprintf("%.2f", *p.RatioToWG)
		}
		rwc, gwc, all := "n/a", "n/a", "n/a"
		if p.CPU != nil {
			rwc, gwc = optUs(p.CPU.RWUsPerPacket), optUs(p.CPU.GWUsPerPacket)
			all = fmt.Sprintf("%.2f", p.CPU.AllUsPerPacket)
		}
		udp := "n/a"
		if p.UDP64 != nil {
			udp = strconv.FormatFloat(p.UDP64.PPS, 'f', 0, 64)
			if p.UDP64.SenderBound {
				udp = ">=" + udp + " (sender-bound)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", label, strings.Join(runs, " "),
			p.TCPMedianGbps, optRatio(p.RatioToBare), bc, rwc, gwc, all, udp)
	}
	tw.Flush()
	rep.printMore(w)

	fmt.Fprintln(w)
	for _, p := range rep.Paths {
		if !p.Available {
			fmt.Fprintf(w, "%s: not available (%s)\n", p.Name, p.Error)
		}
	}
	if rep.RoamsecOverWireGuard != nil {
		verdict := "below"
		if *rep.GoalMet {
			verdict = "meets"
		}
		fmt.Fprintf(w, "roamsec / wireguard-go (b/c): %.2f — %s the goal of >= %.2f\n", *rep.RoamsecOverWireGuard, verdict, rep.Goal)
	} else {
		fmt.Fprintf(w, "roamsec / wireguard-go (b/c): n/a (needs both paths; goal >= %.2f)\n", rep.Goal)
	}
	fmt.Fprintln(w, "CPU µs/pkt: tunnel process utime+stime (/proc/PID/stat) per inner packet moved (rw's TCP")
	fmt.Fprintln(w, "segments in+out); n/a on the bare path (no tunnel process). all CPUs: busy time of the")
	fmt.Fprintln(w, "whole machine (iperf3, softirq, tunnels) per packet, comparable across paths.")
	fmt.Fprintln(w, "sender-bound: no loss even at the top rate of one iperf3 sender; the path may do more.")
	for _, p := range rep.Paths {
		if p.BackgroundCPUPercent > busyWarn {
			fmt.Fprintf(w, "warning: %.0f%% of the CPUs were busy with other work just before path %s: its figures are unreliable\n",
				p.BackgroundCPUPercent, p.ID)
		}
		if p.UDPError != "" {
			fmt.Fprintf(w, "%s %s: 64-byte UDP: %s\n", p.ID, p.Name, p.UDPError)
		}
	}
}

// printMore prints the second table: parallel TCP streams, the 64-byte
// rate against wireguard-go's, and CPU per 64-byte packet at a fixed rate.
func (rep *report) printMore(w io.Writer) {
	var wg *pathResult
	for i := range rep.Paths {
		if rep.Paths[i].ID == "c" && rep.Paths[i].Available {
			wg = &rep.Paths[i]
		}
	}
	ratio := func(v float64, of func(*pathResult) float64) string {
		if wg == nil || of(wg) <= 0 || v <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v/of(wg))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tTCP streams\tGbit/s per run\tmedian\t/wg-go\troad warriors\tGbit/s per run\tmedian\t64B pps /wg-go\t64B CPU µs/pkt rw\tgw\tat pps\t")
	for _, p := range rep.Paths {
		if !p.Available {
			continue
		}
		streams, runs, med := "-", "-", "-"
		if p.TCPStreams > 1 {
			streams = strconv.Itoa(p.TCPStreams)
			rs := make([]string, len(p.TCPStreamsGbps))
			for i, g := range p.TCPStreamsGbps {
				rs[i] = fmt.Sprintf("%.2f", g)
			}
			runs, med = strings.Join(rs, " "), fmt.Sprintf("%.2f", p.TCPStreamsMedianGbps)
		}
		peers, pruns, pmed := "-", "-", "-"
		if p.Peers > 1 {
			peers = strconv.Itoa(p.Peers)
			rs := make([]string, len(p.PeersGbps))
			for i, g := range p.PeersGbps {
				rs[i] = fmt.Sprintf("%.2f", g)
			}
			pruns, pmed = strings.Join(rs, " "), fmt.Sprintf("%.2f", p.PeersMedianGbps)
		}
		udpRatio := "-"
		if p.UDP64 != nil {
			udpRatio = ratio(p.UDP64.PPS, func(q *pathResult) float64 {
				if q.UDP64 == nil {
					return 0
				}
				return q.UDP64.PPS
			})
		}
		rwc, gwc, at := "n/a", "n/a", "-"
		if p.UDPCPU != nil {
			rwc, gwc = fmt.Sprintf("%.2f", p.UDPCPU.RWUsPerPacket), fmt.Sprintf("%.2f", p.UDPCPU.GWUsPerPacket)
			at = strconv.FormatFloat(p.UDPCPU.PPS, 'f', 0, 64)
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.ID, p.Name, streams, runs, med,
			ratio(p.TCPStreamsMedianGbps, func(q *pathResult) float64 { return q.TCPStreamsMedianGbps }),
			peers, pruns, pmed, udpRatio, rwc, gwc, at)
	}
	tw.Flush()
}

func optUs(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}

func optRatio(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *v)
}
