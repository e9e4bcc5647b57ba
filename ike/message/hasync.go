package message

import (
	"encoding/binary"
	"fmt"
)

// RFC 6311 (IKEv2/IPsec high availability): after a cluster's standby
// took an IKE SA over, it resynchronises the IKE message IDs (and, where
// the peer supports it, the ESP replay counters) in an INFORMATIONAL
// exchange with message ID 0 carrying these two notifications, both with
// Protocol ID 0 and SPI Size 0 (§4.1, §4.2).

// MIDSync is IKEV2_MESSAGE_ID_SYNC's notification data (§4.1): a random
// nonce the response returns unchanged, the message ID the sender will
// use in its next request, and the one it expects in the other's next.
type MIDSync struct {
	Nonce uint32
	Send  uint32 // EXPECTED_SEND_REQ_MESSAGE_ID
	Recv  uint32 // EXPECTED_RECV_REQ_MESSAGE_ID
}

// MIDSyncLen is the length of IKEV2_MESSAGE_ID_SYNC's data.
const MIDSyncLen = 12

// Encode returns the notification data.
func (m MIDSync) Encode() []byte {
	b := make([]byte, MIDSyncLen)
	binary.BigEndian.PutUint32(b, m.Nonce)
	binary.BigEndian.PutUint32(b[4:], m.Send)
	binary.BigEndian.PutUint32(b[8:], m.Recv)
	return b
}

// ParseMIDSync reads IKEV2_MESSAGE_ID_SYNC's data: exactly 12 octets.
func ParseMIDSync(b []byte) (MIDSync, error) {
	if len(b) != MIDSyncLen {
		return MIDSync{}, fmt.Errorf("%w: IKEV2_MESSAGE_ID_SYNC data of %d octets, want %d", ErrInvalidSyntax, len(b), MIDSyncLen)
	}
	return MIDSync{Nonce: binary.BigEndian.Uint32(b), Send: binary.BigEndian.Uint32(b[4:]), Recv: binary.BigEndian.Uint32(b[8:])}, nil
}

// ReplaySync is IPSEC_REPLAY_COUNTER_SYNC's notification data (§4.2):
// the nonce of the IKEV2_MESSAGE_ID_SYNC it travels with, and the delta
// the receiver adds to the sequence counter of every outbound Child SA of
// the IKE SA (the sender's inbound ones).
type ReplaySync struct {
	Nonce uint32
	Delta uint64
}

// ReplaySyncLen is the length of IPSEC_REPLAY_COUNTER_SYNC's data.
const ReplaySyncLen = 12

// Encode returns the notification data.
func (r ReplaySync) Encode() []byte {
	b := make([]byte, ReplaySyncLen)
	binary.BigEndian.PutUint32(b, r.Nonce)
	binary.BigEndian.PutUint64(b[4:], r.Delta)
	return b
}

// ParseReplaySync reads IPSEC_REPLAY_COUNTER_SYNC's data: exactly 12
// octets. A zero delta asks for nothing and is refused as malformed.
func ParseReplaySync(b []byte) (ReplaySync, error) {
	if len(b) != ReplaySyncLen {
		return ReplaySync{}, fmt.Errorf("%w: IPSEC_REPLAY_COUNTER_SYNC data of %d octets, want %d", ErrInvalidSyntax, len(b), ReplaySyncLen)
	}
	r := ReplaySync{Nonce: binary.BigEndian.Uint32(b), Delta: binary.BigEndian.Uint64(b[4:])}
	if r.Delta == 0 {
		return ReplaySync{}, fmt.Errorf("%w: IPSEC_REPLAY_COUNTER_SYNC with a zero delta", ErrInvalidSyntax)
	}
	return r, nil
}
