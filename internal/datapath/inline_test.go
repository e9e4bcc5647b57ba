package datapath

import (
	"testing"

	"github.com/roamsec/roamsec/tunnel/transport"
)

// The reader handles a read itself when it is small in packets or in
// bytes; bulk reads go to the crypto workers so that both cores seal.
func TestReadsSmallInPacketsOrBytesAreHandledInline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n, len int
		inline bool
	}{
		{"one bulk packet", 1, 1400, true},
		{"inlineMax bulk packets", inlineMax, 1400, true},
		{"one more bulk packet than inlineMax", inlineMax + 1, 1400, false},
		{"a GRO run of bulk packets", transport.GROSegments, 1400, false},
		{"many 64-byte packets up to inlineBytes", inlineBytes / 64, 64, true},
		{"one 64-byte packet past inlineBytes", inlineBytes/64 + 1, 64, false},
		{"a full batch of 100-byte packets", 128, 100, false},
		{"a burst of small packets", 40, 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sizes := make([]int, tc.n)
			msgs := make([]transport.Datagram, tc.n)
			buf := make([]byte, tc.len)
			for i := range sizes {
				sizes[i], msgs[i].Buf = tc.len, buf
			}
			if got := handledInline(sizes, intLen); got != tc.inline {
				t.Errorf("outbound: inline = %v, want %v", got, tc.inline)
			}
			if got := handledInline(msgs, datagramLen); got != tc.inline {
				t.Errorf("inbound: inline = %v, want %v", got, tc.inline)
			}
		})
	}
}
