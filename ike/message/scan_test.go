package message

import (
	"bytes"
	"errors"
	"testing"
)

// RFC 7296 §2.6: the COOKIE notify is the first payload of the repeated
// IKE_SA_INIT; the cookie covers Ni. ScanInit finds both, a COOKIE in any
// other place is not one, and a request without a Nonce is malformed.
func TestScanInit_RFC7296_2_6(t *testing.T) {
	ni := bytesN(32, 7)
	ck := bytesN(33, 9)
	sa := &SA{Proposals: []Proposal{{Num: 1, Protocol: 1}}}
	build := func(ps ...Payload) []byte {
		m := &Message{Header: Header{SPIi: 1, Version: 0x20, Exchange: IKE_SA_INIT, Flags: FlagInitiator}, Payloads: ps}
		return m.Encode()
	}
	for _, tc := range []struct {
		name          string
		b             []byte
		cookie, nonce []byte
		malformed     bool
	}{
		{name: "cookie first", b: build(&Notify{NotifyType: COOKIE, Data: ck}, sa, &Nonce{Data: ni}), cookie: ck, nonce: ni},
		{name: "no cookie", b: build(sa, &Nonce{Data: ni}), nonce: ni},
		{name: "cookie not first is none", b: build(sa, &Notify{NotifyType: COOKIE, Data: ck}, &Nonce{Data: ni}), nonce: ni},
		{name: "no nonce is malformed", b: build(&Notify{NotifyType: COOKIE, Data: ck}, sa), malformed: true},
		{name: "truncated chain is malformed", b: func() []byte {
			b := build(sa, &Nonce{Data: ni})
			b[HeaderLen+2], b[HeaderLen+3] = 0xff, 0xff
			return b
		}(), malformed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			cookie, nonce, err := ScanInit(tc.b, h)
			if tc.malformed {
				if !errors.Is(err, ErrInvalidSyntax) {
					t.Fatalf("err %v, want invalid syntax", err)
				}
				return
			}
			if err != nil || !bytes.Equal(cookie, tc.cookie) || !bytes.Equal(nonce, tc.nonce) {
				t.Fatalf("cookie %x nonce %x err %v", cookie, nonce, err)
			}
		})
	}
}

func BenchmarkScanInit(b *testing.B) {
	m := &Message{Header: Header{SPIi: 1, Version: 0x20, Exchange: IKE_SA_INIT, Flags: FlagInitiator},
		Payloads: []Payload{&SA{Proposals: []Proposal{{Num: 1, Protocol: 1}}}, &KE{Group: 19, Data: bytesN(64, 1)}, &Nonce{Data: bytesN(32, 2)},
			&Notify{NotifyType: NAT_DETECTION_SOURCE_IP, Data: bytesN(20, 3)}, &Notify{NotifyType: NAT_DETECTION_DESTINATION_IP, Data: bytesN(20, 4)}}}
	raw := m.Encode()
	h, _ := ParseHeader(raw)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ScanInit(raw, h); err != nil {
			b.Fatal(err)
		}
	}
}
