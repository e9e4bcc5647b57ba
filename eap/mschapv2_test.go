package eap

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// RFC 2759 §9.2's example, step by step.
var (
	rfcUser          = "User"
	rfcPassword      = "clientPass"
	rfcAuthChallenge = unhex("5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28")
	rfcPeerChallenge = unhex("21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E")
	rfcChallengeHash = unhex("D0 2E 43 86 BC E9 12 26")
	rfcPasswordHash  = unhex("44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE")
	rfcNTResponse    = unhex("82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF")
	rfcAuthResponse  = unhex("407A5589115FD0D6209F510FE9C04566932CDA56")
)

func TestRFC2759_9_2_Example(t *testing.T) {
	m := NewMSCHAPv2(rfcUser, []byte(rfcPassword))
	if got := ntPasswordHash(m.password); !bytes.Equal(got, rfcPasswordHash) {
		t.Fatalf("PasswordHash %X", got)
	}
	if got := challengeHash(rfcPeerChallenge, rfcAuthChallenge, rfcUser); !bytes.Equal(got, rfcChallengeHash) {
		t.Fatalf("ChallengeHash %X", got)
	}
	if got := generateNTResponse(rfcAuthChallenge, rfcPeerChallenge, rfcUser, rfcPasswordHash); !bytes.Equal(got[:], rfcNTResponse) {
		t.Fatalf("NT-Response %X", got)
	}
	if got := authenticatorResponse(rfcPasswordHash, rfcNTResponse, rfcPeerChallenge, rfcAuthChallenge, rfcUser); !bytes.Equal(got[:], rfcAuthResponse) {
		t.Fatalf("AuthenticatorResponse %X", got)
	}
	// RFC 2759 §8.2: a domain before the user name is not hashed.
	if got := challengeHash(rfcPeerChallenge, rfcAuthChallenge, `EXAMPLE\User`); !bytes.Equal(got, rfcChallengeHash) {
		t.Fatalf("ChallengeHash with a domain %X", got)
	}
}

// RFC 3079 §3.5.3: the master key of the RFC 2759 example.
func TestRFC3079_3_5_MasterKey(t *testing.T) {
	if got := masterKey(rfcPasswordHash, rfcNTResponse); !bytes.Equal(got, unhex("FD EC E3 71 7A 8C 83 8C B3 88 E5 27 AE 3C DD 31")) {
		t.Fatalf("MasterKey %X", got)
	}
}

// TestEAPMSCHAPv2Conversation: Challenge → Response (checked the way a
// server checks it), Success with the right authenticator → MSK; a
// Success with a wrong one, or before our Response, is refused; a Failure
// is an error.
func TestEAPMSCHAPv2Conversation(t *testing.T) {
	m := NewMSCHAPv2(rfcUser, []byte(rfcPassword))
	if _, err := m.Respond(packet(CodeRequest, 7, TypeMSCHAPv2, append([]byte{opSuccess, 1, 0, 0}, "S=00"...))); err == nil {
		t.Fatal("Success before the Response accepted")
	}
	ch := append([]byte{opChallenge, 1, 0, 0, 16}, rfcAuthChallenge...)
	ch = append(ch, "freeradius"...)
	resp, err := m.Respond(packet(CodeRequest, 2, TypeMSCHAPv2, ch))
	if err != nil {
		t.Fatal(err)
	}
	if resp[0] != CodeResponse || resp[1] != 2 || resp[4] != TypeMSCHAPv2 || resp[5] != opResponse || resp[9] != 49 {
		t.Fatalf("response %X", resp)
	}
	peer, nt := resp[10:26], resp[34:58]
	if want := generateNTResponse(rfcAuthChallenge, peer, rfcUser, rfcPasswordHash); !bytes.Equal(nt, want[:]) || string(resp[59:]) != rfcUser {
		t.Fatalf("NT-Response or name wrong: %X", resp)
	}
	if m.MSK() != nil {
		t.Fatal("MSK before the server proved itself")
	}
	bad := append([]byte{opSuccess, 1, 0, 0}, "S=0000000000000000000000000000000000000000 M=ok"...)
	if _, err := m.Respond(packet(CodeRequest, 3, TypeMSCHAPv2, bad)); err == nil {
		t.Fatal("a wrong authenticator response accepted")
	}
	ar := authenticatorResponse(rfcPasswordHash, nt, peer, rfcAuthChallenge, rfcUser)
	good := append([]byte{opSuccess, 1, 0, 0}, "S="+strings.ToUpper(hex.EncodeToString(ar[:]))+" M=welcome"...)
	out, err := m.Respond(packet(CodeRequest, 3, TypeMSCHAPv2, good))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, []byte{CodeResponse, 3, 0, 6, TypeMSCHAPv2, opSuccess}) {
		t.Fatalf("success response %X", out)
	}
	if k := m.MSK(); len(k) != 64 || !bytes.Equal(k[32:], make([]byte, 32)) {
		t.Fatalf("MSK %X", k)
	}
	m.Wipe()
	if m.MSK() != nil || !bytes.Equal(m.password, make([]byte, len(m.password))) {
		t.Fatal("Wipe left secrets")
	}
	if _, err := NewMSCHAPv2("u", []byte("p")).Respond(packet(CodeRequest, 4, TypeMSCHAPv2, append([]byte{opFailure, 1, 0, 0}, "E=691 R=0 M=bad"...))); err == nil {
		t.Fatal("Failure is no error")
	}
}

// FuzzMSCHAPv2: any request the gateway relays is answered or refused
// with an error, never a panic.
func FuzzMSCHAPv2(f *testing.F) {
	ch := append([]byte{opChallenge, 1, 0, 0, 16}, rfcAuthChallenge...)
	f.Add(packet(CodeRequest, 2, TypeMSCHAPv2, append(ch, 'x')), []byte("S=00 M=x"))
	f.Add([]byte{1, 1, 0, 5, 26}, []byte{})
	f.Fuzz(func(t *testing.T, first, second []byte) {
		m := NewMSCHAPv2("u", []byte("p"))
		m.Respond(first)
		m.Respond(packet(CodeRequest, 3, TypeMSCHAPv2, append([]byte{opSuccess, 1, 0, 0}, second...)))
		if m.MSK() != nil && !m.answered {
			t.Fatal("MSK without a Response")
		}
	})
}
