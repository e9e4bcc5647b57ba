package message

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// EncodePayloads encodes a payload chain: each payload's generic header
// with the next payload's type (0 after the last; for SK and SKF the Next
// field of the *Encrypted), the critical bit set only for an *Unknown that
// says so (RFC 7296 §3.2: zero for the payloads it defines), and the
// lengths. It returns the first payload's type, for the IKE header or the
// SK payload. Nil entries are skipped. The AADLen of an *Encrypted is set
// to its Body's offset in b.
//
// Fields the wire cannot carry (an SPI over 255 bytes, a payload over
// 65535, a selector whose addresses are of two families) come out as bytes
// the parser rejects or misreads; MarshalPayloads reports them instead.
func EncodePayloads(ps []Payload) (first PayloadType, b []byte) {
	var e encoder
	first = e.payloads(ps)
	return first, e.b
}

// MarshalPayloads is EncodePayloads that also reports fields the wire
// cannot carry, and checks that the result parses back (ParsePayloads), so
// that nothing it returns breaks a rule this package enforces.
func MarshalPayloads(ps []Payload) (PayloadType, []byte, error) {
	var e encoder
	first := e.payloads(ps)
	if e.err != nil {
		return first, nil, e.err
	}
	if _, err := ParsePayloads(first, e.b); err != nil {
		return first, nil, fmt.Errorf("ike message: encoded payloads do not parse back: %w", err)
	}
	return first, e.b, nil
}

// Encode encodes a plaintext message (SK and SKF payloads included as
// their opaque bodies). It sets Header.NextPayload and Header.Length from
// the payloads, Header.Version to 0x20 when zero, and the AADLen of an
// *Encrypted to its Body's offset in the result: a sender encodes with a
// Body of the final size, computes the ICV over result[:AADLen] and the
// body, and writes the body into result[AADLen:].
func (m *Message) Encode() []byte {
	var e encoder
	m.encode(&e)
	return e.b
}

// MarshalBinary is Encode that also reports fields the wire cannot carry,
// and checks that the result parses back (Parse).
func (m *Message) MarshalBinary() ([]byte, error) {
	var e encoder
	m.encode(&e)
	if e.err != nil {
		return nil, e.err
	}
	if _, err := Parse(e.b); err != nil {
		return nil, fmt.Errorf("ike message: encoded message does not parse back: %w", err)
	}
	return e.b, nil
}

func (m *Message) encode(e *encoder) {
	if m.Header.Version == 0 {
		m.Header.Version = 0x20
	}
	e.b = make([]byte, HeaderLen, 512)
	m.Header.NextPayload = e.payloads(m.Payloads)
	if uint64(len(e.b)) > 0xffffffff {
		e.fail("message of %d bytes", len(e.b))
	}
	m.Header.Length = uint32(len(e.b))
	m.Header.AppendTo(e.b[:0])
}

// encoder appends to b and remembers the first field that did not fit.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("ike message: cannot encode: "+format, args...)
	}
}

// u8 appends n as one byte, noting when it does not fit.
func (e *encoder) u8(what string, n int) {
	if n < 0 || n > 0xff {
		e.fail("%s %d does not fit in a byte", what, n)
	}
	e.b = append(e.b, byte(n))
}

// len16 writes the length of e.b[start:] at e.b[at:].
func (e *encoder) len16(what string, at, start int) {
	n := len(e.b) - start
	if n > 0xffff {
		e.fail("%s of %d bytes exceeds 65535", what, n)
	}
	binary.BigEndian.PutUint16(e.b[at:], uint16(n))
}

func isNil(p Payload) bool {
	switch p := p.(type) {
	case nil:
		return true
	case *SA:
		return p == nil
	case *KE:
		return p == nil
	case *ID:
		return p == nil
	case *Cert:
		return p == nil
	case *CertReq:
		return p == nil
	case *Auth:
		return p == nil
	case *Nonce:
		return p == nil
	case *Notify:
		return p == nil
	case *Delete:
		return p == nil
	case *VendorID:
		return p == nil
	case *TS:
		return p == nil
	case *CP:
		return p == nil
	case *EAP:
		return p == nil
	case *Unknown:
		return p == nil
	case *Encrypted:
		return p == nil
	}
	return false
}

func (e *encoder) payloads(ps []Payload) PayloadType {
	for _, p := range ps {
		if isNil(p) {
			ps = compact(ps)
			break
		}
	}
	if len(ps) == 0 {
		return PayloadNone
	}
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type()
		}
		var flags byte
		switch p := p.(type) {
		case *Encrypted:
			if i+1 < len(ps) {
				e.fail("%v must be the last payload", p.Type())
			}
			next = p.Next
		case *Unknown:
			if p.Critical {
				flags = 0x80
			}
		}
		start := len(e.b)
		e.b = append(e.b, byte(next), flags, 0, 0)
		e.body(p)
		if n := len(e.b) - start; n > 0xffff {
			e.fail("%v payload of %d bytes exceeds 65535", p.Type(), n)
		}
		binary.BigEndian.PutUint16(e.b[start+2:], uint16(len(e.b)-start))
	}
	return ps[0].Type()
}

// compact drops nil entries into a new slice (the caller's stays as is).
func compact(ps []Payload) []Payload {
	out := make([]Payload, 0, len(ps))
	for _, p := range ps {
		if !isNil(p) {
			out = append(out, p)
		}
	}
	return out
}

func (e *encoder) body(p Payload) {
	switch p := p.(type) {
	case *SA:
		e.sa(p)
	case *KE:
		e.b = binary.BigEndian.AppendUint16(e.b, p.Group)
		e.b = append(e.b, 0, 0)
		e.b = append(e.b, p.Data...)
	case *ID:
		e.b = append(e.b, byte(p.IDType), 0, 0, 0)
		e.b = append(e.b, p.Data...)
	case *Cert:
		e.b = append(e.b, p.Encoding)
		e.b = append(e.b, p.Data...)
	case *CertReq:
		e.b = append(e.b, p.Encoding)
		e.b = append(e.b, p.Data...)
	case *Auth:
		e.b = append(e.b, p.Method, 0, 0, 0)
		e.b = append(e.b, p.Data...)
	case *Nonce:
		e.b = append(e.b, p.Data...)
	case *Notify:
		e.b = append(e.b, byte(p.Protocol))
		e.u8("Notify SPI Size", len(p.SPI))
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(p.NotifyType))
		e.b = append(e.b, p.SPI...)
		e.b = append(e.b, p.Data...)
	case *Delete:
		e.b = append(e.b, byte(p.Protocol), p.SPISize)
		if len(p.SPIs) > 0xffff {
			e.fail("Delete with %d SPIs", len(p.SPIs))
		}
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(len(p.SPIs)))
		for _, s := range p.SPIs {
			if len(s) != int(p.SPISize) {
				e.fail("Delete SPI of %d bytes with SPI Size %d", len(s), p.SPISize)
			}
			e.b = append(e.b, s...)
		}
	case *VendorID:
		e.b = append(e.b, p.Data...)
	case *TS:
		e.u8("Number of TSs", len(p.Selectors))
		e.b = append(e.b, 0, 0, 0)
		for _, s := range p.Selectors {
			e.selector(s)
		}
	case *CP:
		e.b = append(e.b, p.CfgType, 0, 0, 0)
		for _, a := range p.Attrs {
			if a.Type > 0x7fff {
				e.fail("configuration attribute type %d exceeds 15 bits", a.Type)
			}
			e.b = binary.BigEndian.AppendUint16(e.b, a.Type&0x7fff)
			start := len(e.b)
			e.b = append(e.b, 0, 0)
			e.b = append(e.b, a.Value...)
			e.len16("configuration attribute value", start, start+2)
		}
	case *EAP:
		e.b = append(e.b, p.Data...)
	case *Encrypted:
		if p.Fragment {
			e.b = binary.BigEndian.AppendUint16(e.b, p.FragNum)
			e.b = binary.BigEndian.AppendUint16(e.b, p.TotalFrags)
		}
		p.AADLen = len(e.b)
		e.b = append(e.b, p.Body...)
	case *Unknown:
		e.b = append(e.b, p.Data...)
	default:
		e.fail("payload type %T is not of this package", p)
	}
}

// sa encodes proposals and transforms (RFC 7296 §3.3.1, §3.3.2, §3.3.5).
func (e *encoder) sa(sa *SA) {
	for i, p := range sa.Proposals {
		last := byte(2)
		if i == len(sa.Proposals)-1 {
			last = 0
		}
		start := len(e.b)
		e.b = append(e.b, last, 0, 0, 0, p.Num, byte(p.Protocol))
		e.u8("proposal SPI Size", len(p.SPI))
		e.u8("Num Transforms", len(p.Transforms))
		e.b = append(e.b, p.SPI...)
		for j, t := range p.Transforms {
			tl := byte(3)
			if j == len(p.Transforms)-1 {
				tl = 0
			}
			ts := len(e.b)
			e.b = append(e.b, tl, 0, 0, 0, byte(t.Type), 0)
			e.b = binary.BigEndian.AppendUint16(e.b, t.ID)
			if t.KeyLen != 0 {
				e.b = append(e.b, 0x80, AttrKeyLength) // AF=1: TV format
				e.b = binary.BigEndian.AppendUint16(e.b, t.KeyLen)
			}
			e.b = append(e.b, t.UnknownAttrs...)
			e.len16("transform", ts+2, ts)
		}
		e.len16("proposal", start+2, start)
	}
}

// selector encodes one traffic selector, its type from the addresses'
// family (RFC 7296 §3.13.1).
func (e *encoder) selector(s TrafficSelector) {
	var typ byte
	var alen int
	switch {
	case s.Start.Is4() && s.End.Is4():
		typ, alen = TS_IPV4_ADDR_RANGE, 4
	case s.Start.Is6() && s.End.Is6():
		typ, alen = TS_IPV6_ADDR_RANGE, 16
	default:
		// No type fits: write a type 0 the parser rejects.
		e.fail("traffic selector from %v to %v: not one address family", s.Start, s.End)
		e.b = append(e.b, 0, s.Proto, 0, 8)
		e.b = binary.BigEndian.AppendUint16(e.b, s.StartPort)
		e.b = binary.BigEndian.AppendUint16(e.b, s.EndPort)
		return
	}
	e.b = append(e.b, typ, s.Proto)
	e.b = binary.BigEndian.AppendUint16(e.b, uint16(8+2*alen))
	e.b = binary.BigEndian.AppendUint16(e.b, s.StartPort)
	e.b = binary.BigEndian.AppendUint16(e.b, s.EndPort)
	if alen == 4 {
		a, b := s.Start.As4(), s.End.As4()
		e.b = append(append(e.b, a[:]...), b[:]...)
	} else {
		a, b := s.Start.As16(), s.End.As16()
		e.b = append(append(e.b, a[:]...), b[:]...)
	}
}

// Notify returns the first Notify payload of type t, or nil.
func (m *Message) Notify(t NotifyType) *Notify {
	for _, p := range m.Payloads {
		if n, ok := p.(*Notify); ok && n != nil && n.NotifyType == t {
			return n
		}
	}
	return nil
}

// Find returns the first payload of type T in ps, or T's zero value (nil
// for the pointer types of this package): Find[*Nonce](m.Payloads).
func Find[T Payload](ps []Payload) T {
	for _, p := range ps {
		if t, ok := p.(T); ok {
			return t
		}
	}
	var zero T
	return zero
}

// FindAll returns every payload of type T in ps, in order.
func FindAll[T Payload](ps []Payload) []T {
	var out []T
	for _, p := range ps {
		if t, ok := p.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// FindID returns the first IDr (responder) or IDi payload, or nil.
func FindID(ps []Payload, responder bool) *ID {
	for _, p := range ps {
		if id, ok := p.(*ID); ok && id != nil && id.Responder == responder {
			return id
		}
	}
	return nil
}

// FindTS returns the first TSr (responder) or TSi payload, or nil.
func FindTS(ps []Payload, responder bool) *TS {
	for _, p := range ps {
		if ts, ok := p.(*TS); ok && ts != nil && ts.Responder == responder {
			return ts
		}
	}
	return nil
}

// String summarises a message for logs, in the style of strongSwan's:
// "IKE_SA_INIT request 0 [ SA KE Nonce N(NAT_DETECTION_SOURCE_IP) ]".
func (m *Message) String() string {
	var sb strings.Builder
	sb.WriteString(m.Header.Exchange.String())
	if m.Header.IsResponse() {
		sb.WriteString(" response ")
	} else {
		sb.WriteString(" request ")
	}
	fmt.Fprintf(&sb, "%d [", m.Header.MsgID)
	for _, p := range m.Payloads {
		if isNil(p) {
			continue
		}
		sb.WriteByte(' ')
		switch p := p.(type) {
		case *Notify:
			fmt.Fprintf(&sb, "N(%v)", p.NotifyType)
		case *Unknown:
			fmt.Fprintf(&sb, "%v", p.PType)
			if p.Critical {
				sb.WriteString("(critical)")
			}
		case *Encrypted:
			if p.Fragment {
				fmt.Fprintf(&sb, "SKF(%d/%d)", p.FragNum, p.TotalFrags)
			} else {
				sb.WriteString("SK")
			}
		default:
			sb.WriteString(p.Type().String())
		}
	}
	sb.WriteString(" ]")
	return sb.String()
}
