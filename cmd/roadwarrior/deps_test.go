package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The road warrior links only what it uses (issue 15): the one-time keys'
// etcd Host is the gateway's, so etcd's client, gRPC and zap stay out of
// this binary (internal/enroll reaches etcd only through
// enroll.EtcdDialer, which cmd/gateway sets).
func TestRoadWarriorLinksNoEtcdOrGRPC(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, c := range []struct {
		pkg  string
		want bool // links etcd
	}{{".", false}, {"../gateway", true}} {
		out, err := exec.Command(goBin, "list", "-deps", c.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", c.pkg, err, out)
		}
		var heavy []string
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, "go.etcd.io/") || strings.HasPrefix(p, "google.golang.org/grpc") || strings.HasPrefix(p, "go.uber.org/zap") {
				heavy = append(heavy, p)
			}
		}
		if got := len(heavy) > 0; got != c.want {
			t.Errorf("%s links etcd/gRPC/zap: %v, want %v (%d packages, e.g. %.3q)", c.pkg, got, c.want, len(heavy), heavy)
		}
	}
}
