package tunnel

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

var (
	rwAddr  = netip.MustParseAddr("192.0.2.2")
	rwAddr2 = netip.MustParseAddr("198.51.100.2")
	gwAddr  = netip.MustParseAddr("192.0.2.1")
	srvAddr = netip.MustParseAddr("203.0.113.2")
	rwAddr6 = netip.MustParseAddr("2001:db8:1::2")
	srv6    = netip.MustParseAddr("2001:db8:3::2")
)

func testKey(tr Transform, b byte) []byte {
	k := make([]byte, tr.KeyLen())
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// saPair returns an outbound SA and the inbound SA that receives it.
func saPair(t testing.TB, tr Transform, mod func(*SAConfig)) (out, in *SA) {
	t.Helper()
	cfg := SAConfig{
		SPI: 0x1000, Transform: tr, Key: testKey(tr, 1),
		Selector: Selector{Local: AnyAddr, Remote: AnyAddr},
		Outer:    HostToHost(),
	}
	if mod != nil {
		mod(&cfg)
	}
	oc, ic := cfg, cfg
	oc.Dir, ic.Dir = Outbound, Inbound
	// The receiver sees the selector from the other side.
	ic.Selector.Local, ic.Selector.Remote = cfg.Selector.Remote, cfg.Selector.Local
	ic.Selector.LocalPorts, ic.Selector.RemotePorts = cfg.Selector.RemotePorts, cfg.Selector.LocalPorts
	var err error
	if out, err = NewSA(oc); err != nil {
		t.Fatal(err)
	}
	if in, err = NewSA(ic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close(); in.Close() })
	return out, in
}

// ipv4Packet builds an IPv4 packet with a transport header carrying ports
// (or an ICMP echo) and payload bytes.
func ipv4Packet(src, dst netip.Addr, proto uint8, sport, dport uint16, payload int) []byte {
	l4 := 8
	if proto == ProtoTCP {
		l4 = 20
	}
	if proto == ProtoSCTP {
		l4 = 12
	}
	p := make([]byte, 20+l4+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8] = 64
	p[9] = proto
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	if proto == ProtoICMP {
		p[20] = 8
	} else {
		binary.BigEndian.PutUint16(p[20:22], sport)
		binary.BigEndian.PutUint16(p[22:24], dport)
	}
	for i := 20 + l4; i < len(p); i++ {
		p[i] = byte(i)
	}
	return p
}

func ipv6Packet(src, dst netip.Addr, proto uint8, sport, dport uint16, payload int) []byte {
	p := make([]byte, 40+8+payload)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(8+payload))
	p[6] = proto
	p[7] = 64
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	binary.BigEndian.PutUint16(p[40:42], sport)
	binary.BigEndian.PutUint16(p[42:44], dport)
	return p
}

// sealPacket copies inner into a fresh buffer with headroom and seals it.
func sealPacket(t testing.TB, sa *SA, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, HeaderLen+len(inner), HeaderLen+len(inner)+MaxTrailer)
	copy(buf[HeaderLen:], inner)
	esp, err := sa.Seal(buf, len(inner))
	if err != nil {
		t.Fatal(err)
	}
	return esp
}

// sealRaw encrypts an arbitrary plaintext (payload and trailer as given)
// under sa's keys with sequence seq: for packets our sealer would never
// write, such as bad padding.
func sealRaw(t testing.TB, sa *SA, plaintext []byte, seq uint32) []byte {
	t.Helper()
	k := sa.keys.Load()
	pkt := make([]byte, HeaderLen, HeaderLen+len(plaintext)+icvLen)
	binary.BigEndian.PutUint32(pkt[0:4], sa.SPI)
	binary.BigEndian.PutUint32(pkt[4:8], seq)
	binary.BigEndian.PutUint64(pkt[8:16], uint64(seq))
	var s scratch
	copy(s.nonce[:4], k.salt[:])
	copy(s.nonce[4:], pkt[8:16])
	return k.aead.Seal(pkt, s.nonce[:], plaintext, s.buildAAD(sa.SPI, uint64(seq), sa.ESN))
}
