package netns

import (
	"errors"
	"net/netip"
	"strconv"
	"testing"
)

// The server network behind an HA pair (AddServer):
//
//	ga .11 ─ rsb-srv ─┐
//	                  ├─ srv: bridge rsb-srv, .2   203.0.113.0/24
//	gb .12 ─ rsb-srv ─┘
//
// The server's default route is the pair's service address on this net
// (HAServerService4, held by the active like HAService4), so the
// server's answers follow the active through GARP like the clients'.
var (
	HAServerNet4     = netip.MustParsePrefix("203.0.113.0/24")
	HAServerService4 = netip.MustParsePrefix("203.0.113.1/24")
	HASrv4           = netip.MustParseAddr("203.0.113.2")
	haSrvGA4         = netip.MustParseAddr("203.0.113.11")
	haSrvGB4         = netip.MustParseAddr("203.0.113.12")
)

// AddServer adds a server namespace behind both gateways (forwarding on
// in them), deleted in t.Cleanup, and returns it.
func (b *HABed) AddServer(t testing.TB) *NS {
	t.Helper()
	srv, err := newNS(b.ID + "-hs")
	if err != nil {
		t.Fatalf("HA bed server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.close(); err != nil {
			t.Errorf("HA bed server teardown: %v", err)
		}
	})
	if err := b.buildServer(srv); err != nil {
		t.Fatalf("HA bed server: %v", err)
	}
	return srv
}

func (b *HABed) buildServer(srv *NS) error {
	if err := ipn(srv.Name, "link", "add", IfServer, "type", "bridge", "mcast_snooping", "0"); err != nil {
		return err
	}
	for i, g := range []struct {
		ns *NS
		a4 netip.Addr
	}{{b.GA, haSrvGA4}, {b.GB, haSrvGB4}} {
		port := "rsb-s" + strconv.Itoa(i)
		if err := ipn(srv.Name, "link", "add", port, "index", strconv.Itoa(330+i), "type", "veth", "peer", "name", IfServer,
			"index", strconv.Itoa(340+i), "netns", g.ns.Name); err != nil {
			return err
		}
		if err := ipn(srv.Name, "link", "set", port, "master", IfServer, "up"); err != nil {
			return err
		}
		if err := errors.Join(g.ns.addAddr(IfServer, netip.PrefixFrom(g.a4, 24)), g.ns.LinkUp(IfServer),
			g.ns.sysctl(map[string]string{"net/ipv4/ip_forward": "1"})); err != nil {
			return err
		}
	}
	if err := errors.Join(srv.addAddr(IfServer, netip.PrefixFrom(HASrv4, 24)), srv.LinkUp(IfServer)); err != nil {
		return err
	}
	return srv.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), HAServerService4.Addr())
}
