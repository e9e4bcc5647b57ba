package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// A path switch changes the outer addresses only: the SPI, the sequence
// numbers and the receiver's replay window carry on (the product's core
// promise: no renegotiation, no gap).
func TestPathSwitchKeepsSPIAndSequence(t *testing.T) {
	var spd SPD
	gw2 := netip.MustParseAddr("198.51.100.1")
	out, in := saPair(t, AESGCM128, func(c *SAConfig) {
		c.Outer = RoadWarriorToGateway(gwAddr)
		c.Selector = Selector{Local: MustAddrSet("192.0.2.2", "198.51.100.2"), Remote: MustAddrSet("203.0.113.0/24")}
		c.PeerAddrs = MustAddrSet("192.0.2.2", "198.51.100.2")
	})
	p := &Policy{Action: Protect, Selector: out.Selector}
	p.SA.Store(out)
	spd.Append(p)
	buf := make([]byte, 2048)
	send := func(src netip.Addr) Sealed {
		inner := ipv4Packet(src, srvAddr, ProtoUDP, 1, 2, 50)
		copy(buf[HeaderLen:], inner)
		s, _, err := spd.Encapsulate(buf, len(inner), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.ESP = bytes.Clone(s.ESP) // buf is reused by the next send
		return s
	}
	before := send(rwAddr)
	if _, err := in.Open(before.Src, bytes.Clone(before.ESP)); err != nil {
		t.Fatal(err)
	}
	// The primary path died: the mobility layer moves the SA to the
	// gateway's address on the secondary network.
	out.SetOuter(RoadWarriorToGateway(gw2))
	after := send(rwAddr2)
	if after.Dst != gw2 || after.Src != rwAddr2 {
		t.Fatalf("after the switch: %v -> %v", after.Src, after.Dst)
	}
	spiB, spiA := binary.BigEndian.Uint32(before.ESP), binary.BigEndian.Uint32(after.ESP)
	seqB, seqA := binary.BigEndian.Uint32(before.ESP[4:]), binary.BigEndian.Uint32(after.ESP[4:])
	if spiA != spiB || seqA != seqB+1 {
		t.Fatalf("SPI %#x -> %#x, sequence %d -> %d", spiB, spiA, seqB, seqA)
	}
	if _, err := in.Open(after.Src, bytes.Clone(after.ESP)); err != nil {
		t.Fatalf("receiver after the switch: %v", err)
	}
}

// The gateway follows a peer to a new address only on ESP that passed the
// ICV from an address in the SA's pool: a forged packet from a new address
// (bad ICV) or from outside the pool moves nothing.
func TestFollowPeerOnlyOnAuthenticatedESP(t *testing.T) {
	tracker := new(PeerTracker)
	rwOut, gwIn := saPair(t, AESGCM128, func(c *SAConfig) {
		c.PeerAddrs = MustAddrSet("192.0.2.0/24", "198.51.100.0/24")
		c.Peer = tracker
	})
	gwOut, err := NewSA(SAConfig{SPI: 0x2000, Dir: Outbound, Transform: AESGCM128, Key: testKey(AESGCM128, 5),
		Selector: Selector{Local: AnyAddr, Remote: AnyAddr},
		Outer:    OuterRule{Src: []netip.Addr{gwAddr}, Dst: []netip.Addr{rwAddr}, FollowPeer: tracker}})
	if err != nil {
		t.Fatal(err)
	}
	defer gwOut.Close()
	dst := func() netip.Addr {
		_, d, err := OuterAddrs(gwOut.Outer(), srvAddr, netip.MustParseAddr("100.64.0.2"))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if dst() != rwAddr {
		t.Fatal("configured destination not used before any packet")
	}
	inner := ipv4Packet(netip.MustParseAddr("100.64.0.2"), srvAddr, ProtoUDP, 1, 2, 10)
	forged := sealPacket(t, rwOut, inner)
	forged[len(forged)-1] ^= 1
	if _, err := gwIn.Open(rwAddr2, forged); !errors.Is(err, DropICV) {
		t.Fatal(err)
	}
	if dst() != rwAddr {
		t.Fatal("followed a packet that failed the ICV")
	}
	if _, err := gwIn.Open(netip.MustParseAddr("203.0.113.9"), sealPacket(t, rwOut, inner)); !errors.Is(err, DropNotInPool) {
		t.Fatal(err)
	}
	if dst() != rwAddr {
		t.Fatal("followed a packet from outside the pool")
	}
	if _, err := gwIn.Open(rwAddr2, sealPacket(t, rwOut, inner)); err != nil {
		t.Fatal(err)
	}
	if dst() != rwAddr2 {
		t.Fatalf("did not follow the authenticated peer to %v: %v", rwAddr2, dst())
	}
}
