package hactx

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t testing.TB) (*Key, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := Generate(path); err != nil {
		t.Fatal(err)
	}
	k, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return k, path
}

func TestKeygenWritesOwnerOnlyHex(t *testing.T) {
	k, path := newKey(t)
	defer k.Wipe()
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if len(strings.TrimSpace(string(b))) != 64 {
		t.Fatalf("key file %q: want 64 hex digits", b)
	}
	if err := Generate(path); err == nil {
		t.Fatal("keygen replaced an existing cluster key")
	}
}

func TestKeyFileRefusals(t *testing.T) {
	dir := t.TempDir()
	good := strings.Repeat("ab", 32) + "\n"
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
	}{
		{"readable by others", good, 0o644},
		{"too short", "abcd\n", 0o600},
		{"not hex", strings.Repeat("zz", 32), 0o600},
		{"empty", "", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			os.WriteFile(p, []byte(tc.body), tc.mode)
			os.Chmod(p, tc.mode)
			if _, err := Load(p); !errors.Is(err, ErrKeyFile) {
				t.Fatalf("Load = %v, want ErrKeyFile", err)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing")); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSealedIsNotClearAndOpens_AEAD(t *testing.T) {
	k, _ := newKey(t)
	secret := []byte("SK_d of a road warrior, 0123456789abcdef")
	s1, err := k.Seal("context", secret)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := k.Seal("context", secret)
	if bytes.Contains(s1, secret[:16]) || bytes.Equal(s1, s2) {
		t.Fatal("sealed output shows the plaintext, or two seals are equal (the salt must differ)")
	}
	if len(s1) != len(secret)+Overhead {
		t.Fatalf("sealed %d bytes, want %d", len(s1), len(secret)+Overhead)
	}
	pt, err := k.Open("context", s1)
	if err != nil || !bytes.Equal(pt, secret) {
		t.Fatalf("Open = %q, %v", pt, err)
	}
}

func TestOpenRefusesWhatItCannotAuthenticate_AEAD(t *testing.T) {
	k, _ := newKey(t)
	other, _ := newKey(t)
	sealed, _ := k.Seal("context", []byte("state"))
	flip := func(i int) []byte { b := bytes.Clone(sealed); b[i] ^= 1; return b }
	for _, tc := range []struct {
		name    string
		key     *Key
		purpose string
		b       []byte
	}{
		{"another cluster's key", other, "context", sealed},
		{"another purpose", k, "sync", sealed},
		{"salt changed", k, "context", flip(10)},
		{"ciphertext changed", k, "context", flip(headLen)},
		{"tag changed", k, "context", flip(len(sealed) - 1)},
		{"version changed", k, "context", flip(len(magic))},
		{"truncated", k, "context", sealed[:overhead-1]},
		{"not sealed", k, "context", []byte(`{"v":1}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.key.Open(tc.purpose, tc.b); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
}

func TestJoinSplitRoundTrip(t *testing.T) {
	recs := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{7}, 1000)}
	got, err := Split(Join(recs))
	if err != nil || len(got) != len(recs) {
		t.Fatalf("Split = %d, %v", len(got), err)
	}
	for i := range recs {
		if !bytes.Equal(got[i], recs[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
	for _, bad := range [][]byte{{0, 0, 0}, {0, 0, 0, 5, 1}} {
		if _, err := Split(bad); err == nil {
			t.Fatalf("Split(%x) accepted", bad)
		}
	}
}

func FuzzSplit(f *testing.F) {
	f.Add(Join([][]byte{[]byte("a"), []byte("bc")}))
	f.Add([]byte{0, 0, 0, 9, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Split(b)
		if err == nil && !bytes.Equal(Join(recs), b) {
			t.Fatal("Split then Join is not the input")
		}
	})
}

func FuzzOpen(f *testing.F) {
	k, err := Parse([]byte(strings.Repeat("01", 32)))
	if err != nil {
		f.Fatal(err)
	}
	s, _ := k.Seal("context", []byte("hello"))
	f.Add(s)
	f.Add([]byte("RSCTX\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Only a message sealed with the key opens: the seed (sealed
		// again, with another salt, in each fuzzing process).
		if pt, err := k.Open("context", b); err == nil && string(pt) != "hello" {
			t.Fatalf("forged message opened: %q", pt)
		}
	})
}
