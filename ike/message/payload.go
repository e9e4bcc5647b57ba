package message

import (
	"net/netip"
	"strconv"
)

// Payload is one payload of a message. Each type encodes its body only;
// the generic payload header (Next Payload, Critical, Payload Length) is
// written by EncodePayloads. Only pointer types implement it.
type Payload interface {
	Type() PayloadType
}

// SA is the Security Association payload (RFC 7296 §3.3).
type SA struct {
	Proposals []Proposal
}

// Proposal is a proposal substructure (RFC 7296 §3.3.1). The SPI size is
// len(SPI).
type Proposal struct {
	Num        uint8
	Protocol   ProtocolID
	SPI        []byte
	Transforms []Transform
}

// Transform is a transform substructure (RFC 7296 §3.3.2).
//
// Attributes other than one Key Length with a non-zero value are kept,
// verbatim and in order, in UnknownAttrs: RFC 7296 §3.3.6 says a transform
// carrying an attribute the receiver does not understand is unacceptable
// (other transforms of its type are processed as usual), so a transform
// whose UnknownAttrs is not empty must never be chosen; see Acceptable.
// It is a string so that Transform stays comparable with ==.
type Transform struct {
	Type         TransformType
	ID           uint16
	KeyLen       uint16 // Key Length attribute (TV, type 14) in bits; 0: none (RFC 7296 §3.3.5)
	UnknownAttrs string // raw attributes this package does not understand; encoded after Key Length
}

// Acceptable reports whether t carries only attributes this package
// understands, which RFC 7296 §3.3.6 requires of a chosen transform.
func (t Transform) Acceptable() bool { return t.UnknownAttrs == "" }

func (t Transform) String() string {
	s := TransformIDName(t.Type, t.ID)
	if t.KeyLen != 0 {
		s += "_" + strconv.Itoa(int(t.KeyLen))
	}
	if t.UnknownAttrs != "" {
		s += "(unknown attributes)"
	}
	return s
}

// KE is the Key Exchange payload (RFC 7296 §3.4).
type KE struct {
	Group uint16 // a DH_* transform ID
	Data  []byte
}

// ID is the Identification payload, IDi or IDr (RFC 7296 §3.5).
type ID struct {
	Responder bool // IDr when true, IDi otherwise
	IDType    IDType
	Data      []byte
}

// Body is the payload body, ID Type, three reserved bytes and the data:
// the bytes the AUTH payload's prf(SK_p, IDx') covers (RFC 7296 §2.15).
func (id *ID) Body() []byte {
	b := make([]byte, 4, 4+len(id.Data))
	b[0] = byte(id.IDType)
	return append(b, id.Data...)
}

// Addr returns the address of an ID_IPV4_ADDR or ID_IPV6_ADDR.
func (id *ID) Addr() (netip.Addr, bool) {
	switch {
	case id.IDType == ID_IPV4_ADDR && len(id.Data) == 4:
		return netip.AddrFrom4([4]byte(id.Data)), true
	case id.IDType == ID_IPV6_ADDR && len(id.Data) == 16:
		return netip.AddrFrom16([16]byte(id.Data)), true
	}
	return netip.Addr{}, false
}

// IDFromAddr is an ID_IPV4_ADDR or ID_IPV6_ADDR identification (an
// IPv4-mapped IPv6 address counts as IPv4).
func IDFromAddr(responder bool, a netip.Addr) *ID {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return &ID{Responder: responder, IDType: ID_IPV4_ADDR, Data: b[:]}
	}
	b := a.As16()
	return &ID{Responder: responder, IDType: ID_IPV6_ADDR, Data: b[:]}
}

// Cert is the Certificate payload (RFC 7296 §3.6).
type Cert struct {
	Encoding uint8 // CERT_X509_SIGNATURE, ...
	Data     []byte
}

// CertReq is the Certificate Request payload (RFC 7296 §3.7): for X.509,
// Data is a concatenation of SHA-1 hashes of trusted CAs' public keys.
type CertReq struct {
	Encoding uint8
	Data     []byte
}

// Auth is the Authentication payload (RFC 7296 §3.8).
type Auth struct {
	Method uint8 // AUTH_METHOD_*
	Data   []byte
}

// Nonce is the Nonce payload (RFC 7296 §3.9); the parser enforces its
// 16 to 256 bytes.
type Nonce struct {
	Data []byte
}

// Nonce sizes (RFC 7296 §3.9).
const (
	MinNonceLen = 16
	MaxNonceLen = 256
)

// Notify is the Notify payload (RFC 7296 §3.10). The SPI size is len(SPI):
// empty for the IKE SA (Protocol is then ignored on receipt), 4 for AH and
// ESP.
type Notify struct {
	Protocol   ProtocolID
	SPI        []byte
	NotifyType NotifyType
	Data       []byte
}

// Delete is the Delete payload (RFC 7296 §3.11): the IKE SA with SPISize 0
// and no SPIs, or AH and ESP SAs with SPISize 4.
type Delete struct {
	Protocol ProtocolID
	SPISize  uint8
	SPIs     [][]byte // each SPISize bytes
}

// VendorID is the Vendor ID payload (RFC 7296 §3.12).
type VendorID struct {
	Data []byte
}

// TS is the Traffic Selector payload, TSi or TSr (RFC 7296 §3.13).
type TS struct {
	Responder bool // TSr when true, TSi otherwise
	Selectors []TrafficSelector
}

// TrafficSelector is one selector (RFC 7296 §3.13.1). Its type, 7 or 8,
// follows the addresses' family; Start and End must be of the same one.
// StartPort 65535 with EndPort 0 is OPAQUE.
type TrafficSelector struct {
	Proto              uint8 // IP protocol; 0: any
	StartPort, EndPort uint16
	Start, End         netip.Addr
}

// SelectorFromPrefix covers every address of p, any protocol and port.
func SelectorFromPrefix(p netip.Prefix) TrafficSelector {
	p = p.Masked()
	start := p.Addr()
	var end netip.Addr
	if start.Is4() {
		b := start.As4()
		setHostBits(b[:], p.Bits())
		end = netip.AddrFrom4(b)
	} else {
		b := start.As16()
		setHostBits(b[:], p.Bits())
		end = netip.AddrFrom16(b)
	}
	return TrafficSelector{EndPort: 0xffff, Start: start, End: end}
}

func setHostBits(b []byte, bits int) {
	if bits < 0 {
		bits = 0
	}
	for i := range b {
		switch {
		case bits >= 8*(i+1):
		case bits <= 8*i:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (bits - 8*i)
		}
	}
}

// CP is the Configuration payload (RFC 7296 §3.15).
type CP struct {
	CfgType uint8 // CFG_REQUEST, CFG_REPLY, CFG_SET, CFG_ACK
	Attrs   []CPAttr
}

// CPAttr is a configuration attribute (RFC 7296 §3.15.1). A request
// carries empty values.
type CPAttr struct {
	Type  uint16 // INTERNAL_IP4_ADDRESS, ...; 15 bits
	Value []byte
}

// Addr decodes a value that is an address: 4 bytes (the IPv4 attributes)
// or 16 (INTERNAL_IP6_DNS, INTERNAL_IP6_DHCP) or the address of a 17-byte
// INTERNAL_IP6_ADDRESS.
func (a CPAttr) Addr() (netip.Addr, bool) {
	switch len(a.Value) {
	case 4:
		return netip.AddrFrom4([4]byte(a.Value)), true
	case 16, 17:
		return netip.AddrFrom16([16]byte(a.Value[:16])), true
	}
	return netip.Addr{}, false
}

// Prefix decodes INTERNAL_IP6_ADDRESS and INTERNAL_IP6_SUBNET (address and
// prefix length, 17 bytes) and INTERNAL_IP4_SUBNET (address and netmask, 8
// bytes; a non-contiguous netmask fails).
func (a CPAttr) Prefix() (netip.Prefix, bool) {
	switch len(a.Value) {
	case 17:
		if a.Value[16] > 128 {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(netip.AddrFrom16([16]byte(a.Value[:16])), int(a.Value[16])), true
	case 8:
		m := uint32(a.Value[4])<<24 | uint32(a.Value[5])<<16 | uint32(a.Value[6])<<8 | uint32(a.Value[7])
		ones := 0
		for m&0x80000000 != 0 {
			ones++
			m <<= 1
		}
		if m != 0 {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(a.Value[:4])), ones), true
	}
	return netip.Prefix{}, false
}

// CPAttrAddr is an attribute whose value is an address (4 bytes for IPv4,
// 16 for IPv6).
func CPAttrAddr(typ uint16, a netip.Addr) CPAttr {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return CPAttr{Type: typ, Value: b[:]}
	}
	b := a.As16()
	return CPAttr{Type: typ, Value: b[:]}
}

// CPAttrPrefix is an INTERNAL_IP6_ADDRESS or INTERNAL_IP6_SUBNET value
// (address, prefix length) for an IPv6 prefix, and an INTERNAL_IP4_SUBNET
// value (address, netmask) for an IPv4 one.
func CPAttrPrefix(typ uint16, p netip.Prefix) CPAttr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		m := ^uint32(0)
		if p.Bits() < 32 {
			m = ^(^uint32(0) >> max(p.Bits(), 0))
		}
		return CPAttr{Type: typ, Value: append(b[:], byte(m>>24), byte(m>>16), byte(m>>8), byte(m))}
	}
	b := a.As16()
	return CPAttr{Type: typ, Value: append(b[:], byte(max(p.Bits(), 0)))}
}

// EAP is the Extensible Authentication payload (RFC 7296 §3.16).
type EAP struct {
	Data []byte
}

// Unknown is a payload of a type this package does not decode. It is kept
// so that the caller can reject it when Critical (RFC 7296 §2.5: answer
// UNSUPPORTED_CRITICAL_PAYLOAD) and skip it otherwise.
type Unknown struct {
	PType    PayloadType
	Critical bool
	Data     []byte
}

// Encrypted is the Encrypted payload SK (RFC 7296 §3.14) or, when
// Fragment, the Encrypted Fragment payload SKF (RFC 7383 §2.5). Both must
// be the last payload of a message.
type Encrypted struct {
	Fragment            bool        // SKF when true
	Next                PayloadType // the first inner payload's type (SKF: in fragment 1; senders put 0 in the others)
	FragNum, TotalFrags uint16      // SKF only
	Body                []byte      // IV || ciphertext || ICV; when parsed, a slice of the input
	// AADLen is the offset of Body in the whole message, so msg[:AADLen]
	// is the AEAD associated data (RFC 5282 §5.1; RFC 7383 §2.5.3 for SKF,
	// whose Fragment Number and Total Fragments it covers). Parse and
	// Message.Encode set it relative to the message, ParsePayloads and
	// EncodePayloads relative to the chain.
	AADLen int
}

func (*SA) Type() PayloadType       { return PayloadSA }
func (*KE) Type() PayloadType       { return PayloadKE }
func (*Cert) Type() PayloadType     { return PayloadCERT }
func (*CertReq) Type() PayloadType  { return PayloadCERTREQ }
func (*Auth) Type() PayloadType     { return PayloadAUTH }
func (*Nonce) Type() PayloadType    { return PayloadNonce }
func (*Notify) Type() PayloadType   { return PayloadNotify }
func (*Delete) Type() PayloadType   { return PayloadDelete }
func (*VendorID) Type() PayloadType { return PayloadVendorID }
func (*CP) Type() PayloadType       { return PayloadCP }
func (*EAP) Type() PayloadType      { return PayloadEAP }

// Type is IDr or IDi. A nil *ID says IDi rather than panic.
func (id *ID) Type() PayloadType {
	if id != nil && id.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}

// Type is TSr or TSi.
func (ts *TS) Type() PayloadType {
	if ts != nil && ts.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

// Type is SKF or SK.
func (e *Encrypted) Type() PayloadType {
	if e != nil && e.Fragment {
		return PayloadSKF
	}
	return PayloadSK
}

// Type is the type received.
func (u *Unknown) Type() PayloadType {
	if u == nil {
		return PayloadNone
	}
	return u.PType
}
