package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/test/pki"
)

// The credentials are loaded when the file is parsed: -check sees what
// start-up would see (a missing or garbage cert, key or CA is a
// file:line: field error, not a run-time failure).
func TestCredentialsLoadedAtParse(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("gw.example", pki.ECDSAP256, []string{"gw.example"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := leaf.Write(dir, "gw")
	if err != nil {
		t.Fatal(err)
	}
	caPath, err := ca.Write(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "garbage.pem"), []byte("not PEM at all\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "rw.psk"), []byte("a pre-shared key of 32 bytes...."), 0o600)
	gw := func(cert, key, cas string) string {
		return "role: gateway\nike:\n  id: gw.example\n  cert: " + cert + "\n  key: " + key + "\n  cas: [" + cas + "]\n  peers:\n    - {virtual_pool: 100.64.0.0/24}\n"
	}
	for _, tc := range []struct {
		name, yaml, want string
		line             int
	}{
		{"valid cert, key and CA load", gw(certPath, keyPath, caPath), "", 0},
		{"missing cert is refused", gw(filepath.Join(dir, "none.pem"), keyPath, caPath), "ike.cert: ", 4},
		{"garbage cert is refused", gw(filepath.Join(dir, "garbage.pem"), keyPath, caPath), "ike.cert: ", 4},
		{"missing key is refused", gw(certPath, filepath.Join(dir, "none.key"), caPath), "ike.key: ", 5},
		{"garbage key is refused", gw(certPath, filepath.Join(dir, "garbage.pem"), caPath), "ike.key: ", 5},
		{"key of another certificate is refused", gw(certPath, keyPath+"x", caPath), "ike.key: ", 5},
		// One garbage file named as both (a combined PEM): the certificate
		// is what fails first, and its field is named, whatever the words.
		{"garbage combined file is refused at cert", gw(filepath.Join(dir, "garbage.pem"), filepath.Join(dir, "garbage.pem"), caPath), "ike.cert: ", 4},
		{"missing CA is refused", gw(certPath, keyPath, filepath.Join(dir, "none.pem")), "ike.cas[0]: ", 6},
		{"garbage CA is refused", gw(certPath, keyPath, filepath.Join(dir, "garbage.pem")), "ike.cas[0]: ", 6},
		{"missing PSK file says to run init", "role: roadwarrior\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [10.0.0.0/8]\n  local_ts: [192.0.2.2/32]\n  psk_file: none.psk\n", "ike.psk_file: PSK file", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(filepath.Join(dir, "c.yaml"), []byte(tc.yaml))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.IKE.Credential == nil || len(c.IKE.CAs) != 1 {
					t.Fatalf("credential %v, %d CAs", c.IKE.Credential, len(c.IKE.CAs))
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), fmt.Sprintf("c.yaml:%d: %s", tc.line, tc.want)) {
				t.Fatalf("got %v, want %q on line %d", err, tc.want, tc.line)
			}
			if tc.name == "missing PSK file says to run init" && !strings.Contains(err.Error(), "run `roamsec-roadwarrior init`") {
				t.Errorf("no hint to run init: %v", err)
			}
		})
	}
}

// RFC 7296 §2 and RFC 3948: with IKE, 500 and 4500 or nothing.
func TestIKEPortsOtherThan500And4500AreRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "rw.psk"), []byte("a pre-shared key of 32 bytes...."), 0o600)
	base := "role: roadwarrior\ntransport:\n  udp_port: %U\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [10.0.0.0/8]\n  local_ts: [192.0.2.2/32]\n  psk_file: rw.psk\n  port: %P\n"
	for _, tc := range []struct {
		name, udp, ike, want string
	}{
		{"500 and 4500 are accepted", "4500", "500", ""},
		{"ike.port other than 500 is refused", "4500", "5000", "c.yaml:10: ike.port: 5000"},
		{"transport.udp_port other than 4500 is refused", "4501", "500", "c.yaml:3: transport.udp_port: 4501"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.NewReplacer("%U", tc.udp, "%P", tc.ike).Replace(base)
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(y))
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// Static keys keep their own port.
	c := loadExample(t, "gateway.yaml")
	c.Wipe()
}

// CheckHost: what start-up would find on this host.
func TestCheckHost(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "rw.psk"), []byte("a pre-shared key of 32 bytes...."), 0o600)
	host := StaticHost([]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}, []string{"lo", "eth0"})
	gw := "role: gateway\ntun:\n  addresses: [100.64.0.1/24]\n  routes:\n    - {dst: 100.64.0.0/24, src: %S}\ntransport:\n  listen: [%L]\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: rw.psk, virtual_pool: 100.64.0.0/24}]\n"
	rw := "role: roadwarrior\ntransport:\n  listen: [192.0.2.2, %L]\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [10.0.0.0/8]\n  psk_file: rw.psk\nmobility:\n  detector: probe\n  paths:\n    - {name: a, local: 192.0.2.2, peer: 192.0.2.1, link: eth0}\n    - {name: b, local: %L, peer: 198.51.100.1, link: %I}\n"
	for _, tc := range []struct {
		name, yaml, want, warn string
	}{
		{"addresses on the host are accepted", gw, "", ""},
		{"route src on the TUN is accepted", strings.ReplaceAll(gw, "%S", "100.64.0.1"), "", ""},
		{"route src not on the host is refused", strings.ReplaceAll(gw, "%S", "203.0.113.9"), "c.yaml:5: tun.routes[0].src: 203.0.113.9 is not an address of this host", ""},
		{"gateway listen not on the host is refused", strings.ReplaceAll(gw, "%L", "192.0.2.1, 198.51.100.1"), "c.yaml:7: transport.listen[1]: 198.51.100.1 is not an address of this host", ""},
		{"road warrior uplink not on the host is a warning", strings.ReplaceAll(rw, "%I", "eth0"), "", "transport.listen[1]: 198.51.100.2 is not an address of this host yet"},
		{"path link naming no interface is refused", strings.ReplaceAll(rw, "%I", "wwan9"), `c.yaml:13: mobility.paths[1].link: no network interface is named "wwan9"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.NewReplacer("%S", "192.0.2.1", "%L", "192.0.2.1", "%I", "eth0").Replace(tc.yaml)
			if tc.name == "road warrior uplink not on the host is a warning" || tc.name == "path link naming no interface is refused" {
				y = strings.NewReplacer("%L", "198.51.100.2").Replace(tc.yaml)
				y = strings.NewReplacer("%I", "eth0").Replace(y)
			}
			c, err := Parse(filepath.Join(dir, "c.yaml"), []byte(y))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Wipe()
			err = c.CheckHost(host)
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(c.Warnings, "\n"), tc.warn) {
				t.Errorf("warnings %q, want %q", c.Warnings, tc.warn)
			}
		})
	}
}

// status reads only role and control_socket: no key file is opened.
func TestControlSocketOfReadsNoCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want, err string }{
		{"default socket follows the role", "role: gateway\nike:\n  psk_file: /nonexistent/psk\n", "/run/roamsec/gateway.sock", ""},
		{"control_socket as given", "role: roadwarrior\ncontrol_socket: /tmp/rw.sock\nike: {cert: /root/none.pem}\n", "/tmp/rw.sock", ""},
		{"relative control_socket is refused", "role: gateway\ncontrol_socket: rw.sock\n", "", "c.yaml:2: control_socket: want an absolute path"},
		{"no role is refused", "tun: {}\n", "", "role: want gateway or roadwarrior"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "c.yaml")
			os.WriteFile(p, []byte(tc.yaml), 0o644)
			got, err := ControlSocketOf(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// The one-time key database's and accounting log's directories must be
// there: the gateway creates the files, not the directories.
func TestCheckHostOneTimeDirectories(t *testing.T) {
	dir := t.TempDir()
	yml := "role: gateway\nike:\n  id: gw.example\n  one_time:\n    database: %s/keys.json\n    accounting: %s/acct.jsonl\n    virtual_pool: [100.64.1.0/24]\n"
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(fmt.Sprintf(yml, dir, filepath.Join(dir, "missing"))))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckHost(&staticHost{})
	if err == nil || !strings.Contains(err.Error(), "ike.one_time.accounting: the directory of") || strings.Contains(err.Error(), "ike.one_time.database") {
		t.Fatalf("got %v", err)
	}
}

// -check reads ike.one_time.etcd's TLS files: one that is not there is
// reported at its field; one that is passes.
func TestCheckHostOneTimeEtcdTLSFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := "role: gateway\nike:\n  id: gw.example\n  one_time:\n    etcd: {endpoints: [https://192.0.2.10:2379], ca: ca.pem, cert: c.pem, key: c.key}\n    virtual_pool: [100.64.1.0/24]\n"
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckHost(&staticHost{})
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:5: ike.one_time.etcd.cert: cannot read") || !strings.Contains(err.Error(), "ike.one_time.etcd.key") ||
		strings.Contains(err.Error(), "ike.one_time.etcd.ca") {
		t.Fatalf("got %v", err)
	}
}
