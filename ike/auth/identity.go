package auth

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// IDType is an Identification payload's ID Type (RFC 7296 §3.5).
type IDType uint8

// The ID types this package parses, prints and matches against certificates.
// ID_DER_ASN1_GN (10) is not supported (RFC 4945 §3.1.6 says MUST NOT use).
const (
	IDIPv4Addr   IDType = 1
	IDFQDN       IDType = 2
	IDRFC822Addr IDType = 3
	IDIPv6Addr   IDType = 5
	IDDERASN1DN  IDType = 9
	IDKeyID      IDType = 11
)

func (t IDType) String() string {
	switch t {
	case IDIPv4Addr:
		return "ID_IPV4_ADDR"
	case IDFQDN:
		return "ID_FQDN"
	case IDRFC822Addr:
		return "ID_RFC822_ADDR"
	case IDIPv6Addr:
		return "ID_IPV6_ADDR"
	case IDDERASN1DN:
		return "ID_DER_ASN1_DN"
	case IDKeyID:
		return "ID_KEY_ID"
	}
	return fmt.Sprintf("ID_TYPE_%d", uint8(t))
}

// Identity is the content of an IDi or IDr payload: its type and its
// Identification Data as sent on the wire (an address in network byte order,
// a string without terminator, a DER Name, opaque bytes).
type Identity struct {
	Type IDType
	Data []byte
}

// Clone is a copy of id that shares no memory with it (an identity read
// from a message is a slice of that message).
func (id Identity) Clone() Identity { return Identity{Type: id.Type, Data: bytes.Clone(id.Data)} }

// maxIdentityLen bounds a parsed identity; an ID payload body cannot exceed a
// payload's 16-bit length anyway, and DN parsing is not free.
const maxIdentityLen = 4096

// typedPrefixes are strongSwan's explicit type prefixes
// (identification_create_from_string): after the prefix, "#hex" gives the
// encoding in hexadecimal, anything else is the value itself.
var typedPrefixes = []struct {
	name string
	typ  IDType
}{
	{"ipv4:", IDIPv4Addr},
	{"ipv6:", IDIPv6Addr},
	{"rfc822:", IDRFC822Addr},
	{"email:", IDRFC822Addr},
	{"userfqdn:", IDRFC822Addr},
	{"fqdn:", IDFQDN},
	{"dns:", IDFQDN},
	{"asn1dn:", IDDERASN1DN},
	{"keyid:", IDKeyID},
}

// ParseIdentity parses an identity the way strongSwan's ipsec.conf/swanctl
// do, so the same string means the same identity on both ends:
//
//   - "192.0.2.1" → ID_IPV4_ADDR, "2001:db8::1" → ID_IPV6_ADDR
//   - "user@example.org" → ID_RFC822_ADDR, "gw.example" → ID_FQDN
//   - anything with '=' → ID_DER_ASN1_DN, RDNs encoded in the order written:
//     "C=CH, O=roamsec, CN=gw" (strongSwan/OpenSSL order) or
//     "CN=gw,O=roamsec" (RFC 4514 order); see Equal for how they compare.
//     Attribute names are strongSwan's (note SN is serialNumber, S surname)
//     or dotted OIDs; values may use RFC 4514 escapes, quotes or "#hex".
//   - "@gw.example" → ID_FQDN explicitly (no IP or DN interpretation),
//     "@@user" → ID_RFC822_ADDR, "@#0102" → ID_KEY_ID in hex
//   - typed prefixes: "ipv4:", "ipv6:", "fqdn:", "dns:", "email:", "rfc822:",
//     "userfqdn:", "asn1dn:", "keyid:"; "prefix:#hex" gives the raw encoding.
//
// Deviations from strongSwan: "keyid:0102" is hex here (strongSwan would take
// the four ASCII characters; "keyid:#0102" means the same bytes to both); a
// string with '=' that is not a valid DN is an error instead of a KEY_ID;
// "%any" and subnet/range types are not identities here.
func ParseIdentity(s string) (Identity, error) {
	if s == "" {
		return Identity{}, errors.New("auth: empty identity")
	}
	if len(s) > maxIdentityLen {
		return Identity{}, fmt.Errorf("auth: identity longer than %d bytes", maxIdentityLen)
	}
	if !utf8.ValidString(s) {
		return Identity{}, errors.New("auth: identity is not valid UTF-8")
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return Identity{}, fmt.Errorf("auth: identity has a control character at byte %d", i)
	}
	for _, p := range typedPrefixes {
		if len(s) >= len(p.name) && strings.EqualFold(s[:len(p.name)], p.name) {
			return parseTyped(p.typ, s[len(p.name):])
		}
	}
	if s[0] == '@' {
		rest := s[1:]
		switch {
		case strings.HasPrefix(rest, "#"):
			return parseTyped(IDKeyID, rest)
		case strings.HasPrefix(rest, "@"):
			return parseTyped(IDRFC822Addr, rest[1:])
		}
		return parseTyped(IDFQDN, rest)
	}
	if strings.Contains(s, "=") {
		der, err := parseDN(s)
		if err != nil {
			return Identity{}, fmt.Errorf("auth: identity %q has '=' but is not a DN (use an email: or fqdn: prefix for other types): %w", s, err)
		}
		return Identity{Type: IDDERASN1DN, Data: der}, nil
	}
	if !strings.Contains(s, "@") {
		if a, err := netip.ParseAddr(s); err == nil {
			return addrIdentity(a)
		}
		return Identity{Type: IDFQDN, Data: []byte(s)}, nil
	}
	return Identity{Type: IDRFC822Addr, Data: []byte(s)}, nil
}

// parseTyped parses the value after an explicit type.
func parseTyped(t IDType, v string) (Identity, error) {
	if strings.HasPrefix(v, "#") {
		b, err := hex.DecodeString(v[1:])
		if err != nil {
			return Identity{}, fmt.Errorf("auth: %v identity: bad hex after '#'", t)
		}
		id := Identity{Type: t, Data: b}
		return id, id.validate()
	}
	switch t {
	case IDIPv4Addr, IDIPv6Addr:
		a, err := netip.ParseAddr(v)
		if err != nil {
			return Identity{}, fmt.Errorf("auth: %v identity: %q is not an IP address", t, v)
		}
		id, err := addrIdentity(a)
		if err == nil && id.Type != t {
			err = fmt.Errorf("auth: %v identity: %s is of the other family", t, a)
		}
		return id, err
	case IDDERASN1DN:
		der, err := parseDN(v)
		if err != nil {
			return Identity{}, fmt.Errorf("auth: DN identity %q: %w", v, err)
		}
		return Identity{Type: t, Data: der}, nil
	case IDKeyID:
		// The brief's "keyid:hex"; strongSwan would read these as characters.
		b, err := hex.DecodeString(v)
		if err != nil {
			return Identity{}, errors.New("auth: ID_KEY_ID identity: want hex (keyid:0a1b or keyid:#0a1b)")
		}
		id := Identity{Type: t, Data: b}
		return id, id.validate()
	}
	id := Identity{Type: t, Data: []byte(v)}
	return id, id.validate()
}

func addrIdentity(a netip.Addr) (Identity, error) {
	if a.Zone() != "" {
		return Identity{}, fmt.Errorf("auth: identity %s: an address with a zone is not an identity", a)
	}
	if a.Is4() {
		b := a.As4()
		return Identity{Type: IDIPv4Addr, Data: b[:]}, nil
	}
	b := a.As16()
	return Identity{Type: IDIPv6Addr, Data: b[:]}, nil
}

// validate checks the data is well formed for the type.
func (id Identity) validate() error {
	switch id.Type {
	case IDIPv4Addr:
		if len(id.Data) != 4 {
			return fmt.Errorf("auth: ID_IPV4_ADDR needs 4 bytes, not %d", len(id.Data))
		}
	case IDIPv6Addr:
		if len(id.Data) != 16 {
			return fmt.Errorf("auth: ID_IPV6_ADDR needs 16 bytes, not %d", len(id.Data))
		}
	case IDFQDN, IDRFC822Addr, IDKeyID:
		if len(id.Data) == 0 {
			return fmt.Errorf("auth: empty %v", id.Type)
		}
	case IDDERASN1DN:
		if _, err := decodeDN(id.Data); err != nil {
			return fmt.Errorf("auth: ID_DER_ASN1_DN: %w", err)
		}
	default:
		return fmt.Errorf("auth: unsupported identity type %v", id.Type)
	}
	return nil
}

// String returns the identity in a form ParseIdentity reads back to an equal
// identity: the plain form where it is unambiguous, else a typed prefix, else
// the prefix with "#hex". DNs print RDNs in encoding order, comma separated,
// as strongSwan does.
func (id Identity) String() string {
	switch id.Type {
	case IDIPv4Addr, IDIPv6Addr:
		if a, ok := netip.AddrFromSlice(id.Data); ok && id.validate() == nil {
			return a.String()
		}
		return typedHex(id)
	case IDFQDN:
		return firstRoundTrip(id, string(id.Data), "@"+string(id.Data), "fqdn:"+string(id.Data))
	case IDRFC822Addr:
		return firstRoundTrip(id, string(id.Data), "email:"+string(id.Data))
	case IDDERASN1DN:
		if s, ok := formatDN(id.Data); ok {
			return firstRoundTrip(id, s, "asn1dn:"+s)
		}
		return typedHex(id)
	case IDKeyID:
		return "keyid:#" + hex.EncodeToString(id.Data)
	}
	return fmt.Sprintf("%v:#%x", id.Type, id.Data)
}

func typedHex(id Identity) string {
	for _, p := range typedPrefixes {
		if p.typ == id.Type {
			return p.name + "#" + hex.EncodeToString(id.Data)
		}
	}
	return fmt.Sprintf("%v:#%x", id.Type, id.Data)
}

// firstRoundTrip returns the first candidate that parses back to id, else the
// typed hex form.
func firstRoundTrip(id Identity, candidates ...string) string {
	for _, c := range candidates {
		if got, err := ParseIdentity(c); err == nil && got.Type == id.Type && got.Equal(id) {
			return c
		}
	}
	return typedHex(id)
}

// Equal reports whether two identities name the same thing: addresses and key
// IDs byte for byte; FQDNs and RFC 822 addresses ignoring ASCII case (as
// strongSwan does for both, RFC 4945 §3.1.2, §3.1.3); DNs by their parsed RDNs
// with RFC 5280 §7.1 value matching (string types, case and insignificant
// spaces ignored). A DN also equals the same RDNs in reverse order, because
// a DN written in RFC 4514 order ("CN=rw1,O=roamsec") and one written in
// X.500/strongSwan order ("O=roamsec, CN=rw1") are the same name.
func (id Identity) Equal(o Identity) bool {
	if id.Type != o.Type {
		return false
	}
	switch id.Type {
	case IDFQDN, IDRFC822Addr:
		return asciiEqualFold(id.Data, o.Data)
	case IDDERASN1DN:
		return bytes.Equal(id.Data, o.Data) || dnEqual(id.Data, o.Data)
	}
	return bytes.Equal(id.Data, o.Data)
}

func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Body returns the identity as an ID payload body after the generic payload
// header: ID Type, three RESERVED octets, Identification Data (RFC 7296
// §3.5). For our own ID this is RestOfInitIDPayload/RestOfRespIDPayload of
// §2.15.
func (id Identity) Body() []byte {
	b := make([]byte, 4, 4+len(id.Data))
	b[0] = byte(id.Type)
	return append(b, id.Data...)
}

// ParseIDBody reads an ID payload body (RFC 7296 §3.5). RESERVED is ignored
// as §3.5 requires; sign the body as received (SignedOctets), not a
// re-encoding. The data is copied. Unsupported types and malformed data are
// errors.
func ParseIDBody(b []byte) (Identity, error) {
	if len(b) < 4 {
		return Identity{}, fmt.Errorf("auth: ID payload body of %d bytes, need at least 4", len(b))
	}
	id := Identity{Type: IDType(b[0]), Data: bytes.Clone(b[4:])}
	if err := id.validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}
