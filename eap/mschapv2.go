// Package eap is the road warrior's side of EAP methods (the peer, RFC
// 3748): EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2, MS-CHAPv2 of RFC
// 2759, the MSK of RFC 3079 as strongSwan and hostapd lay it out).
package eap

import (
	"bytes"
	"crypto/des"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"

	"golang.org/x/crypto/md4" //nolint:staticcheck // RFC 2759 §8.3 NtPasswordHash is MD4
)

// EAP codes and types (RFC 3748 §4, §5).
const (
	CodeRequest  = 1
	CodeResponse = 2
	CodeSuccess  = 3
	CodeFailure  = 4

	TypeIdentity = 1
	TypeNak      = 3
	TypeMSCHAPv2 = 26
)

// MS-CHAPv2 OpCodes (draft-kamath-pppext-eap-mschapv2 §2).
const (
	opChallenge = 1
	opResponse  = 2
	opSuccess   = 3
	opFailure   = 4
)

// MSCHAPv2 is the peer side of one EAP-MSCHAPv2 conversation.
type MSCHAPv2 struct {
	User     string
	password []byte // UTF-16LE, zeroed by Wipe

	ntResponse [24]byte
	authResp   [20]byte // the AuthenticatorResponse we expect (RFC 2759 §8.7)
	msk        []byte
	answered   bool // we sent our Response: a Success request may come
	done       bool // the server proved it knows the password
}

// NewMSCHAPv2 starts a conversation for user with password (the caller
// may zero password afterwards).
func NewMSCHAPv2(user string, password []byte) *MSCHAPv2 {
	u := utf16.Encode([]rune(string(password)))
	pw := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(pw[2*i:], c)
	}
	return &MSCHAPv2{User: user, password: pw}
}

// Type is the EAP method type.
func (m *MSCHAPv2) Type() uint8 { return TypeMSCHAPv2 }

// MSK is the Master Session Key once the server's Success has been
// verified; nil before.
func (m *MSCHAPv2) MSK() []byte {
	if !m.done {
		return nil
	}
	return m.msk
}

// Wipe zeroes the password and the keys.
func (m *MSCHAPv2) Wipe() {
	clear(m.password)
	clear(m.msk)
	clear(m.authResp[:])
	m.done = false
}

// Respond answers one EAP-Request of type MSCHAPv2 (the whole EAP packet).
func (m *MSCHAPv2) Respond(req []byte) ([]byte, error) {
	if len(req) < 9 || req[0] != CodeRequest || req[4] != TypeMSCHAPv2 || int(binary.BigEndian.Uint16(req[2:])) != len(req) {
		return nil, errors.New("eap-mschapv2: not an MSCHAPv2 request")
	}
	id, data := req[1], req[5:]
	switch data[0] {
	case opChallenge:
		return m.challenge(id, data)
	case opSuccess:
		return m.success(id, data)
	case opFailure:
		return nil, fmt.Errorf("eap-mschapv2: the server refused the password: %s", printable(data[4:]))
	}
	return nil, fmt.Errorf("eap-mschapv2: unexpected OpCode %d", data[0])
}

// challenge answers the server's Challenge: OpCode, MS-CHAPv2-ID,
// MS-Length, Value-Size 16, the Challenge, the server's name; our
// Response carries the Peer-Challenge, 8 reserved zeros, the NT-Response,
// Flags 0, and our name (RFC 2759 §4).
func (m *MSCHAPv2) challenge(id byte, d []byte) ([]byte, error) {
	if len(d) < 5+16 || d[4] != 16 {
		return nil, errors.New("eap-mschapv2: malformed Challenge")
	}
	msID := d[1]
	authChallenge := d[5:21]
	var peerChallenge [16]byte
	rand.Read(peerChallenge[:])
	pwHash := ntPasswordHash(m.password)
	defer clear(pwHash)
	m.ntResponse = generateNTResponse(authChallenge, peerChallenge[:], m.User, pwHash)
	m.authResp = authenticatorResponse(pwHash, m.ntResponse[:], peerChallenge[:], authChallenge, m.User)
	m.msk = msk(pwHash, m.ntResponse[:])
	m.answered = true

	body := []byte{opResponse, msID, 0, 0, 49}
	body = append(body, peerChallenge[:]...)
	body = append(body, make([]byte, 8)...)
	body = append(body, m.ntResponse[:]...)
	body = append(body, 0)
	body = append(body, m.User...)
	binary.BigEndian.PutUint16(body[2:], uint16(len(body)))
	return packet(CodeResponse, id, TypeMSCHAPv2, body), nil
}

// success checks the server's "S=<AuthenticatorResponse> M=<message>"
// (RFC 2759 §5, §8.8): only a server that knows the password can make it.
func (m *MSCHAPv2) success(id byte, d []byte) ([]byte, error) {
	if !m.answered || len(d) < 4 {
		return nil, errors.New("eap-mschapv2: Success before our Response")
	}
	msg := string(d[4:])
	s, _, _ := strings.Cut(msg, " ")
	got, err := hex.DecodeString(strings.TrimPrefix(s, "S="))
	if !strings.HasPrefix(s, "S=") || err != nil || subtle.ConstantTimeCompare(got, m.authResp[:]) != 1 {
		return nil, errors.New("eap-mschapv2: the server's authenticator response is wrong: it does not know the password")
	}
	m.done = true
	return packet(CodeResponse, id, TypeMSCHAPv2, []byte{opSuccess}), nil
}

func packet(code, id, typ byte, body []byte) []byte {
	b := []byte{code, id, 0, 0, typ}
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 32 || r > 126 {
			return '?'
		}
		return r
	}, string(b))
}

// ntPasswordHash is RFC 2759 §8.3: MD4 of the UTF-16LE password.
func ntPasswordHash(pw []byte) []byte {
	h := md4.New()
	h.Write(pw)
	return h.Sum(nil)
}

// challengeHash is RFC 2759 §8.2: the user name without a domain.
func challengeHash(peer, auth []byte, user string) []byte {
	if i := strings.LastIndexByte(user, '\\'); i >= 0 {
		user = user[i+1:]
	}
	h := sha1.New()
	h.Write(peer)
	h.Write(auth)
	h.Write([]byte(user))
	return h.Sum(nil)[:8]
}

// generateNTResponse is RFC 2759 §8.1 with ChallengeResponse (§8.5): the
// 8-byte challenge hash DES-encrypted with three 7-byte pieces of the
// zero-padded password hash.
func generateNTResponse(auth, peer []byte, user string, pwHash []byte) [24]byte {
	ch := challengeHash(peer, auth, user)
	z := make([]byte, 21)
	copy(z, pwHash)
	defer clear(z)
	var out [24]byte
	for i := 0; i < 3; i++ {
		c, _ := des.NewCipher(desKey(z[7*i : 7*i+7]))
		c.Encrypt(out[8*i:], ch)
	}
	return out
}

// desKey spreads 56 bits over 8 bytes (RFC 2759 §8.6; parity ignored).
func desKey(k []byte) []byte {
	return []byte{k[0] & 0xfe, (k[0]<<7 | k[1]>>1) & 0xfe, (k[1]<<6 | k[2]>>2) & 0xfe, (k[2]<<5 | k[3]>>3) & 0xfe,
		(k[3]<<4 | k[4]>>4) & 0xfe, (k[4]<<3 | k[5]>>5) & 0xfe, (k[5]<<2 | k[6]>>6) & 0xfe, k[6] << 1}
}

var (
	magic1 = []byte("Magic server to client signing constant")
	magic2 = []byte("Pad to make it do more than one iteration")
	// RFC 3079 §3.4.
	keyMagic1 = []byte("This is the MPPE Master Key")
	keyMagic2 = []byte("On the client side, this is the send key; on the server side, it is the receive key.")
	keyMagic3 = []byte("On the client side, this is the receive key; on the server side, it is the send key.")
	shsPad1   = make([]byte, 40)
	shsPad2   = bytes.Repeat([]byte{0xf2}, 40)
)

// authenticatorResponse is RFC 2759 §8.7.
func authenticatorResponse(pwHash, ntResp, peer, auth []byte, user string) [20]byte {
	hh := md4.New()
	hh.Write(pwHash)
	pwHashHash := hh.Sum(nil)
	h := sha1.New()
	h.Write(pwHashHash)
	h.Write(ntResp)
	h.Write(magic1)
	digest := h.Sum(nil)
	h.Reset()
	h.Write(digest)
	h.Write(challengeHash(peer, auth, user))
	h.Write(magic2)
	var out [20]byte
	copy(out[:], h.Sum(nil))
	return out
}

// masterKey is RFC 3079 §3.4 GetMasterKey.
func masterKey(pwHash, ntResp []byte) []byte {
	hh := md4.New()
	hh.Write(pwHash)
	h := sha1.New()
	h.Write(hh.Sum(nil))
	h.Write(ntResp)
	h.Write(keyMagic1)
	return h.Sum(nil)[:16]
}

// startKey is RFC 3079 §3.4 GetAsymmetricStartKey with 16-byte keys.
func startKey(master, magic []byte) []byte {
	h := sha1.New()
	h.Write(master)
	h.Write(shsPad1)
	h.Write(magic)
	h.Write(shsPad2)
	return h.Sum(nil)[:16]
}

// msk is EAP-MSCHAPv2's MSK: the server's receive key (our send key),
// the server's send key, 32 zeros; what the RADIUS server hands the
// gateway as MS-MPPE-Recv-Key and -Send-Key.
func msk(pwHash, ntResp []byte) []byte {
	mk := masterKey(pwHash, ntResp)
	out := append(startKey(mk, keyMagic2), startKey(mk, keyMagic3)...)
	clear(mk)
	return append(out, make([]byte, 32)...)
}
