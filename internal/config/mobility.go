package config

import (
	"net/netip"
	"slices"
	"time"

	"github.com/roamsec/roamsec/mobility"
)

// Mobility is the mobility section: the road warrior's paths to the
// gateway and the rules for moving its SAs between them.
type Mobility struct {
	Paths   []mobility.Path
	Primary int // index into Paths
	Policy  mobility.Policy
	// Detector finds dead paths: "probe" (RFC 4960 §8 heartbeats carried
	// as ICMP echo through a host-to-host SA, plus netlink) or "netlink"
	// alone (link and address events; it cannot see a path that stays up
	// but drops everything).
	Detector  string
	Heartbeat mobility.Heartbeat
	// SCTPPort is the gateway's port for the path-monitoring association.
	SCTPPort int
	// SCTPListen (gateway only) are the addresses the gateway listens on,
	// one per uplink network the road warriors reach it by.
	SCTPListen []netip.Addr
}

const (
	DetectorSCTP      = "sctp"
	DetectorProbe     = "probe"
	DetectorNetlink   = "netlink"
	DefaultSwitchBack = 10 * time.Second
)

func (p *parser) mobility(top *fields, c *Config) {
	n := top.get("mobility")
	if n == nil {
		return
	}
	f := p.fields(n, top.lineOf("mobility"), "mobility", "paths", "primary", "switch_back", "leave_on_pf", "detector", "heartbeat", "sctp_port", "sctp_listen")
	m := &Mobility{}
	var names []string
	for i, pn := range f.list("paths") {
		path := elem("mobility.paths", i)
		pf := p.fields(pn, pn.Line, path, "name", "local", "peer", "link")
		var pa mobility.Path
		pa.Name = pf.str("name", "")
		if pa.Name == "" {
			pf.missing("name", "")
		} else if slices.Contains(names, pa.Name) {
			p.errf(pf.lineOf("name"), path+".name", "%s: name used twice", show(pa.Name))
		}
		names = append(names, pa.Name)
		for _, k := range []struct {
			name string
			to   *netip.Addr
		}{{"local", &pa.Local}, {"peer", &pa.Peer}} {
			if an := pf.get(k.name); an == nil {
				pf.missing(k.name, "")
			} else if a, ok := p.addr(an, path+"."+k.name); ok {
				*k.to = a
			}
		}
		if pa.Local.IsValid() && pa.Peer.IsValid() && pa.Local.Is4() != pa.Peer.Is4() {
			p.errf(pn.Line, path, "local %v and peer %v are of different families", pa.Local, pa.Peer)
		}
		if pa.Local.IsValid() && len(c.Transport.Listen) > 0 && !slices.Contains(c.Transport.Listen, pa.Local) {
			p.errf(pf.lineOf("local"), path+".local", "%v is not in transport.listen", pa.Local)
		}
		pa.Link = pf.str("link", "")
		m.Paths = append(m.Paths, pa)
	}
	if c.Role == RoleRoadWarrior && len(m.Paths) < 2 {
		p.errf(f.lineOf("paths"), "mobility.paths", "want at least two paths (a primary and an alternate), got %d", len(m.Paths))
	}
	if c.Role == RoleGateway && len(m.Paths) > 0 {
		p.errf(f.lineOf("paths"), "mobility.paths", "a gateway has no paths to move between: it follows the road warrior (RFC 3554: outer destination = inner destination)")
	}
	if pri := f.str("primary", ""); pri != "" {
		if i := slices.Index(names, pri); i >= 0 {
			m.Primary = i
		} else {
			p.errf(f.lineOf("primary"), "mobility.primary", "%s is not the name of a path", show(pri))
		}
	}
	// Back to the primary once it has answered this long; "never" stays.
	if f.str("switch_back", "") == "never" {
		m.Policy.SwitchBack = -1
	} else if d, ok := f.duration("switch_back", DefaultSwitchBack); ok {
		m.Policy.SwitchBack = d
	}
	m.Policy.LeaveOnPF = f.boolean("leave_on_pf", true)
	m.Detector, _ = f.enum("detector", DetectorSCTP, DetectorSCTP, DetectorProbe, DetectorNetlink)
	port, _ := f.uint("sctp_port", mobility.DefaultSCTPPort, 1, 65535)
	m.SCTPPort = int(port)
	if f.has("sctp_listen") {
		if c.Role != RoleGateway {
			p.errf(f.lineOf("sctp_listen"), "mobility.sctp_listen", "only a gateway listens; a road warrior binds its paths' local addresses")
		}
		m.SCTPListen, _ = f.addrs("sctp_listen")
	}
	if c.Role == RoleGateway && m.Detector == DetectorSCTP && len(m.SCTPListen) == 0 {
		f.missing("sctp_listen", ": the gateway's addresses the road warriors' SCTP association reaches")
	}
	m.Heartbeat = mobility.DefaultHeartbeat
	if hn := f.get("heartbeat"); hn != nil {
		hf := p.fields(hn, f.lineOf("heartbeat"), "mobility.heartbeat", "interval", "rto_initial", "rto_min", "rto_max", "path_max_retrans", "pf_threshold", "data_interval")
		hb := &m.Heartbeat
		hb.Interval, _ = hf.duration("interval", hb.Interval)
		hb.RTOInitial, _ = hf.duration("rto_initial", hb.RTOInitial)
		hb.RTOMin, _ = hf.duration("rto_min", hb.RTOMin)
		hb.RTOMax, _ = hf.duration("rto_max", hb.RTOMax)
		hb.DataInterval, _ = hf.duration("data_interval", hb.DataInterval)
		pmr, _ := hf.uint("path_max_retrans", uint64(hb.PathMaxRetrans), 0, 100)
		hb.PathMaxRetrans = int(pmr)
		if hf.str("pf_threshold", "") == "off" {
			hb.PFThreshold = -1
		} else {
			pf, _ := hf.uint("pf_threshold", uint64(max(hb.PFThreshold, 0)), 0, 100)
			hb.PFThreshold = int(pf)
		}
		if hb.Interval <= 0 || hb.RTOMin <= 0 || hb.RTOMin > hb.RTOMax || hb.RTOInitial < hb.RTOMin || hb.RTOInitial > hb.RTOMax {
			p.errf(f.lineOf("heartbeat"), "mobility.heartbeat", "want interval > 0 and 0 < rto_min <= rto_initial <= rto_max")
		}
		if hb.PFThreshold > hb.PathMaxRetrans {
			p.errf(f.lineOf("heartbeat"), "mobility.heartbeat.pf_threshold", "must not exceed path_max_retrans (RFC 7829 §3)")
		}
	}
	c.Mobility = m
}
