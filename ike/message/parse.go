package message

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Message is an IKE message: the header and its payload chain.
type Message struct {
	Header   Header
	Payloads []Payload
	Raw      []byte // the whole datagram when parsed (Parse); Encode leaves it alone
}

// Parse decodes a datagram: the header, which must say the datagram's
// length exactly (RFC 7296 §3.1), then the payload chain (ParsePayloads).
// An SK or SKF payload becomes an *Encrypted whose AADLen is relative to
// b. SA payloads outside SK are also checked against the header's
// Response flag (SA.CheckNumbering). Payloads alias b. On
// ErrInvalidMajorVersion, ParseHeader gives the header to answer with.
func Parse(b []byte) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if int(h.Length) != len(b) {
		return nil, &SyntaxError{Offset: 24, Rule: "RFC 7296 §3.1", Msg: fmt.Sprintf("Length %d but the datagram has %d bytes", h.Length, len(b))}
	}
	ps, err := ParsePayloads(h.NextPayload, b[HeaderLen:])
	if err != nil {
		// Offsets relative to the message read better in logs.
		if se, ok := errors.AsType[*SyntaxError](err); ok {
			se.Offset += HeaderLen
		}
		return nil, err
	}
	for _, p := range ps {
		switch p := p.(type) {
		case *Encrypted:
			p.AADLen += HeaderLen
		case *SA:
			if err := p.CheckNumbering(h.IsResponse()); err != nil {
				return nil, err
			}
		}
	}
	return &Message{Header: h, Payloads: ps, Raw: b}, nil
}

// ParsePayloads decodes a payload chain whose first payload is of type
// first, as found in the IKE header or, for the decrypted contents of SK,
// in the SK payload's Next Payload field. The chain must end exactly at
// the end of b (RFC 7296 §3.2). Types this package does not decode become
// *Unknown; an SK or SKF payload must be the last (§3.14, RFC 7383 §2.5)
// and its AADLen is relative to b. Payloads alias b.
func ParsePayloads(first PayloadType, b []byte) ([]Payload, error) {
	var ps []Payload
	if first != PayloadNone {
		ps = make([]Payload, 0, 8)
	}
	next, off := first, 0
	for next != PayloadNone {
		rest := b[off:]
		if len(rest) < 4 {
			return nil, &SyntaxError{Payload: next, Offset: off, Rule: "RFC 7296 §3.2", Msg: fmt.Sprintf("the generic payload header needs 4 bytes, %d left", len(rest))}
		}
		plen := int(binary.BigEndian.Uint16(rest[2:4]))
		if plen < 4 {
			return nil, &SyntaxError{Payload: next, Offset: off, Rule: "RFC 7296 §3.2", Msg: fmt.Sprintf("Payload Length %d is shorter than the generic header", plen)}
		}
		if plen > len(rest) {
			return nil, &SyntaxError{Payload: next, Offset: off, Rule: "RFC 7296 §3.2", Msg: fmt.Sprintf("Payload Length %d exceeds the %d bytes left", plen, len(rest))}
		}
		cur := next
		next = PayloadType(rest[0])
		critical := rest[1]&0x80 != 0
		body := rest[4:plen:plen]
		p, err := parseBody(cur, critical, body)
		if err != nil {
			if se, ok := errors.AsType[*SyntaxError](err); ok {
				se.Payload, se.Offset = cur, off
			}
			return nil, err
		}
		if e, ok := p.(*Encrypted); ok {
			// The Next Payload field of SK and SKF names the first inner
			// payload; nothing may follow them.
			if off+plen != len(b) {
				return nil, &SyntaxError{Payload: cur, Offset: off, Rule: ruleLast(cur), Msg: fmt.Sprintf("%d bytes follow it; it must be the last payload", len(b)-off-plen)}
			}
			e.Next = next
			e.AADLen = off + 4
			if e.Fragment {
				e.AADLen += 4
			}
			next = PayloadNone
		}
		ps = append(ps, p)
		off += plen
	}
	if off != len(b) {
		return nil, &SyntaxError{Offset: off, Rule: "RFC 7296 §3.2", Msg: fmt.Sprintf("%d bytes after the last payload", len(b)-off)}
	}
	return ps, nil
}

func ruleLast(t PayloadType) string {
	if t == PayloadSKF {
		return "RFC 7383 §2.5"
	}
	return "RFC 7296 §3.14"
}

// sub returns b[i:j], nil when empty, so that parsed and hand-built
// payloads compare equal.
func sub(b []byte, i, j int) []byte {
	if i == j {
		return nil
	}
	return b[i:j:j]
}

func parseBody(t PayloadType, critical bool, b []byte) (Payload, error) {
	switch t {
	case PayloadSA:
		return parseSA(b)
	case PayloadKE:
		// §3.4: Group (2), RESERVED (2), data.
		if len(b) < 4 {
			return nil, syntaxErr("RFC 7296 §3.4", "body of %d bytes, want at least 4", len(b))
		}
		return &KE{Group: binary.BigEndian.Uint16(b), Data: sub(b, 4, len(b))}, nil
	case PayloadIDi, PayloadIDr:
		return parseID(t == PayloadIDr, b)
	case PayloadCERT, PayloadCERTREQ:
		// §3.6, §3.7: Encoding (1), data.
		if len(b) < 1 && t == PayloadCERT {
			return nil, syntaxErr("RFC 7296 §3.6", "empty body, want at least Cert Encoding")
		}
		if len(b) < 1 {
			return nil, syntaxErr("RFC 7296 §3.7", "empty body, want at least Cert Encoding")
		}
		if t == PayloadCERT {
			return &Cert{Encoding: b[0], Data: sub(b, 1, len(b))}, nil
		}
		return &CertReq{Encoding: b[0], Data: sub(b, 1, len(b))}, nil
	case PayloadAUTH:
		// §3.8: Auth Method (1), RESERVED (3), data.
		if len(b) < 4 {
			return nil, syntaxErr("RFC 7296 §3.8", "body of %d bytes, want at least 4", len(b))
		}
		return &Auth{Method: b[0], Data: sub(b, 4, len(b))}, nil
	case PayloadNonce:
		if len(b) < MinNonceLen || len(b) > MaxNonceLen {
			return nil, syntaxErr("RFC 7296 §3.9", "nonce of %d bytes, want %d to %d", len(b), MinNonceLen, MaxNonceLen)
		}
		return &Nonce{Data: sub(b, 0, len(b))}, nil
	case PayloadNotify:
		return parseNotify(b)
	case PayloadDelete:
		return parseDelete(b)
	case PayloadVendorID:
		return &VendorID{Data: sub(b, 0, len(b))}, nil
	case PayloadTSi, PayloadTSr:
		return parseTS(t == PayloadTSr, b)
	case PayloadSK:
		return &Encrypted{Body: sub(b, 0, len(b))}, nil
	case PayloadSKF:
		return parseSKF(b)
	case PayloadCP:
		return parseCP(b)
	case PayloadEAP:
		return &EAP{Data: sub(b, 0, len(b))}, nil
	}
	return &Unknown{PType: t, Critical: critical, Data: sub(b, 0, len(b))}, nil
}

// parseSA decodes proposals and transforms (RFC 7296 §3.3.1, §3.3.2,
// §3.3.5).
func parseSA(b []byte) (*SA, error) {
	if len(b) == 0 {
		return nil, syntaxErr("RFC 7296 §3.3", "no proposal")
	}
	sa := &SA{}
	for off, i := 0, 1; off < len(b); i++ {
		p := b[off:]
		if len(p) < 8 {
			return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: %d bytes left, the substructure header is 8", i, len(p))
		}
		last := p[0]
		if last != 0 && last != 2 {
			return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: Last Substruc %d, want 0 or 2", i, last)
		}
		plen := int(binary.BigEndian.Uint16(p[2:4]))
		if plen < 8 || plen > len(p) {
			return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: Proposal Length %d, want 8 to the %d bytes left", i, plen, len(p))
		}
		off += plen
		if (last == 0) != (off == len(b)) {
			if last == 0 {
				return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d says it is the last (Last Substruc 0) but %d bytes follow", i, len(b)-off)
			}
			return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d says more follow (Last Substruc 2) but the payload ends", i)
		}
		p = p[:plen:plen]
		prop := Proposal{Num: p[4], Protocol: ProtocolID(p[5])}
		spiSize, ntr := int(p[6]), int(p[7])
		if 8+spiSize > plen {
			return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: SPI Size %d overruns the Proposal Length %d", i, spiSize, plen)
		}
		switch prop.Protocol {
		case ProtoIKE:
			// Zero in IKE_SA_INIT, the new SPI when rekeying.
			if spiSize != 0 && spiSize != 8 {
				return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: IKE SPI Size %d, want 0 or 8", i, spiSize)
			}
		case ProtoAH, ProtoESP:
			if spiSize != 4 {
				return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: %v SPI Size %d, want 4", i, prop.Protocol, spiSize)
			}
		}
		prop.SPI = sub(p, 8, 8+spiSize)
		trs := p[8+spiSize:]
		if ntr > 0 {
			prop.Transforms = make([]Transform, 0, ntr)
		}
		for j := 1; j <= ntr; j++ {
			tr, n, err := parseTransform(trs, i, j, j == ntr)
			if err != nil {
				return nil, err
			}
			prop.Transforms = append(prop.Transforms, tr)
			trs = trs[n:]
		}
		if len(trs) != 0 {
			return nil, syntaxErr("RFC 7296 §3.3.1", "proposal %d: %d bytes after its %d transforms", i, len(trs), ntr)
		}
		sa.Proposals = append(sa.Proposals, prop)
	}
	if err := sa.checkNums(); err != nil {
		return nil, err
	}
	return sa, nil
}

// checkNums is the part of §3.3.1 that holds in requests and responses
// alike: numbers are never 0, and several proposals are numbered 1, 2, ...
func (sa *SA) checkNums() error {
	for i, p := range sa.Proposals {
		if p.Num == 0 || len(sa.Proposals) > 1 && int(p.Num) != i+1 {
			return syntaxErr("RFC 7296 §3.3.1", "proposal %d is numbered %d; proposals are numbered from 1, each one more than the previous", i+1, p.Num)
		}
	}
	return nil
}

// CheckNumbering checks what RFC 7296 requires of proposals in context: a
// request's first proposal is number 1 (§3.3.1); a response carries
// exactly one, the suite chosen, with the number of the proposal it
// accepts (§2.7, §3.3.1). Parse applies it to the plaintext SA payloads; a caller
// applies it to the SA payloads it decrypts.
func (sa *SA) CheckNumbering(response bool) error {
	if response {
		if len(sa.Proposals) != 1 {
			return &SyntaxError{Payload: PayloadSA, Rule: "RFC 7296 §2.7", Msg: fmt.Sprintf("a response carries %d proposals, want exactly one", len(sa.Proposals))}
		}
		return nil
	}
	if len(sa.Proposals) == 0 || sa.Proposals[0].Num != 1 {
		return &SyntaxError{Payload: PayloadSA, Rule: "RFC 7296 §3.3.1", Msg: "a request's first proposal must be number 1"}
	}
	return nil
}

// parseTransform decodes the transform at the start of b and returns its
// length (RFC 7296 §3.3.2, attributes §3.3.5).
func parseTransform(b []byte, prop, i int, last bool) (Transform, int, error) {
	var t Transform
	if len(b) < 8 {
		return t, 0, syntaxErr("RFC 7296 §3.3.2", "proposal %d transform %d: %d bytes left, the substructure header is 8", prop, i, len(b))
	}
	want := byte(3)
	if last {
		want = 0
	}
	if b[0] != want {
		return t, 0, syntaxErr("RFC 7296 §3.3.2", "proposal %d transform %d of Num Transforms: Last Substruc %d, want %d", prop, i, b[0], want)
	}
	tlen := int(binary.BigEndian.Uint16(b[2:4]))
	if tlen < 8 || tlen > len(b) {
		return t, 0, syntaxErr("RFC 7296 §3.3.2", "proposal %d transform %d: Transform Length %d, want 8 to the %d bytes left", prop, i, tlen, len(b))
	}
	t.Type = TransformType(b[4])
	t.ID = binary.BigEndian.Uint16(b[6:8])
	var unknown []byte
	for a := b[8:tlen]; len(a) > 0; {
		if len(a) < 4 {
			return t, 0, syntaxErr("RFC 7296 §3.3.5", "proposal %d transform %d: attribute of %d bytes, want at least 4", prop, i, len(a))
		}
		typ := binary.BigEndian.Uint16(a)
		tv := typ&0x8000 != 0 // AF bit: TV format, the value in the length's place
		typ &= 0x7fff
		n := 4
		if !tv {
			n += int(binary.BigEndian.Uint16(a[2:4]))
			if n > len(a) {
				return t, 0, syntaxErr("RFC 7296 §3.3.5", "proposal %d transform %d: attribute %d of %d bytes overruns the transform", prop, i, typ, n)
			}
		}
		if typ == AttrKeyLength {
			if !tv {
				return t, 0, syntaxErr("RFC 7296 §3.3.5", "proposal %d transform %d: Key Length attribute in TLV format, want TV", prop, i)
			}
			// The first non-zero one is the key length; a zero or a second
			// one makes the transform unacceptable, like any attribute
			// not understood (§3.3.6).
			if v := binary.BigEndian.Uint16(a[2:4]); v != 0 && t.KeyLen == 0 {
				t.KeyLen = v
				a = a[n:]
				continue
			}
		}
		unknown = append(unknown, a[:n]...)
		a = a[n:]
	}
	t.UnknownAttrs = string(unknown)
	return t, tlen, nil
}

// parseID decodes IDi and IDr (RFC 7296 §3.5).
func parseID(responder bool, b []byte) (*ID, error) {
	if len(b) < 4 {
		return nil, syntaxErr("RFC 7296 §3.5", "body of %d bytes, want at least 4", len(b))
	}
	id := &ID{Responder: responder, IDType: IDType(b[0]), Data: sub(b, 4, len(b))}
	switch {
	case id.IDType == ID_IPV4_ADDR && len(id.Data) != 4:
		return nil, syntaxErr("RFC 7296 §3.5", "ID_IPV4_ADDR of %d bytes, want 4", len(id.Data))
	case id.IDType == ID_IPV6_ADDR && len(id.Data) != 16:
		return nil, syntaxErr("RFC 7296 §3.5", "ID_IPV6_ADDR of %d bytes, want 16", len(id.Data))
	}
	return id, nil
}

// parseNotify decodes a Notify payload (RFC 7296 §3.10).
func parseNotify(b []byte) (*Notify, error) {
	if len(b) < 4 {
		return nil, syntaxErr("RFC 7296 §3.10", "body of %d bytes, want at least 4", len(b))
	}
	n := &Notify{Protocol: ProtocolID(b[0]), NotifyType: NotifyType(binary.BigEndian.Uint16(b[2:4]))}
	spiSize := int(b[1])
	switch {
	case spiSize == 0:
		// About the IKE SA or no SA; Protocol is ignored on receipt.
	case spiSize == 4 && (n.Protocol == ProtoAH || n.Protocol == ProtoESP):
	default:
		return nil, syntaxErr("RFC 7296 §3.10", "%v with SPI Size %d and Protocol %v; want 0, or 4 with AH or ESP", n.NotifyType, spiSize, n.Protocol)
	}
	if 4+spiSize > len(b) {
		return nil, syntaxErr("RFC 7296 §3.10", "SPI Size %d overruns the body of %d bytes", spiSize, len(b))
	}
	n.SPI = sub(b, 4, 4+spiSize)
	n.Data = sub(b, 4+spiSize, len(b))
	return n, nil
}

// parseDelete decodes a Delete payload (RFC 7296 §3.11).
func parseDelete(b []byte) (*Delete, error) {
	if len(b) < 4 {
		return nil, syntaxErr("RFC 7296 §3.11", "body of %d bytes, want at least 4", len(b))
	}
	d := &Delete{Protocol: ProtocolID(b[0]), SPISize: b[1]}
	num := int(binary.BigEndian.Uint16(b[2:4]))
	switch d.Protocol {
	case ProtoIKE:
		// The IKE SA is the one the message travels in: no SPIs.
		if d.SPISize != 0 || num != 0 {
			return nil, syntaxErr("RFC 7296 §3.11", "IKE with SPI Size %d and %d SPIs, want 0 and 0", d.SPISize, num)
		}
	case ProtoAH, ProtoESP:
		if d.SPISize != 4 {
			return nil, syntaxErr("RFC 7296 §3.11", "%v with SPI Size %d, want 4", d.Protocol, d.SPISize)
		}
	default:
		return nil, syntaxErr("RFC 7296 §3.11", "Protocol ID %d, want IKE, AH or ESP", uint8(d.Protocol))
	}
	if want := 4 + num*int(d.SPISize); len(b) != want {
		return nil, syntaxErr("RFC 7296 §3.11", "%d SPIs of %d bytes need a body of %d bytes, got %d", num, d.SPISize, want, len(b))
	}
	if num > 0 {
		d.SPIs = make([][]byte, num)
		for i := range d.SPIs {
			o := 4 + i*int(d.SPISize)
			d.SPIs[i] = b[o : o+int(d.SPISize) : o+int(d.SPISize)]
		}
	}
	return d, nil
}

// parseTS decodes TSi and TSr (RFC 7296 §3.13, §3.13.1).
func parseTS(responder bool, b []byte) (*TS, error) {
	if len(b) < 4 {
		return nil, syntaxErr("RFC 7296 §3.13", "body of %d bytes, want at least 4", len(b))
	}
	ts := &TS{Responder: responder}
	num := int(b[0])
	if num > 0 {
		ts.Selectors = make([]TrafficSelector, 0, num)
	}
	rest := b[4:]
	for i := 1; i <= num; i++ {
		if len(rest) < 4 {
			return nil, syntaxErr("RFC 7296 §3.13.1", "selector %d of %d: %d bytes left", i, num, len(rest))
		}
		typ, slen := rest[0], int(binary.BigEndian.Uint16(rest[2:4]))
		var alen int
		switch typ {
		case TS_IPV4_ADDR_RANGE:
			alen = 4
		case TS_IPV6_ADDR_RANGE:
			alen = 16
		default:
			return nil, syntaxErr("RFC 7296 §3.13.1", "selector %d: TS Type %d, want 7 (IPv4) or 8 (IPv6)", i, typ)
		}
		if slen != 8+2*alen {
			return nil, syntaxErr("RFC 7296 §3.13.1", "selector %d: Selector Length %d, want %d for TS Type %d", i, slen, 8+2*alen, typ)
		}
		if slen > len(rest) {
			return nil, syntaxErr("RFC 7296 §3.13.1", "selector %d: Selector Length %d exceeds the %d bytes left", i, slen, len(rest))
		}
		s := TrafficSelector{
			Proto:     rest[1],
			StartPort: binary.BigEndian.Uint16(rest[4:6]),
			EndPort:   binary.BigEndian.Uint16(rest[6:8]),
		}
		if alen == 4 {
			s.Start = netip.AddrFrom4([4]byte(rest[8:12]))
			s.End = netip.AddrFrom4([4]byte(rest[12:16]))
		} else {
			s.Start = netip.AddrFrom16([16]byte(rest[8:24]))
			s.End = netip.AddrFrom16([16]byte(rest[24:40]))
		}
		if s.End.Less(s.Start) {
			return nil, syntaxErr("RFC 7296 §3.13.1", "selector %d: Starting Address %v after Ending Address %v", i, s.Start, s.End)
		}
		// Start 65535, end 0 is OPAQUE; any other inverted range is not.
		if s.StartPort > s.EndPort && !(s.StartPort == 0xffff && s.EndPort == 0) {
			return nil, syntaxErr("RFC 7296 §3.13.1", "selector %d: Start Port %d after End Port %d", i, s.StartPort, s.EndPort)
		}
		ts.Selectors = append(ts.Selectors, s)
		rest = rest[slen:]
	}
	if len(rest) != 0 {
		return nil, syntaxErr("RFC 7296 §3.13", "%d bytes after Number of TSs (%d) selectors", len(rest), num)
	}
	return ts, nil
}

// cpAttrLens are the value lengths RFC 7296 §3.15.1 allows (0 in a
// request); attributes not listed may have any length.
var cpAttrLens = map[uint16][2]int{
	INTERNAL_IP4_ADDRESS: {0, 4},
	INTERNAL_IP4_NETMASK: {0, 4},
	INTERNAL_IP4_DNS:     {0, 4},
	INTERNAL_IP4_NBNS:    {0, 4},
	INTERNAL_IP4_DHCP:    {0, 4},
	INTERNAL_IP6_ADDRESS: {0, 17},
	INTERNAL_IP6_DNS:     {0, 16},
	INTERNAL_IP6_DHCP:    {0, 16},
	INTERNAL_IP4_SUBNET:  {0, 8},
	INTERNAL_IP6_SUBNET:  {0, 17},
}

// parseCP decodes a Configuration payload (RFC 7296 §3.15, §3.15.1).
func parseCP(b []byte) (*CP, error) {
	if len(b) < 4 {
		return nil, syntaxErr("RFC 7296 §3.15", "body of %d bytes, want at least 4", len(b))
	}
	cp := &CP{CfgType: b[0]}
	for a, i := b[4:], 1; len(a) > 0; i++ {
		if len(a) < 4 {
			return nil, syntaxErr("RFC 7296 §3.15.1", "attribute %d: %d bytes left, want at least 4", i, len(a))
		}
		typ := binary.BigEndian.Uint16(a) & 0x7fff // the R bit is ignored on receipt
		n := int(binary.BigEndian.Uint16(a[2:4]))
		if 4+n > len(a) {
			return nil, syntaxErr("RFC 7296 §3.15.1", "attribute %d (type %d): Length %d exceeds the %d bytes left", i, typ, n, len(a)-4)
		}
		if l, ok := cpAttrLens[typ]; ok && n != l[0] && n != l[1] {
			return nil, syntaxErr("RFC 7296 §3.15.1", "attribute %d (type %d): Length %d, want %d or %d", i, typ, n, l[0], l[1])
		}
		if typ == SUPPORTED_ATTRIBUTES && n%2 != 0 {
			return nil, syntaxErr("RFC 7296 §3.15.1", "attribute %d: SUPPORTED_ATTRIBUTES of odd Length %d", i, n)
		}
		cp.Attrs = append(cp.Attrs, CPAttr{Type: typ, Value: sub(a, 4, 4+n)})
		a = a[4+n:]
	}
	return cp, nil
}

// parseSKF decodes the Encrypted Fragment payload's fixed part (RFC 7383
// §2.5).
func parseSKF(b []byte) (*Encrypted, error) {
	if len(b) < 4 {
		return nil, syntaxErr("RFC 7383 §2.5", "body of %d bytes, want at least 4", len(b))
	}
	e := &Encrypted{
		Fragment:   true,
		FragNum:    binary.BigEndian.Uint16(b),
		TotalFrags: binary.BigEndian.Uint16(b[2:4]),
		Body:       sub(b, 4, len(b)),
	}
	if e.FragNum == 0 || e.TotalFrags == 0 || e.FragNum > e.TotalFrags {
		return nil, syntaxErr("RFC 7383 §2.5", "Fragment Number %d of Total Fragments %d; want 1 <= number <= total", e.FragNum, e.TotalFrags)
	}
	return e, nil
}
