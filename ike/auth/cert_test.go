package auth

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/pki"
)

func newCA(t *testing.T, name string, alg pki.KeyAlg) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, alg)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *pki.CA, o pki.Options) *pki.Leaf {
	t.Helper()
	l, err := ca.IssueWith(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func pool(cas ...*pki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// TestVerifyChain_RFC4945_5 covers path validation as RFC 4945 §5 and RFC
// 5280 §6 want it, and that errors say what is wrong.
func TestVerifyChain_RFC4945_5(t *testing.T) {
	root := newCA(t, "Root CA", pki.ECDSAP256)
	other := newCA(t, "Other CA", pki.ECDSAP256)
	inter, err := root.NewIntermediate("Intermediate CA", pki.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	leaf := issue(t, root, pki.Options{CN: "gw", Alg: pki.ECDSAP256, DNS: []string{"gw.example"}})
	viaInter := issue(t, inter, pki.Options{CN: "rw1", Alg: pki.Ed25519})
	encOnly := issue(t, root, pki.Options{CN: "enc", Alg: pki.RSA2048, KeyUsage: x509.KeyUsageKeyEncipherment})
	nonRep := issue(t, root, pki.Options{CN: "nr", Alg: pki.ECDSAP256, KeyUsage: x509.KeyUsageContentCommitment})
	serverAuth := issue(t, root, pki.Options{CN: "eku", Alg: pki.ECDSAP256, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	notYet := issue(t, root, pki.Options{CN: "future", Alg: pki.ECDSAP256, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
	// A leaf that issues a certificate: not a CA (RFC 5280 §4.2.1.9).
	fakeCA := &pki.CA{Cert: leaf.Cert, Key: leaf.Key}
	byLeaf := issue(t, fakeCA, pki.Options{CN: "by-leaf", Alg: pki.ECDSAP256})
	// A CA whose key usage lacks keyCertSign (RFC 5280 §4.2.1.3).
	noSignCA := caWithUsage(t, root, "No CertSign CA", x509.KeyUsageCRLSign)
	byNoSign := issue(t, noSignCA, pki.Options{CN: "by-nosign", Alg: pki.ECDSAP256})

	now := time.Now()
	for _, tc := range []struct {
		name    string
		v       *Verifier
		chain   [][]byte
		wantErr string // "" for success
	}{
		{"leaf signed by root", &Verifier{Roots: pool(root)}, [][]byte{leaf.Cert.Raw}, ""},
		{"leaf via intermediate in CERT payloads", &Verifier{Roots: pool(root)}, [][]byte{viaInter.Cert.Raw, inter.Cert.Raw}, ""},
		{"root in CERT payloads too", &Verifier{Roots: pool(root)}, [][]byte{viaInter.Cert.Raw, root.Cert.Raw, inter.Cert.Raw}, ""},
		{"nonRepudiation suffices (RFC 4945 §5.1.3.2)", &Verifier{Roots: pool(root)}, [][]byte{nonRep.Cert.Raw}, ""},
		{"any extended key usage (RFC 4945 §5.1.3.12)", &Verifier{Roots: pool(root)}, [][]byte{serverAuth.Cert.Raw}, ""},
		{"two roots", &Verifier{Roots: pool(other, root)}, [][]byte{leaf.Cert.Raw}, ""},
		{"expired", &Verifier{Roots: pool(root), Now: func() time.Time { return now.Add(48 * time.Hour) }}, [][]byte{leaf.Cert.Raw}, "expired or not yet valid"},
		{"not yet valid", &Verifier{Roots: pool(root)}, [][]byte{notYet.Cert.Raw}, "expired or not yet valid"},
		{"unknown CA", &Verifier{Roots: pool(other)}, [][]byte{leaf.Cert.Raw}, "is not a trusted CA"},
		{"intermediate missing", &Verifier{Roots: pool(root)}, [][]byte{viaInter.Cert.Raw}, "is not a trusted CA"},
		{"key usage without digitalSignature (RFC 4945 §5.1.3.2)", &Verifier{Roots: pool(root)}, [][]byte{encOnly.Cert.Raw}, "digitalSignature"},
		{"issuer is not a CA", &Verifier{Roots: pool(root)}, [][]byte{byLeaf.Cert.Raw, leaf.Cert.Raw}, "is not a CA"},
		{"CA without keyCertSign", &Verifier{Roots: pool(root)}, [][]byte{byNoSign.Cert.Raw, noSignCA.Cert.Raw}, "keyCertSign"},
		{"no roots", &Verifier{}, [][]byte{leaf.Cert.Raw}, "no trusted CA"},
		{"nil verifier", nil, [][]byte{leaf.Cert.Raw}, "no trusted CA"},
		{"no certificate", &Verifier{Roots: pool(root)}, nil, "no certificate"},
		{"garbage", &Verifier{Roots: pool(root)}, [][]byte{{0x30, 0x03, 1, 2, 3}}, "CERT payload 1"},
		{"too many", &Verifier{Roots: pool(root)}, slices.Repeat([][]byte{leaf.Cert.Raw}, 9), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.v.VerifyChain(tc.chain)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyChain: %v", err)
				}
				if !got.Equal(mustParse(t, tc.chain[0])) {
					t.Fatal("VerifyChain returned another certificate than the leaf")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// caWithUsage makes an intermediate CA with the given key usage, which
// pki does not offer.
func caWithUsage(t *testing.T, parent *pki.CA, name string, usage x509.KeyUsage) *pki.CA {
	t.Helper()
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          parent.Cert.SerialNumber,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(nil, tmpl, parent.Cert, key.Public(), parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.CA{Cert: mustParse(t, der), Key: key}
}

// TestMatchIdentity_RFC4945_3_1 checks each ID type against the
// certificate field RFC 4945 §3.1 assigns it.
func TestMatchIdentity_RFC4945_3_1(t *testing.T) {
	ca := newCA(t, "CA", pki.ECDSAP256)
	l := issue(t, ca, pki.Options{
		CN: "gw.example", Alg: pki.ECDSAP256,
		DNS:    []string{"gw.example", "*.wild.example"},
		IPs:    []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		Emails: []string{"Admin@Example.org"},
	})
	empty := issue(t, ca, pki.Options{Alg: pki.ECDSAP256, Subject: &pkix.Name{}, DNS: []string{"e.example"}})
	p := func(s string) Identity {
		id, err := ParseIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ski := Identity{IDKeyID, l.Cert.SubjectKeyId}
	h := sha1.Sum(l.Cert.RawSubjectPublicKeyInfo) // not a key ID strongSwan uses
	for _, tc := range []struct {
		name    string
		cert    *x509.Certificate
		id      Identity
		wantErr string
	}{
		{"§3.1.1 IPv4 in SAN", l.Cert, p("192.0.2.1"), ""},
		{"§3.1.1 IPv6 in SAN", l.Cert, p("2001:db8::1"), ""},
		{"§3.1.1 IPv4 not in SAN", l.Cert, p("192.0.2.2"), "no subjectAltName IP address 192.0.2.2"},
		{"§3.1.1 IPv6 not in SAN", l.Cert, p("2001:db8::2"), "it has 192.0.2.1, 2001:db8::1"},
		{"§3.1.2 FQDN in SAN", l.Cert, p("gw.example"), ""},
		{"§3.1.2 FQDN case-insensitive", l.Cert, p("GW.Example"), ""},
		{"§3.1.2 no wildcard matching", l.Cert, p("a.wild.example"), "no subjectAltName dNSName"},
		{"§3.1.2 CN is not a dNSName", issue(t, ca, pki.Options{CN: "cn.example", Alg: pki.ECDSAP256}).Cert, p("cn.example"), "the CN does not count"},
		{"§3.1.2 FQDN that looks like the IP", l.Cert, p("@192.0.2.1"), "no subjectAltName dNSName"},
		{"§3.1.3 RFC 822 in SAN, case-insensitive", l.Cert, p("admin@example.org"), ""},
		{"§3.1.3 RFC 822 not in SAN", l.Cert, p("root@example.org"), "no subjectAltName rfc822Name"},
		{"§3.1.5 DN equal to Subject", l.Cert, p("O=roamsec, CN=gw.example"), ""},
		{"§3.1.5 DN in RFC 4514 order", l.Cert, p("CN=gw.example,O=roamsec"), ""},
		{"§3.1.5 DN equal to raw Subject", l.Cert, SubjectIdentity(l.Cert), ""},
		{"§3.1.5 DN differs", l.Cert, p("O=roamsec, CN=other"), "is not the DN"},
		{"§3.1.5 DN subset", l.Cert, p("CN=gw.example"), "is not the DN"},
		{"§3.1.5 empty Subject", empty.Cert, p("CN=x"), "Subject is empty"},
		{"§3.1.7 KEY_ID as subjectKeyIdentifier", l.Cert, ski, ""},
		{"§3.1.7 KEY_ID as SHA-1 of the public key", l.Cert, Identity{IDKeyID, pubKeySHA1(l.Cert)}, ""},
		{"§3.1.7 other KEY_ID", l.Cert, Identity{IDKeyID, h[:]}, "key ID"},
		{"malformed IPv4 identity", l.Cert, Identity{IDIPv4Addr, []byte{1, 2}}, "4 bytes"},
		{"unsupported type", l.Cert, Identity{IDType(10), []byte{1}}, "cannot be matched"},
		{"no certificate", nil, p("gw.example"), "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := MatchIdentity(tc.cert, tc.id)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("MatchIdentity: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

// rfc3779 hand-encodes an IPAddrBlocks extension (RFC 3779 §2.2.3) with a
// range and an inherit entry, which pki.IPAddrBlocks does not make.
func rfc3779(t *testing.T, critical bool, fams ...any) pkix.Extension {
	t.Helper()
	der, err := asn1.Marshal(fams)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidIPAddrBlocks, Critical: critical, Value: der}
}

type famList struct {
	AFI   []byte
	Addrs []any
}

type famInherit struct {
	AFI     []byte
	Inherit asn1.RawValue
}

type addrRangeASN1 struct{ Min, Max asn1.BitString }

func bits(b []byte, n int) asn1.BitString { return asn1.BitString{Bytes: b, BitLength: n} }

// TestCertifiedAddrs_RFC3554_4 checks the addresses a certificate gives
// authority for: SAN IPs and RFC 3779 blocks, prefixes and ranges.
func TestCertifiedAddrs_RFC3554_4(t *testing.T) {
	ca := newCA(t, "CA", pki.ECDSAP256)
	ext := rfc3779(t, true,
		famList{AFI: []byte{0, 1}, Addrs: []any{
			bits([]byte{10, 1}, 16), // 10.1.0.0/16
			addrRangeASN1{bits([]byte{192, 0, 2, 1}, 32), bits([]byte{192, 0, 2, 6}, 31)}, // 192.0.2.1 - 192.0.2.7
			bits([]byte{198, 51, 100, 7}, 32),
		}},
		famList{AFI: []byte{0, 2, 1}, Addrs: []any{bits([]byte{0x20, 0x01, 0x0d, 0xb8}, 32)}}, // with SAFI
		famInherit{AFI: []byte{0, 2}, Inherit: asn1.NullRawValue},
		famList{AFI: []byte{0, 9}, Addrs: []any{bits([]byte{1}, 8)}}, // unknown AFI: skipped
	)
	l := issue(t, ca, pki.Options{CN: "rw1", Alg: pki.ECDSAP256,
		IPs:        []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8:1::5"), netip.MustParseAddr("198.51.100.7")},
		Extensions: []pkix.Extension{ext}})
	var got []string
	for _, p := range CertifiedAddrs(l.Cert) {
		got = append(got, p.String())
	}
	want := []string{
		"203.0.113.5/32", "2001:db8:1::5/128", "198.51.100.7/32",
		"10.1.0.0/16", "192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/30", "2001:db8::/32",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("CertifiedAddrs = %v\nwant %v", got, want)
	}
	if CertifiedAddrs(nil) != nil {
		t.Fatal("CertifiedAddrs(nil) not nil")
	}
	// The critical extension is handled, so the chain verifies.
	if _, err := (&Verifier{Roots: pool(ca)}).VerifyChain([][]byte{l.Cert.Raw}); err != nil {
		t.Fatalf("VerifyChain with a critical ipAddrBlocks: %v", err)
	}
	// A malformed critical extension is refused.
	bad := issue(t, ca, pki.Options{CN: "bad", Alg: pki.ECDSAP256,
		Extensions: []pkix.Extension{{Id: oidIPAddrBlocks, Critical: true, Value: []byte{0x30, 0x03, 0x04, 0x01, 0x01}}}})
	if _, err := (&Verifier{Roots: pool(ca)}).VerifyChain([][]byte{bad.Cert.Raw}); err == nil || !strings.Contains(err.Error(), "RFC 3779") {
		t.Fatalf("malformed ipAddrBlocks: err = %v", err)
	}
	if got := CertifiedAddrs(bad.Cert); len(got) != 0 {
		t.Fatalf("CertifiedAddrs of a malformed extension = %v", got)
	}
}

func TestRangePrefixes(t *testing.T) {
	for _, tc := range []struct {
		lo, hi string
		want   []string
	}{
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"10.0.0.0", "10.0.0.0", []string{"10.0.0.0/32"}},
		{"10.0.0.1", "10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"255.255.255.254", "255.255.255.255", []string{"255.255.255.254/31"}},
		{"::", "::ffff", []string{"::/112"}},
		{"2001:db8::", "2001:db8::1:0", []string{"2001:db8::/112", "2001:db8::1:0/128"}},
	} {
		var got []string
		for _, p := range rangePrefixes(netip.MustParseAddr(tc.lo), netip.MustParseAddr(tc.hi)) {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("rangePrefixes(%s, %s) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// TestIPAddrBlocksBoundedByCA_RFC3779_2_3: a leaf's blocks must lie within
// those of every CA above it that has the extension.
func TestIPAddrBlocksBoundedByCA_RFC3779_2_3(t *testing.T) {
	root := newCA(t, "Root", pki.ECDSAP256)
	caExt, err := pki.IPAddrBlocks(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"))
	if err != nil {
		t.Fatal(err)
	}
	bounded := caWithExtensions(t, root, "Bounded CA", caExt)
	for _, tc := range []struct {
		name     string
		prefixes []string
		ok       bool
	}{
		{"inside", []string{"10.1.0.0/16", "2001:db8:5::/48"}, true},
		{"equal", []string{"10.0.0.0/8"}, true},
		{"outside", []string{"11.0.0.0/16"}, false},
		{"larger", []string{"10.0.0.0/7"}, false},
		{"family the CA lacks", []string{"2001:db9::/32"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps []netip.Prefix
			for _, s := range tc.prefixes {
				ps = append(ps, netip.MustParsePrefix(s))
			}
			ext, err := pki.IPAddrBlocks(ps...)
			if err != nil {
				t.Fatal(err)
			}
			l := issue(t, bounded, pki.Options{CN: "rw", Alg: pki.ECDSAP256, Extensions: []pkix.Extension{ext}})
			_, err = (&Verifier{Roots: pool(root)}).VerifyChain([][]byte{l.Cert.Raw, bounded.Cert.Raw})
			if (err == nil) != tc.ok {
				t.Fatalf("VerifyChain: %v, want ok=%v", err, tc.ok)
			}
			// A CA without the extension neither grants nor limits.
			l2 := issue(t, root, pki.Options{CN: "rw", Alg: pki.ECDSAP256, Extensions: []pkix.Extension{ext}})
			if _, err := (&Verifier{Roots: pool(root)}).VerifyChain([][]byte{l2.Cert.Raw}); err != nil {
				t.Fatalf("VerifyChain under a CA without RFC 3779: %v", err)
			}
		})
	}
	// IPv4 only in the CA: an IPv6 block in the leaf is outside.
	v4only, err := pki.IPAddrBlocks(netip.MustParsePrefix("10.0.0.0/8"))
	if err != nil {
		t.Fatal(err)
	}
	ca4 := caWithExtensions(t, root, "v4 CA", v4only)
	ext6, _ := pki.IPAddrBlocks(netip.MustParsePrefix("2001:db8::/48"))
	l := issue(t, ca4, pki.Options{CN: "rw", Alg: pki.ECDSAP256, Extensions: []pkix.Extension{ext6}})
	if _, err := (&Verifier{Roots: pool(root)}).VerifyChain([][]byte{l.Cert.Raw, ca4.Cert.Raw}); err == nil {
		t.Fatal("IPv6 block under an IPv4-only CA accepted")
	}
}

func caWithExtensions(t *testing.T, parent *pki.CA, name string, exts ...pkix.Extension) *pki.CA {
	t.Helper()
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          parent.Cert.SerialNumber,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		ExtraExtensions:       exts,
	}
	der, err := x509.CreateCertificate(nil, tmpl, parent.Cert, key.Public(), parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.CA{Cert: mustParse(t, der), Key: key}
}

// TestLoadCredential reads the key formats strongSwan and OpenSSL write.
func TestLoadCredential(t *testing.T) {
	dir := t.TempDir()
	root := newCA(t, "Root", pki.ECDSAP384)
	inter, err := root.NewIntermediate("Inter", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ec := issue(t, inter, pki.Options{CN: "ec", Alg: pki.ECDSAP256, DNS: []string{"ec.example"}})
	rsaLeaf := issue(t, root, pki.Options{CN: "rsa", Alg: pki.RSA2048})
	ed := issue(t, root, pki.Options{CN: "ed", Alg: pki.Ed25519})
	write := func(name string, parts ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, slices.Concat(parts...), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sec1DER, err := x509.MarshalECPrivateKey(ec.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER})
	ecParams := []byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n")
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xDER, err := x509.MarshalPKCS8PrivateKey(x)
	if err != nil {
		t.Fatal(err)
	}
	chainFile := write("ec-chain.crt", ec.CertPEM, inter.PEM)
	for _, tc := range []struct {
		name     string
		cert     string
		key      string
		chainLen int
	}{
		{"PKCS#8 ECDSA with chain", chainFile, write("ec.key", ec.KeyPEM), 2},
		{"SEC1 ECDSA after EC PARAMETERS", chainFile, write("ec-sec1.key", ecParams, sec1), 2},
		{"PKCS#1 RSA", write("rsa.crt", rsaLeaf.CertPEM), write("rsa1.key", rsaLeaf.KeyPEMPKCS1), 1},
		{"PKCS#8 RSA", write("rsa8.crt", rsaLeaf.CertPEM), write("rsa8.key", rsaLeaf.KeyPEM), 1},
		{"PKCS#8 Ed25519", write("ed.crt", ed.CertPEM), write("ed.key", ed.KeyPEM), 1},
		{"one file with both", write("both.pem", ec.KeyPEM, ec.CertPEM), filepath.Join(dir, "both.pem"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadCredential(tc.cert, tc.key)
			if err != nil {
				t.Fatalf("LoadCredential: %v", err)
			}
			if len(c.Chain) != tc.chainLen || len(c.CertPayloads()) != tc.chainLen {
				t.Fatalf("chain of %d, want %d", len(c.Chain), tc.chainLen)
			}
			m, d, err := c.Sign([]byte("x"), SupportedHashAlgs)
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(m, d, []byte("x"), c.Chain[0].PublicKey); err != nil {
				t.Fatal(err)
			}
		})
	}

	keyBody := strings.Split(string(ec.KeyPEM), "\n")[1] // a line of key material
	corrupt := bytes.Replace(ec.KeyPEM, []byte(keyBody[:20]), []byte("AAAAAAAAAAAAAAAAAAAA"), 1)
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"missing certificate file", filepath.Join(dir, "nope.crt"), write("k1.key", ec.KeyPEM), "nope.crt"},
		{"certificate file without certificate", write("empty.crt", []byte("hello")), write("k2.key", ec.KeyPEM), "empty.crt: no CERTIFICATE"},
		{"broken certificate", write("broken.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})), write("k3.key", ec.KeyPEM), "broken.crt: PEM block 1: not a valid X.509"},
		{"missing key file", chainFile, filepath.Join(dir, "nope.key"), "nope.key"},
		{"key file without key", chainFile, write("nokey.key", ec.CertPEM), "nokey.key: no PRIVATE KEY"},
		{"encrypted PKCS#8", chainFile, write("enc.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})), "encrypted"},
		{"legacy encrypted PEM", chainFile, write("enc2.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: sec1DER})), "encrypted"},
		{"corrupt key", chainFile, write("corrupt.key", corrupt), "corrupt.key: PEM block 1 (PRIVATE KEY): not a valid private key"},
		{"key of another certificate", chainFile, write("rsa-other.key", rsaLeaf.KeyPEM), "does not belong to certificate"},
		{"two keys", chainFile, write("two.key", ec.KeyPEM, ec.KeyPEM), "more than one private key"},
		{"X25519 key", chainFile, write("x.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: xDER})), "cannot sign"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCredential(tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			// Which file failed is typed (config names its field by it).
			want := PartKey
			if strings.Contains(tc.name, "certificate") && !strings.Contains(tc.name, "key of another") {
				want = PartCert
			}
			if ce := (*CredentialFileError)(nil); !errors.As(err, &ce) || ce.Part != want {
				t.Fatalf("err %v: part %v, want %v", err, ce, want)
			}
			if strings.Contains(err.Error(), keyBody[20:40]) {
				t.Fatalf("error shows key material: %v", err)
			}
		})
	}
}

// TestLoadCredentialOpenSSL loads a key and certificate made by openssl as
// an administrator would (SEC1 key with EC PARAMETERS, self-signed cert).
func TestLoadCredentialOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
	for _, args := range [][]string{
		{"ecparam", "-name", "prime256v1", "-genkey", "-out", key},
		{"req", "-new", "-x509", "-key", key, "-subj", "/C=CH/O=roamsec/CN=gw", "-days", "1", "-out", cert},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	c, err := LoadCredential(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	// The DN as strongSwan users write it matches OpenSSL's subject.
	id, err := ParseIdentity("C=CH, O=roamsec, CN=gw")
	if err != nil {
		t.Fatal(err)
	}
	wire, err := c.IDFor(id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wire.Data, c.Chain[0].RawSubject) {
		t.Fatal("IDFor does not send the certificate's own Subject encoding")
	}
}

func TestIDFor(t *testing.T) {
	ca := newCA(t, "CA", pki.ECDSAP256)
	l := issue(t, ca, pki.Options{CN: "gw", Alg: pki.ECDSAP256, DNS: []string{"gw.example"}})
	c, err := NewCredential(l.Key, []*x509.Certificate{l.Cert})
	if err != nil {
		t.Fatal(err)
	}
	dn, _ := ParseIdentity("CN=gw,O=roamsec") // RFC 4514 order
	got, err := c.IDFor(dn)
	if err != nil || !bytes.Equal(got.Data, l.Cert.RawSubject) {
		t.Fatalf("IDFor(DN) = %v, %v; want the Subject as encoded", got, err)
	}
	fqdn, _ := ParseIdentity("gw.example")
	if got, err := c.IDFor(fqdn); err != nil || !got.Equal(fqdn) {
		t.Fatalf("IDFor(FQDN) = %v, %v", got, err)
	}
	other, _ := ParseIdentity("other.example")
	if _, err := c.IDFor(other); err == nil {
		t.Fatal("IDFor accepted an identity the certificate does not hold")
	}
	if _, err := NewCredential(nil, []*x509.Certificate{l.Cert}); err == nil {
		t.Fatal("NewCredential without key")
	}
	if _, err := NewCredential(l.Key, nil); err == nil {
		t.Fatal("NewCredential without certificate")
	}
}

func TestLoadCAPool(t *testing.T) {
	dir := t.TempDir()
	a, b := newCA(t, "A", pki.ECDSAP256), newCA(t, "B", pki.RSA2048)
	la := issue(t, a, pki.Options{CN: "a", Alg: pki.ECDSAP256})
	lb := issue(t, b, pki.Options{CN: "b", Alg: pki.ECDSAP256})
	caDir := filepath.Join(dir, "cacerts")
	if err := os.Mkdir(caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(p string, data []byte) string {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	both := write(filepath.Join(dir, "both.pem"), slices.Concat(a.PEM, b.PEM))
	write(filepath.Join(caDir, "a.crt"), a.PEM)
	write(filepath.Join(caDir, "b.der"), b.Cert.Raw)
	write(filepath.Join(caDir, "README"), []byte("not a certificate"))
	onlyA := write(filepath.Join(dir, "a.pem"), a.PEM)
	for _, tc := range []struct {
		name   string
		paths  []string
		aOK    bool
		bOK    bool
		errSub string
	}{
		{"one file, two CAs", []string{both}, true, true, ""},
		{"directory with PEM and DER", []string{caDir}, true, true, ""},
		{"one CA", []string{onlyA}, true, false, ""},
		{"nothing", nil, false, false, "no CA certificate files"},
		{"missing", []string{filepath.Join(dir, "missing.pem")}, false, false, "missing.pem"},
		{"not a certificate", []string{write(filepath.Join(dir, "junk.pem"), []byte("junk"))}, false, false, "neither a PEM CERTIFICATE nor a DER certificate"},
		{"empty directory", []string{t.TempDir()}, false, false, "no *.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := LoadCAPool(tc.paths...)
			if tc.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("err = %v, want one saying %q", err, tc.errSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v := &Verifier{Roots: p}
			if _, err := v.VerifyChain([][]byte{la.Cert.Raw}); (err == nil) != tc.aOK {
				t.Errorf("leaf of A: %v", err)
			}
			if _, err := v.VerifyChain([][]byte{lb.Cert.Raw}); (err == nil) != tc.bOK {
				t.Errorf("leaf of B: %v", err)
			}
		})
	}
	if h := CertReqHash(a.Cert); len(h) != 20 {
		t.Fatalf("CertReqHash of %d bytes", len(h))
	}
}
