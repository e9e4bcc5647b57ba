package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// silent: every path of every family was inactive at the last event
	// (a liveness check went out on that edge).
	silent bool
	up     mobility.State // the state a path that comes up is given
	probe  sync.Once      // the prober starts at most once
	// prober, once started, is told about adopted addresses.
	prober atomic.Pointer[mobility.Prober]
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
		pm.prober.Store(pr)
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
			for _, f := range pm.fams {
				o := f.set.Apply(ev)
				logChanges(pm.s.Log, o.Changes)
				for _, a := range o.Adopted {
					pm.adopt(f, a)
				}
				pm.apply(f, o.Switch, o.Switched)
			}
			pm.checkSilence()
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
		pm.s.Log.Error("path switch failed", "err", err)
	}
	if pm.ep != nil {
		// IKE follows the path too (MOBIKE with peers that speak it).
		pm.wg.Go(func() { pm.ep.Move(sw.To.Local, sw.To.Peer) })
	}
}

// checkSilence: when every path has gone inactive (none answers), IKE
// checks liveness at once rather than after DPD of silence. A gateway
// that restarted, or deleted our IKE SA, answers INVALID_IKE_SPI (RFC
// 7296 §2.21.4) and the road warrior connects again at once; a gateway
// that still holds it answers and nothing changes; no answer at all ends
// it after the retransmissions, as DPD would. Once per silence (edge).
func (pm *pathMonitor) checkSilence() {
	silent := true
	for _, f := range pm.fams {
		for _, p := range f.set.Status() {
			if p.State != mobility.Inactive {
				silent = false
			}
		}
	}
	if silent && !pm.silent && pm.ep != nil {
		pm.s.Log.Warn("mobility: no path answers: checking that the gateway still holds the IKE SA")
		pm.wg.Go(pm.ep.CheckLiveness)
	}
	pm.silent = silent
}

// adopt: a path adopted a new local address (netlink): the prober probes
// from it, the host route to its peer takes it as source, and if the path
// carries traffic the SAs move to it and IKE follows (MOBIKE). The kernel
// SCTP association stays bound to the old one.
func (pm *pathMonitor) adopt(f pathFamily, a mobility.Adoption) {
	if pr := pm.prober.Load(); pr != nil {
		pr.SetLocal(a.Old, a.Path.Local)
	} else if pm.s.Mobility.Detector == config.DetectorSCTP {
		pm.s.Log.Warn("mobility: the SCTP association does not follow an adopted address; the path stays unconfirmed", "path", a.Path.Name)
	}
	inUse := f.set.Active().Name == a.Path.Name
	if err := f.mover.Readdress(a, inUse); err != nil {
		pm.s.Log.Error("path address", "err", err)
	}
	if pm.ep != nil {
		pm.wg.Go(func() {
			// IKE: our address list, the path-monitoring Child SA's
			// selectors (the adopted path's heartbeats need them) and,
			// if the path is in use, the IKE SA (MOBIKE).
			pm.ep.Readdress(a.Old, a.Path.Local)
			if inUse {
				pm.ep.Move(a.Path.Local, a.Path.Peer)
			}
		})
	}
}

// logChanges logs each path state transition once, with the time it
// happened (the detector's), which may be earlier than the log record.
func logChanges(log *slog.Logger, cs []mobility.Change) {
	for _, c := range cs {
		log.Info("path state", "path", c.Path.String(), "from", c.From.String(), "to", c.To.String(),
			"source", c.Source, "at", c.Time.Format(time.RFC3339Nano))
	}
}
