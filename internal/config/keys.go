package config

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/roamsec/roamsec/tunnel"
)

// Secret is keying material: the cipher key followed by the 4-byte salt.
// It prints as "[redacted]" with every fmt verb, in slog and when
// marshalled, so a Config can be printed or logged without leaking keys.
type Secret []byte

const redacted = "[redacted]"

// Format implements fmt.Formatter: every verb prints "[redacted]".
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Wipe zeroes the key in place.
func (s Secret) Wipe() { clear(s) }

// Key is one direction of an SA: its SPI and keying material.
type Key struct {
	SPI  uint32
	Key  Secret // cipher key and salt, Transform.KeyLen() bytes; zeroed by Wipe and Build
	File string // the key_file it was read from (absolute), "" when inline
}

// maxKeyFile bounds what is read from a key file.
const maxKeyFile = 4096

// keyLenText is the "(36 bytes: key and salt for aes256gcm16)" of the
// messages.
func keyLenText(tr tunnel.Transform) string {
	return fmt.Sprintf("%d bytes: key and salt for %s", tr.KeyLen(), tr)
}

// decodeHex decodes hex digits after an optional 0x; spaces and newlines
// are ignored only when loose (key files, where xxd -p wraps lines). The
// problem, if any, is described without the value.
func decodeHex(b []byte, want int, tr tunnel.Transform, loose bool) (Secret, string) {
	if loose {
		b = bytes.Join(bytes.Fields(b), nil) // a copy; zeroed below
		defer clear(b)
	}
	if len(b) >= 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X') {
		b = b[2:]
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return nil, fmt.Sprintf("want %d hex digits (%s) after an optional 0x, got a character that is not a hex digit", 2*want, keyLenText(tr))
		}
	}
	if len(b) != 2*want {
		return nil, fmt.Sprintf("want %d hex digits (%s), got %d", 2*want, keyLenText(tr), len(b))
	}
	k := make(Secret, want)
	if _, err := hex.Decode(k, b); err != nil {
		k.Wipe()
		return nil, "not valid hex"
	}
	return k, ""
}

// readKeyFile reads a key file: exactly KeyLen raw bytes, or the key in
// hex (optionally 0x-prefixed, whitespace and newlines ignored). It refuses
// files that group or others may access, and anything but a regular file.
func readKeyFile(path string, tr tunnel.Transform) (Secret, string) {
	want := tr.KeyLen()
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Sprintf("cannot read key file: %v", err)
	}
	if msg := checkKeyFileMode(path, st); msg != "" {
		return nil, msg
	}
	// O_NONBLOCK: a FIFO swapped in after the Stat must not hang us.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Sprintf("cannot read key file: %v", err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Sprintf("cannot read key file: %v", err)
	}
	if msg := checkKeyFileMode(path, st); msg != "" {
		return nil, msg
	}
	buf := make([]byte, maxKeyFile+1)
	defer clear(buf)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Sprintf("cannot read key file %s: %v", path, err)
	}
	if n > maxKeyFile {
		return nil, fmt.Sprintf("key file %s is too large: want %d raw bytes or %d hex digits (%s)", path, want, 2*want, keyLenText(tr))
	}
	data := buf[:n]
	if n == want {
		return append(Secret(nil), data...), ""
	}
	k, msg := decodeHex(data, want, tr, true)
	if msg != "" {
		return nil, fmt.Sprintf("key file %s: want %d raw bytes or %d hex digits (%s), got %d bytes that are neither", path, want, 2*want, keyLenText(tr), n)
	}
	return k, ""
}

func checkKeyFileMode(path string, st fs.FileInfo) string {
	if !st.Mode().IsRegular() {
		return fmt.Sprintf("key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Sprintf("key file %s is accessible by group or others (mode %04o): it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	return ""
}

// key parses one direction: {spi, key | key_file}. trOK is false when the
// transform is unknown, in which case key lengths are not checked.
func (p *parser) key(parent *fields, name string, tr tunnel.Transform, trOK bool) (Key, bool) {
	var k Key
	n := parent.get(name)
	if n == nil {
		parent.missing(name, ": {spi: ..., key: ...} or {spi: ..., key_file: ...}")
		return k, false
	}
	f := p.fields(n, parent.lineOf(name), parent.path2(name), "spi", "key", "key_file")
	good := true
	if v, sn, ok := f.scalar("spi"); sn == nil {
		f.missing("spi", ": hex with 0x or decimal, >= 256")
		good = false
	} else if ok {
		x, err := parseUint(v, 32)
		switch {
		case err != nil:
			p.errf(sn.Line, f.path2("spi"), "want a 32-bit number (hex with 0x, or decimal), got %s", show(v))
			good = false
		case x < 256:
			p.errf(sn.Line, f.path2("spi"), "SPI %d is reserved (0 is local use, 1-255 IANA, RFC 4303 §2.1): want >= 256", x)
			good = false
		default:
			k.SPI = uint32(x)
		}
	} else {
		good = false
	}

	inline, file := f.has("key"), f.has("key_file")
	switch {
	case inline && file:
		p.errf(f.lineOf("key_file"), f.path2("key_file"), "give key or key_file, not both")
		return k, false
	case !inline && !file:
		p.errf(f.line, f.path2("key"), "missing (required: key: \"0x...\" in hex, or key_file: /path)")
		return k, false
	case inline:
		kn := f.get("key")
		if kn.Kind != yaml.ScalarNode {
			p.errf(kn.Line, f.path2("key"), "want hex digits in quotes, got %s", kindName(kn))
			return k, false
		}
		if !trOK {
			return k, false
		}
		raw := []byte(strings.TrimSpace(kn.Value))
		key, msg := decodeHex(raw, tr.KeyLen(), tr, false)
		clear(raw)
		if msg != "" {
			p.errf(kn.Line, f.path2("key"), "%s", msg)
			return k, false
		}
		k.Key = key
		p.inlineKeys = true
	case file:
		v, fn, ok := f.scalar("key_file")
		if !ok {
			return k, false
		}
		path := strings.TrimSpace(v)
		if path == "" {
			p.errf(fn.Line, f.path2("key_file"), "empty path")
			return k, false
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.dir, path)
		}
		k.File = path
		if !trOK {
			return k, false
		}
		key, msg := readKeyFile(path, tr)
		if msg != "" {
			p.errf(fn.Line, f.path2("key_file"), "%s", msg)
			return k, false
		}
		k.Key = key
	}
	return k, good
}
