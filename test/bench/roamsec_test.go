package main

import (
	"testing"

	"github.com/roamsec/roamsec/internal/config"
)

// TestRoamsecConfigs checks that the configs path b writes are what
// internal/config accepts, so the benchmark fails on the daemons, not on
// its own files, and follows changes of the format.
func TestRoamsecConfigs(t *testing.T) {
	gw, rw, err := renderRoamsecConfigs(newRoamsecParams("/run/roamsec-bench-test"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, text string
		role       config.Role
	}{{"gateway.yaml", gw, config.RoleGateway}, {"roadwarrior.yaml", rw, config.RoleRoadWarrior}} {
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
		cfg.Wipe()
	}
}
