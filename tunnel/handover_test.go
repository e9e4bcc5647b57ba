package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// Seed 004's context transfer: an SA taken over by another gateway keeps
// its keys, never sends a sequence number again, and never accepts what
// the old gateway already accepted.

func TestRFC4303_3_4_3_RaisedFloorRejectsOnlyWhatWasSeen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		top     uint64
		reject  []uint64
		accept  []uint64
		already uint64 // committed before the raise
	}{
		{"everything up to the edge is seen", 1000, []uint64{1, 999, 1000}, []uint64{1001, 1063, 1064, 5000}, 0},
		{"the edge's word keeps the numbers above it new", 64*10 + 5, []uint64{64 * 10, 64*10 + 5}, []uint64{64*10 + 6, 64*10 + 63, 64 * 11}, 0},
		{"an edge at a word's last bit", 64*3 + 63, []uint64{64*3 + 63}, []uint64{64 * 4}, 0},
		{"a window already past the edge is left alone", 50, []uint64{200}, []uint64{60, 199}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := newReplayWindow(1024, false)
			if err != nil {
				t.Fatal(err)
			}
			if tc.already > 0 {
				w.commit(tc.already)
			}
			w.raiseFloor(tc.top)
			for _, s := range tc.reject {
				if w.check(s) {
					t.Errorf("seq %d accepted after the floor rose to %d", s, tc.top)
				}
			}
			for _, s := range tc.accept {
				if !w.check(s) || !w.commit(s) {
					t.Errorf("seq %d refused after the floor rose to %d", s, tc.top)
				}
			}
		})
	}
}

func TestHandoverKeepsKeysSkipsSequenceRaisesFloor(t *testing.T) {
	out, in := saPair(t, AESGCM256, nil)
	pkt := ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10)
	old := sealPacket(t, out, pkt) // the old gateway accepted this one
	if _, err := in.Open(rwAddr, bytes.Clone(old)); err != nil {
		t.Fatal(err)
	}
	// The taking-over gateway's SAs, from the exported keys.
	out2, in2 := saPair(t, AESGCM256, func(c *SAConfig) {
		if c.Dir == Outbound {
			c.Key = out.KeyMaterial()
		} else {
			c.Key = in.KeyMaterial()
		}
	})
	out2.SkipSeq(out.LastSeq() + 1000)
	out2.SkipSeq(5) // never lowers
	in2.RaiseReplayFloor(in.LastSeq())
	esp := sealPacket(t, out2, pkt)
	if seq := binary.BigEndian.Uint32(esp[4:8]); seq != 1002 {
		t.Fatalf("first sequence number after the jump %d, want 1002", seq)
	}
	if _, err := in.Open(rwAddr, bytes.Clone(esp)); err != nil {
		t.Fatalf("the peer cannot open what the new SA sealed: %v", err)
	}
	if _, err := in2.Open(rwAddr, bytes.Clone(old)); !errors.Is(err, DropReplay) {
		t.Fatalf("replay of what the old gateway accepted: %v", err)
	}
	out.Close()
	if out.KeyMaterial() != nil {
		t.Fatal("a closed SA still gives its keys out")
	}
}
