package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestControlGroupAndMetrics(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(examples, "roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(base), "\n")
	parse := func(extra string) (*Config, error) {
		return Parse("rw.yaml", append(append([]byte(nil), base...), extra...))
	}
	c, err := parse("control_group: nogroup\nmetrics: {listen: \"127.0.0.1:9273\"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.ControlGroup == nil || c.ControlGroup.Name != "nogroup" || c.ControlGroup.GID != 65534 || c.Metrics == nil || c.Metrics.Listen != "127.0.0.1:9273" {
		t.Fatalf("control group %+v, metrics %+v", c.ControlGroup, c.Metrics)
	}
	c.Wipe()
	c, err = parse("control_group: \"65534\"\n")
	if err != nil || c.ControlGroup.GID != 65534 || c.Metrics != nil {
		t.Fatalf("numeric group: %+v %v", c, err)
	}
	c.Wipe()
	c, err = parse("metrics: {listen: \":9273\"}\n")
	if err != nil || !strings.Contains(strings.Join(c.Warnings, "\n"), "not a loopback address") {
		t.Fatalf("metrics on every address: %v %v", c.Warnings, err)
	}
	c.Wipe()
	for _, bad := range []struct{ extra, want string }{
		{"control_group: no-such-group-here\n", `rw.yaml:%d: control_group: no group "no-such-group-here" on this system`},
		{"metrics: {listen: 9273}\n", `rw.yaml:%d: metrics.listen: want host:port`},
		{"metrics: {listen: \"127.0.0.1:0\"}\n", `rw.yaml:%d: metrics.listen: want a port 1-65535`},
		{"metrics: {}\n", `rw.yaml:%d: metrics.listen: missing`},
		{"metrics: {listn: \"127.0.0.1:9273\"}\n", `rw.yaml:%d: metrics.listn: unknown field (did you mean "listen"?)`},
	} {
		_, err := parse(bad.extra)
		want := strings.Replace(bad.want, "%d", strconv.Itoa(n+1), 1)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", bad.extra, err, want)
		}
	}
}
