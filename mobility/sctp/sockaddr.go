package sctp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

var errAddrFamily = errors.New("unsupported address family")

// putSockaddr writes ap as a sockaddr_in (IPv4 and IPv4-mapped IPv6) or a
// sockaddr_in6 at the start of b, which must hold a sockaddr_in6 (28 bytes)
// and is otherwise left alone. The kernel keeps IPv4 peers as AF_INET even on
// AF_INET6 sockets, so mapped addresses are written as IPv4 to match them.
// An invalid address writes nothing (a zeroed sockaddr_storage is "any").
func putSockaddr(b []byte, ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return nil
	case a.Is4() || a.Is4In6():
		ne.PutUint16(b[0:], afInet)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a4 := a.Unmap().As4()
		copy(b[4:8], a4[:])
		return nil
	default:
		ne.PutUint16(b[0:], afInet6)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		ne.PutUint32(b[4:], 0) // flowinfo
		a16 := a.As16()
		copy(b[8:24], a16[:])
		scope, err := zoneIndex(a.Zone())
		if err != nil {
			return err
		}
		ne.PutUint32(b[24:], scope)
		return nil
	}
}

func zoneIndex(zone string) (uint32, error) {
	if zone == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}

// parseSockaddr reads a sockaddr_in or sockaddr_in6 from the start of b and
// returns it with the number of bytes it takes. IPv4-mapped IPv6 addresses
// come back as IPv4; the scope id of a link-local IPv6 address becomes a
// numeric zone (the kernel fills it in for global addresses too, where it
// means nothing and would keep the address from matching a path's).
func parseSockaddr(b []byte) (netip.AddrPort, int, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, 0, fmt.Errorf("sockaddr: %d bytes", len(b))
	}
	switch fam := ne.Uint16(b); fam {
	case afInet:
		if len(b) < sizeofSockaddrIn {
			return netip.AddrPort{}, 0, fmt.Errorf("sockaddr_in: %d bytes", len(b))
		}
		a := netip.AddrFrom4([4]byte(b[4:8]))
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[2:])), sizeofSockaddrIn, nil
	case afInet6:
		if len(b) < sizeofSockaddrIn6 {
			return netip.AddrPort{}, 0, fmt.Errorf("sockaddr_in6: %d bytes", len(b))
		}
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if a.Is4In6() {
			a = a.Unmap()
		} else if scope := ne.Uint32(b[24:]); scope != 0 && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
			a = a.WithZone(strconv.FormatUint(uint64(scope), 10))
		}
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[2:])), sizeofSockaddrIn6, nil
	default:
		return netip.AddrPort{}, 0, fmt.Errorf("%w %d", errAddrFamily, fam)
	}
}

// parseAddrList decodes the addrs of struct sctp_getaddrs: n packed
// sockaddrs, each as long as its family's sockaddr.
func parseAddrList(b []byte, n int) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, min(n, 64))
	for i := 0; i < n; i++ {
		ap, l, err := parseSockaddr(b)
		if err != nil {
			return nil, fmt.Errorf("address %d of %d: %w", i+1, n, err)
		}
		out = append(out, ap)
		b = b[l:]
	}
	return out, nil
}
