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
	"runtime"
	"sync"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/radius"
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
	// PacketSend sends raw ESP (IPv4) through an AF_PACKET socket where it
	// can (transport.raw_esp_send: packet).
	PacketSend bool
	Rule       *Rule // nil: plain routes, unmarked sockets
	Log        *slog.Logger
	// Mobility, if set, moves the outbound SAs between paths.
	Mobility *config.Mobility
	// ControlSocket, if set, serves status, sa list and disconnect there
	// (root only; ControlGroup, if set, may also read).
	ControlSocket string
	ControlGroup  *config.ControlGroup
	Role          string
	// Metrics, if set, is where the Prometheus endpoint listens.
	Metrics string
	// ClusterKey, if set, is the cluster key file (ha.cluster_key) that
	// seals context get and opens context put (context.go).
	ClusterKey string
	// Ready, if set, is called once the tunnel is up.
	Ready func(*Running)
	// IKE, if set, negotiates SAs with IKEv2; Listen are our outer
	// addresses (announced to the peer).
	IKE    *config.IKE
	Listen []netip.Addr
	// RADIUS, if set, is the AAA servers of the peers with auth:
	// eap-radius (aaa.go).
	RADIUS *config.RADIUS
	// Progress, if set, receives the IKE steps (the CLI shows them).
	Progress func(ike.Progress)
	// FailFast (connect): a failure before the first Child SA is up ends
	// Run with that error, instead of retrying with backoff.
	FailFast bool
	// HA, if set, makes this gateway one of a hot-standby pair.
	HA *config.HA

	ike *ikeState
	aaa *radius.Client // the RADIUS client's counters, for status
}

// Running is a daemon whose tunnel is up.
type Running struct {
	Device   *tun.Device
	Datapath *datapath.Datapath
	setup    *Setup
	mob      *mobilityState
	started  time.Time
	ha       *ha.Node // nil: no ha section
}

// Run brings the tunnel up and runs it until ctx ends. It returns after
// removing what it installed.
//
// Everything Run opens is pushed on one cleanup stack as it is opened, so
// every return path, early or late, undoes exactly what was done, newest
// first; every goroutine it starts is joined before it returns.
func Run(ctx context.Context, s Setup) error {
	s.defaults()
	var cl cleanups
	defer cl.run()
	cl.push(func() { s.closeSAs() })
	dev, err := openDevice(&cl, &s)
	if err != nil {
		return err
	}
	cfg := datapath.Config{TUN: dev, SPD: s.SPD, SAD: s.SAD, Log: s.Log}
	if err := openTransports(&cl, &s, &cfg); err != nil {
		return err
	}
	ir, err := startIKE(&cl, &s, dev, &cfg)
	if err != nil {
		return err
	}
	metricsLn, err := listenMetrics(&cl, s.Metrics)
	if err != nil {
		return err
	}
	dp, err := datapath.New(cfg)
	if err != nil {
		return err
	}
	s.logInstalled(dev)
	r := &Running{Device: dev, Datapath: dp, setup: &s, started: time.Now()}
	if s.Mobility != nil {
		r.mob = new(mobilityState)
	}
	if s.HA != nil && !s.HA.Pair {
		s.HA.Key.Wipe() // cluster_key alone: context get/put reads the file when asked
	}
	if s.HA != nil && s.HA.Pair {
		if r.ha, err = r.newHA(); err != nil {
			return err
		}
		if ir != nil {
			s.ike.onChange.Store(r.ha)
		}
	}
	err = r.serve(ctx, cfg, ir, metricsLn)
	r.logCounters()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// cleanups is a stack of undo functions, run newest first.
type cleanups []func()

func (c *cleanups) push(f func()) { *c = append(*c, f) }

func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

func (s *Setup) defaults() {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.UDPPort == 0 {
		s.UDPPort = transport.NATTPort
	}
}

// closeSAs zeroes the static SAs' keys and empties the SAD.
func (s *Setup) closeSAs() {
	for _, sa := range s.Outbound {
		sa.Close()
	}
	for _, sa := range s.SAD.All() {
		s.SAD.Remove(sa.SPI)
	}
}

// openDevice creates the TUN device with its addresses, routes and the
// bypass rule. Closing the device (the data path does it on exit; a
// second Close is harmless) deletes the link and with it its addresses
// and routes; Unconfigure removes the rules, which belong to no link.
func openDevice(cl *cleanups, s *Setup) (*tun.Device, error) {
	dev, err := tun.Open(s.TUN)
	if err != nil {
		return nil, &TUNError{Name: s.TUN.Name, Err: err}
	}
	cl.push(func() { dev.Close() })
	cl.push(func() {
		if err := dev.Unconfigure(); err != nil {
			s.Log.Warn("cleanup", "err", err)
		}
	})
	routes := make([]tun.Route, len(s.Routes))
	for i, r := range s.Routes {
		if s.Rule != nil && r.Table == 0 {
			r.Table = s.Rule.Table
		}
		routes[i] = r
	}
	if err := dev.Configure(s.Addrs, routes); err != nil {
		return nil, err
	}
	if s.Rule != nil {
		if err := dev.AddBypassRule(s.Rule.Mark, s.Rule.Table, s.Rule.Priority); err != nil {
			return nil, err
		}
	}
	return dev, nil
}

// TUNError: the TUN device could not be created. The CLI gives its
// advice by this type (and fs.ErrPermission in Err), not by the words.
type TUNError struct {
	Name string
	Err  error
}

func (e *TUNError) Error() string {
	return fmt.Sprintf("open TUN device %q: %v (is /dev/net/tun there, and do we have CAP_NET_ADMIN?)", e.Name, e.Err)
}

func (e *TUNError) Unwrap() error { return e.Err }

// markable is what openTransports opens: a socket that can carry the
// bypass mark.
type markable interface {
	Close() error
	SetMark(uint32) error
}

// openTransports opens the ESP sockets the SAs need (raw ESP, UDP 4500;
// IKE always needs UDP 4500) into cfg, marked when there is a bypass rule.
func openTransports(cl *cleanups, s *Setup, cfg *datapath.Config) error {
	needESP, needUDP := false, s.IKE != nil
	for _, sas := range [][]*tunnel.SA{s.Outbound, s.SAD.All()} {
		for _, sa := range sas {
			needUDP = needUDP || sa.UDPEncap
			needESP = needESP || !sa.UDPEncap
		}
	}
	opened := func(c markable) error {
		cl.push(func() { c.Close() })
		if s.Rule == nil {
			return nil
		}
		return c.SetMark(s.Rule.Mark)
	}
	if needESP {
		e4, err := transport.ListenRawESP(netip.IPv4Unspecified())
		if err != nil {
			return fmt.Errorf("raw ESP socket (IPv4): %w (needs CAP_NET_RAW)", err)
		}
		cfg.ESP4 = e4
		if err := opened(e4); err != nil {
			return err
		}
		// After SetMark: the packet socket's route lookups use the mark.
		// Without it raw ESP still works, at about twice the send cost
		// (issue 14).
		if s.PacketSend {
			if err := e4.EnablePacketSend(); err != nil {
				s.Log.Warn("raw ESP: no AF_PACKET send, raw socket only", "err", err)
			}
		}
		if e6, err := transport.ListenRawESP(netip.IPv6Unspecified()); err == nil {
			cfg.ESP6 = e6
			if err := opened(e6); err != nil {
				return err
			}
		} else {
			s.Log.Warn("no IPv6 ESP socket", "err", err)
		}
	}
	if needUDP {
		u4, err := transport.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), s.UDPPort))
		if err != nil {
			return fmt.Errorf("UDP port %d (IPv4): %w", s.UDPPort, err)
		}
		cfg.UDP4 = u4
		if err := opened(u4); err != nil {
			return err
		}
		if u6, err := transport.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), s.UDPPort)); err == nil {
			cfg.UDP6 = u6
			if err := opened(u6); err != nil {
				return err
			}
		} else {
			s.Log.Warn("no IPv6 UDP socket", "err", err)
		}
	}
	return nil
}

// ikeRun is the IKE side of a run: the endpoint, the events the connect
// loop follows and the fatal error it reports; nil without IKE.
type ikeRun struct {
	ep     *ike.Endpoint
	events chan ike.Progress
	fatal  chan error
}

// startIKE creates the IKE endpoint on UDP 500 (its own sockets, read by
// goroutines joined on cleanup) and UDP 4500 (the data path's sockets,
// non-ESP marker). Without an ike section it returns nil.
func startIKE(cl *cleanups, s *Setup, dev *tun.Device, cfg *datapath.Config) (*ikeRun, error) {
	if s.IKE == nil {
		return nil, nil
	}
	icfg, err := ikeConfig(s.IKE, s.Role, s.Listen)
	if err != nil {
		return nil, fmt.Errorf("ike: %w", err)
	}
	// With an ha section our IKE SAs may arrive by import (the pair, or
	// context put after a restart): no INVALID_IKE_SPI meanwhile.
	icfg.NoInvalidSPI = s.HA != nil
	icfg.HASync = s.HA != nil && s.HA.Pair
	st := &ikeState{spd: s.SPD, sad: s.SAD, dev: dev, log: s.Log, policies: map[string]*tunnel.Policy{},
		children: map[string]*ike.Child{}, vips: map[netip.Addr]bool{}, up: make(chan struct{}), initiator: icfg.Initiator}
	s.ike = st
	ir := &ikeRun{events: make(chan ike.Progress, 64), fatal: make(chan error, 1)}
	var socks ikeSockets
	icfg.Install, icfg.Remove, icfg.Log = st.install, st.remove, s.Log
	if s.RADIUS != nil {
		startAAA(cl, s, &icfg) // aaa.go
	}
	if err := startOneTime(cl, s, &icfg, st); err != nil {
		return nil, err
	}
	icfg.Send = socks.send
	icfg.Changed = func(c ike.Change) {
		if n := st.onChange.Load(); n != nil {
			n.Changed(c.SPI) // the standby's copy of this IKE SA must follow (ha)
		}
	}
	icfg.Progress = func(p ike.Progress) {
		st.track.progress(p)
		if n := st.onChange.Load(); n != nil {
			n.Refresh() // an IKE SA or Child SA came, went or changed: stream it to the standby
		}
		if s.Progress != nil {
			s.Progress(p)
		}
		select {
		case ir.events <- p:
		default:
		}
	}
	if ir.ep, err = ike.New(icfg); err != nil {
		return nil, err
	}
	st.ep = ir.ep
	cl.push(ir.ep.Close) // after a fatal error or a data path failure too
	if err := listenIKE(cl, s, ir.ep, &socks, cfg); err != nil {
		return nil, err
	}
	return ir, nil
}

// listenIKE opens UDP 500 (IPv4, and IPv6 where there is one) and routes
// IKE from it and from the data path's UDP 4500 sockets into one bounded
// queue served by IKE goroutines of their own; the readers and the queue
// are joined on cleanup, after their sockets are closed.
func listenIKE(cl *cleanups, s *Setup, ep *ike.Endpoint, socks *ikeSockets, cfg *datapath.Config) error {
	st := s.ike
	if u, ok := cfg.UDP4.(*transport.UDPConn); ok {
		socks.p4500[0] = u
	}
	if u, ok := cfg.UDP6.(*transport.UDPConn); ok {
		socks.p4500[1] = u
	}
	var readers sync.WaitGroup
	cl.push(readers.Wait) // runs after the sockets below are closed and the queue stopped
	// IKE from both ports goes through one bounded queue to IKE goroutines
	// of its own, one per core, each IKE SA on one of them; the crypto
	// workers and the port-500 readers never wait for the endpoint
	// (datapath.IKEQueue), and answer spoofed IKE_SA_INIT with cookies
	// themselves (ike.Endpoint.Screen), so what reaches these goroutines is
	// bounded by the queue and the half-open caps.
	q := datapath.NewIKEQueue(s.IKE.Limits.Queue, runtime.GOMAXPROCS(0))
	q.Screen = ep.Screen // RFC 7296 §2.6 cookies in the reading goroutine, before the queue
	st.queue = q
	readers.Go(func() { q.Run(ep.Handle) })
	cl.push(q.Close)
	for i, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		c, err := transport.ListenIKE(netip.AddrPortFrom(any, s.IKE.Port))
		if err != nil {
			if i == 0 {
				return fmt.Errorf("IKE port %d: %w (needs CAP_NET_BIND_SERVICE)", s.IKE.Port, err)
			}
			s.Log.Warn("no IPv6 IKE socket", "err", err)
			continue
		}
		cl.push(func() { c.Close() })
		if s.Rule != nil {
			if err := c.SetMark(s.Rule.Mark); err != nil {
				return err
			}
		}
		socks.p500[i] = c
		// One reader per core: a reader screens what it read (an HMAC and a
		// cookie answer per spoofed IKE_SA_INIT, RFC 7296 §2.6) outside
		// the socket's read lock, so under a spoofed flood the screening
		// runs on every core while the kernel's buffer keeps draining.
		// Two readers may queue one IKE SA's retransmissions out of order,
		// which its window (§2.3) already takes.
		for range runtime.GOMAXPROCS(0) {
			sc := ep.NewScreener()
			readers.Go(func() { readIKE(c, q, sc) })
		}
	}
	cfg.OnIKE = func(msg []byte, local netip.Addr, remote netip.AddrPort) { q.Push(msg, local, remote, true) }
	return nil
}

func listenMetrics(cl *cleanups, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	cl.push(func() { ln.Close() })
	return ln, nil
}

func (s *Setup) logInstalled(dev *tun.Device) {
	for _, sa := range s.Outbound {
		s.Log.Info("SA installed", "spi", fmt.Sprintf("%#08x", sa.SPI), "dir", "out", "transform", sa.Transform.String(), "encap", encapName(sa), "selector", sa.Selector.String())
	}
	for _, sa := range s.SAD.All() {
		s.Log.Info("SA installed", "spi", fmt.Sprintf("%#08x", sa.SPI), "dir", "in", "transform", sa.Transform.String(), "encap", encapName(sa), "peer", sa.PeerAddrs.String())
	}
	s.Log.Info("tunnel up", "tun", dev.Name(), "mtu", dev.MTU(), "backend", string(s.TUN.Backend))
}

func (r *Running) logCounters() {
	st := r.Datapath.Stats()
	log := r.setup.Log
	log.Info("tunnel down", "tun_read", st.TunRead, "tun_written", st.TunWritten, "esp_sent", st.ESPSent, "esp_received", st.ESPReceived)
	for _, sa := range r.setup.SAD.All() {
		c := sa.Counters.Snapshot()
		log.Info("SA counters", "spi", fmt.Sprintf("%#08x", sa.SPI), "packets", c.Packets, "bytes", c.Bytes, "drops", c.DropsByName())
	}
}

// serve runs the data path and its helpers — keep-alives, the control
// socket, metrics, the road warrior's IKE connect loop, mobility — until
// ctx ends, disconnect is asked for, IKE reports a fatal error or the
// data path fails. The helpers stop when the data path has; all are
// joined before serve returns.
//
// The data path outlives ctx until the IKE SAs are deleted: the DELETE
// goes out through its UDP 4500 sockets.
func (r *Running) serve(ctx context.Context, cfg datapath.Config, ir *ikeRun, metricsLn net.Listener) error {
	s := r.setup
	// disconnect (the control command) ends the run like a signal does.
	ctx, disconnect := context.WithCancel(ctx)
	defer disconnect()
	var wg sync.WaitGroup
	defer wg.Wait()
	helpers, stopHelpers := context.WithCancel(ctx)
	defer stopHelpers() // before wg.Wait: deferred calls run newest first
	if s.Ready != nil {
		s.Ready(r)
	}
	if s.KeepAlive > 0 && cfg.UDP4 != nil {
		wg.Go(func() { keepalives(helpers, *s, cfg) })
	}
	if s.ControlSocket != "" {
		wg.Go(func() {
			if err := r.serveControl(helpers, disconnect); err != nil {
				s.Log.Warn("control socket", "err", err)
			}
		})
	}
	if metricsLn != nil {
		wg.Go(func() { r.serveMetrics(helpers, metricsLn) })
	}
	var ep *ike.Endpoint
	var fatal <-chan error // nil without IKE: never ready
	if ir != nil {
		ep, fatal = ir.ep, ir.fatal
		if s.ike.initiator {
			wg.Go(func() { r.connect(helpers, ir) })
		}
	}
	// The HA node outlives ctx: a stopping active hands over first.
	haCtx, stopHA := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHA()
	if r.ha != nil {
		wg.Go(func() { r.runHA(haCtx) })
	}
	if s.Mobility != nil {
		wg.Go(func() {
			if err := runMobility(helpers, *s, r.Device, r.mob, ep); err != nil {
				s.Log.Error("mobility stopped: the SA stays on its current path", "err", err)
			}
		})
	}
	dctx, stopDP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDP()
	var fatalErr error
	wg.Go(func() {
		select {
		case fatalErr = <-fatal:
		case <-ctx.Done():
			if ep != nil {
				r.handOverOnStop()
				ep.Close() // DELETE the IKE SAs while the data path still runs
			}
		case <-dctx.Done(): // the data path failed
		}
		stopDP()
	})
	err := r.Datapath.Run(dctx)
	stopDP()
	stopHelpers()
	stopHA()
	wg.Wait()
	if fatalErr != nil {
		return fatalErr
	}
	return err
}

// connect resolves the gateway and keeps the road warrior's IKE SA up
// (connectLoop) until ctx ends; a failure that retrying cannot mend goes
// to ir.fatal.
func (r *Running) connect(ctx context.Context, ir *ikeRun) {
	s := r.setup
	gw, err := r.resolve(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ir.fatal <- err
		}
		return
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
	s.Log.Info("IKE: connecting", "gateway", s.IKE.Gateway, "addr", gw, "local", local, "id", s.IKE.ID.String(), "mode", s.IKE.Mode.String())
	connectLoop(ctx, ir.ep, s.ike, r.mob, local, netip.AddrPortFrom(gw, s.IKE.Port), ir.events, s.Log, ir.fatal, s.FailFast)
}

// resolve looks the gateway's name up. With FailFast (connect, a person
// waiting) a failure is final; the daemon keeps trying with backoff, up
// to resolveMaxBackoff apart, until ctx ends: a laptop that boots before
// its Wi-Fi (no DNS yet) connects once the network is there, instead of
// exiting 6 and leaving the VPN down.
func (r *Running) resolve(ctx context.Context) (netip.Addr, error) {
	s := r.setup
	backoff := time.Second
	for {
		gw, err := resolveGateway(ctx, s.IKE.Gateway, true)
		if err == nil || s.FailFast || ctx.Err() != nil {
			return gw, err
		}
		s.Log.Warn("IKE: cannot resolve the gateway's name yet; retrying", "gateway", s.IKE.Gateway, "in", backoff.String(), "err", err)
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, resolveMaxBackoff)
	}
}

const resolveMaxBackoff = 30 * time.Second

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
		sas := s.Outbound
		if s.ike != nil && s.ike.initiator {
			// A road warrior's negotiated SAs too: it is the side that
			// may sit behind a NAT (RFC 3948 §2.3).
			sas = append(sas[:len(sas):len(sas)], s.ike.outbound()...)
		}
		for _, sa := range sas {
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
