// Package hactx seals what gateways of one cluster hand each other (seed
// 004's security contexts) with the cluster key: a file of 32 random
// bytes in hex that every gateway of the cluster holds (`gateway ha
// keygen`). What leaves a gateway is never in clear: each sealed message
// gets its own key, HKDF-SHA256 (RFC 5869) of the cluster key with a
// random salt and the label "roamsec context v1" and the message's
// purpose, and is ChaCha20-Poly1305 (RFC 8439) under it. Keys are zeroed
// once used.
package hactx

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeyLen is the cluster key's length in bytes.
const KeyLen = 32

// Label is HKDF's info prefix: a key derived for this never serves
// anything else.
const Label = "roamsec context v1"

// Key is a cluster key.
type Key struct{ k [KeyLen]byte }

// ErrKeyFile: the key file is missing, malformed or readable by others.
var ErrKeyFile = errors.New("bad cluster key file")

// ErrOpen: a sealed message failed authentication (another cluster's key,
// damaged, or not ours), or is not one at all.
var ErrOpen = errors.New("sealed context does not open with this cluster key")

// Generate writes a new key to path (mode 0600; an existing file is
// refused, so a cluster's key is never replaced by mistake).
func Generate(path string) error {
	var k [KeyLen]byte
	defer clear(k[:])
	if _, err := rand.Read(k[:]); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, hex.EncodedLen(KeyLen)+1)
	defer clear(buf)
	hex.Encode(buf, k[:])
	buf[len(buf)-1] = '\n'
	_, err = f.Write(buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// Load reads a key file: 64 hex digits (a final newline allowed), not
// readable or writable by group or others.
func Load(path string) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is mode %#o: the cluster key must be the owner's only (chmod 600)", ErrKeyFile, path, st.Mode().Perm())
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKeyFile, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	defer clear(b)
	return Parse(b)
}

// Parse reads a key file's contents.
func Parse(b []byte) (*Key, error) {
	t := bytes.TrimRight(b, "\r\n")
	if len(t) != hex.EncodedLen(KeyLen) {
		return nil, fmt.Errorf("%w: want %d hex digits (gateway ha keygen FILE writes one), found %d bytes", ErrKeyFile, hex.EncodedLen(KeyLen), len(t))
	}
	k := new(Key)
	if _, err := hex.Decode(k.k[:], t); err != nil {
		k.Wipe()
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	return k, nil
}

// FromBytes makes a key of a copy of b (KeyLen bytes: a key that was
// loaded, handed on as bytes).
func FromBytes(b []byte) (*Key, error) {
	if len(b) != KeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrKeyFile, len(b), KeyLen)
	}
	k := new(Key)
	copy(k.k[:], b)
	return k, nil
}

// Raw returns a copy of the key's bytes; the caller zeroes it.
func (k *Key) Raw() []byte { return append([]byte(nil), k.k[:]...) }

// Derive is HKDF-SHA256 (RFC 5869) of the cluster key with salt and info:
// every key made from the cluster key comes from here, each with its own
// info (the label of its use), so none serves two uses. The caller zeroes
// the result.
func (k *Key) Derive(salt []byte, info string, n int) ([]byte, error) {
	return hkdf.Key(sha256.New, k.k[:], salt, info, n)
}

// Wipe zeroes the key.
func (k *Key) Wipe() { clear(k.k[:]) }

// The sealed form: magic, version, salt, then the AEAD's output (the
// nonce is all zeros: the key is used for this one message only). The
// header is the AEAD's additional data.
var magic = [6]byte{'R', 'S', 'C', 'T', 'X', 0}

const (
	version  = 1
	saltLen  = 32
	headLen  = len(magic) + 1 + saltLen
	overhead = headLen + chacha20poly1305.Overhead
)

// Overhead is how much longer sealing makes a message.
const Overhead = overhead

func (k *Key) aead(salt []byte, purpose string) (aeadSealer, error) {
	dk, err := k.Derive(salt, Label+"\x00"+purpose, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	return chacha20poly1305.New(dk)
}

type aeadSealer interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}

// Seal encrypts and authenticates plaintext for purpose (a message
// sealed for one purpose does not open for another).
func (k *Key) Seal(purpose string, plaintext []byte) ([]byte, error) {
	out := make([]byte, headLen, headLen+len(plaintext)+chacha20poly1305.Overhead)
	copy(out, magic[:])
	out[len(magic)] = version
	salt := out[len(magic)+1 : headLen]
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	a, err := k.aead(salt, purpose)
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	return a.Seal(out, nonce[:], plaintext, out[:headLen]), nil
}

// Open checks and decrypts what Seal made for purpose.
func (k *Key) Open(purpose string, sealed []byte) ([]byte, error) {
	if len(sealed) < overhead || !bytes.Equal(sealed[:len(magic)], magic[:]) {
		return nil, fmt.Errorf("%w: not a sealed roamsec context", ErrOpen)
	}
	if v := sealed[len(magic)]; v != version {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrOpen, v, version)
	}
	a, err := k.aead(sealed[len(magic)+1:headLen], purpose)
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	pt, err := a.Open(nil, nonce[:], sealed[headLen:], sealed[:headLen])
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// MaxRecords bounds how many records Split accepts.
const MaxRecords = 1 << 20

// Join frames records (each a length, 4 bytes big-endian, then the
// bytes) into one message.
func Join(records [][]byte) []byte {
	n := 0
	for _, r := range records {
		n += 4 + len(r)
	}
	out := make([]byte, 0, n)
	for _, r := range records {
		out = binary.BigEndian.AppendUint32(out, uint32(len(r)))
		out = append(out, r...)
	}
	return out
}

// Split undoes Join; the records share b's memory.
func Split(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("hactx: truncated record length")
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("hactx: record of %d bytes, %d left", n, len(b))
		}
		if len(out) == MaxRecords {
			return nil, fmt.Errorf("hactx: more than %d records", MaxRecords)
		}
		out = append(out, b[:n:n])
		b = b[n:]
	}
	return out, nil
}

// CheckFile reports whether path is a usable key file (for -check).
func CheckFile(path string) error {
	k, err := Load(path)
	if err != nil {
		return err
	}
	k.Wipe()
	return nil
}
