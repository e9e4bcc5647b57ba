package message

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// RFC 7296 §3.1, §3.2: a message with every payload type goes through
// Encode and Parse unchanged, and the encoding is canonical (encoding the
// parsed message again gives the same bytes).
func TestRFC7296_3_RoundTripMessage(t *testing.T) {
	m := &Message{
		Header:   Header{SPIi: 0x1122334455667788, SPIr: 0x99aabbccddeeff00, Exchange: IKE_AUTH, Flags: FlagInitiator, MsgID: 7},
		Payloads: everyPayload(),
	}
	b := m.Encode()
	if m.Header.Version != 0x20 || m.Header.Length != uint32(len(b)) || m.Header.NextPayload != PayloadSA {
		t.Fatalf("Encode left the header %+v", m.Header)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Raw, b) {
		t.Fatal("Raw is not the datagram")
	}
	got.Raw = nil
	if !reflect.DeepEqual(got, m) {
		for i := range m.Payloads {
			if i < len(got.Payloads) && !reflect.DeepEqual(got.Payloads[i], m.Payloads[i]) {
				t.Errorf("payload %d: got %+v, want %+v", i, got.Payloads[i], m.Payloads[i])
			}
		}
		t.Fatalf("header got %+v want %+v", got.Header, m.Header)
	}
	if again := got.Encode(); !bytes.Equal(again, b) {
		t.Fatal("re-encoding a parsed message changed its bytes")
	}
	if mb, err := m.MarshalBinary(); err != nil || !bytes.Equal(mb, b) {
		t.Fatalf("MarshalBinary: %v", err)
	}
}

// RFC 7296 §3.2: each payload alone, as a chain, survives EncodePayloads
// and ParsePayloads; the generic header says its type, length and (only
// for an unknown payload marked so) the critical bit.
func TestRFC7296_3_2_RoundTripEachPayload(t *testing.T) {
	for _, p := range everyPayload() {
		t.Run(p.Type().String(), func(t *testing.T) {
			first, b := EncodePayloads([]Payload{p})
			if first != p.Type() {
				t.Fatalf("first = %v", first)
			}
			if int(b[2])<<8|int(b[3]) != len(b) {
				t.Fatalf("Payload Length %d for %d bytes", int(b[2])<<8|int(b[3]), len(b))
			}
			wantCrit := false
			if u, ok := p.(*Unknown); ok {
				wantCrit = u.Critical
			}
			if (b[1]&0x80 != 0) != wantCrit || b[1]&0x7f != 0 {
				t.Fatalf("flags byte %#x", b[1])
			}
			wantNext := PayloadNone
			if e, ok := p.(*Encrypted); ok {
				wantNext = e.Next
			}
			if PayloadType(b[0]) != wantNext {
				t.Fatalf("Next Payload %v, want %v", PayloadType(b[0]), wantNext)
			}
			ps, err := ParsePayloads(first, b)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 1 || !reflect.DeepEqual(ps[0], p) {
				t.Fatalf("got %+v, want %+v", ps[0], p)
			}
		})
	}
}

// RFC 7383 §2.5: the Encrypted Fragment payload carries Fragment Number and
// Total Fragments before the IV; the AAD runs to the IV, covering them
// (RFC 7383 §2.5.3), and Encode and Parse agree on where that is.
func TestRFC7383_2_5_EncryptedFragment(t *testing.T) {
	for _, e := range []*Encrypted{
		{Fragment: true, Next: PayloadIDi, FragNum: 1, TotalFrags: 3, Body: bytesN(40, 1)},
		{Fragment: true, FragNum: 3, TotalFrags: 3, Body: bytesN(24, 2)},
		{Fragment: true, FragNum: 1, TotalFrags: 1},
	} {
		m := &Message{Header: Header{Exchange: IKE_AUTH, MsgID: 1}, Payloads: []Payload{&Notify{NotifyType: INITIAL_CONTACT}, e}}
		b := m.Encode()
		wantAAD := HeaderLen + 8 + 4 + 4 // header, the notify, SKF's generic header, its numbers
		if e.AADLen != wantAAD {
			t.Fatalf("Encode set AADLen %d, want %d", e.AADLen, wantAAD)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		ge := Find[*Encrypted](got.Payloads)
		if ge.AADLen != wantAAD || !bytes.Equal(b[ge.AADLen:], e.Body) || ge.FragNum != e.FragNum || ge.TotalFrags != e.TotalFrags || ge.Next != e.Next {
			t.Fatalf("parsed %+v from %+v", ge, e)
		}
		if got.Header.NextPayload != PayloadNotify || b[HeaderLen] != byte(PayloadSKF) {
			t.Fatal("chain links wrong")
		}
	}
}

// RFC 7296 §3.14, RFC 5282 §5.1: the associated data of SK is the message
// up to the IV: header, any plaintext payloads before SK and SK's generic
// header.
func TestRFC5282_5_1_AADLen(t *testing.T) {
	e := &Encrypted{Next: PayloadIDi, Body: bytesN(48, 9)}
	m := &Message{Header: Header{Exchange: IKE_AUTH}, Payloads: []Payload{e}}
	b := m.Encode()
	if e.AADLen != HeaderLen+4 || !bytes.Equal(b[e.AADLen:], e.Body) {
		t.Fatalf("AADLen %d", e.AADLen)
	}
	first, chain := EncodePayloads([]Payload{&VendorID{Data: []byte("x")}, e})
	if first != PayloadVendorID || e.AADLen != 5+4 || !bytes.Equal(chain[e.AADLen:], e.Body) {
		t.Fatalf("EncodePayloads AADLen %d", e.AADLen)
	}
}

// RFC 7296 §2.15: IDx' is the ID payload body, type, reserved and data.
func TestRFC7296_2_15_IDBody(t *testing.T) {
	id := &ID{IDType: ID_FQDN, Data: []byte("gw")}
	if got := id.Body(); !bytes.Equal(got, []byte{2, 0, 0, 0, 'g', 'w'}) {
		t.Fatalf("Body = %x", got)
	}
	_, b := EncodePayloads([]Payload{id})
	if !bytes.Equal(b[4:], id.Body()) {
		t.Fatal("Body differs from the encoded payload body")
	}
	for _, a := range []string{"192.0.2.1", "2001:db8::1", "::ffff:192.0.2.2"} {
		addr := netip.MustParseAddr(a)
		id := IDFromAddr(true, addr)
		got, ok := id.Addr()
		if !ok || got != addr.Unmap() || id.Type() != PayloadIDr {
			t.Fatalf("%s: %v %v %v", a, got, ok, id.Type())
		}
	}
}

// RFC 7296 §3.15.1: attribute values for addresses, IPv6 prefixes (address
// and prefix length) and IPv4 subnets (address and netmask).
func TestRFC7296_3_15_1_CPAttrValues(t *testing.T) {
	a := CPAttrAddr(INTERNAL_IP4_DNS, netip.MustParseAddr("192.0.2.53"))
	if got, ok := a.Addr(); !ok || got.String() != "192.0.2.53" || len(a.Value) != 4 {
		t.Fatal(got, ok)
	}
	for _, tc := range []struct {
		typ  uint16
		p    string
		wlen int
	}{
		{INTERNAL_IP6_ADDRESS, "fd00::7/64", 17},
		{INTERNAL_IP6_SUBNET, "fd00:1::/48", 17},
		{INTERNAL_IP4_SUBNET, "10.2.0.0/16", 8},
		{INTERNAL_IP4_SUBNET, "0.0.0.0/0", 8},
		{INTERNAL_IP4_SUBNET, "10.0.0.1/32", 8},
	} {
		a := CPAttrPrefix(tc.typ, netip.MustParsePrefix(tc.p))
		got, ok := a.Prefix()
		if len(a.Value) != tc.wlen || !ok || got.String() != tc.p {
			t.Errorf("%s: %x -> %v %v", tc.p, a.Value, got, ok)
		}
	}
	if _, ok := (CPAttr{Value: []byte{10, 0, 0, 0, 255, 0, 255, 0}}).Prefix(); ok {
		t.Error("non-contiguous netmask accepted")
	}
	if _, ok := (CPAttr{Value: append(make([]byte, 16), 129)}).Prefix(); ok {
		t.Error("prefix length 129 accepted")
	}
}

// RFC 7296 §3.13.1: a prefix becomes the range from its first to its last
// address, all ports, any protocol.
func TestRFC7296_3_13_1_SelectorFromPrefix(t *testing.T) {
	for _, tc := range []struct{ p, start, end string }{
		{"10.1.0.0/24", "10.1.0.0", "10.1.0.255"},
		{"10.1.2.3/20", "10.1.0.0", "10.1.15.255"},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255"},
		{"192.0.2.1/32", "192.0.2.1", "192.0.2.1"},
		{"fd00:2::/64", "fd00:2::", "fd00:2::ffff:ffff:ffff:ffff"},
		{"::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	} {
		s := SelectorFromPrefix(netip.MustParsePrefix(tc.p))
		if s.Start.String() != tc.start || s.End.String() != tc.end || s.StartPort != 0 || s.EndPort != 65535 || s.Proto != 0 {
			t.Errorf("%s: %+v", tc.p, s)
		}
	}
}

// RFC 7296 §3.2: EncodePayloads links payloads in order, skips nil
// entries, and ends the chain with 0.
func TestRFC7296_3_2_ChainLinks(t *testing.T) {
	var nilSA *SA
	ps := []Payload{nil, &Nonce{Data: bytesN(16, 0)}, nilSA, &Notify{NotifyType: COOKIE2, Data: []byte{1}}, &KE{Group: 19}, nil}
	first, b := EncodePayloads(ps)
	if first != PayloadNonce {
		t.Fatalf("first %v", first)
	}
	got, err := ParsePayloads(first, b)
	if err != nil {
		t.Fatal(err)
	}
	var types []PayloadType
	for _, p := range got {
		types = append(types, p.Type())
	}
	if !reflect.DeepEqual(types, []PayloadType{PayloadNonce, PayloadNotify, PayloadKE}) {
		t.Fatalf("chain %v", types)
	}
	if first, b := EncodePayloads(nil); first != PayloadNone || len(b) != 0 {
		t.Fatal("empty chain")
	}
	if ps, err := ParsePayloads(PayloadNone, nil); err != nil || len(ps) != 0 {
		t.Fatal("empty chain does not parse")
	}
}

// MarshalBinary and MarshalPayloads refuse what the wire cannot carry or
// what the parser would reject, where Encode cannot say.
func TestMarshalRefusesWhatDoesNotParse(t *testing.T) {
	for name, ps := range map[string][]Payload{
		"SPI over 255 bytes (§3.10)":       {&Notify{SPI: make([]byte, 256)}},
		"payload over 65535 (§3.2)":        {&VendorID{Data: make([]byte, 65532)}},
		"mixed families (§3.13.1)":         {&TS{Selectors: []TrafficSelector{{Start: netip.MustParseAddr("10.0.0.1"), End: netip.MustParseAddr("::1")}}}},
		"no addresses (§3.13.1)":           {&TS{Selectors: []TrafficSelector{{}}}},
		"SK not last (§3.14)":              {&Encrypted{}, &Nonce{Data: bytesN(16, 0)}},
		"short nonce (§3.9)":               {&Nonce{Data: bytesN(15, 0)}},
		"Delete SPI size (§3.11)":          {&Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{{1, 2, 3}}}},
		"proposal numbering (§3.3.1)":      {&SA{Proposals: []Proposal{{Num: 2}, {Num: 3}}}},
		"256 transforms (§3.3.1)":          {&SA{Proposals: []Proposal{{Num: 1, Transforms: make([]Transform, 256)}}}},
		"attribute type 15 bits (§3.15.1)": {&CP{Attrs: []CPAttr{{Type: 0x8001}}}},
		"Unknown of type 0 (§3.2)":         {&Unknown{PType: PayloadNone, Data: []byte{1}}, &Nonce{Data: bytesN(16, 0)}},
	} {
		if _, _, err := MarshalPayloads(ps); err == nil {
			t.Errorf("%s: MarshalPayloads accepted it", name)
		}
		if _, err := (&Message{Payloads: ps}).MarshalBinary(); err == nil {
			t.Errorf("%s: MarshalBinary accepted it", name)
		}
		EncodePayloads(ps) // and does not panic
	}
	if _, _, err := MarshalPayloads(everyPayload()); err != nil {
		t.Fatal(err)
	}
}

// The helpers the state machine uses to pick payloads out of a message.
func TestFindHelpers(t *testing.T) {
	m := &Message{Payloads: everyPayload()}
	if n := m.Notify(REKEY_SA); n == nil || !bytes.Equal(n.SPI, []byte{0xc0, 0xff, 0xee, 0x02}) {
		t.Fatalf("Notify(REKEY_SA) = %+v", n)
	}
	if m.Notify(COOKIE) != nil {
		t.Fatal("found a COOKIE")
	}
	if Find[*Nonce](m.Payloads) == nil || Find[*Encrypted](m.Payloads) == nil {
		t.Fatal("Find")
	}
	if Find[*KE](nil) != nil {
		t.Fatal("Find in nothing")
	}
	if got := len(FindAll[*Notify](m.Payloads)); got != 4 {
		t.Fatalf("FindAll notifies: %d", got)
	}
	if id := FindID(m.Payloads, true); id == nil || id.IDType != ID_IPV6_ADDR {
		t.Fatal("FindID responder")
	}
	if id := FindID(m.Payloads, false); id == nil || id.IDType != ID_FQDN {
		t.Fatal("FindID initiator")
	}
	if ts := FindTS(m.Payloads, true); ts == nil || len(ts.Selectors) != 2 {
		t.Fatal("FindTS responder")
	}
	if ts := FindTS(m.Payloads, false); ts == nil || ts.Responder {
		t.Fatal("FindTS initiator")
	}
	s := m.String()
	for _, want := range []string{"request 0 [ SA KE IDi IDr", "N(REKEY_SA)", "PayloadType(200)(critical)", " SK ]"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q, missing %q", s, want)
		}
	}
}

func TestNames(t *testing.T) {
	for got, want := range map[string]string{
		IKE_AUTH.String():                     "IKE_AUTH",
		ExchangeType(99).String():             "ExchangeType(99)",
		PayloadSKF.String():                   "SKF",
		PayloadType(1).String():               "PayloadType(1)",
		ProtoESP.String():                     "ESP",
		TransformDH.String():                  "DH",
		NAT_DETECTION_DESTINATION_IP.String(): "NAT_DETECTION_DESTINATION_IP",
		MSG_ID_SYN_SUPPORTED.String():         "IKEV2_MESSAGE_ID_SYNC_SUPPORTED",
		NotifyType(40000).String():            "NotifyType(40000)",
		ID_DER_ASN1_DN.String():               "ID_DER_ASN1_DN",
		Transform{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLen: 256}.String(): "ENCR_AES_GCM_16_256",
		Transform{Type: TransformENCR, ID: 99}.String():                           "ENCR(99)",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if !INVALID_SYNTAX.IsError() || INITIAL_CONTACT.IsError() {
		t.Error("IsError")
	}
	// The IANA registry's numbers (RFC 7296 §3.10.1, RFC 4555 §4, RFC
	// 7383 §2.3, RFC 7427 §4, RFC 6311 §5).
	for n, want := range map[NotifyType]uint16{
		UNACCEPTABLE_ADDRESSES: 40, UNEXPECTED_NAT_DETECTED: 41, TEMPORARY_FAILURE: 43, CHILD_SA_NOT_FOUND: 44,
		MOBIKE_SUPPORTED: 16396, NO_NATS_ALLOWED: 16402, EAP_ONLY_AUTHENTICATION: 16417,
		IKEV2_MESSAGE_ID_SYNC_SUPPORTED: 16420, IKEV2_FRAGMENTATION_SUPPORTED: 16430, SIGNATURE_HASH_ALGORITHMS: 16431,
	} {
		if uint16(n) != want {
			t.Errorf("%v = %d, want %d", n, uint16(n), want)
		}
	}
}

// Every error of the parser says which rule; all wrap ErrInvalidSyntax.
func TestSyntaxErrorWraps(t *testing.T) {
	_, err := ParsePayloads(PayloadNonce, []byte{0, 0, 0, 8, 1, 2, 3, 4})
	var se *SyntaxError
	if !errors.Is(err, ErrInvalidSyntax) || !errors.As(err, &se) || se.Payload != PayloadNonce || se.Rule != "RFC 7296 §3.9" {
		t.Fatalf("%v", err)
	}
	if !strings.Contains(err.Error(), "Nonce payload at offset 0") {
		t.Fatal(err)
	}
}
