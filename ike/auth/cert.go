package auth

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Verifier validates peer certificate chains against our trust anchors.
type Verifier struct {
	// Roots are the trusted CAs. Required: a nil pool would make crypto/x509
	// fall back to the system's web CAs, which must not admit VPN peers.
	Roots *x509.CertPool
	// Now is the validation time; nil means time.Now.
	Now func() time.Time
	// Cache, if set, remembers the chains accepted with these Roots.
	Cache *ChainCache
}

// maxChain bounds the CERT payloads we look at.
const maxChain = 8

// VerifyChain validates a peer's certificates (CERT payload data of
// encoding 4, leaf first, other certificates in any order) up to one of
// Roots and returns the leaf. Extended key usage is not checked (any
// purpose, RFC 4945 §5.1.3.12); key usage must allow signatures (RFC 4945
// §5.1.3.2); CAs must be CAs with keyCertSign if they list key usages (RFC
// 5280 §4.2.1.9, §4.2.1.3, enforced by crypto/x509); RFC 3779 IP address
// blocks are bounded by the CAs' (checkIPAddrBlocks). Revocation (CRL,
// OCSP) is not checked.
func (v *Verifier) VerifyChain(der [][]byte) (*x509.Certificate, error) {
	if v == nil || v.Roots == nil {
		return nil, errors.New("auth: no trusted CA certificates configured")
	}
	if len(der) == 0 {
		return nil, errors.New("auth: the peer sent no certificate")
	}
	if len(der) > maxChain {
		return nil, fmt.Errorf("auth: the peer sent %d certificates, at most %d are accepted", len(der), maxChain)
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	var key [32]byte
	if v.Cache != nil {
		key = chainKey(der)
		if leaf := v.Cache.get(key, now); leaf != nil {
			return leaf, nil
		}
	}
	certs := make([]*x509.Certificate, len(der))
	for i, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("auth: CERT payload %d: not a valid X.509 certificate: %v", i+1, err)
		}
		if err := acceptIPAddrBlocks(c); err != nil {
			return nil, fmt.Errorf("auth: certificate %s: %v", subjectString(c), err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, describeVerifyError(certs, err)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, fmt.Errorf("auth: certificate %s: key usage allows neither digitalSignature nor nonRepudiation (RFC 4945 §5.1.3.2)", subjectString(leaf))
	}
	// Any chain that passes the RFC 3779 check will do; report the first failure.
	var first error
	for _, chain := range chains {
		err := checkIPAddrBlocks(chain)
		if err == nil {
			if v.Cache != nil {
				v.Cache.put(key, chain)
			}
			return leaf, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("auth: %w", first)
}

// describeVerifyError turns crypto/x509's errors into ones that say which
// certificate and what to do.
func describeVerifyError(certs []*x509.Certificate, err error) error {
	leaf := certs[0]
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var critical x509.UnhandledCriticalExtension
	switch {
	case errors.As(err, &invalid):
		c := invalid.Cert
		if c == nil {
			c = leaf
		}
		switch invalid.Reason {
		case x509.Expired:
			return fmt.Errorf("auth: certificate %s is expired or not yet valid (valid %s to %s): %s",
				subjectString(c), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), invalid.Detail)
		case x509.NotAuthorizedToSign:
			return fmt.Errorf("auth: certificate %s issued certificate %s but is not a CA", subjectString(c), subjectString(leaf))
		}
		return fmt.Errorf("auth: certificate %s: %v", subjectString(c), err)
	case errors.As(err, &unknown):
		c := unknown.Cert
		if c == nil {
			c = leaf
		}
		// crypto/x509 reports an issuer it found but could not use as
		// unknown; say why when the peer sent that issuer.
		for _, issuer := range certs {
			if string(issuer.RawSubject) != string(c.RawIssuer) || issuer == c {
				continue
			}
			if !issuer.BasicConstraintsValid || !issuer.IsCA {
				return fmt.Errorf("auth: certificate %s issued certificate %s but is not a CA (RFC 5280 §4.2.1.9)", subjectString(issuer), subjectString(c))
			}
			if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCertSign == 0 {
				return fmt.Errorf("auth: CA %s: key usage lacks keyCertSign (RFC 5280 §4.2.1.3)", subjectString(issuer))
			}
		}
		return fmt.Errorf("auth: certificate %s: its issuer %q is not a trusted CA, and no CERT payload carries a path to one (%v)",
			subjectString(c), Identity{Type: IDDERASN1DN, Data: c.RawIssuer}.String(), err)
	case errors.As(err, &critical):
		return fmt.Errorf("auth: certificate %s or its CA has an unsupported critical extension", subjectString(leaf))
	}
	return fmt.Errorf("auth: certificate %s: %v", subjectString(leaf), err)
}

// LoadCAPool reads trusted CA certificates for Verifier.Roots (LoadCAs).
func LoadCAPool(paths ...string) (*x509.CertPool, error) {
	cas, err := LoadCAs(paths...)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return pool, nil
}

// LoadCAs reads CA certificates from files (PEM with one or more
// certificates, or one DER certificate) and directories (their *.pem, *.crt,
// *.cer and *.der files, like strongSwan's x509ca). Every path must yield a
// certificate. A critical RFC 3779 extension is marked handled (see
// VerifyChain).
func LoadCAs(paths ...string) ([]*x509.Certificate, error) {
	if len(paths) == 0 {
		return nil, errors.New("auth: no CA certificate files given")
	}
	var out []*x509.Certificate
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("auth: CA certificates: %w", err)
		}
		files := []string{p}
		if fi.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, fmt.Errorf("auth: CA certificates: %w", err)
			}
			files = files[:0]
			for _, e := range entries {
				ext := strings.ToLower(filepath.Ext(e.Name()))
				if e.Type().IsRegular() && slices.Contains([]string{".pem", ".crt", ".cer", ".der"}, ext) {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
			if len(files) == 0 {
				return nil, fmt.Errorf("auth: %s: no *.pem, *.crt, *.cer or *.der files", p)
			}
		}
		for _, f := range files {
			certs, err := loadCertFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, certs...)
		}
	}
	return out, nil
}

func loadCertFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: CA certificates: %w", err)
	}
	certs, err := parseCertsPEM(path, data)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, fmt.Errorf("auth: %s: neither a PEM CERTIFICATE nor a DER certificate", path)
		}
		certs = append(certs, c)
	}
	for _, c := range certs {
		if err := acceptIPAddrBlocks(c); err != nil {
			return nil, fmt.Errorf("auth: %s: certificate %s: %v", path, subjectString(c), err)
		}
	}
	return certs, nil
}

// CertReqHash is a CA's entry in a CERTREQ payload's Certification
// Authority field: the SHA-1 of its SubjectPublicKeyInfo (RFC 7296 §3.7).
func CertReqHash(ca *x509.Certificate) []byte {
	if ca == nil {
		return nil
	}
	h := sha1.Sum(ca.RawSubjectPublicKeyInfo)
	return h[:]
}

// MatchIdentity checks that cert vouches for id, by RFC 4945 §3.1: an IP
// address must be a subjectAltName iPAddress (§3.1.1), an FQDN a dNSName
// (§3.1.2) and an RFC 822 address an rfc822Name (§3.1.3), compared without
// regard to case and with no wildcard or substring matching; a DN must equal
// the Subject (§3.1.5, Identity.Equal), which must not be empty. A KEY_ID,
// which §3.1.7 leaves opaque, matches as in strongSwan: the certificate's
// subjectKeyIdentifier or the SHA-1 of its subjectPublicKey. The error says
// what the certificate holds instead.
func MatchIdentity(cert *x509.Certificate, id Identity) error {
	if cert == nil {
		return errors.New("auth: no certificate")
	}
	subj := subjectString(cert)
	switch id.Type {
	case IDIPv4Addr, IDIPv6Addr:
		if err := id.validate(); err != nil {
			return err
		}
		want, _ := netip.AddrFromSlice(id.Data)
		var have []string
		for _, ip := range cert.IPAddresses {
			a, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			if a.Unmap() == want.Unmap() {
				return nil
			}
			have = append(have, a.String())
		}
		return fmt.Errorf("auth: certificate %s has no subjectAltName IP address %s (RFC 4945 §3.1.1); it has %s",
			subj, want, list(have))
	case IDFQDN:
		for _, n := range cert.DNSNames {
			if asciiEqualFold([]byte(n), id.Data) {
				return nil
			}
		}
		return fmt.Errorf("auth: certificate %s has no subjectAltName dNSName %q (RFC 4945 §3.1.2; the CN does not count); it has %s",
			subj, id.Data, list(cert.DNSNames))
	case IDRFC822Addr:
		for _, e := range cert.EmailAddresses {
			if asciiEqualFold([]byte(e), id.Data) {
				return nil
			}
		}
		return fmt.Errorf("auth: certificate %s has no subjectAltName rfc822Name %q (RFC 4945 §3.1.3); it has %s",
			subj, id.Data, list(cert.EmailAddresses))
	case IDDERASN1DN:
		if rdns, err := decodeDN(cert.RawSubject); err != nil || len(rdns) == 0 {
			return errors.New("auth: the certificate's Subject is empty and cannot match a DN (RFC 4945 §3.1.5)")
		}
		if !SubjectIdentity(cert).Equal(id) {
			return fmt.Errorf("auth: certificate subject %s is not the DN %q (RFC 4945 §3.1.5)", subj, id.String())
		}
		return nil
	case IDKeyID:
		if len(id.Data) > 0 && (string(id.Data) == string(cert.SubjectKeyId) || string(id.Data) == string(pubKeySHA1(cert))) {
			return nil
		}
		return fmt.Errorf("auth: certificate %s: key ID %s is neither its subjectKeyIdentifier nor the SHA-1 of its public key",
			subj, id.String())
	}
	return fmt.Errorf("auth: identity type %v cannot be matched against a certificate", id.Type)
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// pubKeySHA1 is the SHA-1 of the subjectPublicKey BIT STRING's contents
// (RFC 5280 §4.2.1.2 method 1; strongSwan's KEYID_PUBKEY_SHA1).
func pubKeySHA1(cert *x509.Certificate) []byte {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil || len(rest) != 0 {
		return nil
	}
	h := sha1.Sum(spki.PublicKey.Bytes)
	return h[:]
}

// CertifiedAddrs returns the addresses a certificate gives its holder
// authority for (RFC 3554 §4): each subjectAltName iPAddress as a /32 or
// /128, then the RFC 3779 IP address blocks as CIDR prefixes (ranges split
// into the fewest prefixes). "inherit" entries are skipped, as resolving
// them needs the issuer, and a malformed extension contributes nothing. Use
// it on a certificate VerifyChain accepted: that is where the blocks are
// checked against the CAs'. Duplicates are dropped.
func CertifiedAddrs(cert *x509.Certificate) []netip.Prefix {
	if cert == nil {
		return nil
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	add := func(p netip.Prefix) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, ip := range cert.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			add(netip.PrefixFrom(a, a.BitLen()))
		}
	}
	fams, err := ipAddrBlocks(cert)
	if err != nil {
		return out
	}
	for _, f := range fams {
		for _, r := range f.ranges {
			for _, p := range rangePrefixes(r.lo, r.hi) {
				add(p)
			}
		}
	}
	return out
}
