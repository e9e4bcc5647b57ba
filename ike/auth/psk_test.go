package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestPSKKnownVector_RFC7296_2_15 checks AUTH = prf(prf(Shared Secret, "Key
// Pad for IKEv2"), <SignedOctets>) against a value computed outside Go
// (Python's hmac) and against HMAC-SHA256 applied twice by hand.
func TestPSKKnownVector_RFC7296_2_15(t *testing.T) {
	secret := []byte("roamsec-test-secret")
	signed := []byte("InitiatorSignedOctets: message|nonce|maced-id")
	// python3: hmac.new(hmac.new(secret, b"Key Pad for IKEv2", sha256).digest(), signed, sha256)
	want, _ := hex.DecodeString("5d3c8f3b1f37d92dc9fe030a80b3c727f2951b0a990ce4e34572e1c76505d131")

	inner := hmac.New(sha256.New, secret)
	inner.Write([]byte("Key Pad for IKEv2"))
	outer := hmac.New(sha256.New, inner.Sum(nil))
	outer.Write(signed)
	if byHand := outer.Sum(nil); !bytes.Equal(byHand, want) {
		t.Fatalf("test vector disagrees with HMAC by hand: %x", byHand)
	}
	got := PSK(HMACPRF(sha256.New), secret, signed)
	if !bytes.Equal(got, want) {
		t.Fatalf("PSK = %x, want %x", got, want)
	}
	if err := VerifyPSK(HMACPRF(sha256.New), secret, signed, want); err != nil {
		t.Fatalf("VerifyPSK: %v", err)
	}
}

func TestVerifyPSKFailures_RFC7296_2_15(t *testing.T) {
	prf := HMACPRF(sha256.New)
	secret := []byte("s3cr3t-value")
	signed := []byte("octets")
	good := PSK(prf, secret, signed)
	flipped := bytes.Clone(good)
	flipped[5] ^= 1
	for _, tc := range []struct {
		name   string
		prf    PRF
		secret []byte
		signed []byte
		got    []byte
	}{
		{"flipped bit", prf, secret, signed, flipped},
		{"truncated", prf, secret, signed, good[:len(good)-1]},
		{"extended", prf, secret, signed, append(bytes.Clone(good), 0)},
		{"empty", prf, secret, signed, nil},
		{"other secret", prf, []byte("s3cr3t-valuf"), signed, good},
		{"other octets", prf, secret, []byte("octetz"), good},
		{"empty secret refused", prf, nil, signed, PSK(prf, nil, signed)},
		{"no prf", nil, secret, signed, good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyPSK(tc.prf, tc.secret, tc.signed, tc.got)
			if !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("err = %v, want ErrAuthFailed", err)
			}
			if strings.Contains(err.Error(), "s3cr3t") || err.Error() != "authentication failed" {
				t.Fatalf("error text %q says more than \"authentication failed\"", err)
			}
		})
	}
	if PSK(nil, secret, signed) != nil {
		t.Fatal("PSK without PRF should be nil")
	}
}

// TestSignedOctets_RFC7296_2_15: InitiatorSignedOctets = RealMessage1 |
// NonceRData | MACedIDForI, MACedIDForI = prf(SK_pi, RestOfInitIDPayload).
func TestSignedOctets_RFC7296_2_15(t *testing.T) {
	prf := HMACPRF(sha256.New)
	msg, nonce, skp := []byte("IKE_SA_INIT request"), []byte("responder nonce"), []byte("SK_pi")
	id, err := ParseIdentity("rw1.example")
	if err != nil {
		t.Fatal(err)
	}
	body := id.Body()
	if !bytes.Equal(body[:4], []byte{byte(IDFQDN), 0, 0, 0}) || string(body[4:]) != "rw1.example" {
		t.Fatalf("ID body %x: want type, 3 RESERVED zeros, data (RFC 7296 §3.5)", body)
	}
	m := hmac.New(sha256.New, skp)
	m.Write(body)
	want := append(append(append([]byte{}, msg...), nonce...), m.Sum(nil)...)
	if got := SignedOctets(prf, msg, nonce, skp, body); !bytes.Equal(got, want) {
		t.Fatalf("SignedOctets = %x, want %x", got, want)
	}
	if SignedOctets(nil, msg, nonce, skp, body) != nil {
		t.Fatal("SignedOctets without PRF should be nil")
	}
}
