package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/roamsec/roamsec/internal/ha"
)

// Host is what CheckHost asks of the machine the daemon will run on.
type Host interface {
	// HasAddr reports whether an interface of this host has the address.
	HasAddr(netip.Addr) bool
	// HasInterface reports whether a network interface has this name.
	HasInterface(name string) bool
}

// LocalHost is this machine (this network namespace), read once.
func LocalHost() (Host, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("config: list network interfaces: %w", err)
	}
	h := &staticHost{names: map[string]bool{}, addrs: map[netip.Addr]bool{}}
	for _, ifc := range ifs {
		h.names[ifc.Name] = true
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			if pf, err := netip.ParsePrefix(a.String()); err == nil {
				h.addrs[pf.Addr().Unmap()] = true
			}
		}
	}
	return h, nil
}

// StaticHost is a Host given as lists (tests, a file checked for another
// machine).
func StaticHost(addrs []netip.Addr, interfaces []string) Host {
	h := &staticHost{names: map[string]bool{}, addrs: map[netip.Addr]bool{}}
	for _, a := range addrs {
		h.addrs[a.Unmap()] = true
	}
	for _, n := range interfaces {
		h.names[n] = true
	}
	return h
}

type staticHost struct {
	names map[string]bool
	addrs map[netip.Addr]bool
}

func (h *staticHost) HasAddr(a netip.Addr) bool     { return h.addrs[a.Unmap()] }
func (h *staticHost) HasInterface(name string) bool { return h.names[name] }

// CheckHost checks the file against the host it will run on, as start-up
// would find it. Errors (joined *FieldError) are what would make start-up
// fail or the daemon run without doing what the file says; warnings, added
// to c.Warnings, are addresses that may legitimately appear later.
//
//   - tun.routes[].src: an address neither on the host nor in
//     tun.addresses is an error (the kernel refuses the route: EINVAL).
//   - transport.listen and mobility.sctp_listen on a gateway: an error
//     (a gateway's addresses are static; IKE would announce and answer from
//     an address it does not have).
//   - transport.listen and mobility.paths[].local on a road warrior: a
//     warning (an uplink's address comes with its link: Wi-Fi, LTE, DHCP;
//     that path is down until it does).
//   - mobility.paths[].link: a name no interface has is an error (the
//     netlink detector would never hear of the link, and failover would
//     fall back to probes without a word).
func (c *Config) CheckHost(h Host) error {
	var errs []*FieldError
	fail := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{File: c.File, Line: c.lineAt(path), Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	warn := func(path, format string, args ...any) {
		c.Warnings = append(c.Warnings, (&FieldError{File: c.File, Line: c.lineAt(path), Path: path, Msg: fmt.Sprintf(format, args...)}).Error())
	}
	onTUN := func(a netip.Addr) bool {
		return slices.ContainsFunc(c.TUN.Addresses, func(p netip.Prefix) bool { return p.Addr() == a })
	}
	for i, r := range c.TUN.Routes {
		if r.Src.IsValid() && !h.HasAddr(r.Src) && !onTUN(r.Src) {
			fail(elem("tun.routes", i)+".src", "%s is not an address of this host nor in tun.addresses: the kernel would refuse the route (add the address, or leave src out)", r.Src)
		}
	}
	gw := c.Role == RoleGateway
	isService := func(a netip.Addr) bool {
		return c.HA != nil && slices.ContainsFunc(c.HA.Services, func(s ha.Service) bool { return s.Prefix.Addr() == a })
	}
	for i, a := range c.Transport.Listen {
		switch {
		case h.HasAddr(a) || onTUN(a):
		case gw && isService(a):
			// An HA pair's service address: only the active holds it.
		case gw:
			fail(c.listPath("transport.listen", i, len(c.Transport.Listen)), "%s is not an address of this host: a gateway's outer addresses must be there when it starts", a)
		default:
			warn(c.listPath("transport.listen", i, len(c.Transport.Listen)), "%s is not an address of this host yet: that uplink stays unused until it is", a)
		}
	}
	if m := c.Mobility; m != nil {
		for i, a := range m.SCTPListen {
			if !h.HasAddr(a) {
				fail(c.listPath("mobility.sctp_listen", i, len(m.SCTPListen)), "%s is not an address of this host", a)
			}
		}
		for i, pa := range m.Paths {
			path := elem("mobility.paths", i)
			if pa.Link != "" && !h.HasInterface(pa.Link) {
				fail(path+".link", "no network interface is named %s on this host (ip link shows the names)", show(pa.Link))
			}
			if pa.Local.IsValid() && !h.HasAddr(pa.Local) {
				warn(path+".local", "%s is not an address of this host yet: path %s is down until it is", pa.Local, pa.Name)
			}
		}
	}
	if c.IKE != nil && c.IKE.OneTime != nil {
		o := c.IKE.OneTime
		for _, f := range []struct{ path, file string }{{"ike.one_time.database", o.Database}, {"ike.one_time.accounting", o.Accounting}} {
			if f.file == "" {
				continue
			}
			if st, err := os.Stat(filepath.Dir(f.file)); err != nil || !st.IsDir() {
				fail(f.path, "the directory of %s does not exist on this host (create it, mode 0700)", f.file)
			}
		}
		if e := o.Etcd; e != nil {
			for _, f := range []struct{ path, file string }{{"ike.one_time.etcd.ca", e.CAFile}, {"ike.one_time.etcd.cert", e.CertFile}, {"ike.one_time.etcd.key", e.KeyFile}} {
				if f.file == "" {
					continue
				}
				if _, err := os.ReadFile(f.file); err != nil {
					fail(f.path, "cannot read %s: %v", f.file, errors.Unwrap(err))
				}
			}
		}
	}
	if h2 := c.HA; h2 != nil {
		if h2.Listen.IsValid() && !h.HasAddr(h2.Listen.Addr()) {
			fail("ha.listen", "%s is not an address of this host: the sync link binds it", h2.Listen.Addr())
		}
		for i, s := range h2.Services {
			if s.Link != "" && !h.HasInterface(s.Link) {
				fail(c.listPath("ha.service_addresses", i, len(h2.Services))+".interface", "no network interface is named %s on this host", show(s.Link))
			}
		}
	}
	return joinErrors(errs)
}

// lineAt is the line of a field path, or of its nearest parent in the
// file (0 for a Config not parsed from a file).
func (c *Config) lineAt(path string) int {
	for path != "" {
		if l, ok := c.lines[path]; ok && l > 0 {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return c.lines[""]
}

// listPath names item i of a list field, or the field itself when it held
// a single scalar (listen: 192.0.2.1).
func (c *Config) listPath(name string, i, n int) string {
	if _, ok := c.lines[elem(name, i)]; ok || n > 1 {
		return elem(name, i)
	}
	return name
}
