// Package pki makes throw-away certificate authorities and certificates for
// tests: ours (ike/auth) and the end-to-end ones that hand strongSwan its
// certificates. The certificates have the fields strongSwan expects: a
// random serial, validity from an hour ago to a day ahead, SubjectKeyId and
// AuthorityKeyId, CAs with BasicConstraints CA:TRUE and keyCertSign|cRLSign,
// leaves with digitalSignature.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// KeyAlg is a key type for NewCA and Issue.
type KeyAlg int

// Key types.
const (
	ECDSAP256 KeyAlg = iota + 1
	ECDSAP384
	RSA2048
	Ed25519
)

func (a KeyAlg) String() string {
	switch a {
	case ECDSAP256:
		return "ECDSA-P256"
	case ECDSAP384:
		return "ECDSA-P384"
	case RSA2048:
		return "RSA-2048"
	case Ed25519:
		return "Ed25519"
	}
	return fmt.Sprintf("KeyAlg(%d)", int(a))
}

// Organization is the O of every subject this package makes.
const Organization = "roamsec"

// GenerateKey makes a new key of the given type.
func GenerateKey(alg KeyAlg) (crypto.Signer, error) {
	switch alg {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("pki: unknown key type %v", alg)
}

// CA is a certificate authority; PEM is its certificate.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// NewCA makes a self-signed root CA with subject "O=roamsec, CN=name".
func NewCA(name string, alg KeyAlg) (*CA, error) {
	return newCA(nil, name, alg)
}

// NewIntermediate makes a CA that ca signs.
func (ca *CA) NewIntermediate(name string, alg KeyAlg) (*CA, error) {
	return newCA(ca, name, alg)
}

func newCA(parent *CA, name string, alg KeyAlg) (*CA, error) {
	key, err := GenerateKey(alg)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{Organization}, CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer := &CA{Key: key} // self-signed until a parent is given
	if parent != nil {
		signer = parent
	}
	cert, certPEM, err := signer.sign(tmpl, key.Public(), time.Time{}, time.Time{})
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// sign fills in serial, validity and key identifiers and signs tmpl for
// pub; a CA without Cert signs itself.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(24 * time.Hour)
	}
	tmpl.SerialNumber = new(big.Int).Add(serial, big.NewInt(1)) // positive, never 0
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	ski, err := keyID(pub)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SubjectKeyId = ski
	parent := ca.Cert
	if parent == nil {
		parent = tmpl
		tmpl.AuthorityKeyId = ski // keyid:always, as OpenSSL's CAs have it
	} else {
		tmpl.AuthorityKeyId = parent.SubjectKeyId
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// keyID is RFC 5280 §4.2.1.2 method 1, the SHA-1 of the subjectPublicKey,
// which strongSwan also computes for its key IDs.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	spkiDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spkiDER, &spki); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	h := sha1.Sum(spki.PublicKey.Bytes)
	return h[:], nil
}

// Leaf is an end-entity certificate and its key. KeyPEM is PKCS#8;
// KeyPEMPKCS1 is the same RSA key as PKCS#1 (nil for other key types).
type Leaf struct {
	Cert        *x509.Certificate
	Key         crypto.Signer
	CertPEM     []byte
	KeyPEM      []byte
	KeyPEMPKCS1 []byte
}

// Options describe a certificate for IssueWith; zero fields take Issue's
// defaults.
type Options struct {
	CN     string
	Alg    KeyAlg
	DNS    []string
	IPs    []netip.Addr
	Emails []string
	// Subject replaces "O=roamsec, CN=<CN>".
	Subject *pkix.Name
	// NotBefore and NotAfter default to now-1h and now+24h.
	NotBefore, NotAfter time.Time
	// KeyUsage defaults to digitalSignature.
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	// Extensions are added as they are (RFC 3779 blocks, for instance).
	Extensions []pkix.Extension
}

// Issue makes a leaf certificate "O=roamsec, CN=cn" with the given
// subjectAltNames.
func (ca *CA) Issue(cn string, alg KeyAlg, dns []string, ips []netip.Addr, emails []string) (*Leaf, error) {
	return ca.IssueWith(Options{CN: cn, Alg: alg, DNS: dns, IPs: ips, Emails: emails})
}

// IssueWith makes a leaf certificate as o describes.
func (ca *CA) IssueWith(o Options) (*Leaf, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: no CA")
	}
	key, err := GenerateKey(o.Alg)
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{Organization: []string{Organization}, CommonName: o.CN}
	if o.Subject != nil {
		subject = *o.Subject
	}
	usage := o.KeyUsage
	if usage == 0 {
		usage = x509.KeyUsageDigitalSignature
	}
	tmpl := &x509.Certificate{
		Subject:               subject,
		KeyUsage:              usage,
		ExtKeyUsage:           o.ExtKeyUsage,
		BasicConstraintsValid: true,
		DNSNames:              o.DNS,
		EmailAddresses:        o.Emails,
		ExtraExtensions:       o.Extensions,
	}
	for _, a := range o.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	cert, certPEM, err := ca.sign(tmpl, key.Public(), o.NotBefore, o.NotAfter)
	if err != nil {
		return nil, err
	}
	l := &Leaf{Cert: cert, Key: key, CertPEM: certPEM}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	l.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if k, ok := key.(*rsa.PrivateKey); ok {
		l.KeyPEMPKCS1 = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	}
	return l, nil
}

// Write stores the certificate as dir/base.crt and the PKCS#8 key as
// dir/base.key, both mode 0600.
func (l *Leaf) Write(dir, base string) (certPath, keyPath string, err error) {
	certPath = filepath.Join(dir, base+".crt")
	keyPath = filepath.Join(dir, base+".key")
	if err := writeFile(certPath, l.CertPEM); err != nil {
		return "", "", err
	}
	if err := writeFile(keyPath, l.KeyPEM); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// Write stores the CA certificate as dir/base.crt, mode 0600.
func (ca *CA) Write(dir, base string) (certPath string, err error) {
	certPath = filepath.Join(dir, base+".crt")
	return certPath, writeFile(certPath, ca.PEM)
}

func writeFile(path string, data []byte) error {
	// OpenFile's mode only applies to new files; Chmod covers old ones.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	return f.Close()
}

// IPAddrBlocks encodes an RFC 3779 id-pe-ipAddrBlocks extension (critical,
// as §2.2.1 requires) listing the prefixes, IPv4 family first and each
// family in ascending order (§2.2.3.6). Overlapping or adjacent prefixes
// are not merged: pass a canonical set.
func IPAddrBlocks(prefixes ...netip.Prefix) (pkix.Extension, error) {
	prefixes = slices.Clone(prefixes)
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Masked().Addr().Compare(b.Masked().Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	type family struct {
		AFI   []byte
		Addrs []asn1.BitString
	}
	var v4, v6 family
	v4.AFI, v6.AFI = []byte{0, 1}, []byte{0, 2}
	for _, p := range prefixes {
		if !p.IsValid() {
			return pkix.Extension{}, fmt.Errorf("pki: invalid prefix %v", p)
		}
		p = p.Masked()
		b := p.Addr().AsSlice()[:(p.Bits()+7)/8]
		bs := asn1.BitString{Bytes: b, BitLength: p.Bits()}
		if p.Addr().Is4() {
			v4.Addrs = append(v4.Addrs, bs)
		} else {
			v6.Addrs = append(v6.Addrs, bs)
		}
	}
	var fams []family
	for _, f := range []family{v4, v6} {
		if len(f.Addrs) > 0 {
			fams = append(fams, f)
		}
	}
	der, err := asn1.Marshal(fams)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("pki: %w", err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 7}, Critical: true, Value: der}, nil
}
