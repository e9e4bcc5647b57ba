package tun

// Per-packet overhead of ESP in UDP (NAT-T, RFC 3948) with AES-GCM (RFC 4106),
// in bytes:
//
//	outer IPv4 header            20   (IPv6: 40)
//	UDP header                    8
//	ESP header: SPI + sequence    8
//	IV                            8
//	padding                     0-3   (to align the trailer to 4 bytes)
//	pad length + next header      2
//	ICV                          16
//
// Counting the worst-case padding keeps every inner packet of up to
// MTUFor(path, overhead) bytes within the path MTU.
const (
	OverheadIPv4 = 20
	OverheadIPv6 = 40
	OverheadUDP  = 8
	OverheadESP  = 8 + 8 + 3 + 2 + 16 // header, IV, max padding, trailer, ICV

	OverheadESPInUDP4 = OverheadIPv4 + OverheadUDP + OverheadESP // 65
	OverheadESPInUDP6 = OverheadIPv6 + OverheadUDP + OverheadESP // 85
)

// MTUFor returns the TUN MTU for a path MTU and an encapsulation overhead,
// typically OverheadESPInUDP4 or OverheadESPInUDP6 (use the IPv6 one when
// the tunnel may move between families). It returns 0 if nothing fits.
// Note that the kernel disables IPv6 on a link whose MTU is below 1280.
func MTUFor(pathMTU int, overhead int) int {
	return max(pathMTU-overhead, 0)
}
