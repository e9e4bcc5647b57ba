package ha

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// KeyLen is the cluster key's length: 32 bytes, 64 hex digits in its file.
const KeyLen = 32

// Label is HKDF's info prefix for the channel's keys (RFC 5869 §3.2: the
// info binds the keys to this use of the cluster key).
const Label = "roamsec ha sync v1"

// LoadKey reads a cluster key file: 64 hex digits, surrounding white
// space allowed. The file's bytes are zeroed; the key never appears in an
// error. (internal/hactx, issue 12 part A, brings the shared loader; the
// lead unifies the two.)
func LoadKey(path string) (*[KeyLen]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster key %s is mode %#o: it must be the owner's only (chmod 600)", path, st.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	defer clear(raw)
	h := bytes.TrimSpace(raw)
	if len(h) != 2*KeyLen {
		return nil, fmt.Errorf("cluster key %s: want %d hex digits (%d bytes), got %d characters", path, 2*KeyLen, KeyLen, len(h))
	}
	k := new([KeyLen]byte)
	if _, err := hex.Decode(k[:], h); err != nil {
		clear(k[:])
		return nil, fmt.Errorf("cluster key %s: not hex digits", path)
	}
	return k, nil
}

// The handshake: each side sends magic and a fresh 32-byte nonce in the
// clear; both then derive a key per direction from the cluster key and
// both nonces. Neither side can be replayed: a recorded stream was sealed
// under keys that depended on the other side's old nonce. Possession of
// the cluster key is proved by the first frame that opens.
var magic = [4]byte{'R', 'S', 'H', 'A'}

const nonceLen = 32

// ErrAuth: a frame did not open (wrong cluster key, tampering, or a
// stream not of this channel).
var ErrAuth = errors.New("ha: frame failed authentication (wrong cluster key?)")

// ErrHandshake: the other side did not speak the sync channel.
var ErrHandshake = errors.New("ha: not a roamsec HA sync peer")

// sealer seals or opens one direction: AES-256-GCM, nonce = 4 zero bytes
// and a 64-bit counter that never repeats under one key (SP 800-38D §8.2.1
// deterministic construction; a new connection has new keys).
type sealer struct {
	aead cipher.AEAD
	n    uint64
}

func newSealer(key []byte) (*sealer, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: g}, nil
}

func (s *sealer) nonce() []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], s.n)
	s.n++
	return n[:]
}

// handshake exchanges nonces over rw and returns the sealers for what we
// send and what we receive.
func handshake(rw io.ReadWriter, key *[KeyLen]byte, dialer bool) (send, recv *sealer, err error) {
	var mine, theirs [4 + nonceLen]byte
	copy(mine[:], magic[:])
	if _, err := rand.Read(mine[4:]); err != nil {
		return nil, nil, err
	}
	// Both sides write first: the write runs beside the read (an
	// unbuffered pipe would deadlock otherwise) and is joined here.
	werr := make(chan error, 1)
	go func() { _, err := rw.Write(mine[:]); werr <- err }()
	_, rerr := io.ReadFull(rw, theirs[:])
	if err := <-werr; err != nil {
		return nil, nil, err
	}
	if rerr != nil {
		return nil, nil, rerr
	}
	if !bytes.Equal(theirs[:4], magic[:]) {
		return nil, nil, ErrHandshake
	}
	d, a := mine[4:], theirs[4:]
	if !dialer {
		d, a = a, d
	}
	salt := append(append([]byte{}, d...), a...)
	keyFor := func(dir string) (*sealer, error) {
		k, err := hkdf.Key(sha256.New, key[:], salt, Label+" "+dir, 32)
		if err != nil {
			return nil, err
		}
		defer clear(k)
		return newSealer(k)
	}
	ds, err := keyFor("dialer->acceptor")
	if err != nil {
		return nil, nil, err
	}
	as, err := keyFor("acceptor->dialer")
	if err != nil {
		return nil, nil, err
	}
	if dialer {
		return ds, as, nil
	}
	return as, ds, nil
}

// writeFrame seals f and writes it length-prefixed; the length is the
// AEAD's additional data.
func (s *sealer) writeFrame(w io.Writer, f *Frame, buf []byte) ([]byte, error) {
	pt := f.Append(buf[:0])
	if len(pt) > MaxFrame {
		return pt, ErrTooLarge
	}
	out := make([]byte, 4, 4+len(pt)+s.aead.Overhead())
	binary.BigEndian.PutUint32(out, uint32(len(pt)+s.aead.Overhead()))
	out = s.aead.Seal(out, s.nonce(), pt, out[:4])
	_, err := w.Write(out)
	return pt, err
}

// readFrame reads, opens and decodes one frame. buf is reused; the
// frame's Data aliases it.
func (s *sealer) readFrame(r io.Reader, buf []byte) (Frame, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame+uint32(s.aead.Overhead()) || n < uint32(s.aead.Overhead()) {
		return Frame{}, buf, ErrTooLarge
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	ct := buf[:n]
	if _, err := io.ReadFull(r, ct); err != nil {
		return Frame{}, buf, err
	}
	pt, err := s.aead.Open(ct[:0], s.nonce(), ct, hdr[:])
	if err != nil {
		return Frame{}, ct, ErrAuth
	}
	f, err := Decode(pt)
	return f, ct, err // len(ct): the frame's size on the wire, less its 4-byte length
}
