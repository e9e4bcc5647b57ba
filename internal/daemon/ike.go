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

	"github.com/roamsec/roamsec/eap"
	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/internal/enroll"
	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// ikeState joins the IKE endpoint to the data path: Child SAs it
// negotiates go into the SAD and SPD, by name, so a rekey swaps the
// outbound SA of the same policy without a gap.
type ikeState struct {
	ep    *ike.Endpoint
	queue *datapath.IKEQueue // IKE from both ports to the endpoint's goroutines
	spd   *tunnel.SPD
	sad   *tunnel.SAD
	dev   *tun.Device
	log   *slog.Logger

	mu       sync.Mutex
	policies map[string]*tunnel.Policy
	children map[string]*ike.Child
	vips     map[netip.Addr]bool
	// moved returns the outer rule a new outbound SA gets on the current
	// path (mobility); nil: as negotiated.
	moved func(tunnel.OuterRule) tunnel.OuterRule
	// up is closed when the first Child SA is installed.
	up     chan struct{}
	upOnce sync.Once
	// initiator: a road warrior, which installs the virtual addresses it
	// is given (on a gateway they are the peers').
	initiator bool
	// track is what status and metrics show of the IKE SAs (status.go).
	track ikeTrack
	// oneTime (gateway, ike.one_time): the one-time keys' Target.
	oneTime *enroll.Target
	// onChange, if set, is told of every IKE event (the HA node streams
	// the changed IKE SAs to the standby).
	onChange atomic.Pointer[ha.Node]
}

// outbound is the current outbound SAs of the negotiated Child SAs.
func (st *ikeState) outbound() []*tunnel.SA {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []*tunnel.SA
	for _, c := range st.children {
		out = append(out, c.Out)
	}
	return out
}

func (st *ikeState) install(c *ike.Child) error {
	if err := st.sad.Add(c.In); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.moved != nil {
		c.Out.SetOuter(st.moved(c.Out.Outer()))
	}
	for _, a := range c.VirtualIP {
		if st.vips[a] || !st.initiator {
			continue
		}
		// Our virtual address (road warrior): on the TUN device, and the
		// source of the routes into the protected networks. Host routes to
		// single addresses outside them (the gateway's path addresses)
		// keep their uplink source: each path's probes and its SCTP
		// address ride the host-to-host Child SA, outer = inner, on the
		// path they test.
		if err := st.dev.Configure([]netip.Prefix{netip.PrefixFrom(a, a.BitLen())}, nil); err != nil {
			st.sad.Remove(c.In.SPI)
			return err
		}
		keep := func(dst netip.Prefix) bool { return dst.IsSingleIP() && !c.Selector.Remote.Contains(dst.Addr()) }
		if err := st.dev.SetRouteSource(a, keep); err != nil {
			st.log.Warn("virtual address: route source", "err", err)
		}
		st.vips[a] = true
		st.log.Info("virtual address installed", "addr", a, "tun", st.dev.Name())
	}
	st.track.installed(c, st.policies[c.Name] != nil)
	if p := st.policies[c.Name]; p != nil && (!c.HostToHost || sameSelector(p.Selector, c.Selector)) {
		p.SA.Store(c.Out) // a rekey: the policy moves to the new SA at once
	} else {
		if p != nil {
			// A path-monitoring Child SA for changed addresses (an
			// adopted address): its policy takes the new selectors.
			st.spd.Remove(p)
		}
		p = &tunnel.Policy{Name: c.Name, Action: tunnel.Protect, Selector: c.Selector}
		p.SA.Store(c.Out)
		if c.HostToHost {
			st.spd.Insert(0, p) // narrower than the network selectors
		} else {
			st.spd.Append(p)
		}
		st.policies[c.Name] = p
	}
	st.children[c.Name] = c
	st.upOnce.Do(func() { close(st.up) })
	return nil
}

func (st *ikeState) remove(c *ike.Child) {
	st.sad.Remove(c.In.SPI)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.children[c.Name] == c {
		if n := c.Sibling(); n != nil {
			// A rekey collision's survivor takes the name back.
			st.children[c.Name] = n
			if p := st.policies[c.Name]; p != nil {
				p.SA.Store(n.Out)
			}
			return
		}
		delete(st.children, c.Name)
		if p := st.policies[c.Name]; p != nil {
			st.spd.Remove(p)
			delete(st.policies, c.Name)
		}
	}
}

// purge removes every negotiated Child SA from the SAD and SPD and
// returns how many there were. After the endpoint's Reset there are none
// (each IKE SA removes its own): this is the data path's guarantee that
// nothing of an old IKE SA stays.
func (st *ikeState) purge() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := len(st.children)
	for name, c := range st.children {
		st.sad.Remove(c.In.SPI)
		delete(st.children, name)
	}
	for name, p := range st.policies {
		st.spd.Remove(p)
		delete(st.policies, name)
	}
	return n
}

// ikeConfig turns the config section into the endpoint's configuration.
func ikeConfig(k *config.IKE, role string, listen []netip.Addr) (ike.Config, error) {
	cfg := ike.Config{
		Initiator: role == string(config.RoleRoadWarrior), LocalID: k.ID, RemoteID: k.GatewayID, PSK: k.PSK,
		IKEProposals: k.IKEProposals, ESPProposals: k.ESPProposals, PFS: k.PFS, Mode: k.Mode,
		LocalTS: k.LocalTS, RemoteTS: k.RemoteTS, HostToHost: k.HostToHost, LocalAddrs: listen,
		UDPEncap: true, IKELifetime: k.IKELifetime, ChildLifetime: k.ChildLifetime, DPD: k.DPD,
		RetransmitTimeout: k.RetransmitTimeout, RetransmitTries: k.RetransmitTries,
		FragmentSize:    k.FragmentSize,
		CookieThreshold: k.Limits.CookieThreshold, HalfOpenMax: k.Limits.HalfOpenMax, HalfOpenPerSource: k.Limits.HalfOpenPerSource,
		HalfOpenTimeout: k.Limits.HalfOpenTimeout, FragmentMemory: k.Limits.FragmentMemory, FragmentMemoryPerSA: k.Limits.FragmentMemoryPerSA,
	}
	// Loaded and checked by config when the file was parsed (-check too).
	cfg.Credential, cfg.CAs = k.Credential, k.CAs
	cfg.Peers = ikePeers(k)
	if len(k.EAPPassword) > 0 {
		// One EAP-MSCHAPv2 conversation per IKE SA; the password is the
		// daemon's (config wipes its own copy after Build).
		user, pw := ike.EAPUserName(k.ID), k.EAPPassword
		cfg.EAPClient = func() ike.EAPMethod { return eap.NewMSCHAPv2(user, pw) }
	}
	return cfg, nil
}

// ikePeers is the gateway's peers section as the endpoint's policies
// (sharing the PSKs' memory).
func ikePeers(k *config.IKE) []ike.Peer {
	var out []ike.Peer
	for _, p := range k.Peers {
		out = append(out, ike.Peer{ID: p.ID, PSK: p.PSK, Addresses: p.Addresses, VirtualPool: p.VirtualPool, VirtualPool6: p.VirtualPool6, DNS: p.DNS,
			EAP: p.EAP, EAPOnly: p.EAPOnly, EAPAskIdentity: p.EAPAskIdentity})
	}
	return out
}

// ikeSockets is what IKE sends through: port 500 (no marker) and the data
// path's UDP 4500 sockets (non-ESP marker).
type ikeSockets struct {
	p500  [2]*transport.IKEConn // v4, v6
	p4500 [2]*transport.UDPConn
}

func fam(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return 0
	}
	return 1
}

func (k *ikeSockets) send(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) error {
	i := fam(remote.Addr())
	if natT {
		if c := k.p4500[i]; c != nil {
			return c.SendIKE(msg, local, remote)
		}
		return errors.New("no UDP 4500 socket of that family")
	}
	if c := k.p500[i]; c != nil {
		return c.SendIKE(msg, local, remote)
	}
	return errors.New("no IKE socket of that family")
}

// readIKE hands port-500 messages to the IKE queue until the socket
// closes. It screens them itself (sc, RFC 7296 §2.6 cookies) and sends
// the COOKIE answers of a read together, one sendmmsg: under a spoofed
// flood that is one system call per read, not one per request.
func readIKE(c *transport.IKEConn, q *datapath.IKEQueue, sc *ike.Screener) {
	msgs := make([]transport.Datagram, 8)
	bufs := make([][]byte, len(msgs))
	for i := range msgs {
		bufs[i] = make([]byte, 65536)
	}
	answers := make([]transport.Datagram, len(msgs))
	abufs := make([][]byte, len(msgs))
	for i := range abufs {
		abufs[i] = make([]byte, 0, cookieAnswerLen)
	}
	for {
		for i := range msgs {
			msgs[i].Buf = bufs[i][:cap(bufs[i])]
		}
		n, err := c.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		k := 0
		for _, m := range msgs[:n] {
			taken, answer := sc.Screen(m.Buf, m.Remote, abufs[k][:0])
			if !taken {
				q.PushScreened(m.Buf, m.Local, m.Remote, false)
			} else if len(answer) > 0 {
				answers[k] = transport.Datagram{Buf: answer, Local: m.Local, Remote: m.Remote, IKE: true}
				k++
			}
		}
		if k > 0 {
			c.WriteBatch(answers[:k]) // a lost answer is a retransmission (§2.1)
		}
		for i := range msgs {
			bufs[i] = msgs[i].Buf[:cap(msgs[i].Buf)]
		}
	}
}

// cookieAnswerLen fits an IKE_SA_INIT response with a COOKIE alone: the
// header, the notification and our 33-byte cookie.
const cookieAnswerLen = 28 + 8 + 64

// resolveGateway finds the gateway's address: a literal, or a name looked
// up now (the error says which, for the CLI).
func resolveGateway(ctx context.Context, name string, v4 bool) (netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %s: %w", ErrNameNotFound, name, err)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() == v4 {
			return a.Unmap(), nil
		}
	}
	if len(addrs) > 0 {
		return addrs[0].Unmap(), nil
	}
	return netip.Addr{}, fmt.Errorf("%w: %s has no address", ErrNameNotFound, name)
}

// ErrNameNotFound: the gateway's name does not resolve.
var ErrNameNotFound = errors.New("gateway name not found")

// connectLoop keeps a road warrior's IKE SA up: connect, and after a
// failure (the gateway silent, DPD, deleted) connect again with backoff.
// A refused authentication ends it: retrying will not help. With failFast
// any failure before the first Child SA is installed ends it.
func connectLoop(ctx context.Context, ep *ike.Endpoint, st *ikeState, mob *mobilityState, local netip.Addr, gw netip.AddrPort, events <-chan ike.Progress, log *slog.Logger, fatal chan<- error, failFast bool) {
	c := &connector{ep: ep, st: st, local: local, gw: gw, events: events, log: log, failFast: failFast}
	if mob != nil {
		c.paths = mob.status
	}
	if err := c.run(ctx); err != nil {
		fatal <- err
	}
}

// connector is the road warrior's one state machine for its connection:
// one IKE SA line (ike.Progress.Gen) at a time, in flight or up. Only the
// terminal event of the current line moves it on; events of older lines
// are ignored. Before the next attempt everything of the old line is torn
// down, locally and with DELETE, so no Child SA can outlive its IKE SA.
type connector struct {
	ep       *ike.Endpoint
	st       *ikeState
	local    netip.Addr
	gw       netip.AddrPort
	events   <-chan ike.Progress
	log      *slog.Logger
	failFast bool

	up      bool // a Child SA was installed once
	backoff time.Duration
	// establishedAt: when the current line's IKE SA came up (zero: not
	// yet).
	establishedAt time.Time

	// paths, with mobility, tells whether the paths answer; the current
	// line's tunnel came up at tunnelUp, and some path answered since
	// (answered) or we said loudly that none does (warned).
	paths    func() *MobilityStatus
	tunnelUp time.Time
	answered bool
	warned   bool
}

// stableLine: a line up this long was no failed attempt; after it ends
// the next attempt starts at once.
const stableLine = 10 * time.Second

// pathsSilentAfter: a tunnel whose paths have not answered this long after
// it came up has no working failure detection, and we say so.
const pathsSilentAfter = 10 * time.Second

// errLineLost: the endpoint has no SA of the current line, and its
// terminal event did not reach us (the event channel was full).
var errLineLost = errors.New("IKE SA gone without a terminal event")

func (c *connector) run(ctx context.Context) error {
	c.backoff = time.Second
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		gen, err := c.ep.Connect(sourceFor(c.local, c.gw.Addr()), c.gw)
		if err != nil {
			return err
		}
		end, ok := c.await(ctx, gen, tick.C)
		if !ok || ctx.Err() != nil || end.Reason == ike.DownShutdown {
			return nil // stopping: the endpoint is closing its SAs
		}
		if errors.Is(end.Err, ike.ErrAuthRefused) || c.failFast && !c.up && end.Err != nil {
			return end.Err
		}
		c.teardown()
		wait := c.backoff
		if !c.establishedAt.IsZero() && time.Since(c.establishedAt) >= stableLine {
			// A line that held: this is a new failure, try again at once.
			// The backoff grows over attempts that fail in a row; an IKE SA
			// that comes up resets it (to 1 s, so a gateway that accepts
			// and then deletes us at once is retried no faster than that).
			wait = 0
		} else {
			c.backoff = min(2*c.backoff, 30*time.Second)
		}
		c.log.Warn("IKE: reconnecting", "gateway", c.gw, "in", wait.String(), "ike_line", gen, "why", end.Reason.String(), "err", end.Err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// await follows line gen until its terminal event; false when ctx ends.
func (c *connector) await(ctx context.Context, gen int, tick <-chan time.Time) (ike.Progress, bool) {
	c.tunnelUp, c.answered, c.warned, c.establishedAt = time.Time{}, false, false, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return ike.Progress{}, false
		case ev := <-c.events:
			if ev.Gen != gen {
				continue // an older line's, torn down already
			}
			switch {
			case ev.Kind == ike.EvIKEEstablished:
				c.establishedAt, c.backoff = time.Now(), time.Second
			case ev.Kind == ike.EvChildInstalled:
				c.up = true
				if c.tunnelUp.IsZero() {
					c.tunnelUp = time.Now()
				}
			case ev.Kind.Terminal():
				return ev, true
			}
		case <-tick:
			if c.ep.Alive(gen) {
				c.checkPaths()
				continue
			}
			return c.lost(gen), true
		}
	}
}

// checkPaths says loudly, once per line, when no path has answered
// pathsSilentAfter after the tunnel came up: failover cannot work (no
// path-monitoring SA, or the gateway does not answer on it).
func (c *connector) checkPaths() {
	if c.paths == nil || c.tunnelUp.IsZero() || c.answered || c.warned {
		return
	}
	m := c.paths()
	if m == nil || len(m.Paths) == 0 {
		return
	}
	for _, p := range m.Paths {
		if p.State == mobility.Active.String() {
			c.answered = true
			return
		}
	}
	if time.Since(c.tunnelUp) < pathsSilentAfter {
		return
	}
	c.warned = true
	msg := fmt.Sprintf("no path has answered %v after the tunnel came up: failure detection is not working, a dead path will not be left (is the path-monitoring Child SA up, and does the gateway answer on it?)", pathsSilentAfter)
	c.log.Error("paths silent", "detector", m.Detector, "paths", len(m.Paths), "why", msg)
	if c.st != nil {
		c.st.track.warn(msg)
	}
}

// lost is the end of a line the endpoint no longer has: its terminal
// event if it is still queued, else errLineLost.
func (c *connector) lost(gen int) ike.Progress {
	timeout := time.After(100 * time.Millisecond)
	for {
		select {
		case ev := <-c.events:
			if ev.Gen == gen && ev.Kind.Terminal() {
				return ev
			}
		case <-timeout:
			return ike.Progress{Kind: ike.EvFailed, Gen: gen, Err: errLineLost}
		}
	}
}

// teardown removes every SA of the old line: the endpoint's (DELETE to
// the gateway where one is up), then whatever the data path still holds.
func (c *connector) teardown() {
	c.ep.Reset()
	if c.st != nil {
		if n := c.st.purge(); n > 0 {
			c.log.Error("IKE: Child SAs outlived their IKE SA; removed", "count", n)
		}
	}
}

// movedRule gives new outbound SAs the current path of their family.
func movedRule(movers []*mobility.Mover) func(tunnel.OuterRule) tunnel.OuterRule {
	return func(r tunnel.OuterRule) tunnel.OuterRule {
		for _, m := range movers {
			if sw, _, ok := m.Last(); ok {
				if nr, changed := mobility.MoveRule(r, sw.To); changed {
					r = nr
				}
			}
		}
		return r
	}
}

// sameSelector: a and b cover the same traffic (compared by their text).
func sameSelector(a, b tunnel.Selector) bool { return fmt.Sprint(a) == fmt.Sprint(b) }
