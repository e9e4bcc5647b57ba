package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike"
)

// The IKE examples parse, with their PSK files next to them.
func TestIKEExamplesParse(t *testing.T) {
	for _, name := range []string{"gateway-ike.yaml", "roadwarrior-ike.yaml"} {
		dir := t.TempDir()
		data, err := os.ReadFile(filepath.Join(examples, name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), data, 0o600)
		os.WriteFile(filepath.Join(dir, "rw1.psk"), []byte("an example pre-shared key, 32+ bytes\n"), 0o600)
		c, err := Load(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.IKE == nil || c.IKE.ID.String() == "" {
			t.Fatalf("%s: no ike section", name)
		}
		if c.Role == RoleRoadWarrior {
			if string(c.IKE.PSK) != "an example pre-shared key, 32+ bytes" || c.IKE.Mode != ike.ModeRFC3554 || len(c.IKE.LocalTS) != 4 || !c.IKE.HostToHost {
				t.Errorf("road warrior ike section: %+v", c.IKE)
			}
		} else if len(c.IKE.Peers) != 1 || len(c.IKE.Peers[0].Addresses) != 4 || !c.IKE.Peers[0].VirtualPool.IsValid() {
			t.Errorf("gateway peers: %+v", c.IKE.Peers)
		}
		b, err := c.Build()
		if err != nil {
			t.Fatal(err)
		}
		if len(c.IKE.PSK) > 0 && string(c.IKE.PSK) != strings.Repeat("\x00", len(c.IKE.PSK)) {
			t.Error("Build left the Config's PSK in place")
		}
		if b.IKE == nil || (c.Role == RoleRoadWarrior && string(b.IKE.PSK) == "") {
			t.Error("Build lost the IKE section or its PSK")
		}
	}
}

// Config errors in the ike section: file:line: field: reason.
func TestIKEConfigErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "short.psk"), []byte("short"), 0o600)
	os.WriteFile(filepath.Join(dir, "open.psk"), []byte("long enough but world readable"), 0o644)
	os.WriteFile(filepath.Join(dir, "good.psk"), []byte("long enough and private to us"), 0o600)
	for _, tc := range []struct{ name, yaml, want string }{
		{"no gateway", "role: roadwarrior\nike:\n  id: a@b.example\n  remote_ts: [10.0.0.0/8]\n  psk_file: short.psk\n", "ike.gateway: missing"},
		{"short PSK", "role: roadwarrior\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [10.0.0.0/8]\n  psk_file: short.psk\n", "shorter than 16 bytes"},
		{"readable PSK", "role: roadwarrior\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [10.0.0.0/8]\n  psk_file: open.psk\n", "chmod 600"},
		{"bad proposal", "role: gateway\nike:\n  id: gw.example\n  proposals: [aes256cbc-sha1-modp1024]\n  peers: [{id: a@b.example, psk_file: open.psk}]\n", "not supported"},
		{"half-open cap not a number", "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n  half_open_max: lots\n", "x.yaml:5: ike.half_open_max: want a whole number"},
		{"per-source cap above the total", "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n  half_open_max: 10\n  half_open_per_source: 11\n", "x.yaml:6: ike.half_open_per_source: 11 is more than half_open_max (10)"},
		{"half-open timeout too short", "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n  half_open_timeout: 10ms\n", "x.yaml:5: ike.half_open_timeout: want 1s to 10m"},
		{"fragment memory per SA above the total", "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n  fragment_memory: 65536\n  fragment_memory_per_sa: 131072\n", "x.yaml:6: ike.fragment_memory_per_sa: 131072 is more than fragment_memory"},
		{"queue too small", "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n  queue: 1\n", "x.yaml:5: ike.queue: want a whole number from 16"},
		{"gateway without peers", "role: gateway\nike:\n  id: gw.example\n", "ike.peers: missing"},
		{"one-time keys without a database", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n", "x.yaml:5: ike.one_time.database: missing"},
		{"one-time keys without a pool", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    database: keys.json\n", "x.yaml:5: ike.one_time.virtual_pool: missing"},
		{"one-time keys on a road warrior", "role: roadwarrior\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [10.0.0.0/8]\n  psk_file: good.psk\n  one_time: {database: keys.json}\n", "x.yaml:7: ike.one_time"},
		{"one-time keys in a file and in etcd", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    database: keys.json\n    etcd: {endpoints: [http://192.0.2.10:2379]}\n", "x.yaml:6: ike.one_time.database: give database"},
		{"etcd without endpoints", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    etcd: {prefix: /x/}\n", "x.yaml:6: ike.one_time.etcd.endpoints: missing"},
		{"etcd endpoint not a URL", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    etcd:\n      endpoints:\n        - 192.0.2.10:2379\n", "x.yaml:8: ike.one_time.etcd.endpoints[0]: want"},
		{"etcd endpoint without a port", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    etcd: {endpoints: [https://192.0.2.10]}\n", "x.yaml:6: ike.one_time.etcd.endpoints[0]: want scheme://HOST:PORT"},
		{"etcd prefix not a directory", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    etcd: {endpoints: [https://192.0.2.10:2379], prefix: roamsec}\n", "x.yaml:6: ike.one_time.etcd.prefix: want a path"},
		{"etcd cert without key", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    etcd: {endpoints: [https://192.0.2.10:2379], cert: c.pem}\n", "ike.one_time.etcd.cert: cert and key go together"},
		{"etcd unknown field", "role: gateway\nike:\n  id: gw.example\n  one_time:\n    virtual_pool: [100.64.1.0/24]\n    etcd: {endpoints: [https://192.0.2.10:2379], password: x}\n", "x.yaml:6: ike.one_time.etcd.password"},
		{"bad identity", "role: gateway\nike:\n  id: \"CN=\"\n  peers: []\n", "ike.id"},
		{"path monitoring off with paths", "role: roadwarrior\ntransport: {listen: [192.0.2.2, 198.51.100.2]}\nike:\n  id: a@b.example\n  gateway: 192.0.2.1\n  remote_ts: [203.0.113.0/24]\n  psk_file: good.psk\n  mode: virtual\n  host_to_host: false\n" +
			"mobility:\n  paths:\n    - {name: primary, local: 192.0.2.2, peer: 192.0.2.1}\n    - {name: secondary, local: 198.51.100.2, peer: 198.51.100.1}\n", "x.yaml:9: ike.host_to_host: false leaves every mobility path unmonitored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "x.yaml"), []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "x.yaml:") {
				t.Errorf("error lacks file:line: %v", err)
			}
		})
	}
}

// A gateway whose only road warriors come with one-time keys needs no
// peers; the database and the log are taken relative to the file.
func TestIKEOneTimeGatewayWithoutPeers(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(filepath.Join(dir, "x.yaml"), []byte("role: gateway\nike:\n  id: gw.example\n  one_time:\n    database: keys.json\n    accounting: acct.jsonl\n    virtual_pool: [100.64.1.0/24, 2001:db8:64::/64]\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := c.IKE.OneTime
	if o == nil || o.Database != filepath.Join(dir, "keys.json") || o.Accounting != filepath.Join(dir, "acct.jsonl") ||
		o.VirtualPool.String() != "100.64.1.0/24" || o.VirtualPool6.String() != "2001:db8:64::/64" || o.Name == "" {
		t.Fatalf("one_time: %+v", o)
	}
}

// TestIKELimitsDefaultsAndSet: the bounds on unauthenticated state have
// their defaults when absent and take what the file says.
func TestIKELimitsDefaultsAndSet(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "good.psk"), []byte("long enough and private to us"), 0o600)
	base := "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n"
	c, err := Parse(filepath.Join(dir, "x.yaml"), []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	want := IKELimits{CookieThreshold: 64, HalfOpenMax: ike.DefaultHalfOpenMax, HalfOpenPerSource: ike.DefaultHalfOpenPerSource,
		HalfOpenTimeout: 30 * time.Second, FragmentMemory: ike.DefaultFragmentMemory, FragmentMemoryPerSA: ike.DefaultFragmentMemoryPerSA, Queue: DefaultIKEQueue}
	if c.IKE.Limits != want {
		t.Fatalf("defaults %+v, want %+v", c.IKE.Limits, want)
	}
	c, err = Parse(filepath.Join(dir, "x.yaml"), []byte(base+"  cookie_threshold: 0\n  half_open_max: 500\n  half_open_per_source: 5\n  half_open_timeout: 10s\n  fragment_memory: 1048576\n  fragment_memory_per_sa: 32768\n  queue: 256\n"))
	if err != nil {
		t.Fatal(err)
	}
	want = IKELimits{CookieThreshold: -1, HalfOpenMax: 500, HalfOpenPerSource: 5, HalfOpenTimeout: 10 * time.Second, FragmentMemory: 1 << 20, FragmentMemoryPerSA: 32 << 10, Queue: 256}
	if c.IKE.Limits != want {
		t.Fatalf("set %+v, want %+v", c.IKE.Limits, want)
	}
}

// Gateways on several machines share the Host through etcd: no database
// file, the endpoints and the TLS files as given (paths relative to the
// configuration).
func TestIKEOneTimeEtcd(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(filepath.Join(dir, "x.yaml"), []byte("role: gateway\nike:\n  id: gw.example\n  one_time:\n    etcd:\n      endpoints: [https://192.0.2.10:2379, \"https://[2001:db8::10]:2379/\"]\n      ca: ca.pem\n      cert: c.pem\n      key: c.key\n    virtual_pool: [100.64.1.0/24]\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := c.IKE.OneTime
	if o.Database != "" || o.Etcd == nil || !slices.Equal(o.Etcd.Endpoints, []string{"https://192.0.2.10:2379", "https://[2001:db8::10]:2379"}) ||
		o.Etcd.Prefix != "/roamsec/onetime/" || o.Etcd.CAFile != filepath.Join(dir, "ca.pem") || o.Etcd.KeyFile != filepath.Join(dir, "c.key") {
		t.Fatalf("one_time: %+v etcd %+v", o, o.Etcd)
	}
}
