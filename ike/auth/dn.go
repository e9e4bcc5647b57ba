package auth

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// dnAttr is one attribute type of the DN string syntax. Names are
// strongSwan's (identification.c x501rdns), so one string means one DN on
// both ends; the first name is the one printed.
type dnAttr struct {
	names []string
	oid   asn1.ObjectIdentifier
	ia5   bool // encoded as IA5String, as strongSwan and OpenSSL do
}

var dnAttrs = []dnAttr{
	{[]string{"CN", "commonName"}, asn1.ObjectIdentifier{2, 5, 4, 3}, false},
	{[]string{"C", "countryName"}, asn1.ObjectIdentifier{2, 5, 4, 6}, false},
	{[]string{"L", "localityName"}, asn1.ObjectIdentifier{2, 5, 4, 7}, false},
	{[]string{"ST", "stateOrProvinceName"}, asn1.ObjectIdentifier{2, 5, 4, 8}, false},
	{[]string{"STREET", "streetAddress"}, asn1.ObjectIdentifier{2, 5, 4, 9}, false},
	{[]string{"O", "organizationName"}, asn1.ObjectIdentifier{2, 5, 4, 10}, false},
	{[]string{"OU", "organizationalUnitName"}, asn1.ObjectIdentifier{2, 5, 4, 11}, false},
	{[]string{"T", "title"}, asn1.ObjectIdentifier{2, 5, 4, 12}, false},
	{[]string{"D", "description"}, asn1.ObjectIdentifier{2, 5, 4, 13}, false},
	{[]string{"postalCode"}, asn1.ObjectIdentifier{2, 5, 4, 17}, false},
	{[]string{"N", "name"}, asn1.ObjectIdentifier{2, 5, 4, 41}, false},
	{[]string{"G", "givenName"}, asn1.ObjectIdentifier{2, 5, 4, 42}, false},
	{[]string{"I", "initials"}, asn1.ObjectIdentifier{2, 5, 4, 43}, false},
	{[]string{"ID", "uniqueIdentifier"}, asn1.ObjectIdentifier{2, 5, 4, 45}, false},
	{[]string{"dnQualifier"}, asn1.ObjectIdentifier{2, 5, 4, 46}, false},
	{[]string{"pseudonym"}, asn1.ObjectIdentifier{2, 5, 4, 65}, false},
	// strongSwan: S is surname and SN serialNumber (OpenSSL's SN is surname).
	{[]string{"S", "surname"}, asn1.ObjectIdentifier{2, 5, 4, 4}, false},
	{[]string{"serialNumber", "SN"}, asn1.ObjectIdentifier{2, 5, 4, 5}, false},
	{[]string{"UID", "userId"}, asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, false},
	{[]string{"DC", "domainComponent"}, asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, true},
	{[]string{"E", "Email", "emailAddress"}, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, true},
	{[]string{"UN", "unstructuredName"}, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 2}, true},
	{[]string{"EN", "employeeNumber"}, asn1.ObjectIdentifier{2, 16, 840, 1, 113730, 3, 1, 3}, false},
}

const maxRDNs = 64

func attrByName(name string) (dnAttr, bool) {
	for _, a := range dnAttrs {
		for _, n := range a.names {
			if strings.EqualFold(n, name) {
				return a, true
			}
		}
	}
	return dnAttr{}, false
}

func attrByOID(oid asn1.ObjectIdentifier) (dnAttr, bool) {
	for _, a := range dnAttrs {
		if a.oid.Equal(oid) {
			return a, true
		}
	}
	return dnAttr{}, false
}

// parseDN encodes a DN string (see ParseIdentity) as a DER Name with
// crypto/x509/pkix, one single-valued RDN per attribute, in the order
// written. Separators are ',' or ';', or '/' when the string starts with one
// (OpenSSL's "/C=CH/O=x" form); spaces around names, '=' and separators are
// ignored.
func parseDN(s string) ([]byte, error) {
	sep := ",;"
	if strings.HasPrefix(s, "/") {
		sep, s = "/", s[1:]
	}
	var seq pkix.RDNSequence
	for len(strings.TrimSpace(s)) > 0 {
		if len(seq) == maxRDNs {
			return nil, fmt.Errorf("more than %d RDNs", maxRDNs)
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, fmt.Errorf("RDN %d: no '='", len(seq)+1)
		}
		name := strings.TrimSpace(s[:eq])
		oid, ia5, err := attrType(name)
		if err != nil {
			return nil, fmt.Errorf("RDN %d: %w", len(seq)+1, err)
		}
		val, rest, err := dnValue(s[eq+1:], sep)
		if err != nil {
			return nil, fmt.Errorf("RDN %d (%s): %w", len(seq)+1, name, err)
		}
		s = rest
		seq = append(seq, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: val.asn1(ia5)}})
	}
	if len(seq) == 0 {
		return nil, errors.New("no RDNs")
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		return nil, err
	}
	return der, nil
}

func attrType(name string) (asn1.ObjectIdentifier, bool, error) {
	if a, ok := attrByName(name); ok {
		return a.oid, a.ia5, nil
	}
	if name == "" || !(name[0] >= '0' && name[0] <= '9') {
		return nil, false, fmt.Errorf("unknown attribute type %q", name)
	}
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(name, ".") {
		n, err := strconv.ParseUint(part, 10, 31)
		if err != nil || (len(part) > 1 && part[0] == '0') {
			return nil, false, fmt.Errorf("bad attribute OID %q", name)
		}
		oid = append(oid, int(n))
	}
	// encoding/asn1 refuses to marshal these; say so here.
	if len(oid) < 2 || oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return nil, false, fmt.Errorf("bad attribute OID %q", name)
	}
	return oid, false, nil
}

// dnVal is a parsed attribute value: a string, or raw DER from "#hex".
type dnVal struct {
	str string
	raw []byte
}

func (v dnVal) asn1(ia5 bool) any {
	if v.raw != nil {
		return asn1.RawValue{FullBytes: v.raw}
	}
	if ia5 && isIA5(v.str) {
		return asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte(v.str)}
	}
	// encoding/asn1 picks PrintableString when it can, else UTF8String.
	return v.str
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// dnValue reads one value up to an unescaped separator and returns the rest
// after the separator.
func dnValue(s, sep string) (dnVal, string, error) {
	s = strings.TrimLeft(s, " ")
	if strings.HasPrefix(s, "#") {
		end := strings.IndexAny(s, sep)
		if end < 0 {
			end = len(s)
		}
		raw, err := hex.DecodeString(strings.TrimRight(s[1:end], " "))
		if err != nil {
			return dnVal{}, "", errors.New("bad hex after '#'")
		}
		// RFC 4514 §2.4: the hex is one BER element; check it is one DER element.
		in := cryptobyte.String(raw)
		var elem cryptobyte.String
		var tag cbasn1.Tag
		if !in.ReadAnyASN1Element(&elem, &tag) || !in.Empty() {
			return dnVal{}, "", errors.New("'#' value is not one DER element")
		}
		return dnVal{raw: raw}, next(s, end), nil
	}
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return dnVal{}, "", errors.New("unterminated quote")
		}
		rest := strings.TrimLeft(s[i+1:], " ")
		if rest != "" && !strings.ContainsRune(sep, rune(rest[0])) {
			return dnVal{}, "", errors.New("text after closing quote")
		}
		return checkVal(b.String(), next(rest, 0))
	}
	var b []byte
	trailing := 0 // unescaped trailing spaces, which RFC 4514 drops
	i := 0
	for ; i < len(s) && !strings.ContainsRune(sep, rune(s[i])); i++ {
		c := s[i]
		if c != '\\' {
			b = append(b, c)
			if c == ' ' {
				trailing++
			} else {
				trailing = 0
			}
			continue
		}
		trailing = 0
		if i+1 >= len(s) {
			return dnVal{}, "", errors.New("'\\' at the end")
		}
		if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			x, _ := hex.DecodeString(s[i+1 : i+3])
			b = append(b, x[0])
			i += 2
			continue
		}
		i++
		b = append(b, s[i])
	}
	return checkVal(string(b[:len(b)-trailing]), next(s, i))
}

// next returns what follows the separator at s[i], if any.
func next(s string, i int) string {
	if i >= len(s) {
		return ""
	}
	return s[i+1:]
}

func checkVal(v, rest string) (dnVal, string, error) {
	if v == "" {
		return dnVal{}, "", errors.New("empty value")
	}
	if !utf8.ValidString(v) {
		return dnVal{}, "", errors.New("value is not valid UTF-8")
	}
	return dnVal{str: v}, rest, nil
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// atv is one AttributeTypeAndValue of a decoded DN.
type atv struct {
	oid  asn1.ObjectIdentifier
	tag  cbasn1.Tag
	body []byte // value contents
	full []byte // the value's whole DER element
}

// decodeDN parses a DER Name strictly (DER lengths, nothing after it). It is
// written with cryptobyte rather than asn1.Unmarshal into pkix types so that
// values of any type survive and the string type stays known.
func decodeDN(der []byte) ([][]atv, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed DER Name")
	}
	var rdns [][]atv
	for !seq.Empty() {
		if len(rdns) == maxRDNs {
			return nil, fmt.Errorf("more than %d RDNs", maxRDNs)
		}
		var set cryptobyte.String
		if !seq.ReadASN1(&set, cbasn1.SET) || set.Empty() {
			return nil, errors.New("malformed RDN")
		}
		var rdn []atv
		for !set.Empty() {
			var a cryptobyte.String
			var v atv
			var full cryptobyte.String
			if !set.ReadASN1(&a, cbasn1.SEQUENCE) ||
				!a.ReadASN1ObjectIdentifier(&v.oid) ||
				!a.ReadAnyASN1Element(&full, &v.tag) || !a.Empty() {
				return nil, errors.New("malformed AttributeTypeAndValue")
			}
			v.full = full
			var body cryptobyte.String
			if elem := full; !elem.ReadASN1(&body, v.tag) {
				return nil, errors.New("malformed attribute value")
			}
			v.body = body
			rdn = append(rdn, v)
		}
		rdns = append(rdns, rdn)
	}
	return rdns, nil
}

// valueString decodes a directory string value to Unicode; ok is false for
// values that are not strings.
func (v atv) valueString() (string, bool) {
	switch v.tag {
	case cbasn1.PrintableString, cbasn1.IA5String,
		cbasn1.Tag(asn1.TagNumericString), cbasn1.Tag(26) /* VisibleString */ :
		if !isIA5(string(v.body)) {
			return "", false
		}
		return string(v.body), true
	case cbasn1.UTF8String:
		if !utf8.Valid(v.body) {
			return "", false
		}
		return string(v.body), true
	case cbasn1.T61String:
		// Treated as Latin-1, as OpenSSL does in practice.
		r := make([]rune, len(v.body))
		for i, c := range v.body {
			r[i] = rune(c)
		}
		return string(r), true
	case cbasn1.Tag(asn1.TagBMPString):
		if len(v.body)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(v.body)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(v.body[2*i:])
		}
		return string(utf16.Decode(u)), true
	case cbasn1.Tag(28): // UniversalString, UCS-4
		if len(v.body)%4 != 0 {
			return "", false
		}
		r := make([]rune, len(v.body)/4)
		for i := range r {
			c := binary.BigEndian.Uint32(v.body[4*i:])
			if c > utf8.MaxRune {
				return "", false
			}
			r[i] = rune(c)
		}
		return string(r), true
	}
	return "", false
}

// normalize applies RFC 4518 insignificant space handling and case folding
// closely enough for RFC 5280 §7.1 caseIgnoreMatch: outer spaces dropped,
// inner runs collapsed, lower case.
func normalize(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

func atvEqual(a, b atv) bool {
	if !a.oid.Equal(b.oid) {
		return false
	}
	sa, oka := a.valueString()
	sb, okb := b.valueString()
	if oka && okb {
		return normalize(sa) == normalize(sb)
	}
	return oka == okb && string(a.full) == string(b.full)
}

// rdnEqual compares two RDNs as the SETs they are.
func rdnEqual(a, b []atv) bool {
	if len(a) != len(b) {
		return false
	}
	used := make([]bool, len(b))
outer:
	for _, x := range a {
		for j, y := range b {
			if !used[j] && atvEqual(x, y) {
				used[j] = true
				continue outer
			}
		}
		return false
	}
	return true
}

// dnEqual compares two DER Names RDN by RDN, in the same or in reverse order
// (see Identity.Equal). Malformed names equal nothing.
func dnEqual(a, b []byte) bool {
	ra, err := decodeDN(a)
	if err != nil {
		return false
	}
	rb, err := decodeDN(b)
	if err != nil || len(ra) != len(rb) {
		return false
	}
	same, reversed := true, true
	for i := range ra {
		same = same && rdnEqual(ra[i], rb[i])
		reversed = reversed && rdnEqual(ra[i], rb[len(rb)-1-i])
	}
	return same || reversed
}

// formatDN prints a DER Name as "C=CH, O=roamsec, CN=gw": encoding order and
// separator as strongSwan prints them, RFC 4514 escaping, "#hex" for values
// that are not strings. ok is false for names the syntax cannot carry
// (malformed, multi-valued RDNs, empty).
func formatDN(der []byte) (string, bool) {
	rdns, err := decodeDN(der)
	if err != nil || len(rdns) == 0 {
		return "", false
	}
	var b strings.Builder
	for i, rdn := range rdns {
		if len(rdn) != 1 {
			return "", false
		}
		if i > 0 {
			b.WriteString(", ")
		}
		v := rdn[0]
		if a, ok := attrByOID(v.oid); ok {
			b.WriteString(a.names[0])
		} else {
			b.WriteString(v.oid.String())
		}
		b.WriteByte('=')
		if s, ok := v.valueString(); ok && s != "" {
			b.WriteString(escapeDNValue(s))
		} else {
			b.WriteString("#" + hex.EncodeToString(v.full))
		}
	}
	return b.String(), true
}

// escapeDNValue escapes per RFC 4514 §2.4, plus ';' and '/' which the parser
// also treats as separators, and control characters as \hh.
func escapeDNValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '"' || c == ',' || c == '+' || c == ';' || c == '<' || c == '>' || c == '=' || c == '/':
			b.WriteByte('\\')
			b.WriteByte(c)
		case (c == '#' || c == ' ') && i == 0, c == ' ' && i == len(s)-1:
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
