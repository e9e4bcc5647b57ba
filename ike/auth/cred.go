package auth

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Credential is our private key and certificate chain.
type Credential struct {
	Key   crypto.Signer
	Chain []*x509.Certificate // leaf first, then intermediates; the root may be left out
	// RSAPSS makes Sign use RSASSA-PSS in method 14 instead of PKCS#1 v1.5.
	// Off by default: strongSwan 5.9 verifies PSS but many peers do not.
	RSAPSS bool
	// Raw: an RFC 7670 raw public key, no chain; CertPayloads is the key's
	// SubjectPublicKeyInfo for CERT encoding 15 (a one-time key).
	Raw bool
}

// NewCredential checks that key is usable for IKE (RSA of 2048 bits or
// more, ECDSA on P-256/P-384/P-521, Ed25519) and is the leaf's key.
func NewCredential(key crypto.Signer, chain []*x509.Certificate) (*Credential, error) {
	if key == nil {
		return nil, errors.New("auth: no private key")
	}
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("auth: no certificate")
	}
	if _, err := checkPublic(key.Public()); err != nil {
		return nil, fmt.Errorf("auth: private key: %v", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("auth: the private key does not belong to certificate %s", subjectString(chain[0]))
	}
	for i, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("auth: certificate %d of the chain is missing", i+1)
		}
	}
	return &Credential{Key: key, Chain: chain}, nil
}

// LoadCredential reads a certificate file (PEM, leaf first, then any
// intermediates) and a private key file (PEM: PKCS#8 "PRIVATE KEY", SEC1
// "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"; unencrypted). Errors name the
// file and what is wrong with it, never key material.
func LoadCredential(certPEMPath, keyPEMPath string) (*Credential, error) {
	chain, err := loadChain(certPEMPath)
	if err != nil {
		return nil, &CredentialFileError{Part: PartCert, Err: err}
	}
	key, err := loadKey(keyPEMPath)
	if err != nil {
		return nil, &CredentialFileError{Part: PartKey, Err: err}
	}
	c, err := NewCredential(key, chain)
	if err != nil {
		// The key does not match the certificate: the key is what the
		// operator named wrong as often as not, but the pair is one fault.
		return nil, &CredentialFileError{Part: PartKey, Err: fmt.Errorf("%w (key %s, certificate %s)", err, keyPEMPath, certPEMPath)}
	}
	return c, nil
}

// CredentialPart is which file of a credential an error is about.
type CredentialPart int

const (
	PartCert CredentialPart = iota // the certificate (chain) file
	PartKey                        // the private key file, or the pair
)

// CredentialFileError is LoadCredential's error: which file failed, so
// that a caller (config's file:line: field errors) names the right field
// without reading the message; a combined PEM file given as both is
// ambiguous by path.
type CredentialFileError struct {
	Part CredentialPart
	Err  error
}

func (e *CredentialFileError) Error() string { return e.Err.Error() }
func (e *CredentialFileError) Unwrap() error { return e.Err }

func loadChain(path string) ([]*x509.Certificate, error) {
	certPEM, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: certificate: %w", err)
	}
	chain, err := parseCertsPEM(path, certPEM)
	if err != nil {
		return nil, err
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("auth: %s: no CERTIFICATE PEM block", path)
	}
	return chain, nil
}

// parseCertsPEM returns the CERTIFICATE blocks of a PEM file in order,
// skipping blocks of other types (a combined file may also hold the key).
func parseCertsPEM(path string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: %s: PEM block %d: not a valid X.509 certificate: %v", path, n, err)
		}
		certs = append(certs, c)
	}
}

func loadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: private key: %w", err)
	}
	defer clear(data)
	var key crypto.Signer
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var parsed any
		switch block.Type {
		case "PRIVATE KEY":
			parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			parsed, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("auth: %s: encrypted private keys are not supported (decrypt it with openssl pkey)", path)
		default:
			continue // EC PARAMETERS, CERTIFICATE of a combined file
		}
		if _, encrypted := block.Headers["DEK-Info"]; encrypted {
			return nil, fmt.Errorf("auth: %s: encrypted private keys are not supported (decrypt it with openssl pkey)", path)
		}
		clear(block.Bytes)
		if err != nil {
			// x509's parse errors describe the structure, not its content.
			return nil, fmt.Errorf("auth: %s: PEM block %d (%s): not a valid private key: %v", path, n, block.Type, err)
		}
		if key != nil {
			return nil, fmt.Errorf("auth: %s: more than one private key", path)
		}
		s, ok := parsed.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("auth: %s: a %T key cannot sign", path, parsed)
		}
		key = s
	}
	if key == nil {
		return nil, fmt.Errorf("auth: %s: no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block", path)
	}
	return key, nil
}

// CertPayloads returns the CERT payload data to send, leaf first: each
// certificate's DER, encoding 4 "X.509 Certificate - Signature" (RFC 7296
// §3.6); for a Raw credential the one SubjectPublicKeyInfo (CertEncoding).
func (c *Credential) CertPayloads() [][]byte {
	if c == nil {
		return nil
	}
	if c.Raw {
		spki, err := RawPublicKey(c.Key.Public())
		if err != nil {
			return nil
		}
		return [][]byte{spki}
	}
	out := make([][]byte, 0, len(c.Chain))
	for _, cert := range c.Chain {
		if cert != nil {
			out = append(out, cert.Raw)
		}
	}
	return out
}

// IDFor returns the identity to send in our IDi/IDr for the configured id:
// id itself once the leaf certifies it (MatchIdentity), except that a DN
// becomes the leaf's Subject exactly as encoded, because peers compare DNs
// RDN by RDN in order and often byte for byte (RFC 4945 §3.1.5; strongSwan).
func (c *Credential) IDFor(id Identity) (Identity, error) {
	if c == nil || len(c.Chain) == 0 || c.Chain[0] == nil {
		return Identity{}, errors.New("auth: no certificate")
	}
	if err := MatchIdentity(c.Chain[0], id); err != nil {
		return Identity{}, err
	}
	if id.Type == IDDERASN1DN {
		return SubjectIdentity(c.Chain[0]), nil
	}
	return id, nil
}

// SubjectIdentity is a certificate's Subject as an ID_DER_ASN1_DN identity.
func SubjectIdentity(cert *x509.Certificate) Identity {
	if cert == nil {
		return Identity{Type: IDDERASN1DN}
	}
	return Identity{Type: IDDERASN1DN, Data: cert.RawSubject}
}

// CertEncoding is the CERT encoding of CertPayloads: 4, or 15 for Raw.
func (c *Credential) CertEncoding() uint8 {
	if c != nil && c.Raw {
		return CertRawPublicKey
	}
	return 4
}

func subjectString(c *x509.Certificate) string {
	if c == nil {
		return "(none)"
	}
	return fmt.Sprintf("%q", SubjectIdentity(c).String())
}
