package daemon

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/tun"
)

// runMobility feeds the path set from its detectors and applies the
// switches it decides, until ctx ends. On a gateway it only answers the
// road warriors' SCTP path monitoring. Every goroutine it starts (the
// detectors, the link watcher, IKE's moves) is joined before it returns.
func runMobility(ctx context.Context, s Setup, dev *tun.Device, st *mobilityState, ep *ike.Endpoint) error {
	m := s.Mobility
	if len(m.Paths) == 0 {
		return answerMobility(ctx, s, st)
	}
	fams, err := pathFamilies(s, dev)
	if err != nil {
		return err
	}
	st.mu.Lock()
	for _, f := range fams {
		st.sets, st.movers = append(st.sets, f.set), append(st.movers, f.mover)
	}
	st.mu.Unlock()
	if s.ike != nil {
		var movers []*mobility.Mover
		for _, f := range fams {
			movers = append(movers, f.mover)
		}
		s.ike.mu.Lock()
		s.ike.moved = movedRule(movers)
		s.ike.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs first: stops the detectors, then they are joined
	pm := &pathMonitor{s: s, st: st, fams: fams, ep: ep, wg: &wg,
		events: make(chan mobility.Event, 64), errc: make(chan error, 2+len(fams))}
	pm.startDetectors(ctx)
	wg.Go(func() { pm.errc <- mobility.WatchLinks(ctx, m.Paths, pm.up, pm.events) })
	s.Log.Info("mobility paths", "primary", m.Paths[m.Primary].String(), "paths", len(m.Paths), "families", len(fams))
	return pm.loop(ctx)
}

// answerMobility is the gateway's part: answer the road warriors' SCTP
// path monitoring, if they use it.
func answerMobility(ctx context.Context, s Setup, st *mobilityState) error {
	m := s.Mobility
	if m.Detector != config.DetectorSCTP {
		st.setDetector("none (the gateway follows the road warrior)", "not used")
		return nil
	}
	st.setDetector("answers road warriors' SCTP path monitoring", "yes")
	r := &mobility.SCTPResponder{Local: m.SCTPListen, Port: m.SCTPPort, HB: m.Heartbeat, Log: s.Log}
	err := r.Run(ctx)
	if errors.Is(err, mobility.ErrNoKernelSCTP) {
		st.setDetector("none: NO KERNEL SCTP on this host (road warriors fall back to ESP-level probes, answered by the kernel)", "no")
		s.Log.Warn("mobility: NO KERNEL SCTP on this host: not answering SCTP path monitoring; road warriors fall back to ESP-level probes, which this host answers (ICMP echo)")
		return nil
	}
	return err
}

// pathFamily is one address family's path set: a switch moves only the
// outer addresses and routes of its own family, so IPv4 and IPv6 fail
// over independently (each keeps its own primary).
type pathFamily struct {
	set   *mobility.Set
	mover *mobility.Mover
	paths []mobility.Path
}

func pathFamilies(s Setup, dev *tun.Device) ([]pathFamily, error) {
	m := s.Mobility
	var fams []pathFamily
	for _, v4 := range []bool{true, false} {
		var paths []mobility.Path
		primary := 0
		for i, p := range m.Paths {
			if p.Local.Is4() != v4 {
				continue
			}
			if i == m.Primary {
				primary = len(paths)
			}
			paths = append(paths, p)
		}
		if len(paths) == 0 {
			continue
		}
		set, err := mobility.NewSet(paths, primary, m.Policy, time.Now())
		if err != nil {
			return nil, err
		}
		fams = append(fams, pathFamily{set, &mobility.Mover{SAs: s.Outbound, Current: s.ike.outbound, Routes: dev, Paths: paths, Log: s.Log}, paths})
	}
	return fams, nil
}

// pathMonitor runs the road warrior's detectors and applies the
// switches; its goroutines belong to wg.
type pathMonitor struct {
	s      Setup
	st     *mobilityState
	fams   []pathFamily
	ep     *ike.Endpoint
	wg     *sync.WaitGroup
	events chan mobility.Event
	errc   chan error
	up     mobility.State // the state a path that comes up is given
	probe  sync.Once      // the prober starts at most once
}

// startProber starts the ESP-level prober: when configured, or when any
// family's SCTP detector finds no kernel SCTP.
func (pm *pathMonitor) startProber(ctx context.Context, why string) {
	pm.probe.Do(func() {
		m, log := pm.s.Mobility, pm.s.Log
		kernel := "not used"
		if why == "no kernel SCTP" {
			kernel = "no"
			log.Warn("mobility: NO KERNEL SCTP on this host: path failure detection falls back to ESP-level probes with the same RFC 4960 rules")
		}
		pm.st.setDetector("ESP-level probes (RFC 4960 path management on ICMP echo)", kernel)
		pr := &mobility.Prober{Paths: m.Paths, HB: m.Heartbeat}
		pm.wg.Go(func() { pm.errc <- pr.Run(ctx, pm.events) })
		log.Info("mobility", "detector", "ESP-level probes: RFC 4960 §8 path management on ICMP echo through the host-to-host SA", "why", why,
			"heartbeat", m.Heartbeat.Interval.String(), "path_max_retrans", m.Heartbeat.PathMaxRetrans, "pf_threshold", m.Heartbeat.PFThreshold)
	})
}

func (pm *pathMonitor) startDetectors(ctx context.Context) {
	m, log := pm.s.Mobility, pm.s.Log
	pm.up = mobility.Unconfirmed // heartbeats confirm a path that comes up
	switch m.Detector {
	case config.DetectorSCTP:
		pm.st.setDetector("kernel SCTP association (RFC 4960 heartbeats)", "yes")
		for _, f := range pm.fams { // one association per family
			d := &mobility.SCTPDetector{Paths: f.paths, Port: m.SCTPPort, HB: m.Heartbeat, Log: log}
			pm.wg.Go(func() {
				err := d.Run(ctx, pm.events)
				if errors.Is(err, mobility.ErrNoKernelSCTP) {
					pm.startProber(ctx, "no kernel SCTP")
					return
				}
				pm.errc <- err
			})
		}
		log.Info("mobility", "detector", "kernel SCTP association, RFC 4960 §8 heartbeats", "port", m.SCTPPort,
			"heartbeat", m.Heartbeat.Interval.String(), "path_max_retrans", m.Heartbeat.PathMaxRetrans, "pf_threshold", m.Heartbeat.PFThreshold)
	case config.DetectorProbe:
		pm.startProber(ctx, "configured")
	default:
		pm.st.setDetector("netlink only (cannot see a path that stays up but drops everything)", "not used")
		pm.up = mobility.Active // netlink alone confirms a path that comes up
		log.Warn("mobility", "detector", "netlink only", "note", "a path that stays up but drops everything is not detected without heartbeats")
	}
}

// loop feeds events and ticks to the path sets until ctx ends or a
// detector fails.
func (pm *pathMonitor) loop(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-pm.errc:
			if err != nil {
				return err
			}
		case ev := <-pm.events:
			pm.s.Log.Debug("path event", "local", ev.Local, "peer", ev.Peer, "link", ev.Link, "state", ev.State.String(), "source", ev.Source)
			for _, f := range pm.fams {
				sw, ok := f.set.Update(ev)
				pm.apply(f, sw, ok)
			}
		case now := <-tick.C:
			for _, f := range pm.fams {
				sw, ok := f.set.Tick(now)
				pm.apply(f, sw, ok)
			}
		}
	}
}

func (pm *pathMonitor) apply(f pathFamily, sw mobility.Switch, ok bool) {
	if !ok {
		return
	}
	if err := f.mover.Apply(sw); err != nil {
		pm.s.Log.Error("path switch", "err", err)
	}
	if pm.ep != nil {
		// IKE follows the path too (MOBIKE with peers that speak it).
		pm.wg.Go(func() { pm.ep.Move(sw.To.Local, sw.To.Peer) })
	}
}
