package message

import "testing"

// BenchmarkParseIKESAInit parses strongSwan's default IKE_SA_INIT request:
// 892 bytes, two proposals of 34 and 36 transforms, KE, nonce, five
// notifies.
func BenchmarkParseIKESAInit(b *testing.B) {
	dgs, _ := captured(b, "strongswan-default.txt")
	msg := dgs[0].b
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeIKESAInit encodes the same message.
func BenchmarkEncodeIKESAInit(b *testing.B) {
	dgs, _ := captured(b, "strongswan-default.txt")
	m, err := Parse(dgs[0].b)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Encode()
	}
}
