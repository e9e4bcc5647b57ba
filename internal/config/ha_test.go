package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/internal/hactx"
)

// ha.cluster_key: -check reads the key file as start-up and context
// get/put will; errors are file:line: field.
func TestHAClusterKey(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "good.psk"), []byte("long enough and private to us"), 0o600)
	if err := hactx.Generate(filepath.Join(dir, "cluster.key")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "open.key"), []byte(strings.Repeat("ab", 32)), 0o644)
	os.WriteFile(filepath.Join(dir, "short.key"), []byte("abcd"), 0o600)
	gw := "role: gateway\nike:\n  id: gw.example\n  peers: [{id: a@b.example, psk_file: good.psk}]\n"
	c, err := Parse(filepath.Join(dir, "x.yaml"), []byte(gw+"ha: {cluster_key: cluster.key}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HA == nil || c.HA.KeyFile != filepath.Join(dir, "cluster.key") {
		t.Fatalf("ha section %+v", c.HA)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"missing key file", gw + "ha:\n  cluster_key: none.key\n", "x.yaml:6: ha.cluster_key: bad cluster key file"},
		{"key readable by others", gw + "ha:\n  cluster_key: open.key\n", "x.yaml:6: ha.cluster_key: bad cluster key file"},
		{"key too short", gw + "ha:\n  cluster_key: short.key\n", "want 64 hex digits"},
		{"no cluster_key", gw + "ha: {}\n", "ha.cluster_key: missing"},
		{"unknown field", gw + "ha:\n  cluster_key: cluster.key\n  peer: 192.0.2.9\n", "x.yaml:7: ha.peer"},
		{"a road warrior's", "role: roadwarrior\nha: {cluster_key: cluster.key}\n", "x.yaml:2: ha: a gateway's section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "x.yaml"), []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
