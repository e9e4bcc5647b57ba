package config

import (
	"net/netip"
	"os"
	"strings"
	"time"
)

// RADIUS is the radius section: the AAA servers a gateway relays EAP to
// (ike.peers with auth: eap-radius) and reports accounting to.
type RADIUS struct {
	Servers []RADIUSServer // tried in order; the next when one stays silent
	Timeout time.Duration  // before a retransmission
	Retries int            // retransmissions per server
	// Accounting: send Start/Interim-Update/Stop (RFC 2866); Interim is
	// the Interim-Update period, 0 none.
	Accounting bool
	Interim    time.Duration
	// NASIdentifier (RFC 2865 §5.32); default: ike.id.
	NASIdentifier string
}

// RADIUSServer is one server. Secret is read from SecretFile when the
// file is parsed (never logged: Secret redacts itself).
type RADIUSServer struct {
	Auth       netip.AddrPort
	Acct       netip.AddrPort
	SecretFile string
	Secret     Secret
}

func (p *parser) radius(top *fields, c *Config) {
	n := top.get("radius")
	if n == nil {
		return
	}
	f := p.fields(n, top.lineOf("radius"), "radius", "servers", "timeout", "retries", "accounting", "interim", "nas_identifier")
	if c.Role != RoleGateway {
		p.errf(f.line, "radius", "only a gateway uses RADIUS")
	}
	r := &RADIUS{}
	for i, sn := range f.list("servers") {
		path := elem("radius.servers", i)
		sf := p.fields(sn, sn.Line, path, "address", "accounting_address", "secret_file")
		var s RADIUSServer
		s.Auth = p.addrPort(sf, "address", 1812, true)
		s.Acct = p.addrPort(sf, "accounting_address", 0, false)
		if !s.Acct.IsValid() && s.Auth.IsValid() {
			s.Acct = netip.AddrPortFrom(s.Auth.Addr(), s.Auth.Port()+1)
		}
		if !sf.has("secret_file") {
			sf.missing("secret_file", ": the file with the shared secret of this RADIUS client (clients.conf)")
		} else {
			s.SecretFile = p.path(sf, "secret_file")
			s.Secret = p.secretFile(sf, "secret_file", "RADIUS secret", 8)
		}
		r.Servers = append(r.Servers, s)
	}
	if len(r.Servers) == 0 {
		f.missing("servers", ": e.g. [{address: 192.0.2.10:1812, secret_file: radius.secret}]")
	}
	r.Timeout, _ = f.duration("timeout", 2*time.Second)
	if r.Timeout < 100*time.Millisecond || r.Timeout > time.Minute {
		p.errf(f.lineOf("timeout"), "radius.timeout", "want 100ms to 1m, got %v", r.Timeout)
	}
	tries, _ := f.uint("retries", 2, 0, 10)
	r.Retries = int(tries)
	r.Accounting = f.boolean("accounting", true)
	r.Interim, _ = f.duration("interim", 10*time.Minute)
	if r.Interim != 0 && r.Interim < time.Second {
		p.errf(f.lineOf("interim"), "radius.interim", "want 0 (none) or at least 1s, got %v", r.Interim)
	}
	r.NASIdentifier = f.str("nas_identifier", "")
	c.RADIUS = r
}

// addrPort reads an address:port; def is the port of a bare address.
func (p *parser) addrPort(f *fields, name string, def uint16, required bool) netip.AddrPort {
	v, vn, ok := f.scalar(name)
	if vn == nil {
		if required {
			f.missing(name, ": e.g. 192.0.2.10:1812")
		}
		return netip.AddrPort{}
	}
	if !ok {
		return netip.AddrPort{}
	}
	v = strings.TrimSpace(v)
	if ap, err := netip.ParseAddrPort(v); err == nil && ap.Port() != 0 {
		return ap
	}
	if a, err := netip.ParseAddr(strings.Trim(v, "[]")); err == nil && def != 0 {
		return netip.AddrPortFrom(a, def)
	}
	p.errf(vn.Line, f.path2(name), "want an address and port (192.0.2.10:1812, [2001:db8::10]:1812), got %s", show(v))
	return netip.AddrPort{}
}

// clone copies the section with its own copies of the secrets.
func (r *RADIUS) clone() *RADIUS {
	if r == nil {
		return nil
	}
	n := *r
	n.Servers = append([]RADIUSServer(nil), r.Servers...)
	for i := range n.Servers {
		n.Servers[i].Secret = append(Secret(nil), r.Servers[i].Secret...)
	}
	return &n
}

// Wipe zeroes the shared secrets.
func (r *RADIUS) Wipe() {
	if r == nil {
		return
	}
	for _, s := range r.Servers {
		s.Secret.Wipe()
	}
}

// eapPeers checks the ike.peers that use EAP against the radius section.
func (p *parser) eapPeers(top *fields, c *Config) {
	if c.IKE == nil {
		return
	}
	for i, peer := range c.IKE.Peers {
		if peer.EAP && c.RADIUS == nil {
			p.errf(peer.authLine, elem("ike.peers", i)+".auth", "eap-radius needs a radius section (the servers to relay EAP to)")
		}
	}
}

// secretFile reads a shared secret from a file readable by its owner only
// (as pskFile does for PSKs), at least min bytes, surrounding whitespace
// ignored.
func (p *parser) secretFile(f *fields, name, what string, min int) Secret {
	v, vn, ok := f.scalar(name)
	if !ok {
		return nil
	}
	path := p.abs(v)
	st, err := os.Stat(path)
	if err != nil {
		p.errf(vn.Line, f.path2(name), "%s file: %v", what, err)
		return nil
	}
	b, msg := readSecret(path, st)
	if msg != "" {
		p.errf(vn.Line, f.path2(name), "%s %s", what, msg)
		return nil
	}
	if len(b) < min {
		b.Wipe()
		p.errf(vn.Line, f.path2(name), "%s in %s is shorter than %d bytes", what, path, min)
		return nil
	}
	return b
}
