package ha

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

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
}

// AddrLifetime is the lifetime (seconds, the kernel's unit) the service
// addresses get; the active renews it every heartbeat. A daemon that dies
// without releasing them (kill -9) leaves them to the kernel for at most
// this long, so a dead process does not keep answering ARP for them, as a
// dead process's TUN device does not outlive it either.
const AddrLifetime = 2

// Host is Net on this host's links.
type Host struct{}

// Add adds the addresses, or renews their lifetime.
func (Host) Add(svcs []Service) error {
	for _, s := range svcs {
		l, err := netlink.LinkByName(s.Link)
		if err != nil {
			return fmt.Errorf("service address %s: link %q: %w", s.Prefix, s.Link, err)
		}
		a := &netlink.Addr{IPNet: prefixNet(s.Prefix), ValidLft: AddrLifetime, PreferedLft: AddrLifetime}
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

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
