package message

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// A case is one payload body (or, with chain set, a whole chain): rule ""
// means it must parse (and check, if set, holds); otherwise the parse
// must fail with a *SyntaxError citing that rule.
type bodyCase struct {
	name  string
	t     PayloadType
	body  []byte
	chain []byte // used instead of t/body when not nil
	rule  string
	check func(t *testing.T, p Payload)
}

func runBodyCases(t *testing.T, cases []bodyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			first, b := c.t, c.chain
			if b == nil {
				first, b = rawChain(raw{t: c.t, body: c.body})
			}
			ps, err := ParsePayloads(first, b)
			if c.rule == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if c.check != nil {
					c.check(t, ps[0])
				}
				return
			}
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("got %v (payloads %v), want a syntax error citing %s", err, ps, c.rule)
			}
			if se.Rule != c.rule {
				t.Fatalf("error cites %q, want %q: %v", se.Rule, c.rule, err)
			}
		})
	}
}

// transform builds a transform substructure with a correct length.
func transform(last byte, typ TransformType, id uint16, attrs ...byte) []byte {
	b := []byte{last, 0, 0, 0, byte(typ), 0}
	b = binary.BigEndian.AppendUint16(b, id)
	b = append(b, attrs...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// proposal builds a proposal substructure with a correct length; ntr is
// written as given.
func proposal(last, num byte, proto ProtocolID, spi []byte, ntr int, trs ...[]byte) []byte {
	b := []byte{last, 0, 0, 0, num, byte(proto), byte(len(spi)), byte(ntr)}
	b = append(b, spi...)
	for _, t := range trs {
		b = append(b, t...)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// setLen overwrites a big-endian 16-bit length at off in a copy of b.
func setLen(b []byte, off int, n uint16) []byte {
	b = append([]byte(nil), b...)
	binary.BigEndian.PutUint16(b[off:], n)
	return b
}

var (
	encr = transform(3, TransformENCR, ENCR_AES_GCM_16, 0x80, 0x0e, 0x01, 0x00) // Key Length 256
	prf  = transform(3, TransformPRF, PRF_HMAC_SHA2_256)
	dh   = transform(0, TransformDH, DH_CURVE25519)
	ike1 = proposal(0, 1, ProtoIKE, nil, 3, encr, prf, dh)
)

// RFC 7296 §3.1: the header.
func TestRFC7296_3_1_Header(t *testing.T) {
	good := rawMessage(FlagInitiator, PayloadNone, nil)
	h, err := ParseHeader(good)
	if err != nil || h.SPIi != 0x0102030405060708 || h.Length != HeaderLen || !h.IsInitiator() || h.IsResponse() {
		t.Fatalf("%+v %v", h, err)
	}
	if got := h.AppendTo(nil); string(got) != string(good) {
		t.Fatalf("AppendTo %x, want %x", got, good)
	}
	with := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	for _, c := range []struct {
		name    string
		b       []byte
		want    error
		wantMsg string
	}{
		{"short datagram", good[:27], ErrInvalidSyntax, "27 bytes"},
		{"empty datagram", nil, ErrInvalidSyntax, "0 bytes"},
		{"major version 1 (IKEv1)", with(func(b []byte) { b[17] = 0x10 }), ErrInvalidMajorVersion, "1.0"},
		{"major version 3", with(func(b []byte) { b[17] = 0x30 }), ErrInvalidMajorVersion, "3.0"},
		{"Length below the header", with(func(b []byte) { b[27] = 27 }), ErrInvalidSyntax, "shorter than the header"},
		{"Length beyond the datagram", with(func(b []byte) { b[27] = 29 }), ErrInvalidSyntax, "exceeds"},
		{"Length of 4 GiB", with(func(b []byte) { copy(b[24:], []byte{0xff, 0xff, 0xff, 0xff}) }), ErrInvalidSyntax, "exceeds"},
		{"minor version ignored", with(func(b []byte) { b[17] = 0x2f }), nil, ""},
		{"reserved flags ignored", with(func(b []byte) { b[19] = 0xc7 | FlagResponse }), nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := ParseHeader(c.b)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if h.Flags != c.b[19] || h.Version != c.b[17] {
					t.Fatal("flags or version not kept as received")
				}
				return
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.wantMsg)
			}
			if errors.Is(err, ErrInvalidMajorVersion) && h.SPIi != 0x0102030405060708 {
				t.Fatal("no header to answer INVALID_MAJOR_VERSION with (§2.5)")
			}
			if _, perr := Parse(c.b); !errors.Is(perr, c.want) {
				t.Fatalf("Parse: %v", perr)
			}
		})
	}
	// Parse wants the datagram to be exactly the message.
	long := append(append([]byte(nil), good...), 0)
	if _, err := ParseHeader(long); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(long); !errors.Is(err, ErrInvalidSyntax) || !strings.Contains(err.Error(), "datagram has 29 bytes") {
		t.Fatalf("Parse accepted a datagram longer than Length: %v", err)
	}
}

// RFC 7296 §3.2: the generic payload header and the chain.
func TestRFC7296_3_2_GenericHeader(t *testing.T) {
	_, two := rawChain(raw{t: PayloadVendorID, body: []byte("a")}, raw{t: PayloadVendorID, body: []byte("b")})
	runBodyCases(t, []bodyCase{
		{name: "no bytes for the first payload", t: PayloadVendorID, chain: []byte{}, rule: "RFC 7296 §3.2"},
		{name: "3 bytes of generic header", t: PayloadVendorID, chain: []byte{0, 0, 0}, rule: "RFC 7296 §3.2"},
		{name: "Payload Length 3", t: PayloadVendorID, chain: []byte{0, 0, 0, 3}, rule: "RFC 7296 §3.2"},
		{name: "Payload Length 0", t: PayloadVendorID, chain: []byte{0, 0, 0, 0}, rule: "RFC 7296 §3.2"},
		{name: "Payload Length beyond the chain", t: PayloadVendorID, chain: []byte{0, 0, 0, 6, 1}, rule: "RFC 7296 §3.2"},
		{name: "trailing bytes after the last payload", t: PayloadVendorID, chain: []byte{0, 0, 0, 4, 0xff}, rule: "RFC 7296 §3.2"},
		{name: "chain announced but none", t: PayloadNone, chain: []byte{0, 0, 0, 4}, rule: "RFC 7296 §3.2"},
		{name: "next payload announced, none there", t: PayloadVendorID, chain: setLen(two[:5], 0, uint16(PayloadNonce)<<8), rule: "RFC 7296 §3.2"},
		{name: "second payload's length overruns", t: PayloadVendorID, chain: setLen(two, 7, 9), rule: "RFC 7296 §3.2"},
		{name: "two payloads", t: PayloadVendorID, chain: two, check: func(t *testing.T, p Payload) {
			if string(p.(*VendorID).Data) != "a" {
				t.Fatal(p)
			}
		}},
		{name: "empty body is fine", t: PayloadVendorID, chain: []byte{0, 0, 0, 4}},
		{name: "critical bit of a known payload ignored", t: PayloadVendorID, chain: []byte{0, 0x80, 0, 4}},
	})
}

// RFC 7296 §2.5, §3.2: an unrecognised payload is kept with its critical
// bit, so the caller can answer UNSUPPORTED_CRITICAL_PAYLOAD, and the chain
// goes on after it.
func TestRFC7296_2_5_UnknownPayloads(t *testing.T) {
	first, b := rawChain(raw{t: 50, critical: true, body: []byte{1, 2}}, raw{t: 1, body: nil}, raw{t: PayloadNonce, body: bytesN(16, 0)})
	ps, err := ParsePayloads(first, b)
	if err != nil {
		t.Fatal(err)
	}
	u0, u1 := ps[0].(*Unknown), ps[1].(*Unknown)
	if u0.PType != 50 || !u0.Critical || string(u0.Data) != "\x01\x02" || u1.PType != 1 || u1.Critical || ps[2].Type() != PayloadNonce {
		t.Fatalf("%+v %+v %+v", u0, u1, ps[2])
	}
	if _, again := EncodePayloads(ps); string(again) != string(b) {
		t.Fatal("unknown payloads not re-encoded as received")
	}
}

// RFC 7296 §3.3, §3.3.1: proposal substructures.
func TestRFC7296_3_3_1_Proposals(t *testing.T) {
	ike1more := proposal(2, 1, ProtoIKE, nil, 3, encr, prf, dh)
	ike2 := proposal(0, 2, ProtoIKE, nil, 3, encr, prf, dh)
	esp := func(last, num byte, spi []byte) []byte {
		return proposal(last, num, ProtoESP, spi, 2, transform(3, TransformENCR, ENCR_AES_GCM_16, 0x80, 0x0e, 0, 128), transform(0, TransformESN, ESN_NO))
	}
	const r = "RFC 7296 §3.3.1"
	runBodyCases(t, []bodyCase{
		{name: "one IKE proposal", t: PayloadSA, body: ike1, check: func(t *testing.T, p Payload) {
			pr := p.(*SA).Proposals
			if len(pr) != 1 || pr[0].Num != 1 || pr[0].Protocol != ProtoIKE || pr[0].SPI != nil || len(pr[0].Transforms) != 3 ||
				pr[0].Transforms[0] != (Transform{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLen: 256}) {
				t.Fatalf("%+v", pr)
			}
		}},
		{name: "two proposals 1, 2", t: PayloadSA, body: cat(ike1more, ike2)},
		{name: "IKE rekey SPI of 8 bytes", t: PayloadSA, body: proposal(0, 1, ProtoIKE, bytesN(8, 1), 3, encr, prf, dh)},
		{name: "ESP SPI of 4 bytes", t: PayloadSA, body: esp(0, 1, []byte{1, 2, 3, 4})},
		{name: "unknown protocol, any SPI size", t: PayloadSA, body: proposal(0, 1, 9, bytesN(3, 0), 0)},
		{name: "no proposal (§3.3)", t: PayloadSA, body: nil, rule: "RFC 7296 §3.3"},
		{name: "7 bytes of proposal", t: PayloadSA, body: ike1[:7], rule: r},
		{name: "Last Substruc 1", t: PayloadSA, body: setLen(ike1, 0, 0x0100), rule: r},
		{name: "Last Substruc 3 (a transform's)", t: PayloadSA, body: setLen(ike1, 0, 0x0300), rule: r},
		{name: "Proposal Length 7", t: PayloadSA, body: setLen(ike1, 2, 7), rule: r},
		{name: "Proposal Length beyond the payload", t: PayloadSA, body: setLen(ike1, 2, uint16(len(ike1)+1)), rule: r},
		{name: "last marker but another follows", t: PayloadSA, body: cat(ike1, ike2), rule: r},
		{name: "more marker but the payload ends", t: PayloadSA, body: ike1more, rule: r},
		{name: "SPI Size overruns the proposal", t: PayloadSA, body: setLen(proposal(0, 1, 9, nil, 0), 6, 0x0100), rule: r},
		{name: "IKE SPI of 4 bytes", t: PayloadSA, body: proposal(0, 1, ProtoIKE, bytesN(4, 1), 3, encr, prf, dh), rule: r},
		{name: "ESP without SPI", t: PayloadSA, body: esp(0, 1, nil), rule: r},
		{name: "ESP SPI of 8 bytes", t: PayloadSA, body: esp(0, 1, bytesN(8, 1)), rule: r},
		{name: "AH SPI of 2 bytes", t: PayloadSA, body: proposal(0, 1, ProtoAH, []byte{1, 2}, 0), rule: r},
		{name: "bytes after Num Transforms transforms", t: PayloadSA, body: proposal(0, 1, ProtoIKE, nil, 1, dh, []byte{0, 0, 0, 0}), rule: r},
		{name: "proposal number 0", t: PayloadSA, body: proposal(0, 0, ProtoIKE, nil, 3, encr, prf, dh), rule: r},
		{name: "proposals 1, 3", t: PayloadSA, body: cat(ike1more, proposal(0, 3, ProtoIKE, nil, 3, encr, prf, dh)), rule: r},
		{name: "proposals 2, 3", t: PayloadSA, body: cat(proposal(2, 2, ProtoIKE, nil, 3, encr, prf, dh), proposal(0, 3, ProtoIKE, nil, 3, encr, prf, dh)), rule: r},
		{name: "proposals 1, 1", t: PayloadSA, body: cat(ike1more, ike1), rule: r},
		{name: "a single proposal 3 (a response's)", t: PayloadSA, body: proposal(0, 3, ProtoIKE, nil, 3, encr, prf, dh)},
	})
}

// RFC 7296 §3.3.1, §2.7: in context, a request numbers its first proposal
// 1 and a response carries exactly one proposal.
func TestRFC7296_3_3_1_ProposalNumbersInContext(t *testing.T) {
	p3 := proposal(0, 3, ProtoIKE, nil, 3, encr, prf, dh)
	for _, c := range []struct {
		name  string
		flags uint8
		sa    []byte
		rule  string
	}{
		{"request, proposal 1", FlagInitiator, ike1, ""},
		{"request, first proposal 3", FlagInitiator, p3, "RFC 7296 §3.3.1"},
		{"response, proposal 3 accepted", FlagResponse, p3, ""},
		{"response with two proposals", FlagResponse, cat(proposal(2, 1, ProtoIKE, nil, 3, encr, prf, dh), proposal(0, 2, ProtoIKE, nil, 3, encr, prf, dh)), "RFC 7296 §2.7"},
	} {
		first, chain := rawChain(raw{t: PayloadSA, body: c.sa})
		_, err := Parse(rawMessage(c.flags, first, chain))
		var se *SyntaxError
		switch {
		case c.rule == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.rule != "" && (!errors.As(err, &se) || se.Rule != c.rule):
			t.Errorf("%s: got %v, want a syntax error citing %s", c.name, err, c.rule)
		}
	}
}

// RFC 7296 §3.3.2: transform substructures.
func TestRFC7296_3_3_2_Transforms(t *testing.T) {
	const r = "RFC 7296 §3.3.2"
	body := func(ntr int, trs ...[]byte) []byte { return proposal(0, 1, ProtoIKE, nil, ntr, trs...) }
	runBodyCases(t, []bodyCase{
		{name: "no transforms", t: PayloadSA, body: body(0)},
		{name: "last transform marked 3", t: PayloadSA, body: body(2, encr, prf), rule: r},
		{name: "middle transform marked 0", t: PayloadSA, body: body(3, encr, transform(0, TransformPRF, 5), dh), rule: r},
		{name: "transform marked 2", t: PayloadSA, body: body(1, transform(2, TransformDH, 31)), rule: r},
		{name: "fewer transforms than Num Transforms", t: PayloadSA, body: body(4, encr, prf, dh), rule: r},
		{name: "7 bytes of transform", t: PayloadSA, body: body(1, dh[:7]), rule: r},
		{name: "Transform Length 7", t: PayloadSA, body: body(1, setLen(dh, 2, 7)), rule: r},
		{name: "Transform Length beyond the proposal", t: PayloadSA, body: body(1, setLen(dh, 2, 9)), rule: r},
		{name: "unknown transform type kept", t: PayloadSA, body: body(1, transform(0, 12, 1)), check: func(t *testing.T, p Payload) {
			if tr := p.(*SA).Proposals[0].Transforms[0]; tr.Type != 12 || tr.ID != 1 || !tr.Acceptable() {
				t.Fatal(tr)
			}
		}},
	})
}

// RFC 7296 §3.3.5, §3.3.6: transform attributes. Key Length is TV only; an
// attribute not understood makes the transform unacceptable without making
// the message malformed.
func TestRFC7296_3_3_5_Attributes(t *testing.T) {
	const r = "RFC 7296 §3.3.5"
	one := func(attrs ...byte) []byte {
		return proposal(0, 1, ProtoIKE, nil, 1, transform(0, TransformENCR, ENCR_AES_CBC, attrs...))
	}
	tr := func(p Payload) Transform { return p.(*SA).Proposals[0].Transforms[0] }
	runBodyCases(t, []bodyCase{
		{name: "Key Length 128", t: PayloadSA, body: one(0x80, 14, 0, 128), check: func(t *testing.T, p Payload) {
			if x := tr(p); x.KeyLen != 128 || !x.Acceptable() {
				t.Fatal(x)
			}
		}},
		{name: "Key Length in TLV format", t: PayloadSA, body: one(0, 14, 0, 2, 0, 128), rule: r},
		{name: "3 bytes of attribute", t: PayloadSA, body: one(0x80, 14, 0), rule: r},
		{name: "TLV value overruns the transform", t: PayloadSA, body: one(0, 20, 0, 3, 1, 2), rule: r},
		{name: "unknown TV attribute kept, transform unacceptable (§3.3.6)", t: PayloadSA, body: one(0x80, 14, 0, 128, 0x80, 20, 0, 1), check: func(t *testing.T, p Payload) {
			if x := tr(p); x.KeyLen != 128 || x.UnknownAttrs != "\x80\x14\x00\x01" || x.Acceptable() {
				t.Fatalf("%+v", x)
			}
		}},
		{name: "unknown TLV attribute kept", t: PayloadSA, body: one(0, 21, 0, 2, 7, 7), check: func(t *testing.T, p Payload) {
			if x := tr(p); x.UnknownAttrs != "\x00\x15\x00\x02\x07\x07" || x.Acceptable() {
				t.Fatalf("%+v", x)
			}
		}},
		{name: "Key Length 0 is not understood", t: PayloadSA, body: one(0x80, 14, 0, 0), check: func(t *testing.T, p Payload) {
			if x := tr(p); x.KeyLen != 0 || x.Acceptable() {
				t.Fatalf("%+v", x)
			}
		}},
		{name: "second Key Length is not understood", t: PayloadSA, body: one(0x80, 14, 0, 128, 0x80, 14, 1, 0), check: func(t *testing.T, p Payload) {
			if x := tr(p); x.KeyLen != 128 || x.UnknownAttrs != "\x80\x0e\x01\x00" {
				t.Fatalf("%+v", x)
			}
		}},
	})
}

// RFC 7296 §3.4 to §3.9: the fixed parts of KE, ID, CERT, CERTREQ, AUTH
// and the size of Nonce.
func TestRFC7296_3_4_to_3_9_FixedParts(t *testing.T) {
	runBodyCases(t, []bodyCase{
		{name: "KE of 3 bytes (§3.4)", t: PayloadKE, body: []byte{0, 31, 0}, rule: "RFC 7296 §3.4"},
		{name: "KE group and data (§3.4)", t: PayloadKE, body: cat([]byte{0, 31, 0, 0}, bytesN(32, 0)), check: func(t *testing.T, p Payload) {
			if ke := p.(*KE); ke.Group != DH_CURVE25519 || len(ke.Data) != 32 {
				t.Fatal(ke)
			}
		}},
		{name: "IDi of 3 bytes (§3.5)", t: PayloadIDi, body: []byte{2, 0, 0}, rule: "RFC 7296 §3.5"},
		{name: "ID_IPV4_ADDR of 5 bytes (§3.5)", t: PayloadIDi, body: []byte{1, 0, 0, 0, 1, 2, 3, 4, 5}, rule: "RFC 7296 §3.5"},
		{name: "ID_IPV6_ADDR of 4 bytes (§3.5)", t: PayloadIDr, body: []byte{5, 0, 0, 0, 1, 2, 3, 4}, rule: "RFC 7296 §3.5"},
		{name: "IDr ID_IPV4_ADDR (§3.5)", t: PayloadIDr, body: []byte{1, 0, 0, 0, 192, 0, 2, 1}, check: func(t *testing.T, p Payload) {
			id := p.(*ID)
			if a, ok := id.Addr(); !id.Responder || !ok || a.String() != "192.0.2.1" {
				t.Fatal(id)
			}
		}},
		{name: "CERT without encoding (§3.6)", t: PayloadCERT, body: nil, rule: "RFC 7296 §3.6"},
		{name: "CERTREQ without encoding (§3.7)", t: PayloadCERTREQ, body: nil, rule: "RFC 7296 §3.7"},
		{name: "CERTREQ with no authorities (§3.7)", t: PayloadCERTREQ, body: []byte{4}},
		{name: "AUTH of 3 bytes (§3.8)", t: PayloadAUTH, body: []byte{2, 0, 0}, rule: "RFC 7296 §3.8"},
		{name: "AUTH method and data (§3.8)", t: PayloadAUTH, body: []byte{14, 0, 0, 0, 1}, check: func(t *testing.T, p Payload) {
			if a := p.(*Auth); a.Method != AUTH_METHOD_DIGITAL_SIGNATURE || string(a.Data) != "\x01" {
				t.Fatal(a)
			}
		}},
		{name: "Nonce of 15 bytes (§3.9)", t: PayloadNonce, body: bytesN(15, 0), rule: "RFC 7296 §3.9"},
		{name: "Nonce of 257 bytes (§3.9)", t: PayloadNonce, body: make([]byte, 257), rule: "RFC 7296 §3.9"},
		{name: "empty Nonce (§3.9)", t: PayloadNonce, body: nil, rule: "RFC 7296 §3.9"},
		{name: "Nonce of 16 bytes (§3.9)", t: PayloadNonce, body: bytesN(16, 0)},
		{name: "Nonce of 256 bytes (§3.9)", t: PayloadNonce, body: make([]byte, 256)},
	})
}

// RFC 7296 §3.10: Notify and its SPI.
func TestRFC7296_3_10_Notify(t *testing.T) {
	const r = "RFC 7296 §3.10"
	n := func(proto ProtocolID, spiSize byte, typ NotifyType, rest ...byte) []byte {
		return append([]byte{byte(proto), spiSize, byte(typ >> 8), byte(typ)}, rest...)
	}
	runBodyCases(t, []bodyCase{
		{name: "3 bytes", t: PayloadNotify, body: []byte{0, 0, 0x40}, rule: r},
		{name: "IKE SA notification with an SPI", t: PayloadNotify, body: n(ProtoIKE, 8, INVALID_SPI, bytesN(8, 0)...), rule: r},
		{name: "IKE with SPI Size 4", t: PayloadNotify, body: n(ProtoIKE, 4, REKEY_SA, 1, 2, 3, 4), rule: r},
		{name: "ESP SPI Size 8", t: PayloadNotify, body: n(ProtoESP, 8, REKEY_SA, bytesN(8, 0)...), rule: r},
		{name: "SPI Size 4 without a protocol", t: PayloadNotify, body: n(0, 4, REKEY_SA, 1, 2, 3, 4), rule: r},
		{name: "SPI overruns the body", t: PayloadNotify, body: n(ProtoESP, 4, REKEY_SA, 1, 2), rule: r},
		{name: "ESP REKEY_SA", t: PayloadNotify, body: n(ProtoESP, 4, REKEY_SA, 1, 2, 3, 4), check: func(t *testing.T, p Payload) {
			if x := p.(*Notify); x.Protocol != ProtoESP || string(x.SPI) != "\x01\x02\x03\x04" || x.Data != nil {
				t.Fatal(x)
			}
		}},
		{name: "AH with SPI and data", t: PayloadNotify, body: n(ProtoAH, 4, INVALID_SELECTORS, 1, 2, 3, 4, 9, 9), check: func(t *testing.T, p Payload) {
			if x := p.(*Notify); string(x.SPI) != "\x01\x02\x03\x04" || string(x.Data) != "\x09\x09" {
				t.Fatal(x)
			}
		}},
		{name: "empty SPI: Protocol ignored, kept as sent", t: PayloadNotify, body: n(ProtoESP, 0, USE_TRANSPORT_MODE), check: func(t *testing.T, p Payload) {
			if x := p.(*Notify); x.Protocol != ProtoESP || x.SPI != nil {
				t.Fatal(x)
			}
		}},
		{name: "unknown type kept", t: PayloadNotify, body: n(0, 0, 40000, 1), check: func(t *testing.T, p Payload) {
			if x := p.(*Notify); x.NotifyType != 40000 || x.NotifyType.IsError() {
				t.Fatal(x)
			}
		}},
	})
}

// RFC 7296 §3.11: Delete.
func TestRFC7296_3_11_Delete(t *testing.T) {
	const r = "RFC 7296 §3.11"
	runBodyCases(t, []bodyCase{
		{name: "3 bytes", t: PayloadDelete, body: []byte{1, 0, 0}, rule: r},
		{name: "the IKE SA", t: PayloadDelete, body: []byte{1, 0, 0, 0}, check: func(t *testing.T, p Payload) {
			if d := p.(*Delete); d.Protocol != ProtoIKE || d.SPIs != nil {
				t.Fatal(d)
			}
		}},
		{name: "IKE with SPI Size 8", t: PayloadDelete, body: cat([]byte{1, 8, 0, 1}, bytesN(8, 0)), rule: r},
		{name: "IKE with SPI Size 0 but a count", t: PayloadDelete, body: []byte{1, 0, 0, 1}, rule: r},
		{name: "two ESP SAs", t: PayloadDelete, body: []byte{3, 4, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8}, check: func(t *testing.T, p Payload) {
			if d := p.(*Delete); len(d.SPIs) != 2 || string(d.SPIs[1]) != "\x05\x06\x07\x08" || d.SPISize != 4 {
				t.Fatal(d)
			}
		}},
		{name: "AH", t: PayloadDelete, body: []byte{2, 4, 0, 1, 1, 2, 3, 4}},
		{name: "ESP with SPI Size 8", t: PayloadDelete, body: cat([]byte{3, 8, 0, 1}, bytesN(8, 0)), rule: r},
		{name: "ESP with SPI Size 0", t: PayloadDelete, body: []byte{3, 0, 0, 0}, rule: r},
		{name: "protocol 4", t: PayloadDelete, body: []byte{4, 4, 0, 0}, rule: r},
		{name: "protocol 0", t: PayloadDelete, body: []byte{0, 0, 0, 0}, rule: r},
		{name: "fewer SPIs than the count", t: PayloadDelete, body: []byte{3, 4, 0, 2, 1, 2, 3, 4}, rule: r},
		{name: "more bytes than the count", t: PayloadDelete, body: []byte{3, 4, 0, 1, 1, 2, 3, 4, 5}, rule: r},
		{name: "count 65535, no SPIs", t: PayloadDelete, body: []byte{3, 4, 0xff, 0xff}, rule: r},
	})
}

// RFC 7296 §3.13, §3.13.1: traffic selectors.
func TestRFC7296_3_13_1_TrafficSelectors(t *testing.T) {
	const r = "RFC 7296 §3.13.1"
	v4 := func(proto byte, sp, ep uint16, start, end string) []byte {
		b := []byte{7, proto, 0, 16, byte(sp >> 8), byte(sp), byte(ep >> 8), byte(ep)}
		for _, s := range []string{start, end} {
			var a [4]byte
			copy(a[:], hx(s))
			b = append(b, a[:]...)
		}
		return b
	}
	v6 := cat([]byte{8, 0, 0, 40, 0, 0, 0xff, 0xff}, hx("fd000002000000000000000000000000"), hx("fd000002000000000000ffffffffffff"))
	ts := func(n byte, sels ...[]byte) []byte { return cat([]byte{n, 0, 0, 0}, cat(sels...)) }
	all := v4(0, 0, 65535, "0a010000", "0a0100ff")
	runBodyCases(t, []bodyCase{
		{name: "3 bytes (§3.13)", t: PayloadTSi, body: []byte{1, 0, 0}, rule: "RFC 7296 §3.13"},
		{name: "IPv4 and IPv6", t: PayloadTSr, body: ts(2, all, v6), check: func(t *testing.T, p Payload) {
			x := p.(*TS)
			if !x.Responder || len(x.Selectors) != 2 || x.Selectors[0].End.String() != "10.1.0.255" || x.Selectors[1].Start.String() != "fd00:2::" || x.Selectors[0].EndPort != 65535 {
				t.Fatalf("%+v", x)
			}
		}},
		{name: "no selectors", t: PayloadTSi, body: ts(0)},
		{name: "TS Type 9", t: PayloadTSi, body: ts(1, setLen(all, 0, 0x0900)), rule: r},
		{name: "TS Type 10 (security label) not accepted", t: PayloadTSi, body: ts(1, setLen(all, 0, 0x0a00)), rule: r},
		{name: "IPv4 with Selector Length 40", t: PayloadTSi, body: ts(1, setLen(all, 2, 40)), rule: r},
		{name: "IPv6 with Selector Length 16", t: PayloadTSi, body: ts(1, setLen(v6, 2, 16)), rule: r},
		{name: "selector cut short", t: PayloadTSi, body: ts(1, all[:12]), rule: r},
		{name: "3 bytes of selector", t: PayloadTSi, body: ts(1, all[:3]), rule: r},
		{name: "count says 2, one there", t: PayloadTSi, body: ts(2, all), rule: r},
		{name: "bytes after the selectors (§3.13)", t: PayloadTSi, body: ts(1, all, []byte{0}), rule: "RFC 7296 §3.13"},
		{name: "count says 1, two there (§3.13)", t: PayloadTSi, body: ts(1, all, all), rule: "RFC 7296 §3.13"},
		{name: "start address after end", t: PayloadTSi, body: ts(1, v4(0, 0, 65535, "0a0100ff", "0a010000")), rule: r},
		{name: "start port after end", t: PayloadTSi, body: ts(1, v4(6, 443, 80, "0a010000", "0a0100ff")), rule: r},
		{name: "OPAQUE ports (65535, 0)", t: PayloadTSi, body: ts(1, v4(17, 65535, 0, "0a010000", "0a010000"))},
		{name: "single address and port", t: PayloadTSi, body: ts(1, v4(132, 5000, 5000, "c0000201", "c0000201"))},
	})
}

// RFC 7296 §3.15, §3.15.1: the Configuration payload and its attributes.
func TestRFC7296_3_15_1_ConfigurationAttributes(t *testing.T) {
	const r = "RFC 7296 §3.15.1"
	cp := func(attrs ...byte) []byte { return append([]byte{CFG_REPLY, 0, 0, 0}, attrs...) }
	runBodyCases(t, []bodyCase{
		{name: "3 bytes (§3.15)", t: PayloadCP, body: []byte{1, 0, 0}, rule: "RFC 7296 §3.15"},
		{name: "no attributes", t: PayloadCP, body: cp()},
		{name: "request for an address and DNS", t: PayloadCP, body: cp(0, 1, 0, 0, 0, 3, 0, 0, 0, 8, 0, 0)},
		{name: "3 bytes of attribute", t: PayloadCP, body: cp(0, 1, 0), rule: r},
		{name: "Length overruns", t: PayloadCP, body: cp(0, 1, 0, 4, 10, 0, 0), rule: r},
		{name: "INTERNAL_IP4_ADDRESS of 5 bytes", t: PayloadCP, body: cp(0, 1, 0, 5, 10, 0, 0, 1, 0), rule: r},
		{name: "INTERNAL_IP6_ADDRESS of 16 bytes", t: PayloadCP, body: cp(cat([]byte{0, 8, 0, 16}, make([]byte, 16))...), rule: r},
		{name: "INTERNAL_IP6_DNS of 17 bytes", t: PayloadCP, body: cp(cat([]byte{0, 10, 0, 17}, make([]byte, 17))...), rule: r},
		{name: "INTERNAL_IP4_SUBNET of 4 bytes", t: PayloadCP, body: cp(0, 13, 0, 4, 10, 0, 0, 0), rule: r},
		{name: "SUPPORTED_ATTRIBUTES of 3 bytes", t: PayloadCP, body: cp(0, 14, 0, 3, 0, 1, 0), rule: r},
		{name: "R bit ignored", t: PayloadCP, body: cp(0x80, 1, 0, 4, 100, 64, 0, 7), check: func(t *testing.T, p Payload) {
			a := p.(*CP).Attrs[0]
			if got, ok := a.Addr(); a.Type != INTERNAL_IP4_ADDRESS || !ok || got.String() != "100.64.0.7" {
				t.Fatal(a)
			}
		}},
		{name: "unknown attribute of any length", t: PayloadCP, body: cp(0x70, 0, 0, 3, 1, 2, 3)},
	})
}

// RFC 7296 §3.14 and RFC 7383 §2.5: SK and SKF end the message; SKF
// numbers its fragments from 1 to Total Fragments.
func TestRFC7296_3_14_EncryptedIsLast(t *testing.T) {
	skThenMore := append(rawChainBytes(raw{t: PayloadSK, body: bytesN(20, 0)}), 0, 0, 0, 4)
	skfThenMore := append(rawChainBytes(raw{t: PayloadSKF, body: cat([]byte{0, 1, 0, 1}, bytesN(20, 0))}), 0)
	runBodyCases(t, []bodyCase{
		{name: "SK followed by bytes", t: PayloadSK, chain: skThenMore, rule: "RFC 7296 §3.14"},
		{name: "SKF followed by bytes", t: PayloadSKF, chain: skfThenMore, rule: "RFC 7383 §2.5"},
		{name: "SK after a plaintext payload", t: PayloadNotify, chain: rawChainBytes(raw{t: PayloadNotify, body: []byte{0, 0, 0x40, 0}}, raw{t: PayloadSK, body: bytesN(20, 0)}), check: func(t *testing.T, p Payload) {}},
		{name: "empty SK", t: PayloadSK, body: nil},
		{name: "SKF of 3 bytes", t: PayloadSKF, body: []byte{0, 1, 0}, rule: "RFC 7383 §2.5"},
		{name: "SKF fragment 0", t: PayloadSKF, body: []byte{0, 0, 0, 1}, rule: "RFC 7383 §2.5"},
		{name: "SKF of 0 fragments", t: PayloadSKF, body: []byte{0, 1, 0, 0}, rule: "RFC 7383 §2.5"},
		{name: "SKF fragment 3 of 2", t: PayloadSKF, body: []byte{0, 3, 0, 2}, rule: "RFC 7383 §2.5"},
		{name: "SKF fragment 2 of 2", t: PayloadSKF, body: cat([]byte{0, 2, 0, 2}, bytesN(8, 0)), check: func(t *testing.T, p Payload) {
			if e := p.(*Encrypted); !e.Fragment || e.FragNum != 2 || e.TotalFrags != 2 || len(e.Body) != 8 || e.AADLen != 8 {
				t.Fatalf("%+v", e)
			}
		}},
	})
}

func rawChainBytes(ps ...raw) []byte {
	_, b := rawChain(ps...)
	return b
}
