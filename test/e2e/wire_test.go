package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// espOut is one ESP packet a gateway sent, from a capture.
type espOut struct {
	at  time.Time
	seq int
}

// checkGatewayWire reads a capture (tshark) and fails the test on an ESP
// (SPI, sequence number) that a gateway-side source (fromGW) sent twice
// (RFC 4303 §3.3.3; under AES-GCM a nonce reused) or on an IKE_SA_INIT
// (exchange 34) after the time after: the SAs moved, they were not
// negotiated again. It returns the number of ESP packets captured and
// the gateway side's.
func checkGatewayWire(t *testing.T, file string, after time.Time, fromGW func(src string) bool) (esp int, gw []espOut) {
	t.Helper()
	out, err := exec.Command("tshark", "-n", "-r", file, "-Y", "esp or isakmp", "-T", "fields", "-E", "separator=|",
		"-e", "frame.time_epoch", "-e", "ip.src", "-e", "esp.spi", "-e", "esp.sequence", "-e", "isakmp.exchangetype").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "|")
		if len(f) < 5 {
			continue
		}
		var sec float64
		fmt.Sscan(f[0], &sec)
		at := time.Unix(0, int64(sec*1e9))
		if strings.Contains(f[4], "34") && at.After(after) {
			t.Fatalf("IKE_SA_INIT on the wire after the kill: %q", l)
		}
		if f[2] == "" {
			continue
		}
		esp++
		if !fromGW(f[1]) {
			continue
		}
		key := f[2] + "/" + f[3]
		if seen[key] {
			t.Fatalf("ESP (SPI, sequence number) %s sent twice by the gateway side (RFC 4303 §3.3.3; a nonce reused under AES-GCM)", key)
		}
		seen[key] = true
		p := espOut{at: at}
		fmt.Sscan(f[3], &p.seq)
		gw = append(gw, p)
	}
	return esp, gw
}
