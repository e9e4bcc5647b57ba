package tunnel

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// AddrSet is an immutable set of addresses: single addresses and
// [network, mask] pools (seed 000, Cano et al.), as RFC 3554 wants for SAs
// and SPD selectors of multihomed peers.
//
// Membership is a binary search over merged, sorted ranges, so it costs
// O(log n) whatever the number of entries, instead of the list walk that
// a naive SA with n addresses would do. IPv4 and IPv6 are kept apart so a
// v4-mapped IPv6 address never matches an IPv4 pool.
//
// The zero AddrSet is empty; use AnyAddr for "every address".
type AddrSet struct {
	entries []netip.Prefix // as given (masked, deduplicated), for display and IKE
	v4      []range4
	v6      []range6
}

type range4 struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

type range6 struct{ lo, hi u128 }

// NewAddrSet builds a set from prefixes; a single address is a /32 or /128.
// Host bits are masked off. Zoned addresses are refused: a zone is a local
// scope, not something an SA can protect.
func NewAddrSet(entries ...netip.Prefix) (AddrSet, error) {
	var s AddrSet
	for _, p := range entries {
		if !p.IsValid() {
			return AddrSet{}, errors.New("invalid prefix")
		}
		if p.Addr().Zone() != "" {
			return AddrSet{}, fmt.Errorf("%s: zoned addresses are not allowed", p)
		}
		p = p.Masked()
		if p.Addr().Is4In6() {
			return AddrSet{}, fmt.Errorf("%s: IPv4-mapped IPv6 addresses are not allowed", p)
		}
		s.entries = append(s.entries, p)
		if p.Addr().Is4() {
			lo := v4num(p.Addr())
			s.v4 = append(s.v4, range4{lo, lo | (^uint32(0) >> p.Bits())})
		} else {
			lo := v6num(p.Addr())
			s.v6 = append(s.v6, range6{lo, lo.or(u128mask(p.Bits()).not())})
		}
	}
	slices.SortFunc(s.entries, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	s.entries = slices.Compact(s.entries)
	s.v4 = merge4(s.v4)
	s.v6 = merge6(s.v6)
	return s, nil
}

// MustAddrSet is NewAddrSet for literals in tests and examples.
func MustAddrSet(entries ...string) AddrSet {
	s, err := ParseAddrSet(strings.Join(entries, ","))
	if err != nil {
		panic(err)
	}
	return s
}

// AnyAddr is the set of every IPv4 and IPv6 address.
var AnyAddr = func() AddrSet {
	s, _ := NewAddrSet(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	return s
}()

// ParseAddrSet parses a comma-separated list of addresses and prefixes,
// e.g. "192.0.2.7, 198.51.100.0/24, 2001:db8::/48". "any" means AnyAddr.
func ParseAddrSet(s string) (AddrSet, error) {
	s = strings.TrimSpace(s)
	if s == "any" {
		return AnyAddr, nil
	}
	if s == "" {
		return AddrSet{}, errors.New("empty address set")
	}
	var ps []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(f)
			if err == nil && a.Zone() != "" {
				err = errors.New("zoned addresses are not allowed")
			}
			if err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return AddrSet{}, fmt.Errorf("address set entry %q: %w", f, err)
		}
		ps = append(ps, p)
	}
	return NewAddrSet(ps...)
}

// Contains reports whether a is in the set. It does not allocate.
func (s *AddrSet) Contains(a netip.Addr) bool {
	if a.Is4() {
		x := v4num(a)
		// First range whose hi >= x; ranges are disjoint and sorted.
		i, _ := slices.BinarySearchFunc(s.v4, x, func(r range4, x uint32) int { return cmp.Compare(r.hi, x) })
		return i < len(s.v4) && s.v4[i].lo <= x
	}
	if !a.Is6() || a.Is4In6() {
		return false
	}
	x := v6num(a)
	i, _ := slices.BinarySearchFunc(s.v6, x, func(r range6, x u128) int { return r.hi.cmp(x) })
	return i < len(s.v6) && !x.less(s.v6[i].lo)
}

// Entries returns the addresses and pools as configured (sorted, masked).
func (s *AddrSet) Entries() []netip.Prefix { return slices.Clone(s.entries) }

// Len is the number of entries as configured.
func (s *AddrSet) Len() int { return len(s.entries) }

// IsEmpty reports whether the set holds no address.
func (s *AddrSet) IsEmpty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// Overlaps reports whether the two sets share an address.
func (s *AddrSet) Overlaps(o *AddrSet) bool {
	for _, r := range s.v4 {
		i, _ := slices.BinarySearchFunc(o.v4, r.lo, func(q range4, x uint32) int { return cmp.Compare(q.hi, x) })
		if i < len(o.v4) && o.v4[i].lo <= r.hi {
			return true
		}
	}
	for _, r := range s.v6 {
		i, _ := slices.BinarySearchFunc(o.v6, r.lo, func(q range6, x u128) int { return q.hi.cmp(x) })
		if i < len(o.v6) && !r.hi.less(o.v6[i].lo) {
			return true
		}
	}
	return false
}

// Covers reports whether every address of o is in s (used to check that a
// negotiated set stays inside what policy allows, RFC 3554 §4).
func (s *AddrSet) Covers(o *AddrSet) bool {
	for _, r := range o.v4 {
		i, _ := slices.BinarySearchFunc(s.v4, r.lo, func(q range4, x uint32) int { return cmp.Compare(q.hi, x) })
		if i >= len(s.v4) || s.v4[i].lo > r.lo || s.v4[i].hi < r.hi {
			return false
		}
	}
	for _, r := range o.v6 {
		i, _ := slices.BinarySearchFunc(s.v6, r.lo, func(q range6, x u128) int { return q.hi.cmp(x) })
		if i >= len(s.v6) || r.lo.less(s.v6[i].lo) || s.v6[i].hi.less(r.hi) {
			return false
		}
	}
	return true
}

func (s AddrSet) String() string {
	if len(s.entries) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, p := range s.entries {
		if i > 0 {
			b.WriteString(",")
		}
		if p.IsSingleIP() {
			b.WriteString(p.Addr().String())
		} else {
			b.WriteString(p.String())
		}
	}
	return b.String()
}

func v4num(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func v6num(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func u128mask(bits int) u128 {
	switch {
	case bits <= 0:
		return u128{}
	case bits < 64:
		return u128{hi: ^uint64(0) << (64 - bits)}
	case bits == 64:
		return u128{hi: ^uint64(0)}
	case bits < 128:
		return u128{hi: ^uint64(0), lo: ^uint64(0) << (128 - bits)}
	default:
		return u128{^uint64(0), ^uint64(0)}
	}
}

func (x u128) not() u128        { return u128{^x.hi, ^x.lo} }
func (x u128) or(y u128) u128   { return u128{x.hi | y.hi, x.lo | y.lo} }
func (x u128) less(y u128) bool { return x.hi < y.hi || (x.hi == y.hi && x.lo < y.lo) }
func (x u128) cmp(y u128) int {
	if x.hi != y.hi {
		return cmp.Compare(x.hi, y.hi)
	}
	return cmp.Compare(x.lo, y.lo)
}
func (x u128) inc() (u128, bool) {
	lo := x.lo + 1
	hi := x.hi
	if lo == 0 {
		hi++
	}
	return u128{hi, lo}, hi == 0 && lo == 0
}

// merge4 sorts ranges and merges overlapping or adjacent ones.
func merge4(rs []range4) []range4 {
	slices.SortFunc(rs, func(a, b range4) int { return cmp.Compare(a.lo, b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].hi == ^uint32(0) || r.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

func merge6(rs []range6) []range6 {
	slices.SortFunc(rs, func(a, b range6) int { return a.lo.cmp(b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			next, wrapped := out[n-1].hi.inc()
			if wrapped || !next.less(r.lo) {
				if out[n-1].hi.less(r.hi) {
					out[n-1].hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}
