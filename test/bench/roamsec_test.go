package main

import (
	"testing"

	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/test/netns"
)

// TestRoamsecConfigs checks that the configs path b writes are what
// internal/config accepts, so the benchmark fails on the daemons, not on
// its own files, and follows changes of the format.
func TestRoamsecConfigs(t *testing.T) {
	p := newRoamsecParams("/run/roamsec-bench-test")
	addExtraParams(&p, "/run/roamsec-bench-test", newExtraPeers(&netns.Bed{ID: "rsbtest"}, 4))
	gw, rw, err := renderRoamsecConfigs(p)
	if err != nil {
		t.Fatal(err)
	}
	rw4, err := renderTemplate("roadwarrior4.yaml", extraRWTemplate, p.Extra[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, text string
		role       config.Role
	}{{"gateway.yaml", gw, config.RoleGateway}, {"roadwarrior.yaml", rw, config.RoleRoadWarrior}, {"roadwarrior4.yaml", rw4, config.RoleRoadWarrior}} {
		cfg, err := config.Parse(c.name, []byte(c.text))
		if err != nil {
			t.Errorf("%s does not parse:\n%v\n%s", c.name, err, c.text)
			continue
		}
		if cfg.Role != c.role {
			t.Errorf("%s: role %s, want %s", c.name, cfg.Role, c.role)
		}
		for _, w := range cfg.Warnings {
			t.Errorf("%s: warning: %s", c.name, w)
		}
		if c.role == config.RoleGateway && len(cfg.SAs) != 4 {
			t.Errorf("%s: %d SAs, want 4: one pair per road warrior", c.name, len(cfg.SAs))
		}
		cfg.Wipe()
	}
}
