package transport

import (
	"net"
	"net/netip"
	"testing"
)

// packetSenderIn opens the raw ESP sender of namespace A with the packet
// socket enabled there.
func packetSenderIn(t *testing.T, bed *testbed) *ESPConn {
	t.Helper()
	c := listenESPIn(t, bed.nsA, netip.IPv4Unspecified())
	inNS(t, bed.nsA, c.EnablePacketSend)
	return c
}

func ifindexIn(t *testing.T, ns, dev string) int32 {
	t.Helper()
	var idx int32
	inNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			idx = int32(ifi.Index)
		}
		return err
	})
	return idx
}

func espTo(spi uint32, n int, local, remote netip.Addr) Datagram {
	return Datagram{Buf: espPacket(spi, spi, n), Local: local, Remote: netip.AddrPortFrom(remote, 0)}
}

// checkESPArrived reads len(want) packets at rx and checks each arrived whole
// between the addresses it was sent with (the kernel's choice of source
// being the link's first address).
func checkESPArrived(t *testing.T, rx *ESPConn, want []Datagram) {
	t.Helper()
	got := readN(t, rx, len(want))
	bySPI := map[string]Datagram{}
	for _, g := range got {
		bySPI[string(g.Buf[:4])] = g
	}
	for _, w := range want {
		g, ok := bySPI[string(w.Buf[:4])]
		src := w.Local
		if !src.IsValid() {
			src = addrA4[0]
		}
		if !ok || string(g.Buf) != string(w.Buf) || g.Remote.Addr() != src || g.Local != w.Remote.Addr() {
			t.Errorf("SPI %x: arrived %v (%v→%v, %d bytes), want %v→%v, %d bytes", w.Buf[:4], ok, g.Remote.Addr(), g.Local, len(g.Buf), src, w.Remote.Addr(), len(w.Buf))
		}
	}
}

// RFC 4303 over a packet socket: with static (PERMANENT) neighbours every
// packet goes out through the AF_PACKET socket, with the source chosen per
// packet (RFC 3554) or by the route, and arrives as the raw socket's would.
func TestPacketSendCarriesESPWhenTheNeighbourIsKnown(t *testing.T) {
	bed := newTestbed(t)
	tx := packetSenderIn(t, bed)
	rx := listenESPIn(t, bed.nsB, netip.IPv4Unspecified())
	out := []Datagram{
		espTo(0x3001, 1400, addrA4[0], addrB4[0]),
		espTo(0x3002, 100, addrA4[1], addrB4[0]),
		espTo(0x3003, 1480, addrA4[1], addrB4[1]), // 1500 with the IP header: the MTU
		espTo(0x3004, 64, netip.Addr{}, addrB4[0]),
	}
	mustWrite(t, tx, out)
	checkESPArrived(t, rx, out)
	if s := tx.Stats(); s.PacketSent != uint64(len(out)) || s.Sent != uint64(len(out)) {
		t.Errorf("Stats: %d sent, %d of them through the packet socket; want %d and %d", s.Sent, s.PacketSent, len(out), len(out))
	}
}

// A next hop without a neighbour entry is the kernel's to resolve (ARP,
// RFC 826): such packets go through the raw socket, which triggers it.
func TestPacketSendUsesRawSocketWhileTheNeighbourIsUnknown(t *testing.T) {
	bed := newTestbed(t)
	run(t, "ip", "-n", bed.nsA, "neigh", "del", addrB4[1].String(), "dev", "rsa")
	tx := packetSenderIn(t, bed)
	rx := listenESPIn(t, bed.nsB, netip.IPv4Unspecified())
	out := []Datagram{espTo(0x3101, 1400, addrA4[1], addrB4[1]), espTo(0x3102, 1400, addrA4[0], addrB4[0])}
	mustWrite(t, tx, out)
	checkESPArrived(t, rx, out)
	if s := tx.Stats(); s.PacketSent != 1 || s.Sent != 2 {
		t.Errorf("Stats: %d sent, %d through the packet socket; want 2 and 1 (the known neighbour's)", s.Sent, s.PacketSent)
	}
}

// A packet socket does not fragment: a packet over the link MTU goes
// through the raw socket, which fragments it (DF clear, RFC 4301 §8.1).
func TestPacketSendLeavesPacketsOverTheMTUToTheRawSocket(t *testing.T) {
	bed := newTestbed(t)
	tx := packetSenderIn(t, bed)
	rx := listenESPIn(t, bed.nsB, netip.IPv4Unspecified())
	out := []Datagram{espTo(0x3201, 1481, addrA4[0], addrB4[0]), espTo(0x3202, 1480, addrA4[0], addrB4[0])}
	mustWrite(t, tx, out)
	checkESPArrived(t, rx, out)
	if s := tx.Stats(); s.PacketSent != 1 {
		t.Errorf("PacketSent %d, want 1: only the packet that fits the 1500-byte MTU", s.PacketSent)
	}
}

// The kernel never sees packet-socket traffic, so it would not re-verify a
// STALE neighbour (RFC 1122 §2.3.2.1): one packet goes through the raw
// socket per lookup of a STALE next hop, the others through the packet
// socket.
func TestPacketSendSendsOnePacketThroughRawForAStaleNeighbour(t *testing.T) {
	bed := newTestbed(t)
	tx := packetSenderIn(t, bed)
	rx := listenESPIn(t, bed.nsB, netip.IPv4Unspecified())
	idx := ifindexIn(t, bed.nsA, "rsa")
	tx.ps.resolve = func(k hopKey, _ uint32) nextHop {
		h := nextHop{ok: true, stale: true, ifindex: idx, src: k.local, mtu: 1500}
		copy(h.mac[:], macB)
		return h
	}
	var out []Datagram
	for i := range 4 {
		out = append(out, espTo(0x3301+uint32(i), 1000, addrA4[0], addrB4[0]))
	}
	mustWrite(t, tx, out)
	checkESPArrived(t, rx, out)
	if s := tx.Stats(); s.PacketSent != 3 || s.Sent != 4 {
		t.Errorf("Stats: %d sent, %d through the packet socket; want 4 and 3", s.Sent, s.PacketSent)
	}
}

// A next hop that fails on the packet socket (an interface gone) is
// forgotten and the packet goes through the raw socket: no error reaches
// the caller for what the kernel's routing can still deliver.
func TestPacketSendFallsBackToRawWhenThePacketSocketFails(t *testing.T) {
	bed := newTestbed(t)
	tx := packetSenderIn(t, bed)
	rx := listenESPIn(t, bed.nsB, netip.IPv4Unspecified())
	calls := 0
	tx.ps.resolve = func(k hopKey, _ uint32) nextHop {
		calls++
		if calls > 1 {
			return nextHop{} // re-resolved after the failure: unknown now
		}
		return nextHop{ok: true, ifindex: 0x7fff, src: k.local, mtu: 1500} // no such interface
	}
	out := []Datagram{espTo(0x3401, 500, addrA4[0], addrB4[0]), espTo(0x3402, 500, addrA4[0], addrB4[0])}
	mustWrite(t, tx, out)
	checkESPArrived(t, rx, out)
	if s := tx.Stats(); s.PacketSent != 0 || s.Sent != 2 {
		t.Errorf("Stats: %d sent, %d through the packet socket; want 2 and 0", s.Sent, s.PacketSent)
	}
}

// IPv6 stays on the raw socket: EnablePacketSend refuses, the conn works.
func TestPacketSendIsIPv4Only(t *testing.T) {
	bed := newTestbed(t)
	c := listenESPIn(t, bed.nsA, netip.IPv6Unspecified())
	var err error
	inNS(t, bed.nsA, func() error { err = c.EnablePacketSend(); return nil })
	if err == nil || c.ps != nil {
		t.Fatalf("EnablePacketSend on IPv6: %v, packet sender %v; want an error and none", err, c.ps)
	}
}

// RFC 791 §3.1: the header checksum is the 16-bit one's complement of the
// one's complement sum of the header's 16-bit words, so summing a header
// that carries it gives 0xffff. Length and ID are big-endian, DF is clear
// (RFC 4301 §8.1, as the raw socket's IP_PMTUDISC_DONT), protocol 50.
func TestIPv4HeaderFollowsRFC791(t *testing.T) {
	for _, c := range []struct {
		name     string
		src, dst netip.Addr
		n        int
		id       uint16
	}{
		{"typical", addrA4[0], addrB4[0], 1400, 1},
		{"sum carries twice", netip.MustParseAddr("255.255.255.254"), netip.MustParseAddr("255.255.255.255"), 65515, 0xffff},
		{"zero ID, short", addrA4[1], addrB4[1], 8, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := make([]byte, ipv4HeaderLen)
			ipv4Header(h, c.src, c.dst, c.n, c.id)
			var sum uint32
			for i := 0; i < len(h); i += 2 {
				sum += uint32(h[i])<<8 | uint32(h[i+1])
			}
			for sum > 0xffff {
				sum = sum&0xffff + sum>>16
			}
			if sum != 0xffff {
				t.Errorf("checksum does not verify: sum %#x", sum)
			}
			if h[0] != 0x45 || int(h[2])<<8|int(h[3]) != ipv4HeaderLen+c.n || uint16(h[4])<<8|uint16(h[5]) != c.id ||
				h[6]&0x40 != 0 || h[9] != 50 || netip.AddrFrom4([4]byte(h[12:16])) != c.src || netip.AddrFrom4([4]byte(h[16:20])) != c.dst {
				t.Errorf("header % x", h)
			}
		})
	}
}
