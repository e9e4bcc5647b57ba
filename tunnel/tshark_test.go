package tunnel

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// requireTool finds a program the test command installs (`make test`
// runs `make deps` first). Missing it is a failure, not a skip: a test
// that silently skips cannot fail.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed: run `make deps` (apt-get install %s)", name, name)
	}
	return p
}

// An independent reader: Wireshark's ESP dissector, given only the SA's
// SPI, addresses and keys, decrypts packets our encoder wrote and shows
// the inner packet (RFC 4106 AES-GCM; Debian 12's tshark 4.0 has no
// ChaCha20-Poly1305 for ESP, which the RFC 7634 known answer covers).
func TestTsharkDecryptsOurESP(t *testing.T) {
	tshark := requireTool(t, "tshark")
	for _, tr := range []Transform{AESGCM128, AESGCM256} {
		t.Run(tr.String(), func(t *testing.T) {
			out, _ := saPair(t, tr, func(c *SAConfig) { c.SPI = 0xc0ffee01; c.Outer = RoadWarriorToGateway(gwAddr) })
			key := testKey(tr, 1)
			dir := t.TempDir()
			pcap := filepath.Join(dir, "esp.pcap")
			f, err := os.Create(pcap)
			if err != nil {
				t.Fatal(err)
			}
			w := pcapgo.NewWriter(f)
			if err := w.WriteFileHeader(65535, layers.LinkTypeRaw); err != nil {
				t.Fatal(err)
			}
			inners := [][]byte{
				ipv4Packet(rwAddr, srvAddr, ProtoUDP, 40000, 5353, 60),
				ipv4Packet(rwAddr, srvAddr, ProtoTCP, 40001, 443, 200),
				ipv4Packet(rwAddr, srvAddr, ProtoICMP, 0, 0, 56),
			}
			for _, inner := range inners {
				esp := sealPacket(t, out, inner)
				src, dst, err := OuterAddrs(out.Outer(), rwAddr, srvAddr)
				if err != nil {
					t.Fatal(err)
				}
				pkt := outerIPv4(src, dst, esp)
				ci := gopacket.CaptureInfo{Timestamp: time.Unix(1700000000, 0), CaptureLength: len(pkt), Length: len(pkt)}
				if err := w.WritePacket(ci, pkt); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()

			run := func(key []byte) []string {
				uat := fmt.Sprintf(`uat:esp_sa:"IPv4","%s","%s","0x%08x","AES-GCM with 16 octet ICV [RFC4106]","0x%s","NULL",""`,
					rwAddr, gwAddr, out.SPI, hex.EncodeToString(key))
				cmd := exec.Command(tshark, "-n", "-r", pcap,
					"-o", "esp.enable_encryption_decode:TRUE", "-o", uat,
					"-T", "fields", "-E", "separator=|",
					"-e", "esp.spi", "-e", "esp.sequence", "-e", "ip.src", "-e", "ip.dst", "-e", "ip.proto", "-e", "udp.dstport", "-e", "tcp.dstport", "-e", "icmp.type")
				cmd.Stderr = os.Stderr
				outp, err := cmd.Output()
				if err != nil {
					t.Fatalf("tshark: %v", err)
				}
				return strings.Split(strings.TrimSpace(string(outp)), "\n")
			}
			// Control: with a wrong key tshark must not see the inner packets,
			// or this test could not fail.
			if wrong := run(testKey(tr, 9)); len(wrong) != 3 || strings.Contains(strings.Join(wrong, "\n"), "203.0.113.2") {
				t.Fatalf("tshark with a wrong key: %q", wrong)
			}
			lines := run(key)
			want := []string{
				"0xc0ffee01|1|192.0.2.2,192.0.2.2|192.0.2.1,203.0.113.2|50,17|5353||",
				"0xc0ffee01|2|192.0.2.2,192.0.2.2|192.0.2.1,203.0.113.2|50,6||443|",
				"0xc0ffee01|3|192.0.2.2,192.0.2.2|192.0.2.1,203.0.113.2|50,1|||8",
			}
			if len(lines) != len(want) {
				t.Fatalf("tshark printed: %q", lines)
			}
			for i := range want {
				if lines[i] != want[i] {
					t.Errorf("packet %d: tshark sees %q, want %q", i+1, lines[i], want[i])
				}
			}
		})
	}
}

// outerIPv4 prepends an IPv4 header (protocol 50) to an ESP packet.
func outerIPv4(src, dst interface{ As4() [4]byte }, esp []byte) []byte {
	p := make([]byte, 20+len(esp))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8] = 64
	p[9] = ProtoESP
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:12], ^uint16(sum))
	copy(p[20:], esp)
	return p
}
