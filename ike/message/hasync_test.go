package message

import (
	"bytes"
	"errors"
	"testing"
)

// TestRFC6311NotifyData checks the two notifications' data against the
// layouts of RFC 6311 §4.1 (nonce, EXPECTED_SEND_REQ_MESSAGE_ID,
// EXPECTED_RECV_REQ_MESSAGE_ID, 4 octets each, network order) and §4.2
// (nonce, 8-octet delta), and that anything else is refused.
func TestRFC6311NotifyData(t *testing.T) {
	m := MIDSync{Nonce: 0x01020304, Send: 7, Recv: 0x10000001}
	want := []byte{1, 2, 3, 4, 0, 0, 0, 7, 0x10, 0, 0, 1}
	if got := m.Encode(); !bytes.Equal(got, want) {
		t.Fatalf("MIDSync.Encode = %x, want %x", got, want)
	}
	if back, err := ParseMIDSync(want); err != nil || back != m {
		t.Fatalf("ParseMIDSync = %+v, %v; want %+v", back, err, m)
	}
	r := ReplaySync{Nonce: 0xa0b0c0d0, Delta: 1 << 33}
	wantR := []byte{0xa0, 0xb0, 0xc0, 0xd0, 0, 0, 0, 2, 0, 0, 0, 0}
	if got := r.Encode(); !bytes.Equal(got, wantR) {
		t.Fatalf("ReplaySync.Encode = %x, want %x", got, wantR)
	}
	if back, err := ParseReplaySync(wantR); err != nil || back != r {
		t.Fatalf("ParseReplaySync = %+v, %v; want %+v", back, err, r)
	}
	for _, tc := range []struct {
		name  string
		parse func([]byte) error
		b     []byte
	}{
		{"message ID sync shorter than 12 octets", func(b []byte) error { _, err := ParseMIDSync(b); return err }, want[:11]},
		{"message ID sync longer than 12 octets", func(b []byte) error { _, err := ParseMIDSync(b); return err }, append(bytes.Clone(want), 0)},
		{"message ID sync empty", func(b []byte) error { _, err := ParseMIDSync(b); return err }, nil},
		{"replay sync shorter than 12 octets", func(b []byte) error { _, err := ParseReplaySync(b); return err }, wantR[:8]},
		{"replay sync with a zero delta", func(b []byte) error { _, err := ParseReplaySync(b); return err }, make([]byte, 12)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.parse(tc.b); !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("err = %v, want ErrInvalidSyntax", err)
			}
		})
	}
}

// FuzzRFC6311NotifyData: the parsers never panic, accept exactly what
// re-encodes to the same bytes, and refuse with ErrInvalidSyntax.
func FuzzRFC6311NotifyData(f *testing.F) {
	f.Add(MIDSync{Nonce: 1, Send: 2, Recv: 3}.Encode())
	f.Add(ReplaySync{Nonce: 1, Delta: 4}.Encode())
	f.Add([]byte{})
	f.Add(make([]byte, 13))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := ParseMIDSync(b); err == nil {
			if !bytes.Equal(m.Encode(), b) {
				t.Fatalf("MIDSync %x re-encodes to %x", b, m.Encode())
			}
		} else if !errors.Is(err, ErrInvalidSyntax) {
			t.Fatalf("ParseMIDSync: %v", err)
		}
		if r, err := ParseReplaySync(b); err == nil {
			if !bytes.Equal(r.Encode(), b) || r.Delta == 0 {
				t.Fatalf("ReplaySync %x re-encodes to %x", b, r.Encode())
			}
		} else if !errors.Is(err, ErrInvalidSyntax) {
			t.Fatalf("ParseReplaySync: %v", err)
		}
	})
}
