package tunnel

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// Transform is an ESP combined-mode (AEAD) algorithm. Only AEADs are
// offered: they are what IKEv2 peers negotiate today and they make the
// packet one pass of crypto.
type Transform uint8

const (
	// AESGCM128 is AES-GCM with a 16-byte ICV and a 128-bit key (RFC 4106).
	AESGCM128 Transform = iota + 1
	// AESGCM256 is AES-GCM with a 16-byte ICV and a 256-bit key (RFC 4106).
	AESGCM256
	// ChaCha20Poly1305 is RFC 7634.
	ChaCha20Poly1305
)

const (
	saltLen = 4  // RFC 4106 §8.1, RFC 7634 §2: last 4 bytes of the keying material
	ivLen   = 8  // explicit IV in every packet
	icvLen  = 16 // both transforms use a 16-byte tag
)

// KeyLen is the length of the keying material: cipher key followed by salt.
func (t Transform) KeyLen() int {
	switch t {
	case AESGCM128:
		return 16 + saltLen
	case AESGCM256, ChaCha20Poly1305:
		return 32 + saltLen
	}
	return 0
}

// IKEv2 transform IDs (IANA "Transform Type 1 - Encryption Algorithm").
func (t Transform) IKEID() (id uint16, keyBits int) {
	switch t {
	case AESGCM128:
		return 20, 128 // ENCR_AES_GCM_16
	case AESGCM256:
		return 20, 256
	case ChaCha20Poly1305:
		return 28, 0 // ENCR_CHACHA20_POLY1305
	}
	return 0, 0
}

func (t Transform) String() string {
	switch t {
	case AESGCM128:
		return "aes128gcm16"
	case AESGCM256:
		return "aes256gcm16"
	case ChaCha20Poly1305:
		return "chacha20poly1305"
	}
	return fmt.Sprintf("transform(%d)", uint8(t))
}

// ParseTransform takes strongSwan's proposal keywords.
func ParseTransform(s string) (Transform, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "aes128gcm16", "aes128gcm128", "aes-gcm-128":
		return AESGCM128, nil
	case "aes256gcm16", "aes256gcm128", "aes-gcm-256":
		return AESGCM256, nil
	case "chacha20poly1305", "chacha20-poly1305":
		return ChaCha20Poly1305, nil
	}
	return 0, fmt.Errorf("unknown transform %q (want aes128gcm16, aes256gcm16 or chacha20poly1305)", s)
}

func (t Transform) newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != t.KeyLen() || t.KeyLen() == 0 {
		return nil, fmt.Errorf("%v: key is %d bytes, want %d (key and 4-byte salt)", t, len(key), t.KeyLen())
	}
	k := key[:len(key)-saltLen]
	switch t {
	case AESGCM128, AESGCM256:
		b, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case ChaCha20Poly1305:
		return chacha20poly1305.New(k)
	}
	return nil, fmt.Errorf("unknown transform %d", t)
}
