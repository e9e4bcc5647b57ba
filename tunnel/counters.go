package tunnel

import "sync/atomic"

// DropReason says why a packet was dropped. It is also the error returned
// for that drop: a small integer in an interface does not allocate, so the
// hot path can return it freely.
type DropReason uint8

const (
	DropUnknownSPI DropReason = iota // no inbound SA with this SPI for this address
	DropReplay                       // RFC 4303 §3.4.3
	DropICV                          // integrity check failed
	DropNotInPool                    // outer source outside the SA's peer pool (RFC 3554 §2, seed 000)
	DropPolicy                       // inner packet outside the SA's selectors (RFC 4301 §5.2), or SPD DISCARD
	DropMalformed                    // too short, bad lengths, bad inner header
	DropBadPadding                   // padding not 1, 2, 3, ... (RFC 4303 §2.4)
	DropExpired                      // SA past its hard lifetime or sequence space
	DropDummy                        // next header 59: a dummy packet, dropped silently (RFC 4303 §2.6)
	DropNoSA                         // PROTECT policy without an outbound SA yet
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	"unknown_spi", "replay", "icv", "not_in_pool", "policy", "malformed",
	"bad_padding", "expired", "dummy", "no_sa",
}

func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

func (r DropReason) Error() string { return "esp: drop: " + r.String() }

// Counters are the traffic and drop counts of one SA or of a whole SAD.
// All fields are updated atomically and can be read while traffic flows.
type Counters struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64 // inner bytes
	Drops   [NumDropReasons]atomic.Uint64
}

// CountersSnapshot is a plain copy of Counters.
type CountersSnapshot struct {
	Packets, Bytes uint64
	Drops          [NumDropReasons]uint64
}

// Drop counts one drop and returns the reason as an error.
func (c *Counters) Drop(r DropReason) error {
	c.Drops[r].Add(1)
	return r
}

func (c *Counters) Snapshot() CountersSnapshot {
	s := CountersSnapshot{Packets: c.Packets.Load(), Bytes: c.Bytes.Load()}
	for i := range c.Drops {
		s.Drops[i] = c.Drops[i].Load()
	}
	return s
}

// DropsByName is the snapshot's drops keyed by reason name, zeros left out;
// nil if there are none.
func (s CountersSnapshot) DropsByName() map[string]uint64 {
	var m map[string]uint64 // nil while nothing was dropped: a status of a whole fleet lists tens of thousands of SAs
	for i, v := range s.Drops {
		if v != 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[DropReason(i).String()] = v
		}
	}
	return m
}
