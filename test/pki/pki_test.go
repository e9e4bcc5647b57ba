package pki

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestCertificateFields checks what strongSwan expects of a CA and a leaf
// (RFC 5280 §4.2.1.1–§4.2.1.3, §4.2.1.9): key identifiers, basic
// constraints, key usage, serial and validity, and that the chain verifies.
func TestCertificateFields(t *testing.T) {
	for _, alg := range []KeyAlg{ECDSAP256, ECDSAP384, RSA2048, Ed25519} {
		t.Run(alg.String(), func(t *testing.T) {
			ca, err := NewCA("Test CA", alg)
			if err != nil {
				t.Fatal(err)
			}
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Fatalf("CA: IsCA %v, BasicConstraintsValid %v, KeyUsage %v", c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
			}
			if len(c.SubjectKeyId) != 20 || !bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
				t.Fatalf("CA key identifiers: SKI %x AKI %x", c.SubjectKeyId, c.AuthorityKeyId)
			}
			l, err := ca.Issue("rw1", alg, []string{"rw1.example"}, []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}, []string{"rw1@example.org"})
			if err != nil {
				t.Fatal(err)
			}
			lc := l.Cert
			if lc.IsCA || lc.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Fatalf("leaf: IsCA %v KeyUsage %v", lc.IsCA, lc.KeyUsage)
			}
			if !bytes.Equal(lc.AuthorityKeyId, c.SubjectKeyId) || len(lc.SubjectKeyId) != 20 {
				t.Fatalf("leaf key identifiers: SKI %x AKI %x", lc.SubjectKeyId, lc.AuthorityKeyId)
			}
			if lc.SerialNumber.Sign() <= 0 || lc.SerialNumber.Cmp(c.SerialNumber) == 0 {
				t.Fatalf("serial %v", lc.SerialNumber)
			}
			now := time.Now()
			if d := now.Sub(lc.NotBefore); d < 59*time.Minute || d > 61*time.Minute {
				t.Fatalf("NotBefore %v", lc.NotBefore)
			}
			if d := lc.NotAfter.Sub(now); d < 23*time.Hour || d > 25*time.Hour {
				t.Fatalf("NotAfter %v", lc.NotAfter)
			}
			if lc.Subject.CommonName != "rw1" || len(lc.Subject.Organization) != 1 || lc.Subject.Organization[0] != Organization {
				t.Fatalf("subject %v", lc.Subject)
			}
			if len(lc.DNSNames) != 1 || len(lc.IPAddresses) != 2 || len(lc.EmailAddresses) != 1 || len(lc.IPAddresses[0]) != 4 {
				t.Fatalf("SANs %v %v %v", lc.DNSNames, lc.IPAddresses, lc.EmailAddresses)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			if _, err := lc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatal(err)
			}
			// Key PEMs parse back to the certificate's key.
			blk, _ := pem.Decode(l.KeyPEM)
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil || blk.Type != "PRIVATE KEY" {
				t.Fatalf("PKCS#8 key: %v", err)
			}
			if !k.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(lc.PublicKey) {
				t.Fatal("PKCS#8 key is not the certificate's")
			}
			if alg == RSA2048 {
				blk, _ := pem.Decode(l.KeyPEMPKCS1)
				k1, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
				if err != nil || blk.Type != "RSA PRIVATE KEY" || !k1.PublicKey.Equal(lc.PublicKey.(*rsa.PublicKey)) {
					t.Fatalf("PKCS#1 key: %v", err)
				}
			} else if l.KeyPEMPKCS1 != nil {
				t.Fatal("KeyPEMPKCS1 for a non-RSA key")
			}
		})
	}
}

func TestIntermediate(t *testing.T) {
	root, err := NewCA("Root", ECDSAP384)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("Inter", RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	l, err := inter.Issue("gw", ECDSAP256, []string{"gw.example"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters.AddCert(inter.Cert)
	if _, err := l.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: "gw.example"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inter.Cert.AuthorityKeyId, root.Cert.SubjectKeyId) {
		t.Fatal("intermediate AKI is not the root's SKI")
	}
}

func TestWrite(t *testing.T) {
	ca, err := NewCA("CA", ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Issue("gw", ECDSAP256, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// An existing file with loose permissions is tightened.
	if err := os.WriteFile(filepath.Join(dir, "gw.key"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := l.Write(dir, "gw")
	if err != nil {
		t.Fatal(err)
	}
	caPath, err := ca.Write(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string][]byte{certPath: l.CertPEM, keyPath: l.KeyPEM, caPath: ca.PEM} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s content differs", p)
		}
	}
	if _, _, err := l.Write(filepath.Join(dir, "missing"), "x"); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
	// openssl, as strongSwan's openssl plugin would, accepts the files.
	if _, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command("openssl", "verify", "-CAfile", caPath, certPath).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl verify: %v\n%s", err, out)
		}
	}
}

func TestIPAddrBlocks(t *testing.T) {
	ext, err := IPAddrBlocks(netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("10.64.0.0/12"), netip.MustParsePrefix("10.1.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	// RFC 3779 §2.1.2 encoding: the prefix bits only; IPv4 family first.
	want := "3021" + "3010" + "04020001" + "300a" + "0303000a01" + "0303040a40" +
		"300d" + "04020002" + "3007" + "030500" + "20010db8"
	if got := hexs(ext.Value); got != want || !ext.Critical {
		t.Fatalf("IPAddrBlocks = %s (critical %v)\nwant %s", got, ext.Critical, want)
	}
	if _, err := IPAddrBlocks(netip.Prefix{}); err == nil {
		t.Fatal("invalid prefix accepted")
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestUnknownKeyAlg(t *testing.T) {
	if _, err := NewCA("x", KeyAlg(99)); err == nil {
		t.Fatal("unknown KeyAlg accepted")
	}
	if _, err := (*CA)(nil).Issue("x", ECDSAP256, nil, nil, nil); err == nil {
		t.Fatal("nil CA issued")
	}
}
