package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestSectionHashesPeersApart: a reload applies a gateway's ike.peers
// live, so a change there must show as that section alone, and a change
// to the rest of ike as "ike" alone (it waits for a restart).
func TestSectionHashesPeersApart(t *testing.T) {
	const base = "role: gateway\nike:\n  id: gw.example\n  dpd: 10s\n  peers:\n    - id: rw1@example\n"
	for _, tc := range []struct {
		name, file string
		changed    []string
	}{
		{"same file changes nothing", base, nil},
		{"a peer added changes ike.peers only", base + "    - id: rw2@example\n", []string{peersSection}},
		{"another ike field changes ike only", "role: gateway\nike:\n  id: gw.example\n  dpd: 20s\n  peers:\n    - id: rw1@example\n", []string{"ike"}},
		{"peers removed changes ike.peers only", "role: gateway\nike:\n  id: gw.example\n  dpd: 10s\n", []string{peersSection}},
		{"another section changes that one", base + "log:\n  level: debug\n", []string{"log"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
			if err := os.WriteFile(a, []byte(base), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(b, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			ha, hb := sectionHashes(a), sectionHashes(b)
			if len(ha) == 0 {
				t.Fatal("no sections hashed")
			}
			var changed []string
			for name := range mergeKeys(ha, hb) {
				if ha[name] != hb[name] {
					changed = append(changed, name)
				}
			}
			slices.Sort(changed)
			if !slices.Equal(changed, tc.changed) {
				t.Fatalf("changed sections %v, want %v", changed, tc.changed)
			}
		})
	}
}

func mergeKeys(a, b map[string][32]byte) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
