package tun

import (
	"encoding/binary"
	"net/netip"
)

// Minimal IP packet building and parsing for the tests. The kernel is the
// judge: it accepts what these build only if headers and checksums are right.

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// sum adds b to the one's-complement accumulator s.
func sum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func pseudo(src, dst netip.Addr, proto uint8, length int) uint32 {
	s := sum(0, src.AsSlice())
	s = sum(s, dst.AsSlice())
	return s + uint32(proto) + uint32(length)
}

// ipPacket wraps an L4 payload whose checksum field is already filled.
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	if src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[6] = 0x40 // DF
		h[8] = 64
		h[9] = proto
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], fold(sum(0, h)))
		return append(h, l4...)
	}
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, l4...)
}

func udpPacket(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	u = append(u, payload...)
	c := fold(sum(pseudo(src.Addr(), dst.Addr(), protoUDP, len(u)), u))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return ipPacket(src.Addr(), dst.Addr(), protoUDP, u)
}

func echoRequest(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	m := make([]byte, 8, 8+len(data))
	proto := uint8(protoICMP)
	m[0] = 8
	if src.Is6() {
		proto, m[0] = protoICMPv6, 128
	}
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	m = append(m, data...)
	var s uint32
	if src.Is6() {
		s = pseudo(src, dst, proto, len(m))
	}
	binary.BigEndian.PutUint16(m[2:], fold(sum(s, m)))
	return ipPacket(src, dst, proto, m)
}

// ip is a parsed packet; l4 aliases the input.
type ip struct {
	src, dst netip.Addr
	proto    uint8
	l4       []byte
}

// parse parses an IPv4 (with options) or IPv6 (without extension headers)
// packet, checking the lengths and the IPv4 header checksum.
func parse(p []byte) (ip, bool) {
	if len(p) < 20 {
		return ip{}, false
	}
	switch p[0] >> 4 {
	case 4:
		hl := int(p[0]&0xf) * 4
		tl := int(binary.BigEndian.Uint16(p[2:]))
		if hl < 20 || tl != len(p) || tl < hl || fold(sum(0, p[:hl])) != 0 {
			return ip{}, false
		}
		return ip{netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), p[9], p[hl:]}, true
	case 6:
		if len(p) < 40 || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			return ip{}, false
		}
		return ip{netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), p[6], p[40:]}, true
	}
	return ip{}, false
}

// l4ChecksumOK verifies the TCP, UDP or ICMP checksum.
func (p ip) l4ChecksumOK() bool {
	var s uint32
	if p.proto != protoICMP {
		s = pseudo(p.src, p.dst, p.proto, len(p.l4))
	}
	return fold(sum(s, p.l4)) == 0
}

func (p ip) ports() (src, dst uint16) {
	if len(p.l4) < 4 {
		return 0, 0
	}
	return binary.BigEndian.Uint16(p.l4), binary.BigEndian.Uint16(p.l4[2:])
}

// readdress rewrites the addresses of a TCP or UDP packet in place and fixes
// the checksums, as a NAT would.
func readdress(pkt []byte, src, dst netip.Addr) {
	var l4 []byte
	if pkt[0]>>4 == 4 {
		hl := int(pkt[0]&0xf) * 4
		copy(pkt[12:], src.AsSlice())
		copy(pkt[16:], dst.AsSlice())
		pkt[10], pkt[11] = 0, 0
		binary.BigEndian.PutUint16(pkt[10:], fold(sum(0, pkt[:hl])))
		l4 = pkt[hl:]
	} else {
		copy(pkt[8:], src.AsSlice())
		copy(pkt[24:], dst.AsSlice())
		l4 = pkt[40:]
	}
	proto := uint8(protoTCP)
	at := 16
	if pkt[0]>>4 == 4 && pkt[9] == protoUDP || pkt[0]>>4 == 6 && pkt[6] == protoUDP {
		proto, at = protoUDP, 6
	}
	l4[at], l4[at+1] = 0, 0
	binary.BigEndian.PutUint16(l4[at:], fold(sum(pseudo(src, dst, proto, len(l4)), l4)))
}
