package tunnel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
)

const sadShards = 64 // power of two; spreads writer locks, readers rarely meet

// SAD is the inbound Security Association Database: SAs by SPI, safe for
// concurrent lookups while SAs are added and removed. Sharded maps under
// read-write locks keep a lookup at one map probe for 100,000 SAs while a
// rekey adds and removes SAs without stopping traffic.
//
// SPIs are chosen by the receiver (RFC 4301 §4.1), so one SPI names one
// inbound SA here, whichever of our addresses a packet was sent to.
type SAD struct {
	shards [sadShards]struct {
		sync.RWMutex
		m map[uint32]*SA
	}
	// Counters counts drops that belong to no SA (unknown SPI, too short
	// to carry one) and, for convenience, every inbound drop and delivery.
	Counters Counters
}

func (d *SAD) shard(spi uint32) int {
	// SPIs may be sequential; mix before taking the shard.
	return int((spi * 0x9E3779B1) >> 26)
}

// Add inserts an inbound SA. Its SPI must be free.
func (d *SAD) Add(sa *SA) error {
	if sa.Dir != Inbound {
		return fmt.Errorf("sad: %v is not inbound", sa)
	}
	s := &d.shards[d.shard(sa.SPI)]
	s.Lock()
	defer s.Unlock()
	if s.m == nil {
		s.m = make(map[uint32]*SA)
	}
	if _, dup := s.m[sa.SPI]; dup {
		return fmt.Errorf("sad: SPI %#08x already in use", sa.SPI)
	}
	s.m[sa.SPI] = sa
	return nil
}

// Remove deletes the SA with this SPI and closes it (its keys are zeroed).
// It returns the removed SA or nil.
func (d *SAD) Remove(spi uint32) *SA {
	s := &d.shards[d.shard(spi)]
	s.Lock()
	sa := s.m[spi]
	delete(s.m, spi)
	s.Unlock()
	if sa != nil {
		sa.Close()
	}
	return sa
}

// Lookup finds the SA for (destination address, SPI, protocol), the triple
// that identifies an SA (RFC 4301 §4.1). RFC 3554 §2: "a lookup in the SAD
// ... where the Destination Address is any of the negotiated peer
// addresses, MUST return the same SA": the address matches if it is in
// the SA's set. Only ESP is carried, so another protocol finds nothing.
func (d *SAD) Lookup(dst netip.Addr, spi uint32, proto uint8) *SA {
	if proto != ProtoESP {
		return nil
	}
	s := &d.shards[d.shard(spi)]
	s.RLock()
	sa := s.m[spi]
	s.RUnlock()
	if sa == nil || (!sa.LocalAddrs.IsEmpty() && !sa.LocalAddrs.Contains(dst)) {
		return nil
	}
	return sa
}

// Len is the number of SAs.
func (d *SAD) Len() int {
	n := 0
	for i := range d.shards {
		d.shards[i].RLock()
		n += len(d.shards[i].m)
		d.shards[i].RUnlock()
	}
	return n
}

// All returns every SA (for status output), in no particular order.
func (d *SAD) All() []*SA {
	var out []*SA
	for i := range d.shards {
		d.shards[i].RLock()
		for _, sa := range d.shards[i].m {
			out = append(out, sa)
		}
		d.shards[i].RUnlock()
	}
	return out
}

// Decapsulate is the inbound path for one ESP packet that arrived from
// outer source src to our outer address dst: find the SA (RFC 3554 §2
// lookup), then open the packet on it. The returned inner packet is a
// slice of pkt. Drops are counted on the SA and on the SAD.
func (d *SAD) Decapsulate(src, dst netip.Addr, pkt []byte) ([]byte, *SA, error) {
	return d.DecapsulateFrom(netip.AddrPortFrom(src, 0), dst, pkt)
}

// DecapsulateFrom is Decapsulate with the source's UDP port (0 for raw
// ESP), which a NAT chose (RFC 3948): the SA's PeerTracker learns it.
func (d *SAD) DecapsulateFrom(src netip.AddrPort, dst netip.Addr, pkt []byte) ([]byte, *SA, error) {
	if len(pkt) < 8 {
		return nil, nil, d.Counters.Drop(DropMalformed)
	}
	sa := d.Lookup(dst, binary.BigEndian.Uint32(pkt[0:4]), ProtoESP)
	if sa == nil {
		return nil, nil, d.Counters.Drop(DropUnknownSPI)
	}
	inner, err := sa.OpenFrom(src, dst, pkt)
	if err != nil {
		if r, ok := err.(DropReason); ok {
			d.Counters.Drops[r].Add(1)
		}
		return nil, sa, err
	}
	d.Counters.Packets.Add(1)
	d.Counters.Bytes.Add(uint64(len(inner)))
	return inner, sa, nil
}

// Sealed is an encapsulated packet ready for a transport.
type Sealed struct {
	ESP      []byte     // from the SPI to the ICV
	SA       *SA        // the SA it was sealed with
	Src, Dst netip.Addr // outer addresses (RFC 3554 §2 rules, see OuterAddrs)
	// Port is the UDP port to send to when the destination was learned
	// from the peer's authenticated ESP in UDP (a NAT's choice, RFC 3948);
	// 0: the SA's PeerPort.
	Port uint16
}

// Encapsulate is the outbound path for the inner packet at
// buf[HeaderLen:HeaderLen+n]: parse it, find the first SPD entry, and for
// PROTECT seal it on the entry's SA and pick the outer addresses. BYPASS
// returns the policy's action with no error and no ESP; DISCARD and no
// match return DropPolicy. counters, if not nil, counts the drops that
// belong to no SA.
func (d *SPD) Encapsulate(buf []byte, n int, counters *Counters) (Sealed, Action, error) {
	if n < 1 || HeaderLen+n > cap(buf) {
		return Sealed{}, Discard, countDrop(counters, DropMalformed)
	}
	f, length, err := ParseFlow(buf[HeaderLen : HeaderLen+n])
	if err != nil {
		return Sealed{}, Discard, countDrop(counters, DropMalformed)
	}
	p := d.LookupOutbound(&f)
	if p == nil || p.Action == Discard {
		return Sealed{}, Discard, countDrop(counters, DropPolicy)
	}
	if p.Action == Bypass {
		return Sealed{}, Bypass, nil
	}
	sa := p.SA.Load()
	if sa == nil {
		return Sealed{}, Protect, countDrop(counters, DropNoSA)
	}
	src, dst, port, err := sa.outer.Load().addrs(f.Src, f.Dst)
	if err != nil {
		return Sealed{}, Protect, sa.Counters.Drop(DropPolicy)
	}
	esp, err := sa.Seal(buf, length)
	if err != nil {
		return Sealed{}, Protect, err
	}
	return Sealed{ESP: esp, SA: sa, Src: src, Dst: dst, Port: port}, Protect, nil
}

func countDrop(c *Counters, r DropReason) error {
	if c != nil {
		c.Drops[r].Add(1)
	}
	return r
}
