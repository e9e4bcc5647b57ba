package tun

import "testing"

// espInUDPSize is the size on the wire of an inner packet of n bytes in
// ESP-in-UDP with AES-GCM, padding as RFC 4303 requires: the trailer (pad
// length, next header) ends on a 4-byte boundary.
func espInUDPSize(n, outerIP int) int {
	pad := (4 - (n+2)%4) % 4
	return outerIP + 8 /* UDP */ + 8 /* SPI, seq */ + 8 /* IV */ + n + pad + 2 + 16 /* ICV */
}

func TestMTUFor(t *testing.T) {
	for _, c := range []struct {
		name              string
		outerIP, overhead int
	}{
		{"ipv4", 20, OverheadESPInUDP4},
		{"ipv6", 40, OverheadESPInUDP6},
	} {
		for path := 1280; path <= 9000; path++ {
			m := MTUFor(path, c.overhead)
			if got := espInUDPSize(m, c.outerIP); got > path {
				t.Fatalf("%s: path %d: inner %d encapsulates to %d", c.name, path, m, got)
			}
			// Worst-case padding costs at most 3 bytes of MTU.
			best := m
			for espInUDPSize(best+1, c.outerIP) <= path {
				best++
			}
			if best-m > 3 {
				t.Fatalf("%s: path %d: MTU %d, %d would fit", c.name, path, m, best)
			}
		}
	}
	if m := MTUFor(40, OverheadESPInUDP6); m != 0 {
		t.Errorf("MTUFor below overhead = %d, want 0", m)
	}
	if espInUDPSize(DefaultMTU, 40) > 1500 {
		t.Errorf("DefaultMTU %d does not fit a 1500-byte IPv6 path", DefaultMTU)
	}
}
