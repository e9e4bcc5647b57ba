// Package ha is the hot-standby pair of gateways (issue 12, part B): the
// sync channel between the two, the leadership state machine that decides
// which one holds the service addresses, and the takeover (addresses,
// gratuitous ARP / unsolicited neighbour advertisement, the imported
// security context with its sequence numbers jumped ahead).
//
// The IKE/IPsec context itself is opaque here: records of bytes per IKE
// SPI, produced and consumed through the Context interface (ike's
// ExportSA/ExportAll/ImportSA).
package ha

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// FrameType is the first byte of a frame's plaintext.
type FrameType uint8

const (
	FrameHeartbeat   FrameType = iota + 1 // role, priority, epoch
	FramePut                              // one record: IKE SPI + opaque bytes
	FrameDelete                           // IKE SPI
	FrameCheckpoint                       // ESP SPI -> outbound seq / inbound edge
	FrameResyncBegin                      // a full copy of the store follows
	FrameResyncEnd                        // ... and is complete: replace the store
	FrameHandover                         // planned switchover: the sender has released the addresses
	FrameAck                              // cumulative: every frame up to Seq applied
)

var frameNames = [...]string{FrameHeartbeat: "heartbeat", FramePut: "put", FrameDelete: "delete", FrameCheckpoint: "checkpoint",
	FrameResyncBegin: "resync-begin", FrameResyncEnd: "resync-end", FrameHandover: "handover", FrameAck: "ack"}

func (t FrameType) String() string {
	if int(t) < len(frameNames) && frameNames[t] != "" {
		return frameNames[t]
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// Checkpoint is one SA's sequence state on the active: for an outbound
// SA the last sequence number sent, for an inbound SA the right edge of
// its replay window (RFC 4303 §3.4.3).
type Checkpoint struct {
	SPI      uint32
	Outbound bool
	Seq      uint64
}

// Frame is one message of the sync channel, decoded.
type Frame struct {
	Type FrameType
	Seq  uint64 // the sender's frame counter (acks name it)

	// Heartbeat
	Role     Role
	Priority uint8
	Epoch    uint64
	// Put, Delete
	SPI  uint64
	Data []byte
	// Checkpoint
	Checkpoints []Checkpoint
	// Ack: every frame up to and including Acked has been applied.
	Acked uint64
}

// Limits of the decoder: a record is one IKE SA with its Child SAs
// (a few KiB); a frame is never bigger than MaxFrame.
const (
	MaxFrame       = 1 << 20
	maxCheckpoints = (MaxFrame - 16) / 13
	headerLen      = 1 + 8
)

// Errors of the decoder, typed so the channel counts them by reason.
var (
	ErrShort      = errors.New("ha: frame truncated")
	ErrUnknown    = errors.New("ha: unknown frame type")
	ErrTrailing   = errors.New("ha: bytes after the frame's end")
	ErrBadRole    = errors.New("ha: unknown role in heartbeat")
	ErrTooLarge   = errors.New("ha: frame too large")
	ErrCheckCount = errors.New("ha: checkpoint count does not match the frame's length")
	ErrBadDir     = errors.New("ha: checkpoint direction is neither 0 (inbound) nor 1 (outbound)")
)

// Append encodes f after b.
func (f *Frame) Append(b []byte) []byte {
	b = append(b, byte(f.Type))
	b = binary.BigEndian.AppendUint64(b, f.Seq)
	switch f.Type {
	case FrameHeartbeat:
		b = append(b, byte(f.Role), f.Priority)
		b = binary.BigEndian.AppendUint64(b, f.Epoch)
	case FramePut:
		b = binary.BigEndian.AppendUint64(b, f.SPI)
		b = append(b, f.Data...)
	case FrameDelete:
		b = binary.BigEndian.AppendUint64(b, f.SPI)
	case FrameCheckpoint:
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.Checkpoints)))
		for _, c := range f.Checkpoints {
			b = binary.BigEndian.AppendUint32(b, c.SPI)
			dir := byte(0)
			if c.Outbound {
				dir = 1
			}
			b = append(b, dir)
			b = binary.BigEndian.AppendUint64(b, c.Seq)
		}
	case FrameHandover:
		b = binary.BigEndian.AppendUint64(b, f.Epoch)
	case FrameAck:
		b = binary.BigEndian.AppendUint64(b, f.Acked)
	}
	return b
}

// Decode parses one frame's plaintext. Data aliases b.
func Decode(b []byte) (Frame, error) {
	var f Frame
	if len(b) > MaxFrame {
		return f, ErrTooLarge
	}
	if len(b) < headerLen {
		return f, ErrShort
	}
	f.Type = FrameType(b[0])
	f.Seq = binary.BigEndian.Uint64(b[1:])
	p := b[headerLen:]
	need := func(n int) bool { return len(p) >= n }
	switch f.Type {
	case FrameHeartbeat:
		if !need(10) {
			return f, ErrShort
		}
		f.Role, f.Priority, f.Epoch = Role(p[0]), p[1], binary.BigEndian.Uint64(p[2:])
		if !f.Role.valid() {
			return f, ErrBadRole
		}
		p = p[10:]
	case FramePut:
		if !need(8) {
			return f, ErrShort
		}
		f.SPI, f.Data, p = binary.BigEndian.Uint64(p), p[8:], nil
	case FrameDelete:
		if !need(8) {
			return f, ErrShort
		}
		f.SPI, p = binary.BigEndian.Uint64(p), p[8:]
	case FrameCheckpoint:
		if !need(4) {
			return f, ErrShort
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if n > maxCheckpoints || len(p) != int(n)*13 {
			return f, ErrCheckCount
		}
		f.Checkpoints = make([]Checkpoint, n)
		for i := range f.Checkpoints {
			e := p[i*13:]
			if e[4] > 1 {
				return f, ErrBadDir
			}
			f.Checkpoints[i] = Checkpoint{SPI: binary.BigEndian.Uint32(e), Outbound: e[4] == 1, Seq: binary.BigEndian.Uint64(e[5:])}
		}
		p = nil
	case FrameResyncBegin, FrameResyncEnd:
	case FrameHandover:
		if !need(8) {
			return f, ErrShort
		}
		f.Epoch, p = binary.BigEndian.Uint64(p), p[8:]
	case FrameAck:
		if !need(8) {
			return f, ErrShort
		}
		f.Acked, p = binary.BigEndian.Uint64(p), p[8:]
	default:
		return f, ErrUnknown
	}
	if len(p) != 0 {
		return f, ErrTrailing
	}
	return f, nil
}
