package config

import (
	"github.com/roamsec/roamsec/internal/hactx"
)

// The ha section (a gateway's): what gateways of one cluster share.
//
//	ha:
//	  cluster_key: /etc/roamsec/cluster.key   # gateway ha keygen FILE
//
// cluster_key seals the security contexts `gateway context get` writes
// and `context put` reads (seed 004), so they never leave in clear.

// HA is the ha section.
type HA struct {
	KeyFile string // cluster_key, absolute
}

// ha parses the ha section (called from config).
func (p *parser) ha(top *fields, c *Config) {
	n := top.get("ha")
	if n == nil {
		return
	}
	f := p.fields(n, top.lineOf("ha"), "ha", "cluster_key")
	if p.role == RoleRoadWarrior {
		p.errf(top.lineOf("ha"), "ha", "a gateway's section: a road warrior's IKE SA moves with its gateway, not with it")
		return
	}
	v, vn, ok := f.scalar("cluster_key")
	if vn == nil {
		f.missing("cluster_key", ": the cluster key file (gateway ha keygen FILE writes one)")
		return
	}
	if !ok {
		return
	}
	path := p.abs(v)
	if err := hactx.CheckFile(path); err != nil {
		p.errf(vn.Line, "ha.cluster_key", "%v (gateway ha keygen %s writes one)", err, path)
		return
	}
	c.HA = &HA{KeyFile: path}
}
