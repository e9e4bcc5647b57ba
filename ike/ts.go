package ike

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// This file holds the traffic-selector rules: RFC 7296 §2.9 narrowing and
// RFC 3554 §3/§4 address sets with authorization. A set of addresses and
// pools travels as a list of TS ranges; the installed SA holds them as one
// tunnel.AddrSet, so one pair of SAs covers every address.

// addrRange is an inclusive range of one family.
type addrRange struct{ lo, hi netip.Addr }

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	lo := p.Addr()
	b := lo.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	hi, _ := netip.AddrFromSlice(b)
	return addrRange{lo, hi}
}

func tsRange(t message.TrafficSelector) addrRange { return addrRange{t.Start.Unmap(), t.End.Unmap()} }

// toTS turns prefixes into selectors, all with the same protocol and ports.
func toTS(ps []netip.Prefix, proto uint8, ports tunnel.PortRange) []message.TrafficSelector {
	var out []message.TrafficSelector
	for _, p := range ps {
		r := prefixRange(p)
		out = append(out, message.TrafficSelector{Proto: proto, StartPort: ports.Lo, EndPort: ports.Hi, Start: r.lo, End: r.hi})
	}
	return out
}

// allOf is the full range of a family, as RFC 7296 §2.9 and §3.15.4 want
// the initiator's TSi when it asks for a virtual address.
func allOf(v4 bool) netip.Prefix {
	if v4 {
		return netip.MustParsePrefix("0.0.0.0/0")
	}
	return netip.MustParsePrefix("::/0")
}

// rangePrefixes splits an inclusive range into the fewest prefixes.
func rangePrefixes(r addrRange) []netip.Prefix {
	var out []netip.Prefix
	lo := r.lo
	bitsLen := lo.BitLen()
	for {
		// The largest prefix starting at lo that stays within hi.
		bits := bitsLen
		for bits > 0 {
			p, _ := lo.Prefix(bits - 1)
			if p.Addr() != lo || prefixRange(p).hi.Compare(r.hi) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(lo, bits)
		out = append(out, p)
		end := prefixRange(p).hi
		if end.Compare(r.hi) >= 0 || !end.Next().IsValid() {
			return out
		}
		lo = end.Next()
	}
}

// selectorOf turns negotiated TSi/TSr into the SA's selector from our
// view. All entries must share protocol and ports, which narrowing
// guarantees for what we accept and offer.
func selectorOf(local, remote []message.TrafficSelector) (tunnel.Selector, error) {
	var sel tunnel.Selector
	if len(local) == 0 || len(remote) == 0 {
		return sel, errors.New("no traffic selectors")
	}
	set := func(ts []message.TrafficSelector) (tunnel.AddrSet, error) {
		var ps []netip.Prefix
		for _, t := range ts {
			ps = append(ps, rangePrefixes(tsRange(t))...)
		}
		return tunnel.NewAddrSet(ps...)
	}
	var err error
	if sel.Local, err = set(local); err != nil {
		return sel, err
	}
	if sel.Remote, err = set(remote); err != nil {
		return sel, err
	}
	sel.Proto = local[0].Proto
	if sel.Proto == 0 {
		sel.Proto = remote[0].Proto
	}
	sel.LocalPorts = tunnel.PortRange{Lo: local[0].StartPort, Hi: local[0].EndPort}
	sel.RemotePorts = tunnel.PortRange{Lo: remote[0].StartPort, Hi: remote[0].EndPort}
	return sel, nil
}

// uniform keeps the selectors that share the first one's protocol and
// ports: a tunnel.Selector has one of each, and dropping the others is a
// narrowing (§2.9).
func uniform(ts []message.TrafficSelector) []message.TrafficSelector {
	if len(ts) == 0 {
		return nil
	}
	f := ts[0]
	var out []message.TrafficSelector
	for _, t := range ts {
		if t.Proto == f.Proto && t.StartPort == f.StartPort && t.EndPort == f.EndPort {
			out = append(out, t)
		}
	}
	return out
}

// narrow is RFC 7296 §2.9: the responder answers with the part of the
// offered selectors inside its policy (the intersection of each offered
// range with each allowed prefix). Protocol and ports are kept as offered.
func narrow(offered []message.TrafficSelector, allowed []netip.Prefix) []message.TrafficSelector {
	var out []message.TrafficSelector
	for _, t := range uniform(offered) {
		r := tsRange(t)
		for _, p := range allowed {
			a := prefixRange(p)
			if a.lo.Is4() != r.lo.Is4() {
				continue
			}
			lo, hi := r.lo, r.hi
			if a.lo.Compare(lo) > 0 {
				lo = a.lo
			}
			if a.hi.Compare(hi) < 0 {
				hi = a.hi
			}
			if lo.Compare(hi) > 0 {
				continue
			}
			n := t
			n.Start, n.End = lo, hi
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// unauthorized is RFC 3554 §4: "the responder MUST verify that the
// initiator is authorized to use every address in its ID list"; here every
// address of every TSi range must lie inside the ranges the initiator has
// authority for (its certificate's addresses or its configured pools). It
// returns the first range that is not covered, or nil.
func unauthorized(claimed []message.TrafficSelector, authority []netip.Prefix) *message.TrafficSelector {
	rs := make([]addrRange, 0, len(authority))
	for _, p := range authority {
		rs = append(rs, prefixRange(p))
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.lo.Compare(b.lo) })
	// Merge overlapping and adjacent ranges so a claim spanning two
	// neighbouring pools is covered.
	var merged []addrRange
	for _, r := range rs {
		if n := len(merged); n > 0 && merged[n-1].lo.Is4() == r.lo.Is4() {
			last := &merged[n-1]
			if next := last.hi.Next(); r.lo.Compare(last.hi) <= 0 || (next.IsValid() && r.lo == next) {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	for i := range claimed {
		c := tsRange(claimed[i])
		ok := false
		for _, m := range merged {
			if m.lo.Is4() == c.lo.Is4() && m.lo.Compare(c.lo) <= 0 && c.hi.Compare(m.hi) <= 0 {
				ok = true
				break
			}
		}
		if !ok {
			return &claimed[i]
		}
	}
	return nil
}

func tsString(ts []message.TrafficSelector) string {
	var parts []string
	for _, t := range ts {
		for _, p := range rangePrefixes(tsRange(t)) {
			parts = append(parts, p.String())
		}
		if t.Proto != 0 {
			parts[len(parts)-1] += fmt.Sprintf("[%d/%d-%d]", t.Proto, t.StartPort, t.EndPort)
		}
	}
	return strings.Join(parts, ",")
}

// sameHosts reports whether every selector is a single address in addrs:
// a host-to-host Child SA (RFC 3554 §2 case 1, outer = inner).
func sameHosts(ts []message.TrafficSelector, addrs []netip.Addr) bool {
	if len(ts) == 0 {
		return false
	}
	for _, t := range ts {
		if t.Start != t.End || !slices.Contains(addrs, t.Start.Unmap()) {
			return false
		}
	}
	return true
}
