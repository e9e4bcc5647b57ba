package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// FuzzDecapsulate feeds arbitrary bytes to the inbound path: every input
// is either a delivered inner packet that parses and matches the SA, or a
// counted DropReason; never a panic.
func FuzzDecapsulate(f *testing.F) {
	out, _ := saPair(f, AESGCM128, nil)
	for _, n := range []int{0, 1, 20, 100} {
		f.Add(sealPacket(f, out, ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, n)))
	}
	f.Add(sealPacket(f, out, ipv6Packet(rwAddr6, srv6, ProtoTCP, 1, 2, 30)))
	f.Add([]byte{0, 0, 0x10, 0})
	f.Add(make([]byte, 36))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var sad SAD
		_, in := saPair(t, AESGCM128, func(c *SAConfig) { c.PeerAddrs = MustAddrSet("192.0.2.0/24") })
		if err := sad.Add(in); err != nil {
			t.Fatal(err)
		}
		// Also try it as if it were the first packet of an SA whose key
		// the input knows nothing about: the real one.
		inner, sa, err := sad.Decapsulate(rwAddr, gwAddr, bytes.Clone(pkt))
		if err != nil {
			var r DropReason
			if !errors.As(err, &r) || r >= NumDropReasons {
				t.Fatalf("error is not a drop reason: %v", err)
			}
			snap := sad.Counters.Snapshot()
			var total uint64
			for _, v := range snap.Drops {
				total += v
			}
			if total != 1 {
				t.Fatalf("drop not counted exactly once: %+v", snap)
			}
			return
		}
		if sa != in {
			t.Fatal("wrong SA")
		}
		fl, n, perr := ParseFlow(inner)
		if perr != nil || n != len(inner) || !in.Selector.MatchInbound(&fl) {
			t.Fatalf("delivered a packet that does not parse or match: %v", perr)
		}
	})
}

// FuzzOpenAuthentic mutates the plaintext of authentic packets (the sealer
// is ours, the content is the fuzzer's), so the post-ICV checks — padding,
// next header, inner header, selectors — see hostile input too.
func FuzzOpenAuthentic(f *testing.F) {
	f.Add(ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 1), []byte{1, 1, 4}, false)
	f.Add([]byte{0x60}, []byte{0, 41}, true)
	f.Add([]byte{}, []byte{0, 59}, false)
	f.Fuzz(func(t *testing.T, payload, trailer []byte, esn bool) {
		pt := append(bytes.Clone(payload), trailer...)
		if len(pt) > 4000 {
			return
		}
		for len(pt)%4 != 0 {
			pt = append(pt, 0)
		}
		_, in := saPair(t, ChaCha20Poly1305, func(c *SAConfig) { c.ESN = esn })
		inner, err := in.Open(rwAddr, sealRaw(t, in, pt, 1))
		if err != nil {
			var r DropReason
			if !errors.As(err, &r) || in.Counters.Drops[r].Load() != 1 {
				t.Fatalf("uncounted or foreign error %v", err)
			}
			return
		}
		if _, n, perr := ParseFlow(inner); perr != nil || n != len(inner) {
			t.Fatalf("delivered unparseable inner packet: %v", perr)
		}
	})
}

// FuzzParseSelector: the selector parser never panics, and what it
// accepts prints to a form that parses back to the same selector.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"local 192.0.2.0/24,198.51.100.7 remote 203.0.113.0/24 proto sctp lport 5000 rport 1024-65535",
		"remote any proto 1", "local 2001:db8::/32", "proto tcp rport 80-80", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("%q printed as %q which does not parse: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("round trip %q -> %q", sel.String(), again.String())
		}
	})
}

// FuzzParseFlow: the inner header parser never panics and never reports a
// length beyond its input.
func FuzzParseFlow(f *testing.F) {
	f.Add(ipv4Packet(rwAddr, srvAddr, ProtoSCTP, 1, 2, 4))
	f.Add(ipv6Packet(rwAddr6, srv6, 0, 0, 0, 16))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fl, n, err := ParseFlow(pkt)
		if err != nil {
			return
		}
		if n > len(pkt) || n < 20 || !fl.Src.IsValid() || !fl.Dst.IsValid() {
			t.Fatalf("n=%d len=%d flow %+v", n, len(pkt), fl)
		}
	})
}

// FuzzAddrSet: membership by binary search equals a list walk for any
// set of prefixes and any address.
func FuzzAddrSet(f *testing.F) {
	f.Add([]byte{192, 0, 2, 0, 24, 198, 51, 100, 7, 32}, []byte{192, 0, 2, 9})
	f.Fuzz(func(t *testing.T, spec, addr []byte) {
		var ps []netip.Prefix
		for len(spec) >= 5 {
			bits := int(spec[4]) % 33
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte(spec[:4])), bits).Masked())
			spec = spec[5:]
		}
		if len(addr) < 4 || len(ps) == 0 {
			return
		}
		s, err := NewAddrSet(ps...)
		if err != nil {
			t.Fatal(err)
		}
		a := netip.AddrFrom4([4]byte(addr[:4]))
		if s.Contains(a) != listContains(ps, a) {
			t.Fatalf("%v contains %v: binary search %v, list %v", ps, a, s.Contains(a), listContains(ps, a))
		}
	})
}

var _ = binary.BigEndian
