// Package daemon runs what the gateway and road-warrior daemons share: it
// creates the TUN device, installs addresses, routes and the routing rule,
// opens the ESP transports, runs the data path, and on shutdown removes
// everything it installed and zeroes the SAs' keys.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// Rule is the policy routing of RFC 3554 mode: tunnel routes live in
// their own table, consulted first by every packet that is not one of our
// own ESP packets (marked), because there the peer's inner and outer
// addresses are the same and only the mark tells "into the tunnel" from
// "onto the wire".
type Rule struct {
	Mark     uint32
	Table    int
	Priority int
}

// Setup is everything a daemon needs, already validated and built.
type Setup struct {
	TUN      tun.Config
	Addrs    []netip.Prefix // installed on the TUN device
	Routes   []tun.Route    // into the TUN; with a Rule, routes in table 0 go to the rule's table
	UDPPort  uint16         // RFC 3948 port for UDP-encapsulated SAs
	SPD      *tunnel.SPD
	SAD      *tunnel.SAD
	Outbound []*tunnel.SA // the outbound SAs (inbound ones are in SAD)
	// KeepAlive sends RFC 3948 NAT keep-alives on UDP SAs; 0 = off.
	KeepAlive time.Duration
	Rule      *Rule // nil: plain routes, unmarked sockets
	Log       *slog.Logger
	// Mobility, if set, moves the outbound SAs between paths.
	Mobility *config.Mobility
	// ControlSocket, if set, serves status, sa list and disconnect there
	// (root only; ControlGroup, if set, may also read).
	ControlSocket string
	ControlGroup  *config.ControlGroup
	Role          string
	// Metrics, if set, is where the Prometheus endpoint listens.
	Metrics string
	// Ready, if set, is called once the tunnel is up.
	Ready func(*Running)
	// IKE, if set, negotiates SAs with IKEv2; Listen are our outer
	// addresses (announced to the peer).
	IKE    *config.IKE
	Listen []netip.Addr
	// Progress, if set, receives the IKE steps (the CLI shows them).
	Progress func(ike.Progress)
	// FailFast (connect): a failure before the first Child SA is up ends
	// Run with that error, instead of retrying with backoff.
	FailFast bool

	ike *ikeState
}

// Running is a daemon whose tunnel is up.
type Running struct {
	Device   *tun.Device
	Datapath *datapath.Datapath
	setup    *Setup
	mob      *mobilityState
	started  time.Time
}

// Run brings the tunnel up and runs it until ctx ends. It returns after
// removing what it installed.
func Run(ctx context.Context, s Setup) (err error) {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.UDPPort == 0 {
		s.UDPPort = transport.NATTPort
	}
	log := s.Log
	// disconnect (the control command) ends the run like a signal does.
	ctx, disconnect := context.WithCancel(ctx)
	defer disconnect()
	defer func() {
		for _, sa := range s.Outbound {
			sa.Close()
		}
		for _, sa := range s.SAD.All() {
			s.SAD.Remove(sa.SPI)
		}
	}()

	dev, err := tun.Open(s.TUN)
	if err != nil {
		return fmt.Errorf("open TUN device %q: %w (is /dev/net/tun there, and do we have CAP_NET_ADMIN?)", s.TUN.Name, err)
	}
	// Closing the device (the datapath does it on exit; a second Close is
	// harmless) deletes the link and with it its addresses and routes;
	// Unconfigure removes the rules, which do not belong to the link.
	defer dev.Close()
	defer func() {
		if uerr := dev.Unconfigure(); uerr != nil {
			log.Warn("cleanup", "err", uerr)
		}
	}()
	routes := make([]tun.Route, len(s.Routes))
	for i, r := range s.Routes {
		if s.Rule != nil && r.Table == 0 {
			r.Table = s.Rule.Table
		}
		routes[i] = r
	}
	if err := dev.Configure(s.Addrs, routes); err != nil {
		return err
	}
	if s.Rule != nil {
		if err := dev.AddBypassRule(s.Rule.Mark, s.Rule.Table, s.Rule.Priority); err != nil {
			return err
		}
	}

	cfg := datapath.Config{TUN: dev, SPD: s.SPD, SAD: s.SAD, Log: log}
	needESP, needUDP := false, s.IKE != nil
	for _, sas := range [][]*tunnel.SA{s.Outbound, s.SAD.All()} {
		for _, sa := range sas {
			if sa.UDPEncap {
				needUDP = true
			} else {
				needESP = true
			}
		}
	}
	var conns []interface {
		Close() error
		SetMark(uint32) error
	}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	if needESP {
		e4, err := transport.ListenRawESP(netip.IPv4Unspecified())
		if err != nil {
			closeAll()
			return fmt.Errorf("raw ESP socket (IPv4): %w (needs CAP_NET_RAW)", err)
		}
		conns = append(conns, e4)
		cfg.ESP4 = e4
		if e6, err := transport.ListenRawESP(netip.IPv6Unspecified()); err == nil {
			conns = append(conns, e6)
			cfg.ESP6 = e6
		} else {
			log.Warn("no IPv6 ESP socket", "err", err)
		}
	}
	if needUDP {
		u4, err := transport.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), s.UDPPort))
		if err != nil {
			closeAll()
			return fmt.Errorf("UDP port %d (IPv4): %w", s.UDPPort, err)
		}
		conns = append(conns, u4)
		cfg.UDP4 = u4
		if u6, err := transport.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), s.UDPPort)); err == nil {
			conns = append(conns, u6)
			cfg.UDP6 = u6
		} else {
			log.Warn("no IPv6 UDP socket", "err", err)
		}
	}
	for _, c := range conns {
		if s.Rule == nil {
			break
		}
		if err := c.SetMark(s.Rule.Mark); err != nil {
			closeAll()
			return err
		}
	}
	var ep *ike.Endpoint
	var socks ikeSockets
	ikeEvents := make(chan ike.Progress, 64)
	if s.IKE != nil {
		icfg, err := ikeConfig(s.IKE, s.Role, s.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("ike: %w", err)
		}
		st := &ikeState{spd: s.SPD, sad: s.SAD, dev: dev, log: log, policies: map[string]*tunnel.Policy{},
			children: map[string]*ike.Child{}, vips: map[netip.Addr]bool{}, up: make(chan struct{}), initiator: icfg.Initiator}
		s.ike = st
		icfg.Install, icfg.Remove, icfg.Log = st.install, st.remove, log
		icfg.Send = socks.send
		icfg.Progress = func(p ike.Progress) {
			st.track.progress(p)
			if s.Progress != nil {
				s.Progress(p)
			}
			select {
			case ikeEvents <- p:
			default:
			}
		}
		if ep, err = ike.New(icfg); err != nil {
			closeAll()
			return err
		}
		st.ep = ep
		if u, ok := cfg.UDP4.(*transport.UDPConn); ok {
			socks.p4500[0] = u
		}
		if u, ok := cfg.UDP6.(*transport.UDPConn); ok {
			socks.p4500[1] = u
		}
		for i, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			c, err := transport.ListenIKE(netip.AddrPortFrom(any, s.IKE.Port))
			if err != nil {
				if i == 0 {
					closeAll()
					return fmt.Errorf("IKE port %d: %w (needs CAP_NET_BIND_SERVICE)", s.IKE.Port, err)
				}
				log.Warn("no IPv6 IKE socket", "err", err)
				continue
			}
			if s.Rule != nil {
				if err := c.SetMark(s.Rule.Mark); err != nil {
					c.Close()
					closeAll()
					return err
				}
			}
			socks.p500[i] = c
			conns = append(conns, c)
			go readIKE(c, ep)
		}
		cfg.OnIKE = func(msg []byte, local netip.Addr, remote netip.AddrPort) { ep.Handle(msg, local, remote, true) }
		defer ep.Close()
	}
	var metricsLn net.Listener
	if s.Metrics != "" {
		if metricsLn, err = net.Listen("tcp", s.Metrics); err != nil {
			closeAll()
			return fmt.Errorf("metrics endpoint: %w", err)
		}
		defer metricsLn.Close()
	}
	dp, err := datapath.New(cfg)
	if err != nil {
		closeAll()
		return err
	}

	for _, sa := range s.Outbound {
		log.Info("SA installed", "spi", fmt.Sprintf("%#08x", sa.SPI), "dir", "out", "transform", sa.Transform.String(), "encap", encapName(sa), "selector", sa.Selector.String())
	}
	for _, sa := range s.SAD.All() {
		log.Info("SA installed", "spi", fmt.Sprintf("%#08x", sa.SPI), "dir", "in", "transform", sa.Transform.String(), "encap", encapName(sa), "peer", sa.PeerAddrs.String())
	}
	log.Info("tunnel up", "tun", dev.Name(), "mtu", dev.MTU(), "backend", string(s.TUN.Backend))
	var mob *mobilityState
	if s.Mobility != nil {
		mob = new(mobilityState)
	}
	running := &Running{Device: dev, Datapath: dp, setup: &s, mob: mob, started: time.Now()}
	if s.Ready != nil {
		s.Ready(running)
	}
	if s.KeepAlive > 0 && cfg.UDP4 != nil {
		go keepalives(ctx, s, cfg)
	}
	mctx, stopMobility := context.WithCancel(ctx)
	mdone := make(chan struct{})
	if s.ControlSocket != "" {
		go func() {
			if err := running.serveControl(mctx, disconnect); err != nil {
				log.Warn("control socket", "err", err)
			}
		}()
	}
	if metricsLn != nil {
		go running.serveMetrics(mctx, metricsLn)
	}
	ikeFatal := make(chan error, 1)
	if ep != nil && s.ike.initiator {
		gw, err := resolveGateway(ctx, s.IKE.Gateway, true)
		if err != nil {
			stopMobility()
			return err
		}
		local := netip.Addr{}
		if m := s.Mobility; m != nil && len(m.Paths) > 0 {
			local, gw = m.Paths[m.Primary].Local, m.Paths[m.Primary].Peer
		} else {
			for _, a := range s.Listen {
				if a.Is4() == gw.Is4() {
					local = a
					break
				}
			}
		}
		log.Info("IKE: connecting", "gateway", s.IKE.Gateway, "addr", gw, "local", local, "id", s.IKE.ID.String(), "mode", s.IKE.Mode.String())
		go connectLoop(mctx, ep, local, netip.AddrPortFrom(gw, s.IKE.Port), ikeEvents, log, ikeFatal, s.FailFast)
	}
	if s.Mobility != nil {
		go func() {
			defer close(mdone)
			if err := runMobility(mctx, s, dev, mob, ep); err != nil {
				log.Error("mobility stopped: the SA stays on its current path", "err", err)
			}
		}()
	} else {
		close(mdone)
	}
	// The data path outlives ctx until the IKE SAs are deleted: the
	// DELETE goes out through its UDP 4500 sockets.
	dctx, stopDP := context.WithCancel(context.WithoutCancel(ctx))
	var fatalErr error
	go func() {
		select {
		case err := <-ikeFatal:
			fatalErr = err
		case <-ctx.Done():
			if ep != nil {
				ep.Close()
			}
		}
		stopDP()
	}()
	err = dp.Run(dctx)
	stopDP()
	if fatalErr != nil {
		err = fatalErr
	}
	if ep != nil {
		ep.Close() // after a fatal error or a data path failure
	}
	stopMobility()
	<-mdone
	st := dp.Stats()
	log.Info("tunnel down", "tun_read", st.TunRead, "tun_written", st.TunWritten, "esp_sent", st.ESPSent, "esp_received", st.ESPReceived)
	for _, sa := range s.SAD.All() {
		c := sa.Counters.Snapshot()
		log.Info("SA counters", "spi", fmt.Sprintf("%#08x", sa.SPI), "packets", c.Packets, "bytes", c.Bytes, "drops", c.DropsByName())
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// runMobility feeds the path set from its detectors and applies the
// switches it decides, until ctx ends. On a gateway it only answers the
// road warriors' SCTP path monitoring.
func runMobility(ctx context.Context, s Setup, dev *tun.Device, st *mobilityState, ep *ike.Endpoint) error {
	m := s.Mobility
	if len(m.Paths) == 0 { // gateway
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
	// One path set per address family: a switch moves only the outer
	// addresses and routes of its own family, so IPv4 and IPv6 fail over
	// independently (each keeps its own primary).
	type family struct {
		set   *mobility.Set
		mover *mobility.Mover
		paths []mobility.Path
	}
	var fams []family
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
			return err
		}
		fams = append(fams, family{set, &mobility.Mover{SAs: s.Outbound, Current: s.ike.outbound, Routes: dev, Paths: paths, Log: s.Log}, paths})
	}
	st.mu.Lock()
	for _, f := range fams {
		st.sets, st.movers = append(st.sets, f.set), append(st.movers, f.mover)
	}
	st.mu.Unlock()
	events := make(chan mobility.Event, 64)
	errc := make(chan error, 2+len(fams))
	// The prober starts at most once: when configured, or when any
	// family's SCTP detector finds no kernel SCTP.
	var probeOnce sync.Once
	var prober atomic.Pointer[mobility.Prober] // once started, for address adoption
	probe := func(why string) {
		probeOnce.Do(func() {
			kernel := "not used"
			if why == "no kernel SCTP" {
				kernel = "no"
				s.Log.Warn("mobility: NO KERNEL SCTP on this host: path failure detection falls back to ESP-level probes with the same RFC 4960 rules")
			}
			st.setDetector("ESP-level probes (RFC 4960 path management on ICMP echo)", kernel)
			pr := &mobility.Prober{Paths: m.Paths, HB: m.Heartbeat}
			prober.Store(pr)
			go func() { errc <- pr.Run(ctx, events) }()
			s.Log.Info("mobility", "detector", "ESP-level probes: RFC 4960 §8 path management on ICMP echo through the host-to-host SA", "why", why,
				"heartbeat", m.Heartbeat.Interval.String(), "path_max_retrans", m.Heartbeat.PathMaxRetrans, "pf_threshold", m.Heartbeat.PFThreshold)
		})
	}
	up := mobility.Unconfirmed // heartbeats confirm a path that comes up
	switch m.Detector {
	case config.DetectorSCTP:
		st.setDetector("kernel SCTP association (RFC 4960 heartbeats)", "yes")
		for _, f := range fams { // one association per family
			d := &mobility.SCTPDetector{Paths: f.paths, Port: m.SCTPPort, HB: m.Heartbeat, Log: s.Log}
			go func() {
				err := d.Run(ctx, events)
				if errors.Is(err, mobility.ErrNoKernelSCTP) {
					probe("no kernel SCTP")
					return
				}
				errc <- err
			}()
		}
		s.Log.Info("mobility", "detector", "kernel SCTP association, RFC 4960 §8 heartbeats", "port", m.SCTPPort,
			"heartbeat", m.Heartbeat.Interval.String(), "path_max_retrans", m.Heartbeat.PathMaxRetrans, "pf_threshold", m.Heartbeat.PFThreshold)
	case config.DetectorProbe:
		probe("configured")
	default:
		st.setDetector("netlink only (cannot see a path that stays up but drops everything)", "not used")
		up = mobility.Active // netlink alone confirms a path that comes up
		s.Log.Warn("mobility", "detector", "netlink only", "note", "a path that stays up but drops everything is not detected without heartbeats")
	}
	go func() { errc <- mobility.WatchLinks(ctx, m.Paths, up, events) }()
	s.Log.Info("mobility paths", "primary", m.Paths[m.Primary].String(), "paths", len(m.Paths), "families", len(fams))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	if s.ike != nil {
		var movers []*mobility.Mover
		for _, f := range fams {
			movers = append(movers, f.mover)
		}
		s.ike.mu.Lock()
		s.ike.moved = movedRule(movers)
		s.ike.mu.Unlock()
	}
	apply := func(f family, sw mobility.Switch, ok bool) {
		if ok {
			if err := f.mover.Apply(sw); err != nil {
				s.Log.Error("path switch failed", "err", err)
			}
			if ep != nil {
				// IKE follows the path too (MOBIKE with peers that speak it).
				go ep.Move(sw.To.Local, sw.To.Peer)
			}
		}
	}
	// A path that adopted a new local address (netlink): the prober
	// probes from it, the host route to its peer takes it as source, and
	// if the path carries traffic the SAs move to it and IKE follows
	// (MOBIKE). The kernel SCTP association stays bound to the old one.
	adopt := func(f family, a mobility.Adoption) {
		if pr := prober.Load(); pr != nil {
			pr.SetLocal(a.Old, a.Path.Local)
		} else if m.Detector == config.DetectorSCTP {
			s.Log.Warn("mobility: the SCTP association does not follow an adopted address; the path stays unconfirmed", "path", a.Path.Name)
		}
		inUse := f.set.Active().Name == a.Path.Name
		if err := f.mover.Readdress(a, inUse); err != nil {
			s.Log.Error("path address", "err", err)
		}
		if inUse && ep != nil {
			go ep.Move(a.Path.Local, a.Path.Peer)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if err != nil {
				return err
			}
		case ev := <-events:
			for _, f := range fams {
				o := f.set.Apply(ev)
				logChanges(s.Log, o.Changes)
				for _, a := range o.Adopted {
					adopt(f, a)
				}
				apply(f, o.Switch, o.Switched)
			}
		case now := <-tick.C:
			for _, f := range fams {
				sw, ok := f.set.Tick(now)
				apply(f, sw, ok)
			}
		}
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

// keepalives sends an RFC 3948 §2.3 NAT keep-alive on every UDP SA.
func keepalives(ctx context.Context, s Setup, cfg datapath.Config) {
	t := time.NewTicker(s.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, sa := range s.Outbound {
			r := sa.Outer()
			if !sa.UDPEncap || len(r.Dst) == 0 {
				continue
			}
			for _, dst := range r.Dst {
				c, _ := cfg.UDP4.(*transport.UDPConn)
				if dst.Is6() {
					c, _ = cfg.UDP6.(*transport.UDPConn)
				}
				if c != nil {
					c.SendKeepalive(netip.Addr{}, netip.AddrPortFrom(dst, sa.PeerPort))
				}
			}
		}
	}
}

func encapName(sa *tunnel.SA) string {
	if sa.UDPEncap {
		return fmt.Sprintf("udp:%d", sa.PeerPort)
	}
	return "esp"
}
