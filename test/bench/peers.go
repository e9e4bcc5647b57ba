package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// Several road warriors at once (-peers): the bed's road warrior is peer 1;
// peers 2… live in namespaces of their own (<bed>-rw2 …), each on a veth
// link of its own to the gateway, 100.64.k.0/24 (RFC 6598 shared space,
// .2 the road warrior, .1 the gateway). Each runs a roadwarrior daemon with
// its own SA pair; the gateway carries them all. The row runs one iperf3
// TCP stream per road warrior at the same time, towards its own iperf3
// server port on srv, and reports the sum: do the crypto workers use both
// cores when the load comes from several peers?

// extraPeer is road warrior k >= 2.
type extraPeer struct {
	k      int
	ns     *netns.NS // only Name is set: used with ip netns exec
	rw, gw netip.Addr
	net    netip.Prefix
}

func newExtraPeers(bed *netns.Bed, n int) []extraPeer {
	var ps []extraPeer
	for k := 2; k <= n; k++ {
		ps = append(ps, extraPeer{
			k:   k,
			ns:  &netns.NS{Name: fmt.Sprintf("%s-rw%d", bed.ID, k)},
			rw:  netip.AddrFrom4([4]byte{100, 64, byte(k), 2}),
			gw:  netip.AddrFrom4([4]byte{100, 64, byte(k), 1}),
			net: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(k), 0}), 24),
		})
	}
	return ps
}

// linkExtraPeers creates the namespaces and links; the returned function
// removes them (the links go with the namespaces).
func linkExtraPeers(ctx context.Context, bed *netns.Bed, ps []extraPeer) (func(), error) {
	var made []string
	undo := func() {
		for _, n := range made {
			runOut(context.Background(), "ip", "netns", "del", n)
		}
	}
	for _, p := range ps {
		if _, err := runOut(ctx, "ip", "netns", "add", p.ns.Name); err != nil {
			undo()
			return nil, err
		}
		made = append(made, p.ns.Name)
		ifRW, ifGW := fmt.Sprintf("rsb-p%d", p.k), fmt.Sprintf("rsb-p%d", p.k)
		steps := [][]string{
			{"ip", "link", "add", "name", ifRW, "netns", p.ns.Name, "type", "veth", "peer", "name", ifGW, "netns", bed.GW.Name},
			{"ip", "-n", p.ns.Name, "link", "set", "lo", "up"},
			{"ip", "-n", p.ns.Name, "addr", "add", netip.PrefixFrom(p.rw, 24).String(), "dev", ifRW},
			{"ip", "-n", bed.GW.Name, "addr", "add", netip.PrefixFrom(p.gw, 24).String(), "dev", ifGW},
			{"ip", "-n", p.ns.Name, "link", "set", ifRW, "up"},
			{"ip", "-n", bed.GW.Name, "link", "set", ifGW, "up"},
		}
		for _, s := range steps {
			if _, err := runOut(ctx, s[0], s[1:]...); err != nil {
				undo()
				return nil, err
			}
		}
	}
	return undo, nil
}

// peersRun runs one TCP stream from every road warrior at once and
// returns the sum of what the servers received, in Gbit/s.
func peersRun(ctx context.Context, bed *netns.Bed, ps []extraPeer, d time.Duration) (float64, error) {
	type res struct {
		gbps float64
		err  error
	}
	out := make([]res, len(ps)+1)
	var wg sync.WaitGroup
	run := func(i int, ns *netns.NS, port int) {
		defer wg.Done()
		r, err := iperfFrom(ctx, ns, port, "-t", secs(d))
		if err == nil && r.End.SumReceived.BitsPerSecond <= 0 {
			err = errors.New("iperf3: nothing received")
		}
		if err != nil {
			out[i].err = fmt.Errorf("%s: %w", ns.Name, err)
			return
		}
		out[i].gbps = r.End.SumReceived.BitsPerSecond / 1e9
	}
	wg.Add(len(out))
	go run(0, bed.RW, peerPort(1))
	for i, p := range ps {
		go run(i+1, p.ns, peerPort(p.k))
	}
	wg.Wait()
	sum := 0.0
	var errs []error
	for _, r := range out {
		sum += r.gbps
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	return sum, errors.Join(errs...)
}

// peerPort is the iperf3 server port of road warrior k.
func peerPort(k int) int {
	p, _ := strconv.Atoi(iperfPort)
	return p + k - 1
}

// startPeerServers starts the iperf3 servers of peers 2…; the caller
// stops them.
func startPeerServers(ctx context.Context, bed *netns.Bed, ps []extraPeer) ([]*daemon, error) {
	var ds []*daemon
	for _, p := range ps {
		d, err := startDaemon(ctx, bed.Srv, nil, "iperf3", "-s", "-B", netns.Srv4.String(), "-p", strconv.Itoa(peerPort(p.k)))
		if err != nil {
			return ds, err
		}
		ds = append(ds, d)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := runIn(ctx, bed.Srv, "ss", "-Hltn")
		if err != nil {
			return ds, err
		}
		all := true
		for _, p := range ps {
			all = all && strings.Contains(out, ":"+strconv.Itoa(peerPort(p.k))+" ")
		}
		if all {
			return ds, nil
		}
		if time.Now().After(deadline) {
			return ds, errors.New("peer iperf3 servers not listening after 5s")
		}
	}
}

// waitPing waits until road warrior ns reaches srv through its tunnel.
func waitPing(ctx context.Context, ns *netns.NS, d *daemon) error {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if derr := d.exited(); derr != nil {
			return derr
		}
		if _, err = runIn(ctx, ns, "ping", "-c", "1", "-W", "1", netns.Srv4.String()); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s does not reach srv through its tunnel: %w", ns.Name, err)
}
