package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/netip"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/roamsec/roamsec/ike/auth"
)

// IANA transform IDs (RFC 7296 §3.3.2, RFC 5282, RFC 7634, RFC 8031) of
// what roamsec offers. Nothing else is accepted: AEAD ciphers only, so no
// separate integrity transform is ever negotiated.
const (
	encrAESGCM16  = 20
	encrChaCha20P = 28
	prfSHA256     = 5
	prfSHA384     = 6
	prfSHA512     = 7
	dhECP256      = 19
	dhECP384      = 20
	dhCurve25519  = 31
	esnNo, esnYes = 0, 1
	aeadIVLen     = 8  // RFC 5282 §3.1, RFC 7634 §3
	aeadICVLen    = 16 // the 16-octet ICV variants only
	aeadSaltLen   = 4
	minNonceLen   = 32 // ours; RFC 7296 §2.10 wants at least half the PRF key size
)

// prfAlg is one of the HMAC-SHA2 PRFs (RFC 4868).
type prfAlg uint16

func (p prfAlg) hash() func() hash.Hash {
	switch p {
	case prfSHA384:
		return sha512.New384
	case prfSHA512:
		return sha512.New
	default:
		return sha256.New
	}
}

// size is the PRF's output and preferred key length.
func (p prfAlg) size() int { return p.hash()().Size() }

// auth is the same PRF for the auth package (AUTH payloads, §2.15).
func (p prfAlg) auth() auth.PRF { return auth.HMACPRF(p.hash()) }

func (p prfAlg) prf(key []byte, data ...[]byte) []byte {
	m := hmac.New(p.hash(), key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// plus is prf+ (RFC 7296 §2.13): T1 = prf(K, S | 0x01),
// Tn = prf(K, Tn-1 | S | n), concatenated to n bytes.
func (p prfAlg) plus(key, seed []byte, n int) []byte {
	out := make([]byte, 0, n+p.size())
	var t []byte
	for i := 1; len(out) < n; i++ {
		if i > 255 {
			panic("ike: prf+ asked for more than 255 blocks") // unreachable: our key lengths are fixed and small
		}
		t = p.prf(key, t, seed, []byte{byte(i)})
		out = append(out, t...)
	}
	return out[:n]
}

// encrAlg is an AEAD cipher with its key size in bits (AES-GCM 128/256,
// ChaCha20-Poly1305 256).
type encrAlg struct {
	id   uint16
	bits int
}

// keyLen is the key material taken from the KDF: key plus 4-byte salt
// (RFC 5282 §7.1 for IKE, RFC 4106 §8.1 for ESP, RFC 7634 §2/§3).
func (e encrAlg) keyLen() int { return e.bits/8 + aeadSaltLen }

func (e encrAlg) String() string {
	if e.id == encrChaCha20P {
		return "chacha20poly1305"
	}
	return fmt.Sprintf("aes%dgcm16", e.bits)
}

// aeadOf is the AEAD with key (without the salt).
func (e encrAlg) aeadOf(key []byte) (cipher.AEAD, error) {
	if e.id == encrChaCha20P {
		return chacha20poly1305.New(key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// skCipher protects SK payloads in one direction (RFC 5282 §5 for AES-GCM,
// RFC 7634 §3 for ChaCha20-Poly1305: nonce = salt || 8-byte IV, AAD = the
// IKE header and the payload header up to the IV).
//
// It keeps the key, not the cipher: the AEAD is made for each message (an
// AES key schedule and GCM table, well under a microsecond), so an idle IKE
// SA does not hold two expanded ciphers (about 1.4 KB) for the few
// messages DPD and rekeys need; a gateway holds thousands.
type skCipher struct {
	encr encrAlg
	km   []byte // SK_e: key and salt; the SA's ikeKeys, wiped with them
	iv   uint64 // a counter: an IV never repeats under one key (RFC 5282 §3.1)
}

// aead is the cipher for one message, and the salt.
func (c *skCipher) aead() (cipher.AEAD, []byte, error) {
	if len(c.km) != c.encr.keyLen() {
		return nil, nil, errors.New("ike: no key")
	}
	key, salt := c.km[:len(c.km)-aeadSaltLen], c.km[len(c.km)-aeadSaltLen:]
	a, err := c.encr.aeadOf(key)
	return a, salt, err
}

// seal encrypts plaintext (the inner payloads; AEAD needs no padding, so
// the pad length byte is 0) and returns IV || ciphertext || ICV appended
// to dst, with aad the message bytes before the IV.
func (c *skCipher) seal(dst, aad, plaintext []byte) []byte {
	a, salt, err := c.aead()
	if err != nil {
		return dst // cannot happen: newCiphers made one with this key
	}
	c.iv++
	var nonce [12]byte
	copy(nonce[:4], salt)
	binary.BigEndian.PutUint64(nonce[4:], c.iv)
	dst = append(dst, nonce[4:]...)
	pt := append(plaintext[:len(plaintext):len(plaintext)], 0) // Pad Length 0 (RFC 7296 §3.14)
	return a.Seal(dst, nonce[:], pt, aad)
}

// sealedLen is the size of IV || ciphertext || ICV for n plaintext bytes.
func sealedLen(n int) int { return aeadIVLen + n + 1 + aeadICVLen }

// open decrypts body (IV || ciphertext || ICV) and strips the padding.
func (c *skCipher) open(aad, body []byte) ([]byte, error) {
	if len(body) < aeadIVLen+1+aeadICVLen {
		return nil, errors.New("encrypted payload too short")
	}
	a, salt, err := c.aead()
	if err != nil {
		return nil, err
	}
	var nonce [12]byte
	copy(nonce[:4], salt)
	copy(nonce[4:], body[:aeadIVLen])
	pt, err := a.Open(nil, nonce[:], body[aeadIVLen:], aad)
	if err != nil {
		return nil, errors.New("integrity check of the encrypted payload failed")
	}
	pad := int(pt[len(pt)-1])
	if pad+1 > len(pt) {
		return nil, errors.New("bad padding in the encrypted payload")
	}
	return pt[:len(pt)-1-pad], nil
}

func (c *skCipher) wipe() {
	clear(c.km)
	c.km = nil
}

// dhGroup is a Diffie-Hellman group of RFC 5903 (ECP) or RFC 8031
// (Curve25519), through crypto/ecdh.
type dhGroup uint16

func (g dhGroup) curve() ecdh.Curve {
	switch g {
	case dhECP256:
		return ecdh.P256()
	case dhECP384:
		return ecdh.P384()
	case dhCurve25519:
		return ecdh.X25519()
	}
	return nil
}

func (g dhGroup) String() string {
	switch g {
	case dhECP256:
		return "ecp256"
	case dhECP384:
		return "ecp384"
	case dhCurve25519:
		return "curve25519"
	}
	return fmt.Sprintf("dh%d", uint16(g))
}

// dhKey is our half of an exchange.
type dhKey struct {
	group dhGroup
	priv  *ecdh.PrivateKey
}

func newDH(g dhGroup) (*dhKey, error) {
	c := g.curve()
	if c == nil {
		return nil, fmt.Errorf("DH group %d not supported", g)
	}
	k, err := c.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &dhKey{group: g, priv: k}, nil
}

// public is the KE payload's data: for ECP groups x || y without the
// uncompressed-point prefix (RFC 5903 §7), for Curve25519 the 32 bytes
// (RFC 8031 §2).
func (k *dhKey) public() []byte {
	b := k.priv.PublicKey().Bytes()
	if k.group != dhCurve25519 {
		b = b[1:]
	}
	return b
}

// shared computes g^ir from the peer's KE data. crypto/ecdh checks the
// point is on the curve (RFC 5903 §9 wants it) and refuses the all-zero
// X25519 result (RFC 8031 §2.1).
func (k *dhKey) shared(peer []byte) ([]byte, error) {
	pub, err := k.peerKey(peer)
	if err != nil {
		return nil, err
	}
	s, err := k.priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("DH %v: %v", k.group, err)
	}
	return s, nil
}

// peerKey parses the peer's KE data as a point of k's group (on the
// curve: a few field operations, no scalar multiplication).
func (k *dhKey) peerKey(peer []byte) (*ecdh.PublicKey, error) {
	if k.group != dhCurve25519 {
		peer = append([]byte{4}, peer...)
	}
	pub, err := k.group.curve().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("invalid KE payload for %v: %v", k.group, err)
	}
	return pub, nil
}

// ikeKeys are an IKE SA's keys (RFC 7296 §2.14).
type ikeKeys struct {
	d, ei, er, pi, pr []byte
}

func (k *ikeKeys) wipe() {
	for _, b := range [][]byte{k.d, k.ei, k.er, k.pi, k.pr} {
		clear(b)
	}
}

// deriveIKE: SKEYSEED = prf(Ni | Nr, g^ir), or for a rekey (§2.18)
// prf(SK_d(old), g^ir | Ni | Nr) with the old SA's PRF, oldPRF (as
// strongSwan does: the PRF that SK_d was made for); then {SK_d | SK_ai | SK_ar | SK_ei |
// SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr). SK_ai and
// SK_ar are empty with AEAD ciphers.
func deriveIKE(p prfAlg, e encrAlg, oldPRF prfAlg, oldSKd, shared, ni, nr []byte, spiI, spiR uint64) ikeKeys {
	var skeyseed []byte
	if oldSKd != nil {
		skeyseed = oldPRF.prf(oldSKd, shared, ni, nr)
	} else {
		skeyseed = p.prf(append(append([]byte(nil), ni...), nr...), shared)
	}
	defer clear(skeyseed)
	seed := make([]byte, 0, len(ni)+len(nr)+16)
	seed = append(append(seed, ni...), nr...)
	seed = binary.BigEndian.AppendUint64(seed, spiI)
	seed = binary.BigEndian.AppendUint64(seed, spiR)
	ps, ek := p.size(), e.keyLen()
	km := p.plus(skeyseed, seed, ps+2*ek+2*ps)
	return ikeKeys{
		d:  km[:ps],
		ei: km[ps : ps+ek],
		er: km[ps+ek : ps+2*ek],
		pi: km[ps+2*ek : 2*ps+2*ek],
		pr: km[2*ps+2*ek:],
	}
}

// childKeys: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17);
// the initiator-to-responder key comes first.
func childKeys(p prfAlg, e encrAlg, skd, shared, ni, nr []byte) (i2r, r2i []byte) {
	seed := make([]byte, 0, len(shared)+len(ni)+len(nr))
	seed = append(append(append(seed, shared...), ni...), nr...)
	km := p.plus(skd, seed, 2*e.keyLen())
	return km[:e.keyLen()], km[e.keyLen():]
}

// natHash is the NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port)
// (RFC 7296 §2.23).
func natHash(spiI, spiR uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], spiI)
	binary.BigEndian.PutUint64(b[8:], spiR)
	h.Write(b[:])
	h.Write(ap.Addr().Unmap().AsSlice())
	binary.BigEndian.PutUint16(b[:], ap.Port())
	h.Write(b[:2])
	return h.Sum(nil)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return b
}

func randomSPI64() uint64 {
	for {
		if s := binary.BigEndian.Uint64(randomBytes(8)); s != 0 {
			return s
		}
	}
}
