// Package transport carries ESP packets between the ESP core and the wire,
// either directly over IP as protocol 50 (RFC 4303) or encapsulated in UDP,
// normally on port 4500, for NAT traversal (RFC 3948).
//
// The ESP core hands over ESP packets (SPI through ICV) with the outer
// addresses chosen for each packet and gets the same back on receive. The
// outer source is chosen per packet, not per socket, because RFC 3554's
// road-warrior rule makes the outer source equal the inner source, so a
// road warrior with two uplinks sends from either. It is set with an
// IP_PKTINFO / IPV6_PKTINFO control message on send; the outer destination
// of a received packet is read back the same way.
//
// Both implementations move packets in batches with recvmmsg/sendmmsg and do
// not allocate per packet in steady state. On UDP, runs of datagrams in a
// batch with the same addresses and size go out as one UDP_SEGMENT (GSO)
// send where the kernel offers it. UDP_GRO is not enabled on receive: it
// would coalesce datagrams into one buffer, and splitting them into the
// caller's buffers would need a copy per packet. Raw IPv4 ESP can instead
// leave through an AF_PACKET socket, its IPv4 header written in a separate
// iovec (ESPConn.EnablePacketSend): the kernel has no GSO or GRO for raw
// protocol 50, and skipping the IP output path halves the send cost.
//
// Fragmentation: sockets are set to IP_PMTUDISC_DONT / IPV6_PMTUDISC_DONT.
// The outer IPv4 header carries no DF bit, and packets larger than the known
// path MTU are fragmented by the kernel rather than failing the batch with
// EMSGSIZE. This is RFC 4301 §8.1's "clear DF" option. A tunnel that silently
// drops large packets when ICMP is filtered on the path (a PMTU black hole) is
// worse than one that fragments. Avoiding fragmentation is the ESP core's job:
// it sizes the inner MTU (or clamps MSS) to fit the outer path.
package transport

import "net/netip"

// Headroom is the number of bytes the ESP core must leave free before the ESP
// header in a send buffer. The kernel builds the outer IP and UDP headers,
// and the non-ESP marker of an IKE message goes in a separate iovec, so
// nothing is ever written before Datagram.Buf.
const Headroom = 0

// NATTPort is the IKE/ESP-in-UDP port of RFC 3948 (RFC 7296 §2.23).
// ListenUDP takes the port from its argument. Port 0 asks the kernel to
// choose one, so a gateway passes NATTPort explicitly.
const NATTPort = 4500

// Datagram is one packet on the wire.
type Datagram struct {
	// Buf holds the packet: ESP from the SPI on, or for an IKE datagram the
	// IKE message without the non-ESP marker. On receive it is the space
	// offered to the kernel on entry, and on return it is resliced to the
	// payload within that same buffer.
	Buf []byte
	// Local is our outer address: the source on send (the zero Addr or an
	// unspecified one lets the kernel choose), the destination on receive.
	Local netip.Addr
	// Remote is the peer's outer address. Its port is 0 for raw ESP.
	Remote netip.AddrPort
	// IKE marks a UDP payload that carries an IKE message behind the
	// 4-byte non-ESP marker (RFC 3948 §2.2). On receive the marker has been
	// stripped. On send over UDP the marker is prepended.
	IKE bool
	// Segs is set on receive, on the first of several ESP packets that
	// arrived as one coalesced datagram (UDP GRO, UDPConn.EnableGRO): how
	// many there are. They follow it in msgs and their Bufs are slices
	// of one receive buffer, each but the last capped at its own end.
	// 0 otherwise.
	Segs int
}

// Conn sends and receives ESP packets in batches. It is implemented by
// *ESPConn (raw IP) and *UDPConn (ESP in UDP). Methods are safe for
// concurrent use: reads are serialised with reads and writes with writes.
type Conn interface {
	// ReadBatch blocks until at least one packet is available and fills
	// msgs[:n]. Each msgs[i].Buf must hold the whole receive buffer on
	// entry. Packets that are dropped (keep-alives, malformed) can leave
	// the buffers permuted among msgs, but every buffer passed in stays
	// in msgs, so callers that pool buffers lose none. A UDPConn with
	// EnableGRO differs: see there.
	ReadBatch(msgs []Datagram) (n int, err error)
	// WriteBatch sends msgs in order. On error, n is the number sent and
	// msgs[n] is the one that failed. Messages after it were not sent.
	WriteBatch(msgs []Datagram) (n int, err error)
	// BatchSize is the largest batch handled by one system call. Longer
	// slices are read into only up to BatchSize, and written in chunks.
	BatchSize() int
	Close() error
	Stats() Stats
}

// Stats are cumulative counters of a Conn.
type Stats struct {
	Received   uint64 // ESP packets delivered to the caller
	Sent       uint64 // datagrams handed to the kernel (ESP, IKE, keep-alives)
	Keepalives uint64 // NAT keep-alives received and dropped (RFC 3948 §2.3)
	Malformed  uint64 // datagrams received and dropped: too short, truncated, SPI 0, bad IPv4 header
	IKE        uint64 // IKE messages delivered (UDP only)
	// GROOverflow counts packets of coalesced datagrams dropped because
	// msgs had no room left for them: only a local sender of more than
	// GROSegments segments per send can cause it (UDP with EnableGRO).
	GROOverflow uint64
	// Coalesced counts reads that held several packets (UDP GRO); their
	// packets are counted in Received.
	Coalesced uint64
	// PacketSent counts the ESP packets of Sent that went out through the
	// AF_PACKET socket (raw ESP, ESPConn.EnablePacketSend).
	PacketSent uint64
}
