package ha

import (
	"github.com/roamsec/roamsec/internal/hactx"

	"bytes"
	"errors"
	"net"
	"reflect"
	"testing"
)

func sampleFrames() []Frame {
	return []Frame{
		{Type: FrameHeartbeat, Seq: 1, Role: RoleActive, Priority: 200, Epoch: 9},
		{Type: FramePut, Seq: 2, SPI: 0x1122334455667788, Data: []byte("opaque context")},
		{Type: FrameDelete, Seq: 3, SPI: 42},
		{Type: FrameCheckpoint, Seq: 4, Checkpoints: []Checkpoint{{SPI: 0xc0ffee, Outbound: true, Seq: 1 << 40}, {SPI: 7, Seq: 99}}},
		{Type: FrameResyncBegin, Seq: 5},
		{Type: FrameResyncEnd, Seq: 6},
		{Type: FrameHandover, Seq: 7, Epoch: 3},
		{Type: FrameAck, Seq: 8, Acked: 7},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range sampleFrames() {
		t.Run(f.Type.String(), func(t *testing.T) {
			got, err := Decode(f.Append(nil))
			if err != nil {
				t.Fatal(err)
			}
			if f.Data == nil && len(got.Data) == 0 {
				got.Data = nil
			}
			if !reflect.DeepEqual(got, f) {
				t.Fatalf("got %+v, want %+v", got, f)
			}
		})
	}
}

func TestFrameDecoderRefuses(t *testing.T) {
	hb := (&Frame{Type: FrameHeartbeat, Role: RoleActive}).Append(nil)
	badRole := bytes.Clone(hb)
	badRole[headerLen] = 9
	cp := (&Frame{Type: FrameCheckpoint, Checkpoints: []Checkpoint{{SPI: 1}}}).Append(nil)
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"EmptyIsShort", nil, ErrShort},
		{"HeaderOnlyHeartbeatIsShort", hb[:headerLen], ErrShort},
		{"UnknownType", append([]byte{99}, make([]byte, 8)...), ErrUnknown},
		{"TrailingBytes", append(bytes.Clone(hb), 0), ErrTrailing},
		{"UnknownRole", badRole, ErrBadRole},
		{"CheckpointCountMismatch", cp[:len(cp)-1], ErrCheckCount},
		{"OverMaxFrame", make([]byte, MaxFrame+1), ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.in); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, fr := range sampleFrames() {
		f.Add(fr.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		if again := fr.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, was %x", again, b)
		}
	})
}

// TestSealedChannelNeedsTheClusterKey: frames open under the same cluster
// key; under another key the first frame fails authentication.
func TestSealedChannelNeedsTheClusterKey(t *testing.T) {
	for _, c := range []struct {
		name    string
		same    bool
		wantErr error
	}{{"SameKeyOpens", true, nil}, {"OtherKeyIsRefused", false, ErrAuth}} {
		t.Run(c.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			raw := make([]byte, hactx.KeyLen)
			raw[0] = 1
			ka, _ := hactx.FromBytes(raw)
			if !c.same {
				raw[0] = 2
			}
			kb, _ := hactx.FromBytes(raw)
			type res struct {
				f   Frame
				err error
			}
			got := make(chan res, 1)
			go func() {
				_, recv, err := handshake(b, kb, false)
				if err != nil {
					got <- res{err: err}
					return
				}
				f, _, err := recv.readFrame(b, nil)
				got <- res{f, err}
			}()
			send, _, err := handshake(a, ka, true)
			if err != nil {
				t.Fatal(err)
			}
			want := Frame{Type: FramePut, Seq: 1, SPI: 5, Data: []byte("x")}
			if _, err := send.writeFrame(a, &want, nil); err != nil {
				t.Fatal(err)
			}
			r := <-got
			if !errors.Is(r.err, c.wantErr) {
				t.Fatalf("err %v, want %v", r.err, c.wantErr)
			}
			if c.wantErr == nil && !reflect.DeepEqual(r.f, want) {
				t.Fatalf("got %+v", r.f)
			}
		})
	}
}
