package auth

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
)

func TestOneTimeCodeRoundTrip(t *testing.T) {
	k, err := GenerateOneTime("alice")
	if err != nil {
		t.Fatal(err)
	}
	code := k.Code()
	for _, form := range []string{code, strings.ToLower(code), strings.ReplaceAll(code, "-", " "), " " + strings.ReplaceAll(code, "-", "") + "\n"} {
		got, err := ParseOneTimeCode(form)
		if err != nil {
			t.Fatalf("%q: %v", form, err)
		}
		if got.User != "alice" || !bytes.Equal(got.KeyID(), k.KeyID()) || !bytes.Equal(got.GatewaySecret(), k.GatewaySecret()) {
			t.Fatalf("%q: decoded a different key", form)
		}
	}
	if len(code) > 60 {
		t.Errorf("code %q is %d characters: meant to be short", code, len(code))
	}
}

// Seed 002: a key is the user's; a code with one character changed must be
// caught before it is used (the checksum), whichever character it is.
func TestOneTimeCodeChecksumCatchesEveryTypo(t *testing.T) {
	k, _ := GenerateOneTime("bob")
	code := k.Code()
	for i := range code {
		if code[i] == '-' {
			continue
		}
		c := []byte(code)
		if c[i] == 'A' {
			c[i] = 'B'
		} else {
			c[i] = 'A'
		}
		_, err := ParseOneTimeCode(string(c))
		if err == nil {
			t.Fatalf("typo at %d accepted: %s", i, c)
		}
		if !errors.Is(err, ErrCodeChecksum) && !errors.Is(err, ErrCodeFormat) {
			t.Fatalf("typo at %d: %v", i, err)
		}
	}
}

func TestOneTimeCodeRefusesGarbage(t *testing.T) {
	for _, s := range []string{"", "hello", "AAAA-AAAA", strings.Repeat("A", 500), "!!!!"} {
		if _, err := ParseOneTimeCode(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// RFC 7670 + RFC 7427/8420: the raw key travels as a SubjectPublicKeyInfo
// and the signature verifies with it; the identity names key and user.
func TestOneTimeSignsWithRawPublicKey(t *testing.T) {
	k, _ := GenerateOneTime("carol")
	c := k.Credential()
	if !c.Raw || c.CertEncoding() != CertRawPublicKey {
		t.Fatal("not a raw-key credential")
	}
	spki := c.CertPayloads()
	if len(spki) != 1 {
		t.Fatalf("%d CERT payloads", len(spki))
	}
	pub, err := ParseRawPublicKey(spki[0])
	if err != nil || !pub.(ed25519.PublicKey).Equal(k.PublicKey()) {
		t.Fatalf("raw key: %v", err)
	}
	m, sig, err := c.Sign([]byte("octets"), []HashAlg{HashIdentity})
	if err != nil || m != MethodDigitalSignature {
		t.Fatalf("sign: %d %v", m, err)
	}
	if err := Verify(m, sig, []byte("octets"), pub); err != nil {
		t.Fatal(err)
	}
	id, user, err := ParseOneTimeIdentity(k.Identity())
	if err != nil || user != "carol" || !bytes.Equal(id, k.KeyID()) {
		t.Fatalf("identity: %x %q %v", id, user, err)
	}
	k.Zero()
	if !bytes.Equal(c.Key.(ed25519.PrivateKey), make([]byte, ed25519.PrivateKeySize)) {
		t.Fatal("Zero left the private key")
	}
}

func FuzzParseOneTimeCode(f *testing.F) {
	k, _ := GenerateOneTime("fuzz")
	f.Add(k.Code())
	f.Add("")
	f.Add("AAAAA-BBBBB")
	f.Add(strings.ToLower(k.Code()))
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseOneTimeCode(s)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to a code that decodes to the same key.
		k2, err := ParseOneTimeCode(k.Code())
		if err != nil || !bytes.Equal(k2.KeyID(), k.KeyID()) || k2.User != k.User {
			t.Fatalf("%q: re-encoding differs: %v", s, err)
		}
	})
}

func FuzzParseOneTimeIdentity(f *testing.F) {
	k, _ := GenerateOneTime("fuzz")
	f.Add(k.Identity().Data)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseOneTimeIdentity(Identity{Type: IDKeyID, Data: b})
	})
}

// CERT encoding 15 data comes from the peer: garbage is an error.
func FuzzParseRawPublicKey(f *testing.F) {
	k, _ := GenerateOneTime("fuzz")
	spki, _ := RawPublicKey(k.PublicKey())
	f.Add(spki)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseRawPublicKey(b)
	})
}
