package tunnel

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers that selectors know.
const (
	ProtoAny    uint8 = 0
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoESP    uint8 = 50
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// Flow is what the SPD looks at in an inner packet (RFC 4301 §4.4.1.1).
type Flow struct {
	Src, Dst netip.Addr
	Proto    uint8
	SrcPort  uint16
	DstPort  uint16
	// HasPorts is false for protocols without ports and for non-initial
	// fragments, whose ports are OPAQUE (RFC 4301 §4.4.1.1, §7).
	HasPorts bool
}

// hasPortsProto: SCTP's common header starts with the two ports, exactly
// where TCP and UDP have them (RFC 4960 §3.1).
func hasPortsProto(p uint8) bool { return p == ProtoTCP || p == ProtoUDP || p == ProtoSCTP }

// ParseFlow reads the selector fields of an IPv4 or IPv6 packet and returns
// the packet's length from its own header, which may be shorter than pkt
// (TFC padding after an inner packet is allowed in tunnel mode, RFC 4303
// §2.7). It does not allocate.
func ParseFlow(pkt []byte) (f Flow, length int, err error) {
	if len(pkt) < 1 {
		return f, 0, DropMalformed
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return f, 0, DropMalformed
		}
		ihl := int(pkt[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total < ihl || total > len(pkt) {
			return f, 0, DropMalformed
		}
		f.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		f.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		f.Proto = pkt[9]
		fragOff := binary.BigEndian.Uint16(pkt[6:8]) & 0x1fff
		if fragOff == 0 {
			f.parsePorts(pkt[ihl:total])
		}
		return f, total, nil
	case 6:
		if len(pkt) < 40 {
			return f, 0, DropMalformed
		}
		total := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if total > len(pkt) {
			return f, 0, DropMalformed
		}
		f.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		f.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		nh, off := pkt[6], 40
		// Walk the extension headers that may precede the transport
		// header; a bounded walk, so a crafted chain costs little.
	walk:
		for range 8 {
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > total {
					return f, 0, DropMalformed
				}
				nh, off = pkt[off], off+8*(int(pkt[off+1])+1)
				continue
			case 44: // fragment
				if off+8 > total {
					return f, 0, DropMalformed
				}
				frag := binary.BigEndian.Uint16(pkt[off+2:off+4]) >> 3
				nh, off = pkt[off], off+8
				if frag != 0 {
					f.Proto = nh
					return f, total, nil
				}
				continue
			}
			break walk
		}
		if off > total {
			return f, 0, DropMalformed
		}
		f.Proto = nh
		f.parsePorts(pkt[off:total])
		return f, total, nil
	}
	return f, 0, DropMalformed
}

func (f *Flow) parsePorts(l4 []byte) {
	if hasPortsProto(f.Proto) && len(l4) >= 4 {
		f.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		f.DstPort = binary.BigEndian.Uint16(l4[2:4])
		f.HasPorts = true
	}
}
