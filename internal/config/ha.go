package config

import (
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/roamsec/roamsec/internal/ha"
)

// HA is the ha section: this gateway's half of a hot-standby pair (issue
// 12; internal/ha).
type HA struct {
	// Pair: peer, listen and service_addresses are given; without them
	// the section only names the cluster key.
	Pair     bool
	Listen   netip.AddrPort // our sync address
	Peer     netip.AddrPort // the other gateway's
	KeyFile  string         // absolute
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
	}
	h := &HA{}
	p.haKey(f, h)
	// Without peer, listen and service_addresses the section only names
	// the cluster key (context get/put between gateways, no pair).
	if !f.has("peer") && !f.has("listen") && !f.has("service_addresses") {
		for _, k := range []string{"priority", "heartbeat", "dead_after", "checkpoint_packets", "checkpoint_interval"} {
			if f.has(k) {
				p.errf(f.lineOf(k), "ha."+k, "belongs to a pair: give peer, listen and service_addresses too")
			}
		}
		c.HA = h
		return
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
	c.HA = h
}

// haKey loads the cluster key (so -check sees a bad file).
func (p *parser) haKey(f *fields, h *HA) {
	v, vn, ok := f.scalar("cluster_key")
	if vn == nil {
		f.missing("cluster_key", ": a file with 64 hex digits, the same on both gateways (head -c 32 /dev/urandom | xxd -p -c 64)")
		return
	}
	if !ok {
		return
	}
	path := v
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	h.KeyFile = path
	if k, err := ha.LoadKey(path); err != nil {
		p.errf(vn.Line, "ha.cluster_key", "%v", err)
	} else {
		h.Key = Secret(k[:]) // the Secret is the key's only copy; Wipe zeroes it
	}
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
