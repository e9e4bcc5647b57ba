package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// HABed is the topology of a gateway pair (issue 12):
//
//	                  LAN (service network): 192.0.2.0/24, 2001:db8:1::/64
//	┌──────────────────────────┐  rsb-pa          ┌────┐
//	│ cl: bridge rsb-lan, .2   ├──────────── rsb-lan ─┤ ga │ .11 ─┐
//	│ (the client side)        ├──────────── rsb-lan ─┤ gb │ .12 ─┤ rsb-sync: 198.51.100.0/24
//	└──────────────────────────┘  rsb-pb          └────┘      (.11 ga, .12 gb)
//
// The service address (HAService4/6) belongs to whichever gateway is
// active; cl reaches it over the bridge, so ARP/ND decide which one gets
// its packets. The sync link is a veth of its own: it can be cut while
// the LAN stays (a split sync link).
type HABed struct {
	ID         string
	CL, GA, GB *NS
}

// Names and addresses of the HA bed.
const (
	IfLAN    = "rsb-lan"
	IfSync   = "rsb-sync"
	ifPortGA = "rsb-pa"
	ifPortGB = "rsb-pb"
)

var (
	HALAN4     = netip.MustParsePrefix("192.0.2.0/24")
	HALAN6     = netip.MustParsePrefix("2001:db8:1::/64")
	HAClient4  = netip.MustParseAddr("192.0.2.2")
	HAClient6  = netip.MustParseAddr("2001:db8:1::2")
	HAGA4      = netip.MustParseAddr("192.0.2.11")
	HAGB4      = netip.MustParseAddr("192.0.2.12")
	HAGA6      = netip.MustParseAddr("2001:db8:1::11")
	HAGB6      = netip.MustParseAddr("2001:db8:1::12")
	HAService4 = netip.MustParsePrefix("192.0.2.100/24")
	HAService6 = netip.MustParsePrefix("2001:db8:1::100/64")
	HASyncNet  = netip.MustParsePrefix("198.51.100.0/24")
	HASyncGA   = netip.MustParseAddr("198.51.100.11")
	HASyncGB   = netip.MustParseAddr("198.51.100.12")
)

// NewHA builds an HA bed for a test, torn down in t.Cleanup; it skips
// like New.
func NewHA(t testing.TB) *HABed {
	t.Helper()
	skipUnlessCapable(t)
	sweepQuiet()
	b := &HABed{ID: newID()}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("HA bed teardown: %v", err)
		}
	})
	if err := b.build(); err != nil {
		t.Fatalf("HA bed: %v", err)
	}
	return b
}

func ipn(ns string, args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %w: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *HABed) build() error {
	var err error
	if b.CL, err = newNS(b.ID + "-cl"); err != nil {
		return err
	}
	if b.GA, err = newNS(b.ID + "-ga"); err != nil {
		return err
	}
	if b.GB, err = newNS(b.ID + "-gb"); err != nil {
		return err
	}
	// No multicast snooping: neighbour solicitations for the service
	// address reach both gateways whoever joined which group.
	if err := ipn(b.CL.Name, "link", "add", IfLAN, "type", "bridge", "mcast_snooping", "0"); err != nil {
		return err
	}
	for i, g := range []struct {
		ns   *NS
		port string
		a4   netip.Addr
		a6   netip.Addr
	}{{b.GA, ifPortGA, HAGA4, HAGA6}, {b.GB, ifPortGB, HAGB4, HAGB6}} {
		if err := ipn(b.CL.Name, "link", "add", g.port, "index", strconv.Itoa(300+i), "type", "veth", "peer", "name", IfLAN,
			"index", strconv.Itoa(310+i), "netns", g.ns.Name); err != nil {
			return err
		}
		if err := ipn(b.CL.Name, "link", "set", g.port, "master", IfLAN, "up"); err != nil {
			return err
		}
		if err := errors.Join(g.ns.addAddr(IfLAN, netip.PrefixFrom(g.a4, 24)), g.ns.addAddr(IfLAN, netip.PrefixFrom(g.a6, 64))); err != nil {
			return err
		}
	}
	if err := errors.Join(b.CL.addAddr(IfLAN, netip.PrefixFrom(HAClient4, 24)), b.CL.addAddr(IfLAN, netip.PrefixFrom(HAClient6, 64))); err != nil {
		return err
	}
	if err := ipn(b.GA.Name, "link", "add", IfSync, "index", "320", "type", "veth", "peer", "name", IfSync, "index", "321", "netns", b.GB.Name); err != nil {
		return err
	}
	if err := errors.Join(b.GA.addAddr(IfSync, netip.PrefixFrom(HASyncGA, 24)), b.GB.addAddr(IfSync, netip.PrefixFrom(HASyncGB, 24))); err != nil {
		return err
	}
	for _, l := range []struct {
		ns   *NS
		name string
	}{{b.CL, IfLAN}, {b.GA, IfLAN}, {b.GB, IfLAN}, {b.GA, IfSync}, {b.GB, IfSync}} {
		if err := l.ns.LinkUp(l.name); err != nil {
			return err
		}
	}
	return nil
}

// Close deletes the namespaces (and with them every link).
func (b *HABed) Close() error {
	var errs []error
	for _, n := range []*NS{b.CL, b.GA, b.GB} {
		if n != nil {
			errs = append(errs, n.close())
		}
	}
	b.CL, b.GA, b.GB = nil, nil, nil
	return errors.Join(errs...)
}
