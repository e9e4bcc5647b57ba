package tunnel

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// ESP packet layout for the AEAD transforms (RFC 4303 §2, RFC 4106 §3,
// RFC 7634 §3):
//
//	SPI (4) | Sequence Number (4) | IV (8) | payload ... | padding (0-3) |
//	Pad Length (1) | Next Header (1) | ICV (16)
const (
	HeaderLen  = 4 + 4 + ivLen  // SPI, sequence number, explicit IV
	MaxTrailer = 3 + 2 + icvLen // padding to 4 bytes, pad length, next header, ICV
	Overhead   = HeaderLen + MaxTrailer
	minESP     = HeaderLen + 4 + icvLen // trailer aligned to 4 bytes
)

// Next Header values of a tunnel-mode ESP payload.
const (
	NextHeaderIPv4  = 4
	NextHeaderIPv6  = 41
	NextHeaderDummy = 59 // RFC 4303 §2.6: dummy packet, discard silently
)

// scratch holds the nonce and AAD of one operation. cipher.AEAD is an
// interface, so slices passed to it escape; pooling them keeps the steady
// state free of allocation.
type scratch struct {
	nonce [saltLen + ivLen]byte
	aad   [12]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// aad builds the additional authenticated data: SPI and sequence number,
// with the high 32 bits of an extended sequence number between them
// (RFC 4106 §5, RFC 7634 §2.1).
func (s *scratch) buildAAD(spi uint32, seq uint64, esn bool) []byte {
	binary.BigEndian.PutUint32(s.aad[0:4], spi)
	if esn {
		binary.BigEndian.PutUint32(s.aad[4:8], uint32(seq>>32))
		binary.BigEndian.PutUint32(s.aad[8:12], uint32(seq))
		return s.aad[:12]
	}
	binary.BigEndian.PutUint32(s.aad[4:8], uint32(seq))
	return s.aad[:8]
}

// Seal encrypts, in place, the inner IP packet at buf[HeaderLen:HeaderLen+n]
// and returns the ESP packet buf[:len]. cap(buf) must leave MaxTrailer
// bytes after the packet. The next header is 4 or 41 from the inner
// packet's version.
//
// The explicit IV is the 64-bit sequence number: it never repeats under a
// key because the sequence number never wraps (RFC 4106 §3.1 allows a
// counter; RFC 7634 §3 recommends it). When the sequence space is used up
// Seal refuses to send and fires the hard lifetime event with reason
// "sequence" (RFC 4303 §3.3.3).
func (sa *SA) Seal(buf []byte, n int) ([]byte, error) {
	if n < 1 || HeaderLen+n > cap(buf) {
		return nil, sa.Counters.Drop(DropMalformed)
	}
	buf = buf[:cap(buf)]
	nh := byte(NextHeaderIPv4)
	switch buf[HeaderLen] >> 4 {
	case 4:
	case 6:
		nh = NextHeaderIPv6
	default:
		return nil, sa.Counters.Drop(DropMalformed)
	}
	// A compare-and-swap loop, not Add: with ESN an Add past 2^64-1 would
	// wrap to 0 and a racing sender could reuse an IV.
	var seq uint64
	for {
		cur := sa.seq.Load()
		if cur >= sa.maxSeq {
			sa.fire(true, "sequence")
			return nil, sa.Counters.Drop(DropExpired)
		}
		if sa.seq.CompareAndSwap(cur, cur+1) {
			seq = cur + 1
			break
		}
	}
	if seq >= sa.maxSeq-sa.maxSeq/16 {
		sa.fire(false, "sequence") // ask for a rekey while there is room
	}
	return sa.seal(buf, n, nh, seq, seq)
}

// seal writes one ESP packet with the given next header, sequence number
// and IV. Known-answer tests call it with the IVs of published vectors.
func (sa *SA) seal(buf []byte, n int, nh byte, seq, iv uint64) ([]byte, error) {
	k := sa.keys.Load()
	if k == nil || sa.hardFired.Load() {
		return nil, sa.Counters.Drop(DropExpired)
	}
	if sa.Dir != Outbound {
		return nil, sa.Counters.Drop(DropPolicy)
	}
	// RFC 4303 §2.4: payload, padding, pad length and next header end on
	// a 4-byte boundary; the padding is 1, 2, 3, ...
	padLen := (4 - (n+2)%4) % 4
	ptLen := n + padLen + 2
	total := HeaderLen + ptLen + icvLen
	if total > cap(buf) {
		return nil, sa.Counters.Drop(DropMalformed)
	}
	buf = buf[:total]
	binary.BigEndian.PutUint32(buf[0:4], sa.SPI)
	binary.BigEndian.PutUint32(buf[4:8], uint32(seq))
	binary.BigEndian.PutUint64(buf[8:16], iv)
	tr := buf[HeaderLen+n:]
	for i := range padLen {
		tr[i] = byte(i + 1)
	}
	tr[padLen] = byte(padLen)
	tr[padLen+1] = nh

	s := scratchPool.Get().(*scratch)
	copy(s.nonce[:saltLen], k.salt[:])
	copy(s.nonce[saltLen:], buf[8:16])
	pt := buf[HeaderLen : HeaderLen+ptLen]
	k.aead.Seal(pt[:0], s.nonce[:], pt, s.buildAAD(sa.SPI, seq, sa.ESN))
	scratchPool.Put(s)
	sa.account(n)
	return buf, nil
}

// Open authenticates and decrypts, in place, the ESP packet pkt that
// arrived from outer source src, and returns the inner IP packet (a slice
// of pkt). The checks run in the order of RFC 4303 §3.4: the peer pool and
// the replay pre-check before any crypto, the replay window advanced only
// after the ICV verified, then the padding, the next header, and the inner
// packet against the SA's selectors (RFC 4301 §5.2). Every failure is a
// counted DropReason.
func (sa *SA) Open(src netip.Addr, pkt []byte) ([]byte, error) {
	return sa.OpenFrom(netip.AddrPortFrom(src, 0), netip.Addr{}, pkt)
}

// OpenFrom is Open for a packet from src (with its UDP port, 0 for raw
// ESP) to our outer address local (the zero Addr if unknown). Once the
// packet is authentic, the SA's PeerTracker learns where it came from.
func (sa *SA) OpenFrom(src netip.AddrPort, local netip.Addr, pkt []byte) ([]byte, error) {
	inner, nh, err := sa.open(src.Addr(), pkt)
	if err != nil {
		return nil, err
	}
	switch nh {
	case NextHeaderDummy:
		return nil, sa.Counters.Drop(DropDummy)
	case NextHeaderIPv4, NextHeaderIPv6:
	default:
		return nil, sa.Counters.Drop(DropMalformed) // tunnel mode carries IP only
	}
	f, length, err := ParseFlow(inner)
	if err != nil || (nh == NextHeaderIPv4) != f.Src.Is4() {
		return nil, sa.Counters.Drop(DropMalformed)
	}
	if !sa.Selector.MatchInbound(&f) {
		return nil, sa.Counters.Drop(DropPolicy)
	}
	if sa.peer != nil {
		sa.peer.seen(src, local, sa.peerMonitor) // authenticated: the ICV verified
	}
	sa.account(length)
	return inner[:length], nil
}

// open is RFC 4303 §3.4 up to the payload: pool, replay pre-check, ICV,
// padding, replay window update. It returns the payload and next header.
func (sa *SA) open(src netip.Addr, pkt []byte) ([]byte, byte, error) {
	k := sa.keys.Load()
	if k == nil || sa.hardFired.Load() {
		return nil, 0, sa.Counters.Drop(DropExpired)
	}
	if sa.Dir != Inbound {
		return nil, 0, sa.Counters.Drop(DropPolicy)
	}
	if len(pkt) < minESP || (len(pkt)-HeaderLen-icvLen)%4 != 0 {
		return nil, 0, sa.Counters.Drop(DropMalformed)
	}
	// Seed 000 / RFC 3554 §2: any source inside the peer's pool is the
	// same peer on the same SA; anything else is not this SA's traffic.
	if !sa.PeerAddrs.IsEmpty() && !sa.PeerAddrs.Contains(src) {
		return nil, 0, sa.Counters.Drop(DropNotInPool)
	}
	seq, ok := sa.replay.precheck(binary.BigEndian.Uint32(pkt[4:8]))
	if !ok {
		return nil, 0, sa.Counters.Drop(DropReplay)
	}

	s := scratchPool.Get().(*scratch)
	copy(s.nonce[:saltLen], k.salt[:])
	copy(s.nonce[saltLen:], pkt[8:16])
	ct := pkt[HeaderLen:]
	pt, err := k.aead.Open(ct[:0], s.nonce[:], ct, s.buildAAD(sa.SPI, seq, sa.ESN))
	scratchPool.Put(s)
	if err != nil {
		return nil, 0, sa.Counters.Drop(DropICV)
	}

	padLen := int(pt[len(pt)-2])
	nh := pt[len(pt)-1]
	if padLen+2 > len(pt) {
		return nil, 0, sa.Counters.Drop(DropBadPadding)
	}
	body := len(pt) - 2 - padLen
	for i := range padLen {
		if pt[body+i] != byte(i+1) {
			return nil, 0, sa.Counters.Drop(DropBadPadding)
		}
	}
	// Authentic and well formed: only now may the window move.
	if !sa.replay.commit(seq) {
		return nil, 0, sa.Counters.Drop(DropReplay)
	}
	return pt[:body], nh, nil
}
