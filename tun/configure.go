package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is a route into the TUN device.
type Route struct {
	Dst    netip.Prefix
	Src    netip.Addr // preferred source address (e.g. the virtual IP); optional
	Metric int
	// Table is the routing table (0: main). RFC 3554 mode puts the tunnel
	// routes in their own table, consulted by a rule (see AddBypassRule),
	// because there the inner and outer addresses are the same.
	Table int
}

// Configure sets the link up and adds addrs (address with prefix length) and
// routes through the device, in the device's namespace. It remembers what it
// added so Unconfigure removes exactly that: an address that was already on
// the link is left alone. It may be called again to add more. If it fails,
// what this call added is removed again.
//
// Addresses come before routes because the kernel rejects a route whose Src
// is not a local address. Configure returns once the addresses are usable,
// i.e. packets to them written into the device are delivered locally (see
// waitLocal).
func (d *Device) Configure(addrs []netip.Prefix, routes []Route) error {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		return fmt.Errorf("tun %s: %w", d.name, err)
	}
	nAddrs, nRoutes, wasUp := len(d.addrs), len(d.routes), d.setUp
	fail := func(err error) error {
		rerr := d.remove(link, nAddrs, nRoutes, wasUp)
		return errors.Join(fmt.Errorf("tun %s: %w", d.name, err), rerr)
	}

	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(link); err != nil {
			return fail(fmt.Errorf("link up: %w", err))
		}
		d.setUp = true
	}
	for _, p := range addrs {
		if !p.IsValid() {
			return fail(fmt.Errorf("invalid address %v", p))
		}
		a := netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD // usable at once; TUN is NOARP, nothing to detect
		}
		switch err := d.nl.AddrAdd(link, &a); {
		case errors.Is(err, syscall.EEXIST):
			continue // not ours to remove
		case err != nil:
			return fail(fmt.Errorf("add address %v: %w", p, err))
		}
		d.addrs = append(d.addrs, a)
		d.log.Debug("address added", "addr", p)
	}
	for _, a := range d.addrs[nAddrs:] {
		if a.IP.To4() == nil {
			if err := d.waitLocal(a.IP); err != nil {
				return fail(err)
			}
		}
	}
	for _, r := range routes {
		if !r.Dst.IsValid() || r.Src.IsValid() && r.Src.Is4() != r.Dst.Addr().Is4() {
			return fail(fmt.Errorf("invalid route %v src %v", r.Dst, r.Src))
		}
		nr := netlink.Route{
			LinkIndex: d.index,
			Dst:       ipNet(r.Dst.Masked()),
			Scope:     netlink.SCOPE_LINK, // point-to-point: no gateway
			Protocol:  unix.RTPROT_STATIC,
			Priority:  r.Metric,
			Table:     r.Table,
		}
		if r.Src.IsValid() {
			nr.Src = r.Src.AsSlice()
		}
		if err := d.nl.RouteAdd(&nr); err != nil {
			return fail(fmt.Errorf("add route %v: %w", r.Dst, err))
		}
		d.routes = append(d.routes, nr)
		d.log.Debug("route added", "dst", r.Dst, "src", r.Src, "metric", r.Metric)
	}
	return nil
}

// localWait bounds how long Configure waits for an IPv6 address to become
// usable; the kernel normally needs microseconds to a few milliseconds.
const localWait = 3 * time.Second

// waitLocal waits until a packet to the IPv6 address ip arriving on the
// device is delivered locally. The kernel installs the local route of a new
// IPv6 address (the "local ADDR table local" entry) not in RTM_NEWADDR but
// asynchronously, from the addrconf DAD work item, even for IFA_F_NODAD
// addresses that are never tentative; IPv4 does it synchronously. Until it
// is there, a packet to the address matches the on-link prefix route, is
// taken for one to forward and dropped (Ip6InAddrErrors when forwarding is
// off): an echo request or a decrypted packet written right after Configure
// would silently vanish. The check is the lookup the kernel makes for such a
// packet: an input route lookup from the device.
func (d *Device) waitLocal(ip net.IP) error {
	deadline := time.Now().Add(localWait)
	pause := 50 * time.Microsecond
	for {
		rs, err := d.nl.RouteGetWithOptions(ip, &netlink.RouteGetOptions{IifIndex: d.index})
		if err != nil {
			return fmt.Errorf("address %v: route lookup: %w", ip, err)
		}
		if len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("address %v: not usable (no local route) after %v", ip, localWait)
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// Unconfigure removes the routes and addresses Configure added, newest first,
// and sets the link down if Configure brought it up. Entries the kernel has
// already dropped (IPv6 routes vanish when the link goes down) are skipped.
func (d *Device) Unconfigure() error {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		// The link is gone (closed): its addresses and routes went with
		// it, but rules belong to no link and must still go.
		rerr := d.removeRules()
		d.addrs, d.routes, d.setUp = nil, nil, false
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return rerr
		}
		return errors.Join(fmt.Errorf("tun %s: %w", d.name, err), rerr)
	}
	if err := d.remove(link, 0, 0, false); err != nil {
		return fmt.Errorf("tun %s: %w", d.name, err)
	}
	return nil
}

// remove undoes additions beyond the first nAddrs addresses and nRoutes
// routes, and restores the link state to setUp.
func (d *Device) remove(link netlink.Link, nAddrs, nRoutes int, setUp bool) error {
	var errs []error
	if nAddrs == 0 && nRoutes == 0 {
		if err := d.removeRules(); err != nil {
			errs = append(errs, err)
		}
	}
	var keepR []netlink.Route
	for i := len(d.routes) - 1; i >= nRoutes; i-- {
		if err := d.nl.RouteDel(&d.routes[i]); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", d.routes[i].Dst, err))
			keepR = append(keepR, d.routes[i])
		}
	}
	d.routes = append(d.routes[:nRoutes], keepR...)
	var keepA []netlink.Addr
	for i := len(d.addrs) - 1; i >= nAddrs; i-- {
		if err := d.nl.AddrDel(link, &d.addrs[i]); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("delete address %v: %w", d.addrs[i].IPNet, err))
			keepA = append(keepA, d.addrs[i])
		}
	}
	d.addrs = append(d.addrs[:nAddrs], keepA...)
	if d.setUp && !setUp {
		if err := d.nl.LinkSetDown(link); err != nil {
			errs = append(errs, fmt.Errorf("link down: %w", err))
		} else {
			d.setUp = false
		}
	}
	return errors.Join(errs...)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// AddBypassRule installs, for IPv4 and IPv6, the rule "not fwmark mark
// lookup table" at priority prio: every packet consults the tunnel's table
// first, except the ESP packets our own sockets mark with mark (SO_MARK).
// That is how a packet to a peer address goes into the TUN while the ESP
// carrying it goes to the same address on the wire (RFC 3554's outer =
// inner case). Unconfigure removes the rules.
//
// A rule is not part of the link, so a previous instance that died
// without cleaning up (SIGKILL, the OOM killer, a power cut of the
// process) leaves it behind while its TUN device, addresses and routes
// vanish with the process's file descriptor. Such a stale identical rule
// is replaced: it is deleted and added again, so this instance owns it
// and removes it on exit. Replacing is safe because Open already
// succeeded: a live instance would still hold the TUN device by that
// name, and Open would have failed with EBUSY.
func (d *Device) AddBypassRule(mark uint32, table, prio int) error {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		r := bypassRule(fam, mark, table, prio)
		stale, err := d.removeStaleRules(r)
		if err != nil {
			return fmt.Errorf("tun %s: remove stale rule not fwmark %#x lookup %d: %w", d.name, mark, table, err)
		}
		if stale > 0 {
			d.log.Warn("replaced a routing rule left by an instance that did not exit cleanly", "rule", fmt.Sprintf("not fwmark %#x lookup %d", mark, table), "family", familyName(fam), "stale", stale)
		}
		if err := d.nl.RuleAdd(r); err != nil {
			return fmt.Errorf("tun %s: add rule not fwmark %#x lookup %d: %w", d.name, mark, table, err)
		}
		d.rules = append(d.rules, r)
	}
	return nil
}

func bypassRule(fam int, mark uint32, table, prio int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = fam
	r.Mark = mark
	m := ^uint32(0)
	r.Mask = &m
	r.Invert = true
	r.Table = table
	r.Priority = prio
	return r
}

// maxStale bounds the stale-rule loop: each crashed start-up can have
// added at most one rule per family, and a restart loop is bounded by
// systemd's start limit, so more than this means something else keeps
// adding them.
const maxStale = 64

// removeStaleRules deletes every rule identical to r (the kernel deletes
// the first match per request) and says how many there were.
func (d *Device) removeStaleRules(r *netlink.Rule) (int, error) {
	for n := 0; n < maxStale; n++ {
		switch err := d.nl.RuleDel(r); {
		case errors.Is(err, syscall.ENOENT):
			return n, nil
		case err != nil:
			return n, err
		}
	}
	return maxStale, fmt.Errorf("more than %d identical rules", maxStale)
}

func familyName(fam int) string {
	if fam == unix.AF_INET6 {
		return "ipv6"
	}
	return "ipv4"
}

func (d *Device) removeRules() error {
	var errs []error
	for _, r := range d.rules {
		if err := d.nl.RuleDel(r); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule: %w", err))
		}
	}
	d.rules = nil
	return errors.Join(errs...)
}

// SetRouteSource gives the installed routes that have a preferred source
// of src's family, except those keep says to keep, the source src
// instead. In RFC 3554 mode the inner source is an uplink address, so when
// the road warrior moves to another uplink, new flows through the TUN must
// start from that uplink's address; the host routes to the peer's
// per-path addresses keep their own sources, so each path's heartbeats
// keep testing that path.
func (d *Device) SetRouteSource(src netip.Addr, keep func(dst netip.Prefix) bool) error {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	var errs []error
	for i := range d.routes {
		r := &d.routes[i]
		if r.Src == nil || (r.Src.To4() != nil) != src.Is4() {
			continue
		}
		if dst, ok := prefixOf(r.Dst); ok && keep != nil && keep(dst) {
			continue
		}
		nr := *r
		nr.Src = src.AsSlice()
		if err := d.nl.RouteReplace(&nr); err != nil {
			errs = append(errs, fmt.Errorf("tun %s: route %v src %v: %w", d.name, r.Dst, src, err))
			continue
		}
		*r = nr
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}
