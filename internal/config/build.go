package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
)

// Built is a config turned into ready tunnel objects.
type Built struct {
	Role          Role
	Log           Log
	ControlSocket string
	TUN           BuiltTUN
	Transport     Transport
	Mobility      *Mobility // nil: no mobility section
	// IKE, if set, negotiates SAs; its secrets are the daemon's to zero.
	IKE *IKE
	// RADIUS, if set, is the AAA servers; its secrets are the daemon's.
	RADIUS *RADIUS
	// HA, if set, is this gateway's half of a pair; its key is the
	// daemon's to zero.
	HA *HA

	// SPD: the extra policies in file order, then one PROTECT entry per
	// SA, bound to its outbound SA.
	SPD *tunnel.SPD
	// SAD holds the inbound SAs.
	SAD *tunnel.SAD
	// Outbound are the outbound SAs, in file order.
	Outbound []*tunnel.SA
	// SAs pairs each sas entry's name with its two SAs and its policy.
	SAs []BuiltSA

	Warnings []string
}

// BuiltTUN is what opening and configuring the TUN takes:
//
//	dev, _ := tun.Open(b.TUN.Config)
//	dev.Configure(b.TUN.Addresses, b.TUN.Routes)
//	if r := b.TUN.BypassRule; r != nil { dev.AddBypassRule(r.Mark, r.Table, r.Priority) }
type BuiltTUN struct {
	Config     tun.Config // MTU resolved (Config.TUNMTU)
	Addresses  []netip.Prefix
	Routes     []tun.Route
	BypassRule *BypassRule // nil: none
}

// BuiltSA is one sas entry, built.
type BuiltSA struct {
	Name   string
	Out    *tunnel.SA
	In     *tunnel.SA
	Policy *tunnel.Policy
}

// Close closes every SA (their keys are zeroed).
func (b *Built) Close() {
	for _, s := range b.SAs {
		if s.Out != nil {
			s.Out.Close()
		}
		if s.In != nil {
			s.In.Close()
		}
	}
}

// Build creates the SAs, the SAD and the SPD. The keys are copied into
// the SAs and then zeroed in c, whether Build succeeds or not, so Build
// runs once per parsed Config; on error no SA is left open.
func (c *Config) Build() (b *Built, err error) {
	if c.wiped {
		return nil, errors.New("config: the keys were already used or wiped: parse the file again")
	}
	defer c.Wipe()
	b = &Built{
		Role:          c.Role,
		Log:           c.Log,
		ControlSocket: c.ControlSocket,
		Transport:     c.Transport,
		Mobility:      c.Mobility,
		IKE:           c.IKE.clone(),
		RADIUS:        c.RADIUS.clone(),
		HA:            c.HA.clone(),
		SPD:           new(tunnel.SPD),
		SAD:           new(tunnel.SAD),
		Warnings:      slices.Clone(c.Warnings),
		TUN: BuiltTUN{
			Config:    tun.Config{Name: c.TUN.Name, MTU: c.TUNMTU(), Backend: c.TUN.Backend, TxQueueLen: c.TUN.TxQueueLen},
			Addresses: slices.Clone(c.TUN.Addresses),
			Routes:    slices.Clone(c.TUN.Routes),
		},
	}
	b.Transport.Listen = slices.Clone(c.Transport.Listen)
	if r := c.TUN.BypassRule; r != nil {
		rr := *r
		b.TUN.BypassRule = &rr
	}
	defer func() {
		if err != nil {
			b.Close()
			b = nil
		}
	}()

	byName := map[string]*tunnel.SA{}
	for i := range c.SAs {
		s := &c.SAs[i]
		base := tunnel.SAConfig{
			Transform:    s.Transform,
			ESN:          s.ESN,
			ReplayWindow: s.ReplayWindow,
			LocalAddrs:   s.LocalAddrs,
			PeerAddrs:    s.PeerAddrs,
			UDPEncap:     s.Encap == EncapUDP,
			PeerPort:     s.PeerPort,
			Lifetimes:    s.Lifetimes,
			OnLifetime:   c.OnLifetime,
		}
		oc, ic := base, base
		oc.Dir, oc.SPI, oc.Key, oc.Selector, oc.Outer = tunnel.Outbound, s.Outbound.SPI, s.Outbound.Key, s.Selector, s.Outer.Rule
		// Same selector: tunnel.Selector is always from this host's view,
		// and MatchInbound swaps source and destination itself.
		ic.Dir, ic.SPI, ic.Key, ic.Selector = tunnel.Inbound, s.Inbound.SPI, s.Inbound.Key, s.Selector
		if s.Outer.FollowPeer {
			// The inbound SA learns, the outbound SA follows: only ESP that
			// passed the ICV moves it (tunnel.PeerTracker).
			tr := new(tunnel.PeerTracker)
			ic.Peer, oc.Outer.FollowPeer = tr, tr
		}
		bs := BuiltSA{Name: s.Name}
		if bs.Out, err = tunnel.NewSA(oc); err != nil {
			return b, fmt.Errorf("config: %s: SA %s outbound: %v", c.File, s.Name, redact(err.Error()))
		}
		b.SAs = append(b.SAs, bs) // so Close finds it on error
		if bs.In, err = tunnel.NewSA(ic); err != nil {
			return b, fmt.Errorf("config: %s: SA %s inbound: %v", c.File, s.Name, redact(err.Error()))
		}
		b.SAs[len(b.SAs)-1].In = bs.In
		if err = b.SAD.Add(bs.In); err != nil {
			return b, fmt.Errorf("config: %s: SA %s: %v", c.File, s.Name, err)
		}
		p := &tunnel.Policy{Name: s.Name, Action: tunnel.Protect, Selector: s.Selector}
		p.SA.Store(bs.Out)
		b.SAs[len(b.SAs)-1].Policy = p
		b.Outbound = append(b.Outbound, bs.Out)
		byName[s.Name] = bs.Out
	}
	for _, pol := range c.Policies {
		p := &tunnel.Policy{Name: pol.Name, Action: pol.Action, Selector: pol.Selector}
		if pol.Action == tunnel.Protect {
			sa := byName[pol.SA]
			if sa == nil {
				return b, fmt.Errorf("config: %s: policy %s: no SA named %q", c.File, pol.Name, pol.SA)
			}
			p.SA.Store(sa)
		}
		b.SPD.Append(p)
	}
	for _, s := range b.SAs {
		b.SPD.Append(s.Policy)
	}
	return b, nil
}

// Wipe zeroes every key the Config holds. Build calls it; call it
// yourself when a parsed Config will not be built.
func (c *Config) Wipe() {
	if c.IKE != nil {
		c.IKE.Wipe()
	}
	c.RADIUS.Wipe()
	if c.HA != nil {
		c.HA.Key.Wipe()
	}
	for i := range c.SAs {
		c.SAs[i].Outbound.Key.Wipe()
		c.SAs[i].Inbound.Key.Wipe()
	}
	c.wiped = true
}
