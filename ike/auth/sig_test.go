package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Keys are made once: RSA generation is slow under -race.
var (
	keysOnce sync.Once
	keys     map[string]crypto.Signer
)

func testKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[string]crypto.Signer{}
		for _, n := range []string{"p256", "p256b", "p384", "p521", "rsa", "rsab", "ed25519", "ed25519b"} {
			var k crypto.Signer
			var err error
			switch strings.TrimSuffix(n, "b") {
			case "p256":
				k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			case "p384":
				k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			case "p521":
				k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
			case "rsa":
				k, err = rsa.GenerateKey(rand.Reader, 2048)
			case "ed25519":
				_, k, err = ed25519.GenerateKey(rand.Reader)
			}
			if err != nil {
				panic(err)
			}
			keys[n] = k
		}
	})
	k, ok := keys[name]
	if !ok {
		t.Fatalf("no test key %q", name)
	}
	return k
}

func cred(t testing.TB, name string) *Credential {
	return &Credential{Key: testKey(t, name)}
}

// algID returns the AlgorithmIdentifier of method 14 AUTH data.
func algID(t *testing.T, data []byte) string {
	t.Helper()
	if len(data) < 1 || len(data) < 1+int(data[0]) {
		t.Fatalf("short method 14 data %x", data)
	}
	return hex.EncodeToString(data[1 : 1+int(data[0])])
}

// AlgorithmIdentifiers as strongSwan sends them: NULL parameters for RSA
// and hashes, none for ECDSA and Ed25519 (RFC 7427 Appendix A).
const (
	algSHA256RSA    = "300d06092a864886f70d01010b0500"
	algSHA384RSA    = "300d06092a864886f70d01010c0500"
	algSHA512RSA    = "300d06092a864886f70d01010d0500"
	algSHA1RSA      = "300d06092a864886f70d0101050500"
	algECDSA256     = "300a06082a8648ce3d040302"
	algECDSA384     = "300a06082a8648ce3d040303"
	algECDSA512     = "300a06082a8648ce3d040304"
	algECDSASHA1    = "300906072a8648ce3d0401"
	algEd25519      = "300506032b6570"
	algRSAPSSSHA256 = "3041" + "06092a864886f70d01010a" + "3034" +
		"a00f300d06096086480165030402010500" +
		"a11c301a06092a864886f70d010108300d06096086480165030402010500" +
		"a203020120"
)

// TestSignVerifyRoundTrip_RFC7427_3 signs with every key type and hash
// choice and verifies the result, checking method and AlgorithmIdentifier.
func TestSignVerifyRoundTrip_RFC7427_3(t *testing.T) {
	all := SupportedHashAlgs
	for _, tc := range []struct {
		name   string
		key    string
		pss    bool
		peer   []HashAlg
		method uint8
		alg    string // for method 14
	}{
		{"ECDSA P-256 SHA-256", "p256", false, all, MethodDigitalSignature, algECDSA256},
		{"ECDSA P-384 SHA-384", "p384", false, all, MethodDigitalSignature, algECDSA384},
		{"ECDSA P-521 SHA-512", "p521", false, all, MethodDigitalSignature, algECDSA512},
		{"ECDSA P-256 peer only SHA-384", "p256", false, []HashAlg{HashSHA384}, MethodDigitalSignature, algECDSA384},
		{"ECDSA P-384 peer only SHA-256: legacy 10", "p384", false, []HashAlg{HashSHA256}, MethodECDSA384, ""},
		{"RSA PKCS#1 v1.5 SHA-256", "rsa", false, all, MethodDigitalSignature, algSHA256RSA},
		{"RSA PKCS#1 v1.5 peer SHA-512", "rsa", false, []HashAlg{HashSHA512, 999}, MethodDigitalSignature, algSHA512RSA},
		{"RSA PKCS#1 v1.5 peer SHA-384", "rsa", false, []HashAlg{HashSHA384}, MethodDigitalSignature, algSHA384RSA},
		{"RSASSA-PSS SHA-256", "rsa", true, all, MethodDigitalSignature, algRSAPSSSHA256},
		{"Ed25519", "ed25519", false, all, MethodDigitalSignature, algEd25519},
		{"Ed25519 only Identity", "ed25519", false, []HashAlg{HashIdentity}, MethodDigitalSignature, algEd25519},
		{"legacy ECDSA 9 (RFC 4754)", "p256", false, nil, MethodECDSA256, ""},
		{"legacy ECDSA 10 (RFC 4754)", "p384", false, nil, MethodECDSA384, ""},
		{"legacy ECDSA 11 (RFC 4754)", "p521", false, nil, MethodECDSA521, ""},
		{"legacy RSA 1 (RFC 7296)", "rsa", false, nil, MethodRSA, ""},
		{"legacy RSA 1 when only SHA-1 is common", "rsa", false, []HashAlg{HashSHA1}, MethodRSA, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cred(t, tc.key)
			c.RSAPSS = tc.pss
			signed := []byte("InitiatorSignedOctets of " + tc.name)
			method, data, err := c.Sign(signed, tc.peer)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if method != tc.method {
				t.Fatalf("method %d, want %d", method, tc.method)
			}
			if method == MethodDigitalSignature {
				if got := algID(t, data); got != tc.alg {
					t.Fatalf("AlgorithmIdentifier %s, want %s", got, tc.alg)
				}
			}
			switch method {
			case MethodECDSA256:
				if len(data) != 64 {
					t.Fatalf("method 9 signature of %d bytes, want 64 (RFC 4754 §7)", len(data))
				}
			case MethodECDSA521:
				if len(data) != 132 {
					t.Fatalf("method 11 signature of %d bytes, want 132 (RFC 4754 §7)", len(data))
				}
			}
			if err := Verify(method, data, signed, c.Key.Public()); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestSignWithoutCommonHash_RFC8420_2: Ed25519 exists only in method 14
// with the Identity hash, so without it there is nothing to fall back to.
func TestSignWithoutCommonHash_RFC8420_2(t *testing.T) {
	if _, _, err := cred(t, "ed25519").Sign([]byte("x"), nil); err == nil {
		t.Error("Ed25519 without RFC 7427 signed")
	}
	if _, _, err := cred(t, "ed25519").Sign([]byte("x"), []HashAlg{HashSHA256}); err == nil {
		t.Error("Ed25519 without the Identity hash signed")
	}
	if _, _, err := (*Credential)(nil).Sign([]byte("x"), nil); err == nil {
		t.Error("nil credential signed")
	}
	if _, _, err := (&Credential{}).Sign([]byte("x"), nil); err == nil {
		t.Error("credential without key signed")
	}
}

// signPSS builds method 14 data for a PSS signature made by crypto/rsa
// with the given AlgorithmIdentifier, to check the parser's leniency.
func signPSS(t *testing.T, alg string, h crypto.Hash, salt int, signed []byte) []byte {
	t.Helper()
	k := testKey(t, "rsa").(*rsa.PrivateKey)
	d := h.New()
	d.Write(signed)
	sig, err := rsa.SignPSS(rand.Reader, k, h, d.Sum(nil), &rsa.PSSOptions{SaltLength: salt, Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	a := mustHex(alg)
	return append(append([]byte{byte(len(a))}, a...), sig...)
}

// TestVerifyRSAPSS_RFC7427_3 verifies PSS as strongSwan or others may
// encode it (RFC 4055 §3.1: NULL or absent hash parameters, explicit
// trailerField, salt lengths).
func TestVerifyRSAPSS_RFC7427_3(t *testing.T) {
	pub := testKey(t, "rsa").Public()
	signed := []byte("pss octets")
	// sha384, absent NULLs, trailerField present, salt 48.
	sha384 := "a00d300b0609608648016503040202" + "a11a301806092a864886f70d010108300b0609608648016503040202" + "a203020130" + "a303020101"
	alg384 := "304206092a864886f70d01010a3035" + sha384
	for _, tc := range []struct {
		name string
		alg  string
		hash crypto.Hash
		salt int
		ok   bool
	}{
		{"ours", algRSAPSSSHA256, crypto.SHA256, 32, true},
		{"SHA-384 without NULLs, trailerField 1", alg384, crypto.SHA384, 48, true},
		{"salt length differs from the parameters", algRSAPSSSHA256, crypto.SHA256, 20, false},
		{"hash differs from the parameters", algRSAPSSSHA256, crypto.SHA384, 32, false},
		{"default parameters mean SHA-1", "300d06092a864886f70d01010a3000", crypto.SHA256, 32, false},
		{"absent parameters", "300b06092a864886f70d01010a", crypto.SHA256, 32, false},
		{"trailerField 2", strings.Replace(alg384, "a303020101", "a303020102", 1), crypto.SHA384, 48, false},
		{"MGF1 hash differs", "304206092a864886f70d01010a3035" + strings.Replace(sha384, "a11a301806092a864886f70d010108300b0609608648016503040202", "a11a301806092a864886f70d010108300b0609608648016503040201", 1), crypto.SHA384, 48, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(MethodDigitalSignature, signPSS(t, tc.alg, tc.hash, tc.salt, signed), signed, pub)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestVerifyRejects_RFC7427_3 checks that tampering, a wrong key, a wrong or
// unknown AlgorithmIdentifier, truncation and trailing data all fail, each
// with ErrAuthFailed.
func TestVerifyRejects_RFC7427_3(t *testing.T) {
	signed := []byte("the octets that were signed")
	sign := func(key string, peer []HashAlg) (uint8, []byte) {
		m, d, err := cred(t, key).Sign(signed, peer)
		if err != nil {
			t.Fatal(err)
		}
		return m, d
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	// replaceAlg swaps the AlgorithmIdentifier of method 14 data.
	replaceAlg := func(data []byte, alg string) []byte {
		a := mustHex(alg)
		sig := data[1+int(data[0]):]
		return append(append([]byte{byte(len(a))}, a...), sig...)
	}
	type tcase struct {
		name   string
		method uint8
		data   []byte
		signed []byte
		pub    crypto.PublicKey
	}
	var cases []tcase
	for _, k := range []struct {
		key, other string
		peer       []HashAlg
	}{
		{"p256", "p256b", SupportedHashAlgs},
		{"rsa", "rsab", SupportedHashAlgs},
		{"ed25519", "ed25519b", SupportedHashAlgs},
		{"p256", "p256b", nil},
		{"p384", "p256", nil},
		{"rsa", "rsab", nil},
	} {
		m, d := sign(k.key, k.peer)
		pub := testKey(t, k.key).Public()
		p := k.key + " method " + string(rune('0'+m/10)) + string(rune('0'+m%10)) + ": "
		cases = append(cases,
			tcase{p + "flipped last bit of signature", m, flip(d, len(d)-1), signed, pub},
			tcase{p + "flipped first byte of signature", m, flip(d, len(d)-32), signed, pub},
			tcase{p + "flipped signed octets", m, d, flip(signed, 3), pub},
			tcase{p + "wrong key", m, d, signed, testKey(t, k.other).Public()},
			tcase{p + "truncated by one", m, d[:len(d)-1], signed, pub},
			tcase{p + "truncated to half", m, d[:len(d)/2], signed, pub},
			tcase{p + "trailing byte", m, append(bytes.Clone(d), 0), signed, pub},
			tcase{p + "empty", m, nil, signed, pub},
		)
		if m == MethodDigitalSignature {
			cases = append(cases,
				tcase{p + "AlgorithmIdentifier length too long", m, append([]byte{200}, d[1:]...), signed, pub},
				tcase{p + "only the AlgorithmIdentifier", m, d[:1+int(d[0])], signed, pub},
				tcase{p + "length byte only", m, d[:1], signed, pub},
			)
		}
	}
	ecM, ecD := sign("p256", SupportedHashAlgs)
	rsaM, rsaD := sign("rsa", SupportedHashAlgs)
	edM, edD := sign("ed25519", SupportedHashAlgs)
	p256, p384, rsaPub, edPub := testKey(t, "p256").Public(), testKey(t, "p384").Public(), testKey(t, "rsa").Public(), testKey(t, "ed25519").Public()
	_, legacy9 := sign("p256", nil)
	_, legacy1 := sign("rsa", nil)
	cases = append(cases,
		tcase{"ECDSA AlgorithmIdentifier with an RSA key", ecM, ecD, signed, rsaPub},
		tcase{"RSA AlgorithmIdentifier with an ECDSA key", rsaM, rsaD, signed, p256},
		tcase{"Ed25519 AlgorithmIdentifier with an ECDSA key", edM, edD, signed, p256},
		tcase{"ECDSA signature under ecdsa-with-SHA384", ecM, replaceAlg(ecD, algECDSA384), signed, p256},
		tcase{"PKCS#1 signature under PSS", rsaM, replaceAlg(rsaD, algRSAPSSSHA256), signed, rsaPub},
		tcase{"SHA-256 PKCS#1 signature under sha512WithRSA", rsaM, replaceAlg(rsaD, algSHA512RSA), signed, rsaPub},
		tcase{"sha1WithRSAEncryption refused in method 14 (RFC 8247 §3.2)", rsaM, replaceAlg(rsaD, algSHA1RSA), signed, rsaPub},
		tcase{"ecdsa-with-SHA1 refused in method 14 (RFC 8247 §3.2)", ecM, replaceAlg(ecD, algECDSASHA1), signed, p256},
		tcase{"unknown OID", ecM, replaceAlg(ecD, "300a06082a8648ce3d040305"), signed, p256},
		tcase{"AlgorithmIdentifier with trailing byte", ecM, replaceAlg(ecD, algECDSA256+"00"), signed, p256},
		tcase{"AlgorithmIdentifier with unexpected parameters", ecM, replaceAlg(ecD, "300c06082a8648ce3d0403020101"), signed, p256},
		tcase{"Ed25519 AlgorithmIdentifier with NULL", edM, replaceAlg(edD, "300706032b65700500"), signed, edPub},
		tcase{"AlgorithmIdentifier with non-minimal length", ecM, replaceAlg(ecD, "30810a06082a8648ce3d040302"), signed, p256},
		tcase{"method 9 with a P-384 key", MethodECDSA256, legacy9, signed, p384},
		tcase{"method 10 with a P-256 key", MethodECDSA384, legacy9, signed, p256},
		tcase{"method 9 with an RSA key", MethodECDSA256, legacy9, signed, rsaPub},
		tcase{"method 1 with an ECDSA key", MethodRSA, legacy1, signed, p256},
		tcase{"method 9 DER signature", MethodECDSA256, ecD[1+int(ecD[0]):], signed, p256},
		tcase{"shared key method", MethodPSK, ecD, signed, p256},
		tcase{"unknown method", 201, ecD, signed, p256},
		tcase{"no key", ecM, ecD, signed, nil},
		tcase{"typed nil ECDSA key", ecM, ecD, signed, (*ecdsa.PublicKey)(nil)},
		tcase{"typed nil RSA key", rsaM, rsaD, signed, (*rsa.PublicKey)(nil)},
		tcase{"ECDSA key without point", ecM, ecD, signed, &ecdsa.PublicKey{Curve: elliptic.P256()}},
		tcase{"RSA key without modulus", rsaM, rsaD, signed, &rsa.PublicKey{E: 65537}},
		tcase{"short Ed25519 key", edM, edD, signed, ed25519.PublicKey{1, 2, 3}},
		tcase{"RSA key of 1024 bits (RFC 8247 §3)", rsaM, rsaD, signed, &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}},
		tcase{"ECDSA P-224 key", ecM, ecD, signed, &ecdsa.PublicKey{Curve: elliptic.P224(), X: big.NewInt(1), Y: big.NewInt(1)}},
		tcase{"unsupported key type", ecM, ecD, signed, "a string"},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.method, tc.data, tc.signed, tc.pub)
			if err == nil {
				t.Fatal("Verify accepted")
			}
			if !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("error %v does not wrap ErrAuthFailed", err)
			}
		})
	}
}

// TestHashAlgs_RFC7427_4: SIGNATURE_HASH_ALGORITHMS is a list of 16-bit
// values.
func TestHashAlgs_RFC7427_4(t *testing.T) {
	b := EncodeHashAlgs(SupportedHashAlgs)
	if want := mustHex("0002000300040005"); !bytes.Equal(b, want) {
		t.Fatalf("EncodeHashAlgs = %x, want %x", b, want)
	}
	for _, tc := range []struct {
		in   string
		want []HashAlg
		ok   bool
	}{
		{"0002000300040005", SupportedHashAlgs, true},
		{"", []HashAlg{}, true},
		{"0001ffff", []HashAlg{HashSHA1, 0xffff}, true},
		{"000", nil, false},
		{"00020003ff", nil, false},
	} {
		in, _ := hex.DecodeString(tc.in + strings.Repeat("0", len(tc.in)%2))
		if len(tc.in)%2 == 1 {
			in = in[:len(tc.in)/2]
		}
		got, err := DecodeHashAlgs(in)
		if (err == nil) != tc.ok {
			t.Errorf("DecodeHashAlgs(%x): err %v", in, err)
			continue
		}
		if tc.ok && (len(got) != len(tc.want) || !bytes.Equal(EncodeHashAlgs(got), EncodeHashAlgs(tc.want))) {
			t.Errorf("DecodeHashAlgs(%x) = %v, want %v", in, got, tc.want)
		}
	}
	if HashSHA256.String() != "SHA2_256" || HashAlg(77).String() != "HASH_77" {
		t.Error("HashAlg.String")
	}
}

// TestOpenSSLCrossCheck verifies our signatures with openssl, and openssl's
// with Verify: the encodings are the ones other implementations produce.
func TestOpenSSLCrossCheck(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	signed := []byte("octets signed by roamsec and checked by openssl")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	pubPEM := func(name string, k crypto.Signer) string {
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		return write(name, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	keyPEM := func(name string, k crypto.Signer) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	data := write("signed.bin", signed)
	sigOf := func(d []byte) []byte { return d[1+int(d[0]):] }

	for _, tc := range []struct {
		name  string
		key   string
		pss   bool
		dgst  []string
		okMsg string
	}{
		{"ECDSA P-256", "p256", false, []string{"-sha256"}, "Verified OK"},
		{"ECDSA P-384", "p384", false, []string{"-sha384"}, "Verified OK"},
		{"RSA PKCS#1 v1.5", "rsa", false, []string{"-sha256"}, "Verified OK"},
		{"RSASSA-PSS", "rsa", true, []string{"-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"}, "Verified OK"},
	} {
		t.Run("openssl verifies our "+tc.name, func(t *testing.T) {
			c := cred(t, tc.key)
			c.RSAPSS = tc.pss
			m, d, err := c.Sign(signed, SupportedHashAlgs)
			if err != nil || m != MethodDigitalSignature {
				t.Fatalf("Sign: %d %v", m, err)
			}
			sig := write("sig-"+tc.key+".bin", sigOf(d))
			args := append([]string{"dgst"}, tc.dgst...)
			args = append(args, "-verify", pubPEM("pub-"+tc.key+".pem", c.Key), "-signature", sig, data)
			if out := run(args...); !strings.Contains(string(out), tc.okMsg) {
				t.Fatalf("openssl says %s", out)
			}
		})
		t.Run("we verify openssl's "+tc.name, func(t *testing.T) {
			c := cred(t, tc.key)
			sigPath := filepath.Join(dir, "ossl-"+tc.key+".bin")
			args := append([]string{"dgst"}, tc.dgst...)
			args = append(args, "-sign", keyPEM("key-"+tc.key+".pem", c.Key), "-out", sigPath, data)
			run(args...)
			sig, err := os.ReadFile(sigPath)
			if err != nil {
				t.Fatal(err)
			}
			var alg scheme
			switch {
			case tc.key == "p256":
				alg = scheme{kind: kindECDSA, hash: crypto.SHA256}
			case tc.key == "p384":
				alg = scheme{kind: kindECDSA, hash: crypto.SHA384}
			default:
				alg = scheme{kind: kindRSA, hash: crypto.SHA256, pss: tc.pss}
			}
			_, d, err := digitalSignature(alg, sig)
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(MethodDigitalSignature, d, signed, c.Key.Public()); err != nil {
				t.Fatalf("Verify of openssl's signature: %v", err)
			}
		})
	}
	t.Run("openssl verifies our Ed25519", func(t *testing.T) {
		c := cred(t, "ed25519")
		_, d, err := c.Sign(signed, SupportedHashAlgs)
		if err != nil {
			t.Fatal(err)
		}
		out := run("pkeyutl", "-verify", "-pubin", "-inkey", pubPEM("pub-ed.pem", c.Key), "-rawin", "-in", data, "-sigfile", write("sig-ed.bin", sigOf(d)))
		if !strings.Contains(string(out), "Signature Verified Successfully") {
			t.Fatalf("openssl says %s", out)
		}
	})
}

// TestLegacyECDSAEncoding_RFC4754_7: r and s are fixed-width, so a short r
// is left-padded; verification must accept it.
func TestLegacyECDSAEncoding_RFC4754_7(t *testing.T) {
	k := testKey(t, "p256").(*ecdsa.PrivateKey)
	signed := []byte("short r")
	// Find a signature whose r has a leading zero byte (about 1 in 256).
	for range 5000 {
		der, err := ecdsa.SignASN1(rand.Reader, k, hashOf(crypto.SHA256, signed))
		if err != nil {
			t.Fatal(err)
		}
		in := cryptobyte.String(der)
		var seq cryptobyte.String
		r, s := new(big.Int), new(big.Int)
		if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Integer(r) || !seq.ReadASN1Integer(s) {
			t.Fatal("bad DER from crypto/ecdsa")
		}
		if r.BitLen() > 248 {
			continue
		}
		raw := make([]byte, 64)
		r.FillBytes(raw[:32])
		s.FillBytes(raw[32:])
		if err := Verify(MethodECDSA256, raw, signed, k.Public()); err != nil {
			t.Fatalf("padded r: %v", err)
		}
		return
	}
	t.Skip("no short r found")
}

func TestHMACPRFIsHMAC(t *testing.T) {
	got := HMACPRF(sha256.New)([]byte("key"), []byte("The quick brown fox jumps over the lazy dog"))
	// The well-known HMAC-SHA256 example for this key and message.
	want := mustHex("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
	if !bytes.Equal(got, want) {
		t.Fatalf("HMACPRF = %x", got)
	}
}
