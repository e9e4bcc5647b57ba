package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// eapGateway is a gateway whose one peer uses EAP-only through RADIUS
// (no certificate needed), with the secret in dir/radius.secret.
const eapGateway = `role: gateway
tun:
  addresses: [100.64.0.1/24]
transport:
  listen: [192.0.2.1]
ike:
  id: gw.example
  peers:
    - {auth: eap-radius, eap_only: true, virtual_pool: 100.64.0.0/24}
radius:
  servers:
    - {address: 203.0.113.2, secret_file: radius.secret}
    - {address: "203.0.113.3:11812", accounting_address: "203.0.113.3:11813", secret_file: radius.secret}
  timeout: 500ms
  retries: 3
  interim: 5m
`

func writeEAPGateway(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "radius.secret"), []byte("radius-secret-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRADIUSSection(t *testing.T) {
	c, err := Load(writeEAPGateway(t, eapGateway))
	if err != nil {
		t.Fatal(err)
	}
	r := c.RADIUS
	if r == nil || len(r.Servers) != 2 || r.Timeout != 500*time.Millisecond || r.Retries != 3 || r.Interim != 5*time.Minute || !r.Accounting {
		t.Fatalf("radius section %+v", r)
	}
	s0, s1 := r.Servers[0], r.Servers[1]
	if s0.Auth != netip.MustParseAddrPort("203.0.113.2:1812") || s0.Acct != netip.MustParseAddrPort("203.0.113.2:1813") ||
		s1.Auth != netip.MustParseAddrPort("203.0.113.3:11812") || s1.Acct != netip.MustParseAddrPort("203.0.113.3:11813") {
		t.Fatalf("servers %v %v / %v %v", s0.Auth, s0.Acct, s1.Auth, s1.Acct)
	}
	if string(s0.Secret) != "radius-secret-123" {
		t.Fatal("secret not read (surrounding whitespace ignored)")
	}
	if p := c.IKE.Peers[0]; !p.EAP || !p.EAPOnly {
		t.Fatalf("peer %+v", p)
	}
	if s := fmt.Sprint(s0.Secret) + fmt.Sprintf("%v", r); strings.Contains(s, "radius-secret-123") {
		t.Fatalf("secret printed: %s", s)
	}
	c.Wipe()
	if string(s0.Secret) == "radius-secret-123" {
		t.Fatal("Wipe left the secret")
	}
}

// TestRADIUSConfigErrors: each mistake is a file:line: field error.
func TestRADIUSConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, field, msg string
	}{
		{"eap-radius without a radius section", "radius:\n", "radiux:\n", "ike.peers[0].auth", "needs a radius section"},
		{"eap_only without eap", "auth: eap-radius, eap_only: true", "auth: psk, eap_only: true, id: a@b.example, psk_file: radius.secret", "ike.peers[0].eap_only", "needs auth: eap-radius"},
		{"EAP needs our certificate", "eap_only: true, ", "", "ike.peers[0].auth", "EAP needs the gateway's certificate"},
		{"bad address", "address: 203.0.113.2,", "address: radius.example,", "radius.servers[0].address", "want an address and port"},
		{"no secret file", ", secret_file: radius.secret}\n    - {address: \"203", "}\n    - {address: \"203", "radius.servers[0].secret_file", "missing"},
		{"secret file absent", "secret_file: radius.secret}\n    - {address: \"203", "secret_file: nope.secret}\n    - {address: \"203", "radius.servers[0].secret_file", "no such file"},
		{"timeout out of range", "timeout: 500ms", "timeout: 5ms", "radius.timeout", "want 100ms to 1m"},
		{"unknown field", "retries: 3", "retries: 3\n  retry: 3", "radius.retry", "unknown field"},
		{"no servers", "  servers:\n    - {address: 203.0.113.2, secret_file: radius.secret}\n    - {address: \"203.0.113.3:11812\", accounting_address: \"203.0.113.3:11813\", secret_file: radius.secret}\n", "", "radius.servers", "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(eapGateway, tc.old) {
				t.Fatalf("no %q", tc.old)
			}
			text := strings.Replace(eapGateway, tc.old, tc.new, 1)
			_, err := Load(writeEAPGateway(t, text))
			if err == nil {
				t.Fatal("loaded")
			}
			re := fmt.Sprintf("gw.yaml:%%d: %s: ", tc.field)
			found := false
			for _, l := range strings.Split(err.Error(), "\n") {
				var line int
				if _, e := fmt.Sscanf(l[strings.Index(l, "gw.yaml:"):], re, &line); e == nil && line > 0 && strings.Contains(l, tc.msg) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want %s: ...%s..., got\n%v", tc.field, tc.msg, err)
			}
		})
	}
}
