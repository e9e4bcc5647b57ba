package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // method 1 and the legacy hash registry
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Authentication methods (RFC 7296 §3.8, RFC 4754 §7, RFC 7427 §3).
const (
	MethodRSA              = 1  // RSA PKCS#1 v1.5 with SHA-1
	MethodPSK              = 2  // shared key MIC
	MethodECDSA256         = 9  // ECDSA P-256 with SHA-256, raw r||s
	MethodECDSA384         = 10 // ECDSA P-384 with SHA-384, raw r||s
	MethodECDSA521         = 11 // ECDSA P-521 with SHA-512, raw r||s
	MethodDigitalSignature = 14 // RFC 7427: AlgorithmIdentifier + signature
)

// HashAlg is a SIGNATURE_HASH_ALGORITHMS value (RFC 7427 §7, RFC 8420 for
// Identity).
type HashAlg uint16

// Hash algorithms of the IANA registry that this package knows.
const (
	HashSHA1     HashAlg = 1
	HashSHA256   HashAlg = 2
	HashSHA384   HashAlg = 3
	HashSHA512   HashAlg = 4
	HashIdentity HashAlg = 5 // the signature algorithm hashes itself: Ed25519
)

func (h HashAlg) String() string {
	switch h {
	case HashSHA1:
		return "SHA1"
	case HashSHA256:
		return "SHA2_256"
	case HashSHA384:
		return "SHA2_384"
	case HashSHA512:
		return "SHA2_512"
	case HashIdentity:
		return "IDENTITY"
	}
	return fmt.Sprintf("HASH_%d", uint16(h))
}

// SupportedHashAlgs is what we announce in SIGNATURE_HASH_ALGORITHMS and
// accept in method 14: SHA-1 is left out as RFC 8247 §3.2 says MUST NOT.
var SupportedHashAlgs = []HashAlg{HashSHA256, HashSHA384, HashSHA512, HashIdentity}

// EncodeHashAlgs builds SIGNATURE_HASH_ALGORITHMS notification data: 16-bit
// values in network order (RFC 7427 §4).
func EncodeHashAlgs(algs []HashAlg) []byte {
	b := make([]byte, 0, 2*len(algs))
	for _, a := range algs {
		b = binary.BigEndian.AppendUint16(b, uint16(a))
	}
	return b
}

// DecodeHashAlgs reads SIGNATURE_HASH_ALGORITHMS notification data. Values
// unknown to us are kept (the sender may list any, RFC 7427 §4); an odd
// length is malformed.
func DecodeHashAlgs(b []byte) ([]HashAlg, error) {
	if len(b)%2 != 0 {
		return nil, fmt.Errorf("auth: SIGNATURE_HASH_ALGORITHMS data of odd length %d", len(b))
	}
	algs := make([]HashAlg, len(b)/2)
	for i := range algs {
		algs[i] = HashAlg(binary.BigEndian.Uint16(b[2*i:]))
	}
	return algs, nil
}

// minRSABits is RFC 8247 §3's floor for RSA keys, for signing and verifying.
const minRSABits = 2048

type keyKind int

const (
	kindRSA keyKind = iota + 1
	kindECDSA
	kindEd25519
)

func (k keyKind) String() string {
	switch k {
	case kindRSA:
		return "RSA"
	case kindECDSA:
		return "ECDSA"
	case kindEd25519:
		return "Ed25519"
	}
	return "unknown"
}

// checkPublic validates a public key before any crypto sees it (nil fields
// and wrong sizes would panic in crypto/*).
func checkPublic(pub crypto.PublicKey) (keyKind, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return 0, errors.New("empty RSA public key")
		}
		if k.N.BitLen() < minRSABits {
			return 0, fmt.Errorf("RSA key of %d bits, at least %d needed (RFC 8247 §3)", k.N.BitLen(), minRSABits)
		}
		return kindRSA, nil
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil || k.X == nil || k.Y == nil {
			return 0, errors.New("empty ECDSA public key")
		}
		if curveHash(k.Curve) == 0 {
			return 0, fmt.Errorf("ECDSA curve %s not supported", k.Curve.Params().Name)
		}
		return kindECDSA, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return 0, errors.New("malformed Ed25519 public key")
		}
		return kindEd25519, nil
	case nil:
		return 0, errors.New("no public key")
	}
	return 0, fmt.Errorf("unsupported public key type %T", pub)
}

// curveHash is the hash RFC 4754 pairs with a curve, and the one we sign
// with in method 14.
func curveHash(c elliptic.Curve) crypto.Hash {
	switch c {
	case elliptic.P256():
		return crypto.SHA256
	case elliptic.P384():
		return crypto.SHA384
	case elliptic.P521():
		return crypto.SHA512
	}
	return 0
}

// scheme is a signature algorithm as an AlgorithmIdentifier names it.
type scheme struct {
	kind keyKind
	hash crypto.Hash // 0 for Ed25519, which hashes internally
	pss  bool
	salt int // PSS salt length; 0 lets the verifier find it
}

func (s scheme) String() string {
	switch {
	case s.kind == kindEd25519:
		return "Ed25519"
	case s.pss:
		return fmt.Sprintf("RSASSA-PSS with %v", s.hash)
	case s.kind == kindRSA:
		return fmt.Sprintf("RSA PKCS#1 v1.5 with %v", s.hash)
	}
	return fmt.Sprintf("ECDSA with %v", s.hash)
}

var (
	oidRSAPSS  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// pkcs1OIDs and ecdsaOIDs map signature OIDs to hashes (RFC 8017, RFC 5758).
var pkcs1OIDs = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, crypto.SHA1},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, crypto.SHA256},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}, crypto.SHA384},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}, crypto.SHA512},
}

var ecdsaOIDs = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}, crypto.SHA1},
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, crypto.SHA256},
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}, crypto.SHA384},
	{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}, crypto.SHA512},
}

var hashOIDs = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{
	{asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}, crypto.SHA1},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}, crypto.SHA256},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}, crypto.SHA384},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}, crypto.SHA512},
}

func hashToAlg(h crypto.Hash) HashAlg {
	switch h {
	case crypto.SHA1:
		return HashSHA1
	case crypto.SHA256:
		return HashSHA256
	case crypto.SHA384:
		return HashSHA384
	case crypto.SHA512:
		return HashSHA512
	}
	return HashIdentity
}

// algorithmIdentifier encodes s the way strongSwan does: NULL parameters
// for RSA and hash algorithms, none for ECDSA and Ed25519 (RFC 7427
// Appendix A, RFC 5758 §3.2, RFC 8410 §3).
func (s scheme) algorithmIdentifier() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		switch {
		case s.kind == kindEd25519:
			b.AddASN1ObjectIdentifier(oidEd25519)
		case s.kind == kindECDSA:
			b.AddASN1ObjectIdentifier(lookupOID(ecdsaOIDs, s.hash))
		case !s.pss:
			b.AddASN1ObjectIdentifier(lookupOID(pkcs1OIDs, s.hash))
			b.AddASN1NULL()
		default:
			b.AddASN1ObjectIdentifier(oidRSAPSS)
			hashAlgID := func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(lookupOID(hashOIDs, s.hash))
					b.AddASN1NULL()
				})
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), hashAlgID)
				b.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidMGF1)
						hashAlgID(b)
					})
				})
				b.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddASN1Int64(int64(s.hash.Size()))
				})
			})
		}
	})
	return b.Bytes()
}

func lookupOID(table []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}, h crypto.Hash) asn1.ObjectIdentifier {
	for _, e := range table {
		if e.hash == h {
			return e.oid
		}
	}
	return nil
}

func lookupHash(table []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}, oid asn1.ObjectIdentifier) crypto.Hash {
	for _, e := range table {
		if e.oid.Equal(oid) {
			return e.hash
		}
	}
	return 0
}

// parseAlgorithmIdentifier reads the AlgorithmIdentifier of method 14
// strictly: DER, nothing after it, parameters as the algorithm defines them
// (NULL or absent for RSA and ECDSA, absent for Ed25519, RFC 4055 params for
// PSS).
func parseAlgorithmIdentifier(b []byte) (scheme, error) {
	in := cryptobyte.String(b)
	var seq cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1ObjectIdentifier(&oid) {
		return scheme{}, errors.New("malformed AlgorithmIdentifier")
	}
	nullOrAbsent := func() bool {
		if seq.Empty() {
			return true
		}
		var null cryptobyte.String
		return seq.ReadASN1(&null, cbasn1.NULL) && null.Empty() && seq.Empty()
	}
	var s scheme
	switch {
	case lookupHash(pkcs1OIDs, oid) != 0:
		s = scheme{kind: kindRSA, hash: lookupHash(pkcs1OIDs, oid)}
		if !nullOrAbsent() {
			return scheme{}, errors.New("unexpected RSA AlgorithmIdentifier parameters")
		}
	case lookupHash(ecdsaOIDs, oid) != 0:
		s = scheme{kind: kindECDSA, hash: lookupHash(ecdsaOIDs, oid)}
		if !nullOrAbsent() {
			return scheme{}, errors.New("unexpected ECDSA AlgorithmIdentifier parameters")
		}
	case oid.Equal(oidEd25519):
		s = scheme{kind: kindEd25519}
		if !seq.Empty() {
			return scheme{}, errors.New("parameters in an Ed25519 AlgorithmIdentifier (RFC 8410 §3 says absent)")
		}
	case oid.Equal(oidRSAPSS):
		var err error
		if s, err = parsePSSParams(seq); err != nil {
			return scheme{}, err
		}
	default:
		return scheme{}, fmt.Errorf("unsupported signature algorithm %s", oid)
	}
	if s.hash == crypto.SHA1 {
		return scheme{}, fmt.Errorf("%v refused: SHA-1 MUST NOT be used with Digital Signature (RFC 8247 §3.2)", s)
	}
	return s, nil
}

// parsePSSParams reads RSASSA-PSS-params (RFC 4055 §3.1). Go's crypto/rsa
// uses MGF1 with the message hash, so a different MGF1 hash is refused.
func parsePSSParams(seq cryptobyte.String) (scheme, error) {
	bad := func(what string) (scheme, error) {
		return scheme{}, fmt.Errorf("malformed RSASSA-PSS parameters: %s", what)
	}
	var params cryptobyte.String
	if !seq.ReadASN1(&params, cbasn1.SEQUENCE) || !seq.Empty() {
		// Absent parameters mean SHA-1 throughout, refused anyway.
		return bad("missing")
	}
	hash, mgfHash, salt := crypto.SHA1, crypto.SHA1, int64(20)
	var field cryptobyte.String
	var ok bool
	if field, ok = readOptional(&params, 0); ok {
		h, err := parseHashAlgID(field)
		if err != nil {
			return bad("hashAlgorithm: " + err.Error())
		}
		hash = h
	}
	if field, ok = readOptional(&params, 1); ok {
		var mgf, mgfParams cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !field.ReadASN1(&mgf, cbasn1.SEQUENCE) || !field.Empty() ||
			!mgf.ReadASN1ObjectIdentifier(&oid) || !oid.Equal(oidMGF1) ||
			!mgf.ReadASN1Element(&mgfParams, cbasn1.SEQUENCE) || !mgf.Empty() {
			return bad("maskGenAlgorithm")
		}
		h, err := parseHashAlgID(mgfParams)
		if err != nil {
			return bad("MGF1 hash: " + err.Error())
		}
		mgfHash = h
	}
	if field, ok = readOptional(&params, 2); ok {
		if !field.ReadASN1Int64WithTag(&salt, cbasn1.INTEGER) || !field.Empty() || salt < 0 || salt > 1024 {
			return bad("saltLength")
		}
	}
	if field, ok = readOptional(&params, 3); ok {
		var trailer int64
		if !field.ReadASN1Int64WithTag(&trailer, cbasn1.INTEGER) || !field.Empty() || trailer != 1 {
			return bad("trailerField")
		}
	}
	if !params.Empty() {
		return bad("trailing data")
	}
	if mgfHash != hash {
		return scheme{}, fmt.Errorf("RSASSA-PSS with MGF1-%v and %v is not supported", mgfHash, hash)
	}
	return scheme{kind: kindRSA, hash: hash, pss: true, salt: int(salt)}, nil
}

// readOptional reads the [n] EXPLICIT field if it comes next.
func readOptional(s *cryptobyte.String, n uint8) (cryptobyte.String, bool) {
	var out cryptobyte.String
	tag := cbasn1.Tag(n).Constructed().ContextSpecific()
	if !s.PeekASN1Tag(tag) || !s.ReadASN1(&out, tag) {
		return nil, false
	}
	return out, true
}

// parseHashAlgID reads a hash AlgorithmIdentifier, NULL or absent parameters.
func parseHashAlgID(b cryptobyte.String) (crypto.Hash, error) {
	var seq cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !b.ReadASN1(&seq, cbasn1.SEQUENCE) || !b.Empty() || !seq.ReadASN1ObjectIdentifier(&oid) {
		return 0, errors.New("malformed")
	}
	if !seq.Empty() {
		var null cryptobyte.String
		if !seq.ReadASN1(&null, cbasn1.NULL) || !null.Empty() || !seq.Empty() {
			return 0, errors.New("unexpected parameters")
		}
	}
	h := lookupHash(hashOIDs, oid)
	if h == 0 {
		return 0, fmt.Errorf("unsupported hash %s", oid)
	}
	return h, nil
}

// Verify checks the AUTH data of a signature method against the peer's
// public key (from its verified certificate): RFC 7296 method 1 (RSA
// PKCS#1 v1.5 with SHA-1, accepted for peers without RFC 7427; refuse it
// before calling if policy wants), RFC 4754 methods 9/10/11 (raw r||s, the
// key's curve must be the method's), and RFC 7427 method 14 with RSA PKCS#1
// v1.5, RSASSA-PSS, ECDSA (DER signature, any SHA-2 with any curve) or
// Ed25519. It rejects an AlgorithmIdentifier for another key type, unknown
// algorithms, SHA-1 in method 14, RSA keys under 2048 bits and any byte
// after the AlgorithmIdentifier or signature. Every error wraps
// ErrAuthFailed.
func Verify(method uint8, data, signedOctets []byte, pub crypto.PublicKey) error {
	if err := verify(method, data, signedOctets, pub); err != nil {
		return fmt.Errorf("%w: %v", ErrAuthFailed, err)
	}
	return nil
}

func verify(method uint8, data, signed []byte, pub crypto.PublicKey) error {
	kind, err := checkPublic(pub)
	if err != nil {
		return err
	}
	switch method {
	case MethodRSA:
		return verifyScheme(scheme{kind: kindRSA, hash: crypto.SHA1}, kind, pub, signed, data)
	case MethodECDSA256, MethodECDSA384, MethodECDSA521:
		return verifyLegacyECDSA(method, kind, pub, signed, data)
	case MethodDigitalSignature:
		if len(data) < 1 || len(data) < 1+int(data[0]) {
			return errors.New("method 14 AUTH data shorter than its AlgorithmIdentifier")
		}
		n := int(data[0])
		s, err := parseAlgorithmIdentifier(data[1 : 1+n])
		if err != nil {
			return err
		}
		return verifyScheme(s, kind, pub, signed, data[1+n:])
	case MethodPSK:
		return errors.New("shared key AUTH is not a signature (use VerifyPSK)")
	}
	return fmt.Errorf("unsupported authentication method %d", method)
}

func verifyScheme(s scheme, kind keyKind, pub crypto.PublicKey, signed, sig []byte) error {
	if s.kind != kind {
		return fmt.Errorf("%v signature, but the key is %v", s, kind)
	}
	var err error
	switch kind {
	case kindRSA:
		k := pub.(*rsa.PublicKey)
		digest := hashOf(s.hash, signed)
		if s.pss {
			err = rsa.VerifyPSS(k, s.hash, digest, sig, &rsa.PSSOptions{SaltLength: s.salt, Hash: s.hash})
		} else {
			err = rsa.VerifyPKCS1v15(k, s.hash, digest, sig)
		}
	case kindECDSA:
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), hashOf(s.hash, signed), sig) {
			err = errors.New("bad")
		}
	case kindEd25519:
		if !ed25519.Verify(pub.(ed25519.PublicKey), signed, sig) {
			err = errors.New("bad")
		}
	}
	if err != nil {
		// crypto/* errors say nothing useful to a peer; keep ours uniform.
		return fmt.Errorf("%v signature does not verify", s)
	}
	return nil
}

func verifyLegacyECDSA(method uint8, kind keyKind, pub crypto.PublicKey, signed, sig []byte) error {
	want := map[uint8]elliptic.Curve{
		MethodECDSA256: elliptic.P256(), MethodECDSA384: elliptic.P384(), MethodECDSA521: elliptic.P521(),
	}[method]
	k, ok := pub.(*ecdsa.PublicKey)
	if kind != kindECDSA || !ok || k.Curve != want {
		return fmt.Errorf("method %d needs an ECDSA %s key", method, want.Params().Name)
	}
	n := (want.Params().BitSize + 7) / 8
	if len(sig) != 2*n {
		return fmt.Errorf("method %d signature of %d bytes, want %d (RFC 4754 §7)", method, len(sig), 2*n)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(sig[:n]))
		b.AddASN1BigInt(new(big.Int).SetBytes(sig[n:]))
	})
	der, err := b.Bytes()
	if err != nil || !ecdsa.VerifyASN1(k, hashOf(curveHash(want), signed), der) {
		return fmt.Errorf("method %d ECDSA signature does not verify", method)
	}
	return nil
}

func hashOf(h crypto.Hash, b []byte) []byte {
	w := h.New()
	w.Write(b)
	return w.Sum(nil)
}

// Sign computes our AUTH payload for signedOctets (SignedOctets).
//
// With a peer that announced SIGNATURE_HASH_ALGORITHMS (peerHashes not
// empty) it uses method 14 (RFC 7427): ECDSA with the curve's hash (SHA-256
// for P-256, SHA-384 for P-384, SHA-512 for P-521; a longer SHA-2 the peer
// announced if it lacks that one) and a DER signature, as strongSwan sends;
// RSA with SHA-256 (else SHA-384, SHA-512) as PKCS#1 v1.5, or RSASSA-PSS
// with salt = hash length if RSAPSS is set; Ed25519 if the peer announced
// Identity (RFC 8420).
//
// Without the notification, or without a hash in common, it falls back to
// the method the peer must know (RFC 7427 §4): ECDSA 9/10/11 by curve, or
// RSA 1 (PKCS#1 v1.5 with SHA-1). Ed25519 has no such method and fails.
func (c *Credential) Sign(signedOctets []byte, peerHashes []HashAlg) (method uint8, data []byte, err error) {
	if c == nil || c.Key == nil {
		return 0, nil, errors.New("auth: no private key")
	}
	pub := c.Key.Public()
	kind, err := checkPublic(pub)
	if err != nil {
		return 0, nil, fmt.Errorf("auth: our key: %v", err)
	}
	var candidates []crypto.Hash
	switch kind {
	case kindECDSA:
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			if h >= curveHash(pub.(*ecdsa.PublicKey).Curve) {
				candidates = append(candidates, h)
			}
		}
	case kindRSA:
		candidates = []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512}
	case kindEd25519:
		if !slices.Contains(peerHashes, HashIdentity) {
			return 0, nil, errors.New("auth: Ed25519 needs a peer that announced the Identity hash (RFC 8420 §2); it did not")
		}
		sig, err := c.Key.Sign(rand.Reader, signedOctets, crypto.Hash(0))
		if err != nil {
			return 0, nil, fmt.Errorf("auth: Ed25519 signing failed: %v", err)
		}
		return digitalSignature(scheme{kind: kindEd25519}, sig)
	}
	for _, h := range candidates {
		if !slices.Contains(peerHashes, hashToAlg(h)) {
			continue
		}
		s := scheme{kind: kind, hash: h, pss: kind == kindRSA && c.RSAPSS}
		var opts crypto.SignerOpts = h
		if s.pss {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		}
		sig, err := c.Key.Sign(rand.Reader, hashOf(h, signedOctets), opts)
		if err != nil {
			return 0, nil, fmt.Errorf("auth: %v signing failed: %v", s, err)
		}
		return digitalSignature(s, sig)
	}
	return c.signLegacy(kind, pub, signedOctets)
}

// digitalSignature builds method 14 AUTH data (RFC 7427 §3): the
// AlgorithmIdentifier's length in one octet, the AlgorithmIdentifier, the
// signature.
func digitalSignature(s scheme, sig []byte) (uint8, []byte, error) {
	alg, err := s.algorithmIdentifier()
	if err != nil || len(alg) > 255 {
		return 0, nil, fmt.Errorf("auth: cannot encode the AlgorithmIdentifier of %v", s)
	}
	out := make([]byte, 0, 1+len(alg)+len(sig))
	out = append(out, byte(len(alg)))
	out = append(out, alg...)
	return MethodDigitalSignature, append(out, sig...), nil
}

func (c *Credential) signLegacy(kind keyKind, pub crypto.PublicKey, signed []byte) (uint8, []byte, error) {
	if kind == kindRSA {
		sig, err := c.Key.Sign(rand.Reader, hashOf(crypto.SHA1, signed), crypto.SHA1)
		if err != nil {
			return 0, nil, fmt.Errorf("auth: RSA SHA-1 signing failed: %v", err)
		}
		return MethodRSA, sig, nil
	}
	curve := pub.(*ecdsa.PublicKey).Curve
	method := map[crypto.Hash]uint8{crypto.SHA256: MethodECDSA256, crypto.SHA384: MethodECDSA384, crypto.SHA512: MethodECDSA521}[curveHash(curve)]
	der, err := c.Key.Sign(rand.Reader, hashOf(curveHash(curve), signed), curveHash(curve))
	if err != nil {
		return 0, nil, fmt.Errorf("auth: ECDSA signing failed: %v", err)
	}
	// RFC 4754 §7: r and s as fixed-size big-endian integers.
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	r, s := new(big.Int), new(big.Int)
	n := (curve.Params().BitSize + 7) / 8
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(r) || !seq.ReadASN1Integer(s) ||
		!seq.Empty() || r.Sign() <= 0 || s.Sign() <= 0 || r.BitLen() > 8*n || s.BitLen() > 8*n {
		return 0, nil, errors.New("auth: ECDSA signer returned a malformed signature")
	}
	out := make([]byte, 2*n)
	r.FillBytes(out[:n])
	s.FillBytes(out[n:])
	return method, out, nil
}
