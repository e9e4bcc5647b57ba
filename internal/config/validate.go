package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
)

// index records the line of every field path, for the checks that run
// after the fields are read.
func (p *parser) index(n *yaml.Node, path string, depth int) {
	if p.lines == nil {
		p.lines = map[string]int{}
	}
	if n == nil || depth > 64 {
		return
	}
	if _, ok := p.lines[path]; !ok {
		p.lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Kind == yaml.ScalarNode {
				p.index(n.Content[i+1], join(path, k.Value), depth+1)
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.index(c, elem(path, i), depth+1)
		}
	}
}

// at is the line of path, or of its nearest ancestor in the file.
func (p *parser) at(path string) int {
	for {
		if l, ok := p.lines[path]; ok && l > 0 {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			if l, ok := p.lines[""]; ok && l > 0 {
				return l
			}
			return 1
		}
		path = path[:i]
	}
}

func (p *parser) fail(path, format string, args ...any) {
	p.errf(p.at(path), path, format, args...)
}

func (p *parser) warn(path, format string, args ...any) {
	p.warnf(p.at(path), path, format, args...)
}

func keyPath(i int, dir string, k *Key) string {
	if k.File != "" {
		return fmt.Sprintf("sas[%d].%s.key_file", i, dir)
	}
	return fmt.Sprintf("sas[%d].%s.key", i, dir)
}

func addrSetOf(as ...netip.Addr) tunnel.AddrSet {
	ps := make([]netip.Prefix, 0, len(as))
	for _, a := range as {
		ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
	}
	s, _ := tunnel.NewAddrSet(ps...)
	return s
}

// validate runs the checks that span fields. It runs even when some
// fields did not parse, so one run reports every problem; values that did
// not parse are zero and are skipped here (they are reported already).
func (p *parser) validate(c *Config) {
	// Names share the SPD's namespace.
	names := map[string]string{}
	claim := func(name, path string) {
		if name == "" {
			return
		}
		if first, dup := names[name]; dup {
			p.fail(path+".name", "%q is already the name of %s", name, first)
			return
		}
		names[name] = path
	}

	switch {
	case c.IKE != nil:
		// IKEv2 negotiates the SAs.
	case c.Role == RoleRoadWarrior && len(c.SAs) == 0:
		p.fail("sas", "a road warrior needs at least one SA (or an ike section)")
	case len(c.SAs) == 0:
		p.warn("sas", "no SAs: the gateway will carry no traffic")
	}

	type keyUse struct {
		key  Secret
		path string
	}
	var keys []keyUse
	inSPI := map[uint32]string{}
	listen := addrSetOf(c.Transport.Listen...)
	for i := range c.SAs {
		sa := &c.SAs[i]
		path := elem("sas", i)
		claim(sa.Name, path)
		if sa.Encap == EncapUDP {
			c.Transport.UDP = true
		} else {
			c.Transport.RawESP = true
		}

		// SPIs: the receiver's SAD is keyed by SPI alone (RFC 4301 §4.1).
		if sa.Inbound.SPI == 0 { // did not parse, reported
		} else if first, dup := inSPI[sa.Inbound.SPI]; dup {
			p.fail(path+".inbound.spi", "SPI %#x is already used by %s: inbound SPIs must be unique", sa.Inbound.SPI, first)
		} else {
			inSPI[sa.Inbound.SPI] = path + ".inbound"
		}

		// One key per direction per SA: a repeated key repeats AEAD nonces.
		for _, d := range []struct {
			dir string
			k   *Key
		}{{"outbound", &sa.Outbound}, {"inbound", &sa.Inbound}} {
			kp := keyPath(i, d.dir, d.k)
			if d.k.Key == nil { // did not parse, reported
				continue
			}
			for _, u := range keys {
				if bytes.Equal(u.key, d.k.Key) {
					p.fail(kp, "same key as %s: every SA and direction needs a key of its own (AEAD nonces would repeat)", u.path)
					break
				}
			}
			keys = append(keys, keyUse{d.k.Key, kp})
			if bytes.Contains(d.k.Key, []byte("EXAMPLE")) {
				p.warn(kp, "this is an example key, published with roamsec: generate a real one (head -c %d /dev/urandom | xxd -p -c %d)", sa.Transform.KeyLen(), 2*sa.Transform.KeyLen())
			}
		}

		// The outer rule against the role and our addresses.
		r := &sa.Outer.Rule
		switch {
		case c.Role == RoleRoadWarrior && sa.Outer.Mode == OuterGatewayToRoadWarrior:
			p.fail(path+".outer.mode", "a road warrior cannot use mode gateway-to-road-warrior: use road-warrior (or gateway-gateway, host)")
		case c.Role == RoleGateway && sa.Outer.Mode == OuterRoadWarrior:
			p.fail(path+".outer.mode", "a gateway cannot use mode road-warrior: use gateway-to-road-warrior (or gateway-gateway, host)")
		}
		if !listen.IsEmpty() {
			field := "local"
			for j, a := range r.Src {
				if !listen.Contains(a) {
					fp := path + ".outer." + field
					if len(r.Src) > 1 || p.lines[elem(fp, 0)] > 0 {
						fp = elem(fp, j)
					}
					p.fail(fp, "%s is not one of transport.listen (our outer addresses)", a)
				}
			}
			if !sa.LocalAddrs.IsEmpty() && !sa.LocalAddrs.Overlaps(&listen) {
				p.fail(path+".local_addrs", "none of %s is in transport.listen: no ESP for this SA could arrive", sa.LocalAddrs)
			}
			if r.SrcFromInner && sa.selOK && !sa.Selector.Local.Overlaps(&listen) {
				p.fail(path+".selector", "mode %s sends from the inner source address (RFC 3554), but no address of selector local (%s) is in transport.listen", sa.Outer.Mode, sa.Selector.Local)
			}
		}
		if !sa.PeerAddrs.IsEmpty() {
			for _, a := range r.Dst {
				if !sa.PeerAddrs.Contains(a) {
					p.warn(path+".peer_addrs", "the SA sends to %s but would drop ESP coming from it (not in peer_addrs)", a)
				}
			}
		}
	}

	// Routes in the main table that would catch our own ESP.
	for i, rt := range c.TUN.Routes {
		if c.TUN.Table != 0 && c.TUN.Table != 254 {
			break
		}
		dst, _ := tunnel.NewAddrSet(rt.Dst)
		for j := range c.SAs {
			sa := &c.SAs[j]
			if sa.Outer.Rule.DstFromInner && sa.selOK && dst.Overlaps(&sa.Selector.Remote) {
				p.fail(elem("tun.routes", i)+".dst", "routes %s into the TUN in the main table, but %s (%s) sends its ESP to the inner destination (mode %s), which this route would send back into the TUN: put the routes in a table of their own (tun.table) with tun.bypass_rule", rt.Dst, elem("sas", j), sa.Name, sa.Outer.Mode)
				break
			}
			gw := addrSetOf(sa.Outer.Rule.Dst...)
			if dst.Overlaps(&gw) {
				p.warn(elem("tun.routes", i)+".dst", "routes %s into the TUN in the main table, which covers the outer destination of %s (%s): unless a more specific route leads there, its ESP loops into the TUN; tun.table with tun.bypass_rule avoids this", rt.Dst, elem("sas", j), sa.Name)
				break
			}
		}
	}

	p.ports(c)

	// Extra policies.
	byName := map[string]*SA{}
	for i := range c.SAs {
		byName[c.SAs[i].Name] = &c.SAs[i]
	}
	for i := range c.Policies {
		pol := &c.Policies[i]
		path := elem("policies", i)
		claim(pol.Name, path)
		if pol.Action != tunnel.Protect || pol.SA == "" {
			continue
		}
		sa, ok := byName[pol.SA]
		if !ok {
			p.fail(path+".sa", "no sas entry is named %s", show(pol.SA))
			continue
		}
		if why := within(&pol.Selector, &sa.Selector); sa.selOK && pol.selOK && why != "" {
			p.fail(path+".selector", "protects traffic outside the selector of SA %s (%s): the peer would drop it", sa.Name, why)
		}
	}

	// MTU.
	mtu := c.TUNMTU()
	mtuPath := "tun.path_mtu"
	if c.TUN.MTU != 0 {
		mtuPath = "tun.mtu"
	}
	switch {
	case mtu < 68:
		p.fail(mtuPath, "gives a TUN MTU of %d, below the IPv4 minimum of 68", mtu)
	case mtu < 1280 && c.carriesIPv6():
		p.fail(mtuPath, "gives a TUN MTU of %d, below IPv6's minimum of 1280: the kernel would disable IPv6 on the TUN", mtu)
	}
}

// within explains why inner is not inside outer, or returns "".
func within(inner, outer *tunnel.Selector) string {
	anyPorts := func(r tunnel.PortRange) bool { return r.Lo == 0 && (r.Hi == 0 || r.Hi == 65535) }
	portsIn := func(in, out tunnel.PortRange) bool {
		return anyPorts(out) || (!anyPorts(in) && out.Lo <= in.Lo && in.Hi <= out.Hi)
	}
	switch {
	case !outer.Local.Covers(&inner.Local):
		return "local"
	case !outer.Remote.Covers(&inner.Remote):
		return "remote"
	case outer.Proto != tunnel.ProtoAny && inner.Proto != outer.Proto:
		return "proto"
	case !portsIn(inner.LocalPorts, outer.LocalPorts):
		return "lport"
	case !portsIn(inner.RemotePorts, outer.RemotePorts):
		return "rport"
	}
	return ""
}

// carriesIPv6 reports whether IPv6 goes through the TUN.
func (c *Config) carriesIPv6() bool {
	for i := range c.SAs {
		if _, v6 := carried(&c.SAs[i].Selector); v6 {
			return true
		}
	}
	for _, a := range c.TUN.Addresses {
		if a.Addr().Is6() {
			return true
		}
	}
	for _, r := range c.TUN.Routes {
		if r.Dst.Addr().Is6() {
			return true
		}
	}
	return false
}

// outerIPv6 reports whether any SA may send ESP over IPv6.
func (c *Config) outerIPv6() bool {
	if len(c.SAs) == 0 {
		if len(c.Transport.Listen) == 0 {
			return true
		}
		for _, a := range c.Transport.Listen {
			if a.Is6() {
				return true
			}
		}
		return false
	}
	for i := range c.SAs {
		r := &c.SAs[i].Outer.Rule
		for _, a := range append(append([]netip.Addr(nil), r.Src...), r.Dst...) {
			if a.Is6() {
				return true
			}
		}
		if _, v6 := carried(&c.SAs[i].Selector); v6 && (r.SrcFromInner || r.DstFromInner) {
			return true
		}
	}
	return false
}

// Overhead is the per-packet cost of the tunnel in bytes: the outer IP
// header (IPv6's if any SA may send over IPv6), UDP if any SA is
// UDP-encapsulated, and ESP with its worst-case padding.
func (c *Config) Overhead() int {
	o := tun.OverheadIPv4 + tun.OverheadESP
	if c.outerIPv6() {
		o = tun.OverheadIPv6 + tun.OverheadESP
	}
	for i := range c.SAs {
		if c.SAs[i].Encap == EncapUDP {
			return o + tun.OverheadUDP
		}
	}
	return o
}

// TUNMTU is the MTU the TUN gets: tun.mtu if set, else path_mtu minus
// Overhead (tun.MTUFor).
func (c *Config) TUNMTU() int {
	if c.TUN.MTU != 0 {
		return c.TUN.MTU
	}
	return tun.MTUFor(c.TUN.PathMTU, c.Overhead())
}

// ports refuses IKE on other ports than RFC 7296 §2's 500 and RFC 3948's
// 4500: the IKE code follows those two numbers (NAT detection, the float
// to 4500 of RFC 7296 §2.23, the response socket, the Child SA's peer
// port), so any other value would be half honoured. Static-key SAs have no
// such rule: their udp_port and peer_port are used as given.
func (p *parser) ports(c *Config) {
	if c.IKE == nil {
		return
	}
	if c.IKE.Port != 0 && c.IKE.Port != 500 {
		p.fail("ike.port", "%d: IKEv2 runs on UDP 500 and floats to 4500 (RFC 7296 §2.23); other ports are not supported: remove the field", c.IKE.Port)
	}
	if c.Transport.UDPPort != 0 && c.Transport.UDPPort != DefaultUDPPort {
		p.fail("transport.udp_port", "%d: with an ike section ESP in UDP and IKE share UDP 4500 (RFC 3948, RFC 7296 §2.23); other ports are not supported: remove the field", c.Transport.UDPPort)
	}
}
