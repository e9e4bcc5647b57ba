package daemon

import (
	"net"
	"net/netip"
)

// sourceFor is the outer source address towards dst: local if the
// configuration names one, else the address the kernel's routing picks
// now (a road warrior without transport.listen, e.g. a laptop on DHCP, as
// `roadwarrior init` writes it). The IKE SA and its Child SAs' outer rule
// need a concrete source; asked at each connect, it follows the laptop to
// its current network. Connecting a UDP socket sends nothing.
func sourceFor(local, dst netip.Addr) netip.Addr {
	if local.IsValid() || !dst.IsValid() {
		return local
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 500)))
	if err != nil {
		return local
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}
