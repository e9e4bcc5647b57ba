package config

import (
	"net/netip"
	"slices"
	"time"

	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/internal/hactx"
)

// HA is the ha section (issue 12). cluster_key alone serves `gateway
// context get/put` (seed 004: contexts only ever move sealed); with
// listen, peer and service_addresses the gateway is one half of a
// hot-standby pair (internal/ha).
//
//	ha:
//	  cluster_key: /etc/roamsec/cluster.key   # gateway ha keygen FILE
//	  listen: 192.0.2.11                      # the pair's sync link
//	  peer: 192.0.2.12
//	  service_addresses: [{prefix: 192.0.2.100/24, interface: lan0}]
type HA struct {
	Pair     bool           // listen/peer/service_addresses given: run the HA node
	Listen   netip.AddrPort // our sync address
	Peer     netip.AddrPort // the other gateway's
	KeyFile  string         // cluster_key: absolute path of the key file
	Key      Secret         // the cluster key, 32 bytes; zeroed by Wipe
	Priority uint8
	Services []ha.Service
	// Heartbeat on the sync link; DeadAfter without one (and no answer
	// on the service network) makes the standby take over.
	Heartbeat          time.Duration
	DeadAfter          time.Duration
	CheckpointPackets  uint64
	CheckpointInterval time.Duration
}

// Defaults of the ha section.
const (
	DefaultHAPort               = 4501
	DefaultHAHeartbeat          = 50 * time.Millisecond
	DefaultHADeadHeartbeats     = 3
	DefaultCheckpointPackets    = 10000
	DefaultCheckpointInterval   = time.Second
	DefaultHAPriority           = 100
	minHAHeartbeat              = 10 * time.Millisecond
	minCheckpointPackets        = 16
	maxCheckpointPackets        = 1 << 30
	maxCheckpointIntervalFactor = 1000 // of the heartbeat
)

func (p *parser) ha(top *fields, c *Config) {
	n := top.get("ha")
	if n == nil {
		return
	}
	f := p.fields(n, top.lineOf("ha"), "ha", "peer", "listen", "cluster_key", "priority", "service_addresses", "heartbeat", "dead_after",
		"checkpoint_packets", "checkpoint_interval")
	if c.Role != RoleGateway {
		p.errf(top.lineOf("ha"), "ha", "only a gateway has a standby")
		return
	}
	h := &HA{}
	p.haKey(f, h)
	c.HA = h
	if f.get("listen") == nil && f.get("peer") == nil && f.get("service_addresses") == nil {
		for _, k := range []string{"priority", "heartbeat", "dead_after", "checkpoint_packets", "checkpoint_interval"} {
			if f.get(k) != nil {
				p.errf(f.lineOf(k), "ha."+k, "is a pair's setting: give listen, peer and service_addresses too")
			}
		}
		return // cluster_key alone: context get/put, no pair
	}
	h.Pair = true
	h.Listen = p.haAddrPort(f, "listen")
	h.Peer = p.haAddrPort(f, "peer")
	if h.Listen.IsValid() && h.Peer.IsValid() && h.Listen == h.Peer {
		p.errf(f.lineOf("peer"), "ha.peer", "is the same as ha.listen: the peer is the other gateway")
	}
	if h.Listen.IsValid() && h.Peer.IsValid() && h.Listen.Addr().Is4() != h.Peer.Addr().Is4() {
		p.errf(f.lineOf("peer"), "ha.peer", "%v and listen %v are of different families", h.Peer, h.Listen)
	}
	if h.Listen.IsValid() && h.Peer.IsValid() && h.Listen.Port() != h.Peer.Port() {
		// The standby probes the active at the service addresses on its own
		// port (internal/ha: probe).
		p.errf(f.lineOf("peer"), "ha.peer", "port %d differs from listen's %d: both gateways use one port", h.Peer.Port(), h.Listen.Port())
	}
	pr, _ := f.uint("priority", DefaultHAPriority, 0, 255)
	h.Priority = uint8(pr)
	p.haServices(f, h)
	h.Heartbeat, _ = f.duration("heartbeat", DefaultHAHeartbeat)
	if h.Heartbeat < minHAHeartbeat {
		p.errf(f.lineOf("heartbeat"), "ha.heartbeat", "%v is too short: want at least %v", h.Heartbeat, minHAHeartbeat)
	}
	h.DeadAfter, _ = f.duration("dead_after", DefaultHADeadHeartbeats*h.Heartbeat)
	if h.DeadAfter < 2*h.Heartbeat {
		// One late heartbeat must not make a second active.
		p.errf(f.lineOf("dead_after"), "ha.dead_after", "%v is below two heartbeats (%v)", h.DeadAfter, 2*h.Heartbeat)
	}
	h.CheckpointPackets, _ = f.uint("checkpoint_packets", DefaultCheckpointPackets, minCheckpointPackets, maxCheckpointPackets)
	h.CheckpointInterval, _ = f.duration("checkpoint_interval", DefaultCheckpointInterval)
	if h.CheckpointInterval < h.Heartbeat || h.CheckpointInterval > maxCheckpointIntervalFactor*h.Heartbeat {
		p.errf(f.lineOf("checkpoint_interval"), "ha.checkpoint_interval", "%v: want between one heartbeat (%v) and %d heartbeats", h.CheckpointInterval, h.Heartbeat, maxCheckpointIntervalFactor)
	}
}

// haKey loads the cluster key (internal/hactx: the one loader, which
// also refuses a file others can read).
func (p *parser) haKey(f *fields, h *HA) {
	v, vn, ok := f.scalar("cluster_key")
	if vn == nil {
		f.missing("cluster_key", ": the cluster key file, the same on both gateways (gateway ha keygen FILE writes one)")
		return
	}
	if !ok {
		return
	}
	h.KeyFile = p.abs(v)
	k, err := hactx.Load(h.KeyFile)
	if err != nil {
		p.errf(vn.Line, "ha.cluster_key", "%v (gateway ha keygen %s writes one)", err, h.KeyFile)
		return
	}
	h.Key = Secret(k.Raw())
	k.Wipe()
}

// haAddrPort reads address:port, or an address with the default port.
func (p *parser) haAddrPort(f *fields, name string) netip.AddrPort {
	v, n, ok := f.scalar(name)
	if n == nil {
		f.missing(name, ": address:port of the sync link")
		return netip.AddrPort{}
	}
	if !ok {
		return netip.AddrPort{}
	}
	if ap, err := netip.ParseAddrPort(v); err == nil && ap.Port() != 0 {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a, err := netip.ParseAddr(v); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), DefaultHAPort)
	}
	p.errf(n.Line, "ha."+name, "want an address or address:port ([v6]:port), got %s", show(v))
	return netip.AddrPort{}
}

func (p *parser) haServices(f *fields, h *HA) {
	items := f.list("service_addresses")
	if len(items) == 0 {
		f.missing("service_addresses", ": the addresses the active gateway holds, each {prefix, interface}")
		return
	}
	for i, in := range items {
		path := elem("ha.service_addresses", i)
		sf := p.fields(in, in.Line, path, "prefix", "interface")
		var s ha.Service
		if pn := sf.get("prefix"); pn == nil {
			sf.missing("prefix", ": the address with its prefix length, e.g. 192.0.2.100/24")
		} else if pf, ok := p.prefix(pn, path+".prefix"); ok {
			if pf.Addr().IsUnspecified() || pf.Addr().IsMulticast() || pf.Addr().IsLinkLocalUnicast() {
				p.errf(pn.Line, path+".prefix", "%s cannot be a service address", pf)
			} else if slices.ContainsFunc(h.Services, func(o ha.Service) bool { return o.Prefix.Addr() == pf.Addr() }) {
				p.errf(pn.Line, path+".prefix", "%s given twice", pf.Addr())
			} else {
				s.Prefix = pf
			}
		}
		s.Link = sf.str("interface", "")
		if s.Link == "" {
			sf.missing("interface", ": the link the address goes on")
		}
		h.Services = append(h.Services, s)
	}
}

// clone copies h with its own copy of the key (Build hands it on while
// the Config's copy is wiped).
func (h *HA) clone() *HA {
	if h == nil {
		return nil
	}
	c := *h
	c.Key = Secret(append([]byte(nil), h.Key...))
	c.Services = slices.Clone(h.Services)
	return &c
}
