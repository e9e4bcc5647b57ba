package config

import (
	"net"
	"net/netip"
	"os/user"
	"strconv"
)

// The top-level fields for operating the daemon:
//
//	control_group   group name or number: the control socket becomes mode
//	                0660 with that group, so its members may run status
//	                and sa list (disconnect stays root's); absent: 0600
//	metrics.listen  host:port for the Prometheus endpoint (/metrics);
//	                absent: no endpoint. Keep it on loopback.

// ControlGroup is the control_group field, resolved.
type ControlGroup struct {
	Name string // as configured
	GID  int
}

// Metrics is the metrics section.
type Metrics struct {
	Listen string // host:port
}

// control parses control_group and metrics (called from config).
func (p *parser) control(top *fields, c *Config) {
	if v, n, ok := top.scalar("control_group"); ok {
		g, err := user.LookupGroup(v)
		if _, numErr := strconv.Atoi(v); err != nil && numErr == nil {
			g, err = user.LookupGroupId(v)
		}
		if err != nil {
			p.errf(n.Line, "control_group", "no group %s on this system: create it (groupadd %s) or leave control_group out (root only)", show(v), v)
		} else if gid, err := strconv.Atoi(g.Gid); err != nil {
			p.errf(n.Line, "control_group", "group %s has a non-numeric id %q", show(v), g.Gid)
		} else {
			if gid == 0 {
				p.warnf(n.Line, "control_group", "group %s is root's group: every member may read the daemon's status", show(v))
			}
			c.ControlGroup = &ControlGroup{Name: v, GID: gid}
		}
	}
	mn := top.get("metrics")
	if mn == nil {
		return
	}
	f := p.fields(mn, top.lineOf("metrics"), "metrics", "listen")
	v, ln, ok := f.scalar("listen")
	if ln == nil {
		f.missing("listen", `: host:port, e.g. "127.0.0.1:9273"`)
		return
	}
	if !ok {
		return
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		p.errf(ln.Line, "metrics.listen", "want host:port (e.g. \"127.0.0.1:9273\"), got %s", show(v))
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		p.errf(ln.Line, "metrics.listen", "want a port 1-65535, got %s", show(port))
		return
	}
	if a, err := netip.ParseAddr(host); host == "" || err == nil && !a.IsLoopback() {
		p.warnf(ln.Line, "metrics.listen", "%s is not a loopback address: anyone who reaches it sees the SAs' peers and counters (firewall it, or use 127.0.0.1)", show(v))
	}
	c.Metrics = &Metrics{Listen: v}
}
