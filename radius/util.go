package radius

import (
	"net"
	"net/netip"
)

var (
	broadcast  = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	nasChooses = netip.AddrFrom4([4]byte{255, 255, 255, 254})
)

func netipFrom(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
