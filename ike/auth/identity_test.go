package auth

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"strings"
	"testing"
)

func mustDN(t *testing.T, n pkix.Name) []byte {
	t.Helper()
	der, err := asn1.Marshal(n.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// rdnSeq builds a DN with one RDN per (oid, value) pair in the given order.
func rdnSeq(t *testing.T, pairs ...any) []byte {
	t.Helper()
	var seq pkix.RDNSequence
	for i := 0; i < len(pairs); i += 2 {
		seq = append(seq, pkix.RelativeDistinguishedNameSET{{Type: pairs[i].(asn1.ObjectIdentifier), Value: pairs[i+1]}})
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	oidCN    = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO     = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidC     = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidOU    = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidSN    = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidS     = asn1.ObjectIdentifier{2, 5, 4, 4}
	oidEmail = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// TestParseIdentity_RFC7296_3_5 covers the ID types of RFC 7296 §3.5 in
// strongSwan's string syntax.
func TestParseIdentity_RFC7296_3_5(t *testing.T) {
	ia5 := func(s string) asn1.RawValue { return asn1.RawValue{Tag: asn1.TagIA5String, Bytes: []byte(s)} }
	for _, tc := range []struct {
		in   string
		typ  IDType
		data []byte
	}{
		{"192.0.2.1", IDIPv4Addr, []byte{192, 0, 2, 1}},
		{"2001:db8::1", IDIPv6Addr, mustHex("20010db8000000000000000000000001")},
		{"::ffff:192.0.2.1", IDIPv6Addr, mustHex("00000000000000000000ffffc0000201")},
		{"user@example.org", IDRFC822Addr, []byte("user@example.org")},
		{"gw.example", IDFQDN, []byte("gw.example")},
		{"gw", IDFQDN, []byte("gw")},
		{"@gw.example", IDFQDN, []byte("gw.example")},
		{"@192.0.2.1", IDFQDN, []byte("192.0.2.1")},
		{"@a=b", IDFQDN, []byte("a=b")},
		{"@@user", IDRFC822Addr, []byte("user")},
		{"@#0a0B", IDKeyID, []byte{0x0a, 0x0b}},
		{"keyid:0a0b", IDKeyID, []byte{0x0a, 0x0b}},
		{"keyid:#0a0b", IDKeyID, []byte{0x0a, 0x0b}},
		{"KEYID:#ff", IDKeyID, []byte{0xff}},
		{"fqdn:192.0.2.1", IDFQDN, []byte("192.0.2.1")},
		{"dns:x", IDFQDN, []byte("x")},
		{"email:a=b@example.org", IDRFC822Addr, []byte("a=b@example.org")},
		{"rfc822:user", IDRFC822Addr, []byte("user")},
		{"userfqdn:u@x", IDRFC822Addr, []byte("u@x")},
		{"ipv4:192.0.2.9", IDIPv4Addr, []byte{192, 0, 2, 9}},
		{"ipv4:#c0000209", IDIPv4Addr, []byte{192, 0, 2, 9}},
		{"ipv6:2001:db8::", IDIPv6Addr, mustHex("20010db8000000000000000000000000")},
		{"fqdn:#6777", IDFQDN, []byte("gw")},
		// DNs: RDNs in the order written, PrintableString like Go's pkix.
		{"CN=rw1,O=roamsec", IDDERASN1DN, rdnSeq(t, oidCN, "rw1", oidO, "roamsec")},
		{"O=roamsec, CN=rw1", IDDERASN1DN, mustDN(t, pkix.Name{Organization: []string{"roamsec"}, CommonName: "rw1"})},
		{"C=CH, O=strongSwan, CN=moon.strongswan.org", IDDERASN1DN,
			mustDN(t, pkix.Name{Country: []string{"CH"}, Organization: []string{"strongSwan"}, CommonName: "moon.strongswan.org"})},
		{"/C=CH/O=roamsec/CN=gw", IDDERASN1DN, rdnSeq(t, oidC, "CH", oidO, "roamsec", oidCN, "gw")},
		{"  c = CH ;  o =  roam sec  ", IDDERASN1DN, rdnSeq(t, oidC, "CH", oidO, "roam sec")},
		{`CN=a\,b\+c, OU=\41B`, IDDERASN1DN, rdnSeq(t, oidCN, "a,b+c", oidOU, "AB")},
		{`CN="x, y", O=z`, IDDERASN1DN, rdnSeq(t, oidCN, "x, y", oidO, "z")},
		{"CN=Zürich", IDDERASN1DN, rdnSeq(t, oidCN, "Zürich")}, // UTF8String
		{"E=rw@example.org, CN=rw", IDDERASN1DN, rdnSeq(t, oidEmail, ia5("rw@example.org"), oidCN, "rw")},
		{"SN=1234, S=Doe", IDDERASN1DN, rdnSeq(t, oidSN, "1234", oidS, "Doe")}, // strongSwan's names
		{"2.5.4.3=x", IDDERASN1DN, rdnSeq(t, oidCN, "x")},
		{"CN=#0c0378797a", IDDERASN1DN, rdnSeq(t, oidCN, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("xyz")})},
		{"asn1dn:#" + hex.EncodeToString(rdnSeq(t, oidCN, "x")), IDDERASN1DN, rdnSeq(t, oidCN, "x")},
		{"asn1dn:CN=x", IDDERASN1DN, rdnSeq(t, oidCN, "x")},
	} {
		t.Run(tc.in, func(t *testing.T) {
			id, err := ParseIdentity(tc.in)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			if id.Type != tc.typ || !bytes.Equal(id.Data, tc.data) {
				t.Fatalf("got %v %x, want %v %x", id.Type, id.Data, tc.typ, tc.data)
			}
			back, err := ParseIdentity(id.String())
			if err != nil || !back.Equal(id) {
				t.Fatalf("String %q does not parse back: %v %v", id.String(), back, err)
			}
		})
	}
}

func TestParseIdentityErrors(t *testing.T) {
	for _, in := range []string{
		"", "a\nb", "\xff", "CN=", "XX=y", "CN=x, junk", "1=x", "0.40=x", "3.1=x", "01.2=x", "CN=#zz", "CN=#0c05ab",
		`CN="x`, `CN="x"y`, `CN=x\`, "keyid:xyz", "keyid:", "@#", "ipv4:2001:db8::1", "ipv6:192.0.2.1",
		"ipv4:#c000", "fe80::1%eth0", "fqdn:", "email:", "asn1dn:#3000zz", "asn1dn:#300a", strings.Repeat("a", 5000),
	} {
		if id, err := ParseIdentity(in); err == nil {
			t.Errorf("ParseIdentity(%q) = %v %x, want an error", in, id.Type, id.Data)
		}
	}
}

// TestIdentityString checks the printed forms, which must read back the
// same (the plain form when unambiguous).
func TestIdentityString(t *testing.T) {
	for _, tc := range []struct {
		id   Identity
		want string
	}{
		{Identity{IDIPv4Addr, []byte{192, 0, 2, 1}}, "192.0.2.1"},
		{Identity{IDIPv6Addr, mustHex("20010db8000000000000000000000001")}, "2001:db8::1"},
		{Identity{IDFQDN, []byte("gw.example")}, "gw.example"},
		{Identity{IDFQDN, []byte("192.0.2.1")}, "@192.0.2.1"},
		{Identity{IDFQDN, []byte("x@y")}, "@x@y"},
		{Identity{IDFQDN, []byte("@x")}, "fqdn:@x"},
		{Identity{IDFQDN, []byte("a\nb")}, "fqdn:#610a62"},
		{Identity{IDRFC822Addr, []byte("u@example.org")}, "u@example.org"},
		{Identity{IDRFC822Addr, []byte("user")}, "email:user"},
		{Identity{IDRFC822Addr, []byte("a=b@x")}, "email:a=b@x"},
		{Identity{IDKeyID, []byte{1, 2}}, "keyid:#0102"},
		{Identity{IDDERASN1DN, rdnSeq(t, oidO, "roamsec", oidCN, "rw1")}, "O=roamsec, CN=rw1"},
		{Identity{IDDERASN1DN, rdnSeq(t, oidCN, "a,b", oidSN, " 7")}, `CN=a\,b, serialNumber=\ 7`},
		{Identity{IDDERASN1DN, mustHex("3000")}, "asn1dn:#3000"},
		{Identity{IDIPv4Addr, []byte{1}}, "ipv4:#01"},
		{Identity{IDType(10), []byte{1}}, "ID_TYPE_10:#01"},
	} {
		if got := tc.id.String(); got != tc.want {
			t.Errorf("String(%v %x) = %q, want %q", tc.id.Type, tc.id.Data, got, tc.want)
		}
	}
}

// TestIdentityEqual_RFC4945_3_1: FQDN and RFC 822 case-insensitive
// (§3.1.2, §3.1.3), addresses binary (§3.1.1), DNs by RDN (RFC 5280 §7.1).
func TestIdentityEqual_RFC4945_3_1(t *testing.T) {
	p := func(s string) Identity {
		id, err := ParseIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, tc := range []struct {
		a, b  Identity
		equal bool
	}{
		{p("GW.Example"), p("gw.example"), true},
		{p("gw.example"), p("gw.example."), false},
		{p("User@Example.ORG"), p("user@example.org"), true},
		{p("192.0.2.1"), p("192.0.2.1"), true},
		{p("192.0.2.1"), p("192.0.2.2"), false},
		{p("192.0.2.1"), p("::ffff:192.0.2.1"), false},
		{p("192.0.2.1"), p("@192.0.2.1"), false},
		{p("keyid:#01"), p("keyid:#01"), true},
		{p("keyid:#01"), p("keyid:#02"), false},
		{p("O=roamsec, CN=rw1"), p("o=ROAMSEC,cn=rw1"), true},
		{p("O=roamsec, CN=rw1"), p("CN=rw1,O=roamsec"), true}, // RFC 4514 order
		{p("C=CH, O=x, CN=y"), p("O=x, C=CH, CN=y"), false},   // neither same nor reversed
		{p("O=roamsec, CN=rw1"), p("O=roamsec, CN=rw2"), false},
		{p("O=roamsec, CN=rw1"), p("O=roamsec, CN=rw1, OU=x"), false},
		{p("CN=a  b"), p("CN= a b "), true}, // insignificant spaces
		{p("CN=rw1"), Identity{IDDERASN1DN, rdnSeq(t, oidCN, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("RW1")})}, true}, // string types
		{p("CN=rw1"), p("serialNumber=rw1"), false},
		{p("CN=#020101"), p("CN=#020101"), true},
		{p("CN=#020101"), p("CN=#020102"), false},
		{Identity{IDDERASN1DN, []byte{0x30, 0x01}}, Identity{IDDERASN1DN, []byte{0x30, 0x01, 0}}, false},
	} {
		if got := tc.a.Equal(tc.b); got != tc.equal {
			t.Errorf("%v.Equal(%v) = %v", tc.a, tc.b, got)
		}
		if got := tc.b.Equal(tc.a); got != tc.equal {
			t.Errorf("%v.Equal(%v) = %v (not symmetric)", tc.b, tc.a, got)
		}
	}
	// A multi-valued RDN is a SET: order inside it does not matter.
	mv := func(first, second asn1.ObjectIdentifier) Identity {
		der, err := asn1.Marshal(pkix.RDNSequence{{{Type: first, Value: "a"}, {Type: second, Value: "a"}}})
		if err != nil {
			t.Fatal(err)
		}
		return Identity{IDDERASN1DN, der}
	}
	if !mv(oidCN, oidO).Equal(mv(oidO, oidCN)) {
		t.Error("multi-valued RDNs should compare as sets")
	}
	if s := mv(oidCN, oidO).String(); !strings.HasPrefix(s, "asn1dn:#") {
		t.Errorf("multi-valued RDN printed as %q, want the hex form", s)
	}
}

// TestIDBody_RFC7296_3_5: type, three RESERVED octets (ignored on receipt),
// data.
func TestIDBody_RFC7296_3_5(t *testing.T) {
	id, err := ParseIDBody([]byte{1, 0xff, 0xff, 0xff, 192, 0, 2, 1})
	if err != nil || !id.Equal(Identity{IDIPv4Addr, []byte{192, 0, 2, 1}}) {
		t.Fatalf("ParseIDBody = %v, %v", id, err)
	}
	for _, bad := range [][]byte{nil, {1, 0, 0}, {1, 0, 0, 0, 1, 2, 3}, {2, 0, 0, 0}, {9, 0, 0, 0, 0x30}, {10, 0, 0, 0, 1}, {5, 0, 0, 0, 1}} {
		if _, err := ParseIDBody(bad); err == nil {
			t.Errorf("ParseIDBody(%x) accepted", bad)
		}
	}
	orig := Identity{IDFQDN, []byte("gw")}
	back, err := ParseIDBody(orig.Body())
	if err != nil || !back.Equal(orig) {
		t.Fatalf("round trip: %v %v", back, err)
	}
}
