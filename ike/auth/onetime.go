package auth

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// One-time key pairs (seed 002, Kuo et al.): a person carries codes; each
// is one Ed25519 key pair that can authenticate exactly once. The mapping
// onto IKEv2 is standard: the road warrior's IDi is ID_KEY_ID (RFC 7296
// §3.5) = key ID || user ID, its AUTH is RFC 7427 Digital Signature with
// Ed25519 (RFC 8420) over the raw public key it sends as CERT encoding 15
// (RFC 7670). The seed's signed request "Request ID || User ID ||
// Objective-ID || Request Info || signature" is §2.15's signed octets: the
// IKE_SA_INIT message with the SPIs and nonces (Request ID, fresh per
// attempt), prf(SK_pi, IDi) (User ID and key ID), and the signature. The
// Objective-ID is the Host's record of the key, not the client's claim.
//
// The gateway proves itself to a client that has no CA with a shared key
// MIC (RFC 7296 §2.15, method 2) under a secret derived from the same code
// that the Host stored when it issued the key: mixed methods are allowed
// (§2.15: "each side ... may use a different authentication method").

const (
	// CertRawPublicKey is the CERT encoding of RFC 7670 §3: a
	// SubjectPublicKeyInfo.
	CertRawPublicKey = 15

	otkVersion    = 1
	otkSecretLen  = 16 // 128 bits: the code's entropy
	otkChecksum   = 4
	otkKeyIDLen   = 8
	otkMaxUserLen = 64
)

// Errors of ParseOneTimeCode: a code mistyped or not ours.
var (
	ErrCodeChecksum = errors.New("auth: one-time code: checksum mismatch (a character mistyped?)")
	ErrCodeFormat   = errors.New("auth: one-time code: not a roamsec one-time code")
)

var otkEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// OneTimeKey is one code: the secret the key pair and the gateway's
// secret derive from, and the user it was issued to.
type OneTimeKey struct {
	User   string
	secret []byte
	priv   ed25519.PrivateKey
}

// GenerateOneTime makes a fresh one-time key for user.
func GenerateOneTime(user string) (*OneTimeKey, error) {
	if err := checkUser(user); err != nil {
		return nil, err
	}
	s := make([]byte, otkSecretLen)
	if _, err := rand.Read(s); err != nil {
		return nil, err
	}
	return newOneTime(user, s), nil
}

func checkUser(user string) error {
	if user == "" || len(user) > otkMaxUserLen || !utf8.ValidString(user) {
		return fmt.Errorf("auth: one-time key: user %q: want 1 to %d bytes of UTF-8", user, otkMaxUserLen)
	}
	for _, r := range user {
		if r < 0x21 || r == 0x7f {
			return fmt.Errorf("auth: one-time key: user %q: no spaces or control characters", user)
		}
	}
	return nil
}

func newOneTime(user string, secret []byte) *OneTimeKey {
	seed := derive(secret, "roamsec one-time ed25519")
	k := &OneTimeKey{User: user, secret: secret, priv: ed25519.NewKeyFromSeed(seed)}
	clear(seed)
	return k
}

// derive is HMAC-SHA-256(secret, label): independent keys from one secret.
func derive(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

func otkSum(payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte("roamsec one-time code"))
	h.Write(payload)
	return h.Sum(nil)[:otkChecksum]
}

// Code is the printable code: base32 (RFC 4648, no padding) of version,
// secret, user and a checksum, in groups of five separated by '-'.
func (k *OneTimeKey) Code() string {
	b := append([]byte{otkVersion}, k.secret...)
	b = append(b, k.User...)
	b = append(b, otkSum(b)...)
	s := otkEncoding.EncodeToString(b)
	clear(b)
	var out strings.Builder
	for i := 0; i < len(s); i += 5 {
		if i > 0 {
			out.WriteByte('-')
		}
		out.WriteString(s[i:min(i+5, len(s))])
	}
	return out.String()
}

// ParseOneTimeCode reads a code as Code prints it; case, '-' and spaces
// do not matter. A mistyped character fails the checksum.
func ParseOneTimeCode(code string) (*OneTimeKey, error) {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ' || r == '\t' || r == '\n' || r == '\r':
			return -1
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, code)
	if len(clean) > 2*(1+otkSecretLen+otkMaxUserLen+otkChecksum) {
		return nil, ErrCodeFormat
	}
	b, err := otkEncoding.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCodeFormat, err)
	}
	defer clear(b)
	if otkEncoding.EncodeToString(b) != clean {
		// The last character's unused bits (RFC 4648 §6) must be zero:
		// a typo there would otherwise decode unnoticed.
		return nil, ErrCodeChecksum
	}
	if len(b) < 1+otkSecretLen+1+otkChecksum || b[0] != otkVersion {
		return nil, ErrCodeFormat
	}
	payload, sum := b[:len(b)-otkChecksum], b[len(b)-otkChecksum:]
	if !hmac.Equal(otkSum(payload), sum) {
		return nil, ErrCodeChecksum
	}
	user := string(payload[1+otkSecretLen:])
	if err := checkUser(user); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCodeFormat, err)
	}
	return newOneTime(user, bytes.Clone(payload[1:1+otkSecretLen])), nil
}

// PublicKey is the key pair's public half.
func (k *OneTimeKey) PublicKey() ed25519.PublicKey {
	return bytes.Clone(k.priv.Public().(ed25519.PublicKey))
}

// KeyID names the key pair: the first 8 octets of SHA-256 of the public key.
func KeyIDOf(pub ed25519.PublicKey) []byte {
	h := sha256.Sum256(pub)
	return h[:otkKeyIDLen]
}

// KeyID is KeyIDOf(k.PublicKey()).
func (k *OneTimeKey) KeyID() []byte { return KeyIDOf(k.PublicKey()) }

// Identity is the IDi a road warrior sends: ID_KEY_ID, key ID || user.
func (k *OneTimeKey) Identity() Identity {
	return OneTimeIdentity(k.KeyID(), k.User)
}

// OneTimeIdentity is the ID_KEY_ID identity of key keyID of user.
func OneTimeIdentity(keyID []byte, user string) Identity {
	return Identity{Type: IDKeyID, Data: append(bytes.Clone(keyID), user...)}
}

// ParseOneTimeIdentity splits an IDi into key ID and user.
func ParseOneTimeIdentity(id Identity) (keyID []byte, user string, err error) {
	if id.Type != IDKeyID || len(id.Data) <= otkKeyIDLen {
		return nil, "", fmt.Errorf("auth: %v is not a one-time key identity (ID_KEY_ID, key ID || user)", id)
	}
	user = string(id.Data[otkKeyIDLen:])
	if err := checkUser(user); err != nil {
		return nil, "", err
	}
	return id.Data[:otkKeyIDLen], user, nil
}

// GatewaySecret is the shared key the gateway authenticates itself with
// to this code's holder (a new slice: the caller zeroes it).
func (k *OneTimeKey) GatewaySecret() []byte {
	return derive(k.secret, "roamsec one-time gateway")
}

// Credential is the key pair as an RFC 7670 raw public key credential.
// It shares the private key's memory: Zero wipes both.
func (k *OneTimeKey) Credential() *Credential {
	return &Credential{Key: k.priv, Raw: true}
}

// Zero wipes the secret and the private key.
func (k *OneTimeKey) Zero() {
	clear(k.secret)
	clear(k.priv)
}

// RawPublicKey is the CERT data of encoding 15 (RFC 7670 §3): the
// SubjectPublicKeyInfo of pub.
func RawPublicKey(pub crypto.PublicKey) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(pub)
}

// ParseRawPublicKey reads CERT encoding 15 data; only key types IKE
// accepts (checkPublic) pass.
func ParseRawPublicKey(spki []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("auth: raw public key: %v", err)
	}
	if _, err := checkPublic(pub); err != nil {
		return nil, fmt.Errorf("auth: raw public key: %v", err)
	}
	return pub, nil
}
