package transport

import (
	"testing"
)

// FuzzDeliver feeds arbitrary received bytes (IPv4 header area, payload,
// control messages) through the receive classifier of raw and UDP sockets:
// it never panics, never hands the caller more bytes than arrived, and
// what it delivers obeys the rules it enforces (RFC 4303 §2.1 no SPI 0 on
// raw ESP; RFC 3948 §2.2 IKE behind a zero marker).
func FuzzDeliver(f *testing.F) {
	f.Add(false, true, []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1}, []byte{0, 0, 1, 0, 0, 0, 0, 1, 9, 9}, []byte{})
	f.Add(true, false, []byte{}, []byte{0, 0, 0, 0, 1, 2, 3}, []byte{})
	f.Add(true, false, []byte{}, []byte{0xff}, []byte{})
	f.Add(false, true, []byte{0x4f, 0, 0, 60}, []byte{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8}, []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, udp, rawIPv4 bool, hdr, payload, oob []byte) {
		if udp {
			rawIPv4 = false
		}
		var c batchConn
		c.udp = udp
		c.rx.init(rawIPv4)
		buf := make([]byte, 2048)
		n := copy(buf, payload)
		total := n
		if rawIPv4 {
			copy(c.rx.ipHdr, hdr)
			total += ipv4HeaderLen
		}
		c.rx.hdrs[0].Len = uint32(total)
		c.rx.hdrs[0].Hdr.SetControllen(copy(c.rx.oob[:oobSize], oob))
		msgs := []Datagram{{Buf: buf}}
		k := c.deliver(msgs, 1)
		if k == 0 {
			if c.malformed.Load()+c.keepalives.Load() != 1 {
				t.Fatalf("dropped without a count: %+v", c.Stats())
			}
			return
		}
		m := msgs[0]
		if len(m.Buf) > n || len(m.Buf) > len(buf) {
			t.Fatalf("delivered %d bytes of %d", len(m.Buf), n)
		}
		switch {
		case m.IKE:
			if !udp || len(m.Buf) == 0 {
				t.Fatalf("IKE delivered from raw or empty: %+v", m)
			}
		case len(m.Buf) < espHeaderLen:
			t.Fatalf("ESP shorter than its header: %d", len(m.Buf))
		case !udp && m.Buf[0]|m.Buf[1]|m.Buf[2]|m.Buf[3] == 0:
			t.Fatal("SPI 0 delivered")
		}
		_ = m.Local // parsed from the fuzzed control messages: must not panic
	})
}
