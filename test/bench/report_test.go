package main

import (
	"os"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestTable(t *testing.T) {
	rw, gw := 3.0, 4.0
	rep := report{Runs: 3, DurationSec: 10, Goal: goal, Paths: []pathResult{
		{ID: "a", Name: "bare veth", Available: true, TCPGbps: []float64{10, 9, 11}, TCPMedianGbps: 10,
			CPU: &cpuResult{AllUsPerPacket: 1}, UDP64: &udpResult{PPS: 200000, SenderBound: true}},
		{ID: "b", Name: "roamsec", Error: "no /x/gateway"},
		{ID: "c", Name: "wireguard-go", Available: true, TCPGbps: []float64{1.6, 1.5, 1.7}, TCPMedianGbps: 1.6,
			CPU: &cpuResult{RWUsPerPacket: &rw, GWUsPerPacket: &gw, AllUsPerPacket: 8}, UDP64: &udpResult{PPS: 27000},
			TCPStreams: 4, TCPStreamsGbps: []float64{2.5, 2.25, 2.75}, TCPStreamsMedianGbps: 2.5,
			UDPCPU: &udpCPUResult{PPS: 9990, RWUsPerPacket: 7.5, GWUsPerPacket: 8.25}},
		{ID: "d", Name: "roamsec raw", Peers: 4, PeersGbps: []float64{3.25, 3.5}, PeersMedianGbps: 3.375, Available: true, TCPGbps: []float64{2}, TCPMedianGbps: 2,
			UDP64: &udpResult{PPS: 40500}, TCPStreams: 4, TCPStreamsGbps: []float64{3.75}, TCPStreamsMedianGbps: 3.75},
	}}
	rep.finish()
	if rep.RoamsecOverWireGuard != nil {
		t.Errorf("b/c = %v without roamsec figures", *rep.RoamsecOverWireGuard)
	}
	if r := rep.Paths[2].RatioToBare; r == nil || *r != 0.16 {
		t.Errorf("c/a = %v, want 0.16", r)
	}
	var b strings.Builder
	rep.printTable(&b)
	out := b.String()
	for _, want := range []string{"roamsec: not available (no /x/gateway)", "1.60 1.50 1.70", "3.00", ">=200000 (sender-bound)", "27000",
		"2.50 2.25 2.75", "7.50", "8.25", "9990", "1.50", "3.25 3.50", "3.38"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	rep.Paths[1] = pathResult{ID: "b", Name: "roamsec", Available: true, TCPGbps: []float64{2}, TCPMedianGbps: 2}
	rep.finish()
	if rep.RoamsecOverWireGuard == nil || *rep.RoamsecOverWireGuard != 1.25 || !*rep.GoalMet {
		t.Errorf("b/c = %v, goal met %v; want 1.25, true", rep.RoamsecOverWireGuard, rep.GoalMet)
	}
}

func TestCPUTicks(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	busy, total, err := systemCPU()
	if err != nil || total == 0 || busy > total {
		t.Fatalf("systemCPU = %d, %d, %v", busy, total, err)
	}
}
