package auth

import (
	"bytes"
	"testing"
)

var fuzzKeys = []string{"p256", "p384", "p521", "rsa", "ed25519"}

// FuzzVerify: any method, AUTH data and key must give an answer, never a
// panic, and a signature must not verify under another key.
func FuzzVerify(f *testing.F) {
	signed := []byte("fuzz signed octets")
	for i, k := range fuzzKeys {
		for _, peer := range [][]HashAlg{SupportedHashAlgs, nil} {
			c := cred(f, k)
			m, d, err := c.Sign(signed, peer)
			if err != nil {
				continue
			}
			f.Add(m, d, signed, uint8(i))
		}
	}
	c := cred(f, "rsa")
	c.RSAPSS = true
	if m, d, err := c.Sign(signed, SupportedHashAlgs); err == nil {
		f.Add(m, d, signed, uint8(3))
	}
	f.Add(uint8(14), []byte{0}, []byte{}, uint8(0))
	f.Add(uint8(14), []byte{0xff, 0x30}, []byte{}, uint8(3))
	f.Fuzz(func(t *testing.T, method uint8, data, signedOctets []byte, key uint8) {
		name := fuzzKeys[int(key)%len(fuzzKeys)]
		pub := testKey(t, name).Public()
		err := Verify(method, data, signedOctets, pub)
		if err != nil {
			return
		}
		// Whatever verified under this key fails under every other key.
		for _, other := range fuzzKeys {
			if other != name && Verify(method, data, signedOctets, testKey(t, other).Public()) == nil {
				t.Fatalf("method %d data %x verified under %s and %s", method, data, name, other)
			}
		}
	})
}

// FuzzDecodeHashAlgs: decoding never panics, and what decodes encodes back
// to the same bytes (RFC 7427 §4: a plain list of 16-bit values).
func FuzzDecodeHashAlgs(f *testing.F) {
	f.Add(EncodeHashAlgs(SupportedHashAlgs))
	f.Add([]byte{})
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		algs, err := DecodeHashAlgs(b)
		if (err != nil) != (len(b)%2 != 0) {
			t.Fatalf("DecodeHashAlgs(%x): %v", b, err)
		}
		if err == nil && !bytes.Equal(EncodeHashAlgs(algs), b) {
			t.Fatalf("round trip of %x gave %x", b, EncodeHashAlgs(algs))
		}
	})
}

// FuzzParseIdentity: parsing never panics; a parsed identity prints to a
// string that parses back to an equal identity and survives the ID payload
// body. Arbitrary wire identities print without panicking and, when valid,
// round-trip through String too.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1", "2001:db8::1", "user@example.org", "gw.example", "@gw.example", "@@u", "@#0102",
		"keyid:0a0b", "C=CH, O=roamsec, CN=gw", "CN=rw1,O=roamsec", `CN=a\,b+c, OU="x;y"`, "/C=CH/O=x",
		"CN=#0c0378797a", "E=a@b, 2.5.4.3=x", "asn1dn:#300d310b300906035504030c025a20", "fqdn:#00", "email:a=b",
	} {
		f.Add(s, uint8(0), []byte(nil))
	}
	f.Add("", uint8(IDDERASN1DN), []byte{0x30, 0x0b, 0x31, 0x09, 0x30, 0x07, 0x06, 0x03, 0x55, 0x04, 0x03, 0x1e, 0x00})
	f.Add("", uint8(IDFQDN), []byte("a\x00b"))
	f.Fuzz(func(t *testing.T, s string, typ uint8, data []byte) {
		if id, err := ParseIdentity(s); err == nil {
			str := id.String()
			back, err := ParseIdentity(str)
			if err != nil || !back.Equal(id) || back.Type != id.Type {
				t.Fatalf("%q parsed to %v %x, printed %q, which gives %v %x, %v", s, id.Type, id.Data, str, back.Type, back.Data, err)
			}
			wire, err := ParseIDBody(id.Body())
			if err != nil || !wire.Equal(id) {
				t.Fatalf("%q: ID body round trip: %v", s, err)
			}
		}
		raw := Identity{Type: IDType(typ), Data: data}
		str := raw.String()
		_ = raw.Equal(raw)
		if len(data) > 1000 {
			return
		}
		if id, err := ParseIDBody(raw.Body()); err == nil {
			back, err := ParseIdentity(str)
			if err != nil || !back.Equal(id) {
				t.Fatalf("wire %v %x printed %q, which gives %v %x, %v", id.Type, id.Data, str, back.Type, back.Data, err)
			}
		}
	})
}
