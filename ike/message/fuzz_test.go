package message

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// seeds are the captured strongSwan datagrams, a message with every
// payload, a fragment, and a few broken ones.
func seeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, file := range []string{"strongswan-default.txt", "strongswan-gcm-fragments.txt"} {
		dgs, _ := captured(f, file)
		for _, d := range dgs {
			out = append(out, d.b)
		}
	}
	m := &Message{Header: Header{Exchange: IKE_AUTH, Flags: FlagInitiator, MsgID: 1}, Payloads: everyPayload()}
	out = append(out, m.Encode())
	skf := &Message{Header: Header{Exchange: IKE_AUTH, MsgID: 1}, Payloads: []Payload{&Encrypted{Fragment: true, Next: PayloadIDi, FragNum: 1, TotalFrags: 2, Body: bytesN(32, 0)}}}
	out = append(out, skf.Encode())
	first, chain := rawChain(raw{t: PayloadSA, body: ike1}, raw{t: 60, critical: true, body: []byte{1}})
	out = append(out, rawMessage(FlagInitiator, first, chain))
	out = append(out, rawMessage(0, PayloadNone, nil), make([]byte, HeaderLen), []byte{0})
	return out
}

// FuzzParse: Parse never panics, fails only with this package's errors,
// and what it accepts re-encodes to the same length, parses back to an
// equal structure, and re-encodes to the same bytes again (the encoding
// is canonical).
func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) && !errors.Is(err, ErrInvalidMajorVersion) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		_ = m.String()
		enc := m.Encode()
		if len(enc) != len(b) {
			t.Fatalf("re-encoded to %d bytes from %d", len(enc), len(b))
		}
		m2, err := Parse(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v\n%x", err, enc)
		}
		m.Raw, m2.Raw = nil, nil
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
		if again := m2.Encode(); !bytes.Equal(again, enc) {
			t.Fatal("encoding is not canonical")
		}
	})
}

// FuzzParsePayloads: the same for a bare chain, as found inside SK.
func FuzzParsePayloads(f *testing.F) {
	for _, s := range seeds(f) {
		if len(s) > HeaderLen {
			f.Add(s[16], s[HeaderLen:])
		}
	}
	first, chain := EncodePayloads(everyPayload())
	f.Add(byte(first), chain)
	f.Add(byte(PayloadNone), []byte{})
	f.Fuzz(func(t *testing.T, first byte, b []byte) {
		ps, err := ParsePayloads(PayloadType(first), b)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		f2, enc := EncodePayloads(ps)
		if f2 != PayloadType(first) || len(enc) != len(b) {
			t.Fatalf("re-encoded as %v, %d bytes; was %v, %d", f2, len(enc), PayloadType(first), len(b))
		}
		ps2, err := ParsePayloads(f2, enc)
		if err != nil {
			t.Fatalf("re-encoded chain does not parse: %v", err)
		}
		if !reflect.DeepEqual(ps, ps2) {
			t.Fatalf("round trip changed the chain:\n%+v\n%+v", ps, ps2)
		}
		if _, again := EncodePayloads(ps2); !bytes.Equal(again, enc) {
			t.Fatal("encoding is not canonical")
		}
	})
}

// FuzzScanInit: the cookie path's scanner never panics, returns slices of
// its input, and agrees with the full parser on the Nonce and the first
// payload's COOKIE whenever both accept the message.
func FuzzScanInit(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		cookie, nonce, err := ScanInit(b, h)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		m, perr := Parse(b)
		if perr != nil {
			return // the scanner checks less than the parser
		}
		n := Find[*Nonce](m.Payloads)
		if n == nil {
			return // a Nonce inside an unknown critical payload's place, etc.
		}
		var first []byte
		if c, ok := m.Payloads[0].(*Notify); ok && c.NotifyType == COOKIE {
			first = c.Data
		}
		if len(FindAll[*Nonce](m.Payloads)) == 1 && !bytes.Equal(n.Data, nonce) {
			t.Fatalf("nonce %x, parser says %x", nonce, n.Data)
		}
		if !bytes.Equal(first, cookie) {
			t.Fatalf("cookie %x, parser says %x", cookie, first)
		}
	})
}
