package tunnel

import (
	"math/bits"
	"net/netip"
	"slices"
)

// The SPD's index: which policies can match a packet, found by walking
// the packet's destination, then its source, through tries of the
// policies' address prefixes, so a lookup costs O(address length) plus the
// candidates met on the way, whatever the number of policies. The anchors
// are WireGuard's allowed-IPs trie (cost bound by the address length) and
// Linux XFRM's inexact-policy tree (a destination tree whose nodes hold a
// source tree whose nodes hold policies in priority order).
//
// The trie is written here rather than taken from a library because the
// SPD needs three things together: every prefix on an address's path, not
// only the longest match (RFC 4301 §4.4.1 lets a wider, earlier policy
// win); persistent updates (path copying), so readers use an immutable
// snapshot with no lock; and two levels. wireguard-go's allowedips is
// longest-match only, behind its own lock, and not exported.

// tnode is a node of a persistent binary trie with path compression over
// 128-bit keys (an IPv4 address sits in the top 32 bits; one trie per
// family). A node is never modified once reachable from a published root:
// an update copies the nodes on the path to the change (path copying).
type tnode[V any] struct {
	addr  u128 // the prefix, masked to bits
	bits  int
	set   bool // val is a value, not a fork's placeholder
	val   V
	child [2]*tnode[V]
}

func (x u128) xor(y u128) u128 { return u128{x.hi ^ y.hi, x.lo ^ y.lo} }
func (x u128) and(y u128) u128 { return u128{x.hi & y.hi, x.lo & y.lo} }

// bit is bit i counted from the most significant, 0 ≤ i < 128.
func (x u128) bit(i int) int {
	if i < 64 {
		return int(x.hi>>(63-i)) & 1
	}
	return int(x.lo>>(127-i)) & 1
}

// commonBits is the number of leading bits a and b share.
func commonBits(a, b u128) int {
	x := a.xor(b)
	if x.hi != 0 {
		return bits.LeadingZeros64(x.hi)
	}
	return 64 + bits.LeadingZeros64(x.lo)
}

// covers reports whether a lies inside n's prefix.
func (n *tnode[V]) covers(a u128) bool { return commonBits(n.addr, a) >= n.bits }

// next is the child on a's path, or nil below a host prefix.
func (n *tnode[V]) next(a u128) *tnode[V] {
	if n.bits >= 128 {
		return nil
	}
	return n.child[a.bit(n.bits)]
}

// trieUpdate returns the trie rooted at n with the value at prefix
// (a, plen) replaced by what f returns given the old one (set=false: the
// prefix held none; returning set=false removes it). Nodes on the path are
// copied; n itself is left as it was. O(depth) nodes allocated.
func trieUpdate[V any](n *tnode[V], a u128, plen int, f func(old V, set bool) (V, bool)) *tnode[V] {
	var zero V
	if n == nil {
		v, ok := f(zero, false)
		if !ok {
			return nil
		}
		return &tnode[V]{addr: a, bits: plen, set: true, val: v}
	}
	c := min(commonBits(n.addr, a), n.bits, plen)
	switch {
	case c == n.bits && c == plen: // this very prefix
		cp := *n
		if cp.val, cp.set = f(n.val, n.set); !cp.set {
			cp.val = zero
		}
		return cp.prune()
	case c == n.bits: // inside n: go down
		cp := *n
		b := a.bit(n.bits)
		cp.child[b] = trieUpdate(n.child[b], a, plen, f)
		return cp.prune()
	}
	// The prefix is not below n: it covers n (c == plen), or the two part
	// at bit c under a new fork.
	v, ok := f(zero, false)
	if !ok {
		return n
	}
	leaf := &tnode[V]{addr: a, bits: plen, set: true, val: v}
	if c == plen {
		leaf.child[n.addr.bit(plen)] = n
		return leaf
	}
	fork := &tnode[V]{addr: a.and(u128mask(c)), bits: c}
	fork.child[a.bit(c)] = leaf
	fork.child[n.addr.bit(c)] = n
	return fork
}

// prune replaces a fresh copy that holds no value and forks nothing by
// its only child (or nothing).
func (n *tnode[V]) prune() *tnode[V] {
	if n.set || n.child[0] != nil && n.child[1] != nil {
		return n
	}
	if n.child[0] != nil {
		return n.child[0]
	}
	return n.child[1]
}

// addrKey is an address as a trie key and its family (0: IPv4, 1: IPv6).
func addrKey(a netip.Addr) (u128, int, bool) {
	switch {
	case a.Is4():
		return u128{hi: uint64(v4num(a)) << 32}, 0, true
	case a.Is6():
		return v6num(a), 1, true
	}
	return u128{}, 0, false
}

// spdEntry is a policy at its place in the order: a lower key comes first.
// Entries are immutable; renumbering the order makes new ones.
type spdEntry struct {
	p   *Policy
	key uint64
}

// srcIndex is what a destination prefix holds: the policies under it by
// source prefix, per source family, each list in SPD order.
type srcIndex struct {
	fam [2]*tnode[[]*spdEntry]
}

// spdIndex is one immutable snapshot of the SPD, by destination family.
type spdIndex struct {
	dst [2]*tnode[*srcIndex]
}

// lookup returns the first policy of the SPD order that covers f leaving
// through the tunnel. Every policy that can match sits on f.Dst's path in
// the destination trie and then on f.Src's path in that node's source
// trie (its address sets are the union of its prefixes there); each
// candidate is checked against its whole selector, and the lowest key that
// matches wins: exactly the first match of the ordered list. Lists are in
// key order, so a list is left at its first match or at the first key past
// the best so far. It does not allocate.
func (x *spdIndex) lookup(f *Flow) *Policy {
	d, df, ok := addrKey(f.Dst)
	s, sf, ok2 := addrKey(f.Src)
	if !ok || !ok2 {
		return nil // no selector contains an invalid address
	}
	var best *spdEntry
	for n := x.dst[df]; n != nil && n.covers(d); n = n.next(d) {
		if !n.set {
			continue
		}
		for m := n.val.fam[sf]; m != nil && m.covers(s); m = m.next(s) {
			for _, e := range m.val {
				if best != nil && e.key >= best.key {
					break
				}
				if e.p.Selector.MatchOutbound(f) {
					best = e
					break
				}
			}
		}
	}
	if best == nil {
		return nil
	}
	return best.p
}

// maxIndexPairs bounds the (destination, source) prefix pairs one policy
// is filed under. A policy with larger address sets is filed under its
// destination prefixes with any source: still a superset of what it
// matches, and the full selector check keeps the result exact.
const maxIndexPairs = 64

type prefixPair struct{ dst, src netip.Prefix }

// indexPairs is where e's policy is filed: every destination prefix of its
// Remote set with every source prefix of its Local set (outbound: source
// local, destination remote). A set with no address gives no pair: such a
// policy matches nothing.
func indexPairs(sel *Selector) []prefixPair {
	dsts, srcs := outermost(sel.Remote.Entries()), outermost(sel.Local.Entries())
	if len(dsts)*len(srcs) > maxIndexPairs {
		var wild []netip.Prefix
		if slices.ContainsFunc(srcs, func(p netip.Prefix) bool { return p.Addr().Is4() }) {
			wild = append(wild, netip.PrefixFrom(netip.IPv4Unspecified(), 0))
		}
		if slices.ContainsFunc(srcs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			wild = append(wild, netip.PrefixFrom(netip.IPv6Unspecified(), 0))
		}
		srcs = wild
	}
	out := make([]prefixPair, 0, len(dsts)*len(srcs))
	for _, d := range dsts {
		for _, s := range srcs {
			out = append(out, prefixPair{d, s})
		}
	}
	return out
}

// outermost drops the prefixes that another one of the list contains, so
// one lookup meets a policy at most once per level. ps is sorted by
// address then length (AddrSet.Entries), so a prefix follows the one
// containing it: prefixes nest or are disjoint.
func outermost(ps []netip.Prefix) []netip.Prefix {
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// with returns the index with e added (add) or removed: O(pairs × depth)
// nodes copied, plus the lists at e's own prefixes.
func (x spdIndex) with(e *spdEntry, add bool) spdIndex {
	for _, pr := range indexPairs(&e.p.Selector) {
		d, df, _ := addrKey(pr.dst.Addr())
		s, sf, _ := addrKey(pr.src.Addr())
		x.dst[df] = trieUpdate(x.dst[df], d, pr.dst.Bits(), func(old *srcIndex, set bool) (*srcIndex, bool) {
			var ns srcIndex
			if set {
				ns = *old
			}
			ns.fam[sf] = trieUpdate(ns.fam[sf], s, pr.src.Bits(), func(list []*spdEntry, _ bool) ([]*spdEntry, bool) {
				list = withEntry(list, e, add)
				return list, len(list) > 0
			})
			if ns.fam[0] == nil && ns.fam[1] == nil {
				return nil, false
			}
			return &ns, true
		})
	}
	return x
}

// withEntry returns a new list, in key order, with e added or removed;
// list itself may be in a published snapshot and is not touched.
func withEntry(list []*spdEntry, e *spdEntry, add bool) []*spdEntry {
	i, found := slices.BinarySearchFunc(list, e.key, func(x *spdEntry, k uint64) int {
		switch {
		case x.key < k:
			return -1
		case x.key > k:
			return 1
		}
		return 0
	})
	switch {
	case add && !found:
		return slices.Insert(slices.Clone(list), i, e)
	case !add && found && list[i] == e:
		return slices.Delete(slices.Clone(list), i, i+1)
	}
	return list
}
