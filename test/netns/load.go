package netns

import (
	"fmt"
	"net/netip"
)

// LoadNet4 is where a load generator's road warriors live: RFC 6598
// shared address space, a documentation-safe range that can hold 4 million
// of them. AddLoadAddrs puts them on rw's primary link.
var LoadNet4 = netip.MustParsePrefix("100.64.0.0/10")

// AddLoadAddrs makes rw the home of n road warriors: n addresses of
// LoadNet4 (from 100.64.0.1 up, as /32s) on rw's primary link, and a route
// to LoadNet4 via rw's primary address in gw's main table (where a
// gateway's marked ESP and IKE sockets look; its tunnel routes are in
// their own table). It returns the addresses in order.
func (b *Bed) AddLoadAddrs(n int) ([]netip.Addr, error) {
	if n < 1 || n > 1<<22-2 {
		return nil, fmt.Errorf("netns: %d load addresses: want 1 .. %d", n, 1<<22-2)
	}
	out := make([]netip.Addr, 0, n)
	a := LoadNet4.Addr().Next()
	for range n {
		if err := b.RW.addAddr(IfPrimary, netip.PrefixFrom(a, 32)); err != nil {
			return nil, err
		}
		out = append(out, a)
		a = a.Next()
	}
	if err := b.GW.AddRoute(LoadNet4, RWPrimary4); err != nil {
		return nil, fmt.Errorf("%s: route %v via %v: %w", b.GW.Name, LoadNet4, RWPrimary4, err)
	}
	return out, nil
}
