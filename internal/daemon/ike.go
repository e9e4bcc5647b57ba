package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// ikeState joins the IKE endpoint to the data path: Child SAs it
// negotiates go into the SAD and SPD, by name, so a rekey swaps the
// outbound SA of the same policy without a gap.
type ikeState struct {
	ep  *ike.Endpoint
	spd *tunnel.SPD
	sad *tunnel.SAD
	dev *tun.Device
	log *slog.Logger

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
		// source of the routes into it.
		if err := st.dev.Configure([]netip.Prefix{netip.PrefixFrom(a, a.BitLen())}, nil); err != nil {
			st.sad.Remove(c.In.SPI)
			return err
		}
		if err := st.dev.SetRouteSource(a, nil); err != nil {
			st.log.Warn("virtual address: route source", "err", err)
		}
		st.vips[a] = true
		st.log.Info("virtual address installed", "addr", a, "tun", st.dev.Name())
	}
	st.track.installed(c, st.policies[c.Name] != nil)
	if p := st.policies[c.Name]; p != nil {
		p.SA.Store(c.Out) // a rekey: the policy moves to the new SA at once
	} else {
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

// ikeConfig turns the config section into the endpoint's configuration.
func ikeConfig(k *config.IKE, role string, listen []netip.Addr) (ike.Config, error) {
	cfg := ike.Config{
		Initiator: role == string(config.RoleRoadWarrior), LocalID: k.ID, RemoteID: k.GatewayID, PSK: k.PSK,
		IKEProposals: k.IKEProposals, ESPProposals: k.ESPProposals, PFS: k.PFS, Mode: k.Mode,
		LocalTS: k.LocalTS, RemoteTS: k.RemoteTS, HostToHost: k.HostToHost, LocalAddrs: listen,
		UDPEncap: true, IKELifetime: k.IKELifetime, ChildLifetime: k.ChildLifetime, DPD: k.DPD,
		RetransmitTimeout: k.RetransmitTimeout, RetransmitTries: k.RetransmitTries,
		FragmentSize: k.FragmentSize,
	}
	if k.CertFile != "" {
		cred, err := auth.LoadCredential(k.CertFile, k.KeyFile)
		if err != nil {
			return cfg, err
		}
		cfg.Credential = cred
	}
	if len(k.CAFiles) > 0 {
		cas, err := auth.LoadCAs(k.CAFiles...)
		if err != nil {
			return cfg, err
		}
		cfg.CAs = cas
	}
	for _, p := range k.Peers {
		cfg.Peers = append(cfg.Peers, ike.Peer{ID: p.ID, PSK: p.PSK, Addresses: p.Addresses, VirtualPool: p.VirtualPool, VirtualPool6: p.VirtualPool6, DNS: p.DNS})
	}
	return cfg, nil
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

// readIKE hands port-500 messages to the endpoint until the socket closes.
func readIKE(c *transport.IKEConn, ep *ike.Endpoint) {
	msgs := make([]transport.Datagram, 8)
	bufs := make([][]byte, len(msgs))
	for i := range msgs {
		bufs[i] = make([]byte, 65536)
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
		for _, m := range msgs[:n] {
			ep.Handle(m.Buf, m.Local, m.Remote, false)
		}
		for i := range msgs {
			bufs[i] = msgs[i].Buf[:cap(msgs[i].Buf)]
		}
	}
}

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
// failure (the gateway silent, DPD) connect again with backoff. A refused
// authentication ends it: retrying will not help. With failFast any
// failure before the first Child SA is installed ends it.
func connectLoop(ctx context.Context, ep *ike.Endpoint, local netip.Addr, gw netip.AddrPort, events <-chan ike.Progress, log *slog.Logger, fatal chan<- error, failFast bool) {
	backoff := time.Second
	up := false
	for {
		if err := ep.Connect(local, gw); err != nil {
			fatal <- err
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				switch ev.Step {
				case "failed", "deleted":
					if errors.Is(ev.Err, ike.ErrAuthRefused) || failFast && !up && ev.Err != nil {
						fatal <- ev.Err
						return
					}
					if ep.Established() {
						continue
					}
					log.Warn("IKE: reconnecting", "gateway", gw, "in", backoff.String(), "why", ev.Err, "info", ev.Info)
					select {
					case <-ctx.Done():
						return
					case <-time.After(backoff):
					}
					backoff = min(2*backoff, 30*time.Second)
					goto again
				case "established":
					backoff = time.Second
				case "CHILD_SA":
					up = true
				}
			}
		}
	again:
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
