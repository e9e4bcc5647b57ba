package message

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the IKE header's length (RFC 7296 §3.1).
const HeaderLen = 28

var (
	// ErrInvalidSyntax is wrapped by every parse error but the version's:
	// the message is malformed (answer INVALID_SYNTAX where RFC 7296 §2.21.1
	// says to).
	ErrInvalidSyntax = errors.New("invalid syntax")
	// ErrInvalidMajorVersion: the header's major version is not 2 (RFC 7296
	// §2.5: a request with a higher one is answered with
	// INVALID_MAJOR_VERSION).
	ErrInvalidMajorVersion = errors.New("invalid major version")
)

// SyntaxError says where a message breaks which rule. It wraps
// ErrInvalidSyntax.
type SyntaxError struct {
	Payload PayloadType // the payload being decoded; PayloadNone for the header or the chain itself
	Offset  int         // of that payload's generic header (or of the problem) in the parsed buffer
	Rule    string      // the rule broken, "RFC 7296 §3.3.1"
	Msg     string
}

func (e *SyntaxError) Error() string {
	where := "header"
	if e.Payload != PayloadNone {
		where = e.Payload.String() + " payload"
	}
	return fmt.Sprintf("ike message: invalid syntax: %s at offset %d: %s (%s)", where, e.Offset, e.Msg, e.Rule)
}

func (e *SyntaxError) Unwrap() error { return ErrInvalidSyntax }

// syntaxErr builds a *SyntaxError; the chain parser fills Payload and
// Offset.
func syntaxErr(rule, format string, args ...any) *SyntaxError {
	return &SyntaxError{Rule: rule, Msg: fmt.Sprintf(format, args...)}
}

// Header is the IKE header (RFC 7296 §3.1).
type Header struct {
	SPIi, SPIr  uint64
	NextPayload PayloadType
	Version     uint8 // major version in the high nibble: 0x20
	Exchange    ExchangeType
	Flags       uint8 // FlagInitiator, FlagVersion, FlagResponse; reserved bits as received
	MsgID       uint32
	Length      uint32 // of the whole message, header included
}

// ParseHeader decodes the first HeaderLen bytes of b. It checks the major
// version (2; the minor version is ignored, RFC 7296 §2.5) and that Length
// is at least HeaderLen and no more than len(b) (§3.1). On a version error
// the decoded header is returned with it, so that the caller can answer
// INVALID_MAJOR_VERSION to the SPIs (§2.5).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, &SyntaxError{Rule: "RFC 7296 §3.1", Msg: fmt.Sprintf("%d bytes, the header alone is %d", len(b), HeaderLen)}
	}
	h := Header{
		SPIi:        binary.BigEndian.Uint64(b[0:8]),
		SPIr:        binary.BigEndian.Uint64(b[8:16]),
		NextPayload: PayloadType(b[16]),
		Version:     b[17],
		Exchange:    ExchangeType(b[18]),
		Flags:       b[19],
		MsgID:       binary.BigEndian.Uint32(b[20:24]),
		Length:      binary.BigEndian.Uint32(b[24:28]),
	}
	if h.Version>>4 != 2 {
		return h, fmt.Errorf("ike message: %w %d.%d, want 2 (RFC 7296 §2.5)", ErrInvalidMajorVersion, h.Version>>4, h.Version&0xf)
	}
	if h.Length < HeaderLen {
		return h, &SyntaxError{Offset: 24, Rule: "RFC 7296 §3.1", Msg: fmt.Sprintf("Length %d is shorter than the header", h.Length)}
	}
	if uint64(h.Length) > uint64(len(b)) {
		return h, &SyntaxError{Offset: 24, Rule: "RFC 7296 §3.1", Msg: fmt.Sprintf("Length %d exceeds the %d bytes received", h.Length, len(b))}
	}
	return h, nil
}

// AppendTo appends the header's 28 bytes exactly as the fields say; the
// caller sets Length and NextPayload (Message.Encode does).
func (h *Header) AppendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.SPIi)
	b = binary.BigEndian.AppendUint64(b, h.SPIr)
	b = append(b, byte(h.NextPayload), h.Version, byte(h.Exchange), h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.MsgID)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// IsResponse reports the Response flag (RFC 7296 §3.1).
func (h Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

// IsInitiator reports the Initiator flag: the sender is the original
// initiator of the IKE SA (RFC 7296 §3.1).
func (h Header) IsInitiator() bool { return h.Flags&FlagInitiator != 0 }
