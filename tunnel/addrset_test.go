package tunnel

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// Seed 000: an SA holds single addresses and [network, mask] pools; a peer
// may use any address inside them.
func TestSeed000_AddrSetMembership(t *testing.T) {
	s := MustAddrSet("192.0.2.7", "198.51.100.0/24", "203.0.113.128/25", "2001:db8:1::/64", "2001:db8:2::5")
	cases := []struct {
		addr string
		in   bool
	}{
		{"192.0.2.7", true},
		{"192.0.2.6", false},
		{"192.0.2.8", false},
		{"198.51.100.0", true},
		{"198.51.100.255", true},
		{"198.51.101.0", false},
		{"203.0.113.127", false},
		{"203.0.113.128", true},
		{"2001:db8:1::", true},
		{"2001:db8:1:0:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1:1::", false},
		{"2001:db8:2::5", true},
		{"2001:db8:2::6", false},
		{"::ffff:198.51.100.1", false}, // IPv4-mapped is a different address family
		{"0.0.0.0", false},
		{"255.255.255.255", false},
	}
	for _, c := range cases {
		if got := s.Contains(netip.MustParseAddr(c.addr)); got != c.in {
			t.Errorf("Contains(%s) = %v", c.addr, got)
		}
	}
	if s.Contains(netip.Addr{}) {
		t.Error("the invalid address is a member")
	}
}

func TestAddrSetMergesAndKeepsEntries(t *testing.T) {
	s := MustAddrSet("192.0.2.0/25", "192.0.2.128/25", "192.0.2.5", "10.0.0.0/8", "0.0.0.0/0")
	if len(s.v4) != 1 || s.v4[0] != (range4{0, ^uint32(0)}) {
		t.Fatalf("ranges %v", s.v4)
	}
	if s.Len() != 5 {
		t.Fatalf("entries %v", s.Entries())
	}
	a := MustAddrSet("::/0")
	if len(a.v6) != 1 || !a.Contains(netip.MustParseAddr("ffff::1")) || !a.Contains(netip.MustParseAddr("::")) {
		t.Fatal("::/0 wrong")
	}
	if a.Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Fatal("::/0 holds an IPv4 address")
	}
	adj := MustAddrSet("2001:db8::/64", "2001:db8:0:1::/64")
	if len(adj.v6) != 1 {
		t.Fatalf("adjacent v6 prefixes not merged: %v", adj.v6)
	}
}

// RFC 3554 §4 needs "is every claimed address allowed": Covers.
func TestAddrSetCoversAndOverlaps(t *testing.T) {
	allowed := MustAddrSet("192.0.2.0/24", "2001:db8:1::/48")
	cases := []struct {
		claim           string
		covers, overlap bool
	}{
		{"192.0.2.5", true, true},
		{"192.0.2.0/25,2001:db8:1:5::/64", true, true},
		{"192.0.2.0/23", false, true},
		{"192.0.2.5,198.51.100.1", false, true},
		{"198.51.100.0/24", false, false},
		{"2001:db8::/32", false, true},
	}
	for _, c := range cases {
		cl := MustAddrSet(c.claim)
		if allowed.Covers(&cl) != c.covers || allowed.Overlaps(&cl) != c.overlap {
			t.Errorf("%s: covers %v overlaps %v", c.claim, allowed.Covers(&cl), allowed.Overlaps(&cl))
		}
	}
}

func TestParseAddrSet(t *testing.T) {
	good := map[string]string{
		"192.0.2.1":                   "192.0.2.1",
		" 192.0.2.9/24 , 2001:db8::1": "192.0.2.0/24,2001:db8::1",
		"any":                         "0.0.0.0/0,::/0",
	}
	for in, want := range good {
		s, err := ParseAddrSet(in)
		if err != nil || s.String() != want {
			t.Errorf("%q: %v %v", in, s, err)
		}
	}
	for _, bad := range []string{"", "192.0.2", "192.0.2.1/33", "fe80::1%eth0", "::ffff:192.0.2.1", "a,b", ","} {
		if _, err := ParseAddrSet(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Binary search and a list walk agree on random sets and addresses.
func TestAddrSetAgreesWithListWalk(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		ps := randomPrefixes(r, 1+r.IntN(300))
		s, err := NewAddrSet(ps...)
		if err != nil {
			t.Fatal(err)
		}
		for range 2000 {
			a := randomAddr(r, ps)
			if s.Contains(a) != listContains(ps, a) {
				t.Fatalf("disagree on %s", a)
			}
		}
	}
}

func listContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func randomPrefixes(r *rand.Rand, n int) []netip.Prefix {
	ps := make([]netip.Prefix, n)
	for i := range ps {
		if r.IntN(2) == 0 {
			var b [4]byte
			for j := range b {
				b[j] = byte(r.IntN(4)) // a small space, so sets overlap and merge
			}
			b[0] = 192
			ps[i] = netip.PrefixFrom(netip.AddrFrom4(b), 24+r.IntN(9)).Masked()
		} else {
			var b [16]byte
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
			b[15] = byte(r.IntN(8))
			b[7] = byte(r.IntN(3))
			ps[i] = netip.PrefixFrom(netip.AddrFrom16(b), 56+r.IntN(73)).Masked()
		}
	}
	return ps
}

func randomAddr(r *rand.Rand, ps []netip.Prefix) netip.Addr {
	a := ps[r.IntN(len(ps))].Addr()
	if a.Is4() {
		b := a.As4()
		b[3] ^= byte(r.IntN(256))
		b[2] ^= byte(r.IntN(2))
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	b[15] ^= byte(r.IntN(256))
	b[7] ^= byte(r.IntN(2))
	return netip.AddrFrom16(b)
}
