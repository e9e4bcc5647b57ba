package ha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Service is one service address and the interface that carries it.
type Service struct {
	Prefix netip.Prefix
	Link   string
}

// Net is what a takeover does to the host: the Linux implementation is
// Host; tests of the node may use a fake.
type Net interface {
	// Add puts the addresses on their links; Remove takes them off.
	Add([]Service) error
	Remove([]Service) error
	// Announce sends a gratuitous ARP (RFC 5227 §3 announcement) for each
	// IPv4 address and an unsolicited neighbour advertisement with the
	// override flag (RFC 4861 §7.2.6) for each IPv6 address.
	Announce([]Service) error
	// Probe asks for the addresses on their links (ARP probe, RFC 5227
	// §2.1.1; neighbour solicitation) and reports whether anyone answered
	// within wait.
	Probe(ctx context.Context, svcs []Service, wait time.Duration) (bool, error)
}

// Host is Net on this host's links.
type Host struct{}

func (Host) Add(svcs []Service) error {
	for _, s := range svcs {
		l, err := netlink.LinkByName(s.Link)
		if err != nil {
			return fmt.Errorf("service address %s: link %q: %w", s.Prefix, s.Link, err)
		}
		a := &netlink.Addr{IPNet: prefixNet(s.Prefix)}
		if s.Prefix.Addr().Is6() {
			// No duplicate address detection: the address must work now,
			// and the probe has already asked whether anyone holds it.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(l, a); err != nil {
			return fmt.Errorf("service address %s on %s: %w", s.Prefix, s.Link, err)
		}
	}
	return nil
}

func (Host) Remove(svcs []Service) error {
	var errs []error
	for _, s := range svcs {
		l, err := netlink.LinkByName(s.Link)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := netlink.AddrDel(l, &netlink.Addr{IPNet: prefixNet(s.Prefix)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", s.Prefix, s.Link, err))
		}
	}
	return errors.Join(errs...)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

const etherTypeARP = 0x0806

func (Host) Announce(svcs []Service) error {
	var errs []error
	for _, s := range svcs {
		ifi, err := net.InterfaceByName(s.Link)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a := s.Prefix.Addr()
		if a.Is4() {
			// RFC 5227 §3: an ARP request with sender and target both the
			// address, broadcast: every neighbour updates its cache.
			errs = append(errs, sendARP(ifi, arp.OperationRequest, a, a))
			continue
		}
		errs = append(errs, sendNA(ifi, a))
	}
	return errors.Join(errs...)
}

func sendARP(ifi *net.Interface, op arp.Operation, sender, target netip.Addr) error {
	c, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return fmt.Errorf("ARP on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	return writeARP(c, ifi, op, sender, target)
}

func writeARP(c *packet.Conn, ifi *net.Interface, op arp.Operation, sender, target netip.Addr) error {
	p, err := arp.NewPacket(op, ifi.HardwareAddr, sender, ethernet.Broadcast, target)
	if err != nil {
		return err
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := &ethernet.Frame{Destination: ethernet.Broadcast, Source: ifi.HardwareAddr, EtherType: etherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast})
	return err
}

var allNodes = netip.MustParseAddr("ff02::1")

func sendNA(ifi *net.Interface, a netip.Addr) error {
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("NDP on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: a,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr}}}
	return c.WriteTo(na, nil, allNodes)
}

// Probe sends one ARP probe (sender 0.0.0.0, RFC 5227 §2.1.1) or
// neighbour solicitation per address and waits up to wait for an answer
// naming the address. Only the first address of each family is asked
// for: the active holds them all or none.
func (Host) Probe(ctx context.Context, svcs []Service, wait time.Duration) (bool, error) {
	var v4, v6 *Service
	for i := range svcs {
		if svcs[i].Prefix.Addr().Is4() && v4 == nil {
			v4 = &svcs[i]
		} else if svcs[i].Prefix.Addr().Is6() && v6 == nil {
			v6 = &svcs[i]
		}
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	type res struct {
		seen bool
		err  error
	}
	out := make(chan res, 2)
	n := 0
	if v4 != nil {
		n++
		go func() { s, err := probeARP(*v4, deadline); out <- res{s, err} }()
	}
	if v6 != nil {
		n++
		go func() { s, err := probeND(*v6, deadline); out <- res{s, err} }()
	}
	seen, errs := false, []error(nil)
	for range n { // both joined before returning
		r := <-out
		seen = seen || r.seen
		errs = append(errs, r.err)
	}
	return seen, errors.Join(errs...)
}

func probeARP(s Service, deadline time.Time) (bool, error) {
	ifi, err := net.InterfaceByName(s.Link)
	if err != nil {
		return false, err
	}
	c, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return false, fmt.Errorf("ARP probe on %s: %w", s.Link, err)
	}
	defer c.Close()
	a := s.Prefix.Addr()
	if err := writeARP(c, ifi, arp.OperationRequest, netip.IPv4Unspecified(), a); err != nil {
		return false, err
	}
	c.SetReadDeadline(deadline)
	buf := make([]byte, 1514)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if isTimeout(err) {
				return false, nil
			}
			return false, err
		}
		var f ethernet.Frame
		if f.UnmarshalBinary(buf[:n]) != nil {
			continue
		}
		var p arp.Packet
		if p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		// A reply from the holder, or someone else's probe or
		// announcement for it (RFC 5227 §2.1.1: a conflict either way).
		if p.SenderIP == a && p.SenderHardwareAddr.String() != ifi.HardwareAddr.String() {
			return true, nil
		}
	}
}

func probeND(s Service, deadline time.Time) (bool, error) {
	ifi, err := net.InterfaceByName(s.Link)
	if err != nil {
		return false, err
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return false, fmt.Errorf("ND probe on %s: %w", s.Link, err)
	}
	defer c.Close()
	a := s.Prefix.Addr()
	snm, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return false, err
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: a,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
	if err := c.WriteTo(ns, nil, snm); err != nil {
		return false, err
	}
	c.SetReadDeadline(deadline)
	for {
		m, _, _, err := c.ReadFrom()
		if err != nil {
			if isTimeout(err) {
				return false, nil
			}
			return false, err
		}
		if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == a {
			return true, nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
