package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

var pathNames = map[string]string{
	"a": "bare veth",
	"b": "roamsec (ESP in UDP 4500)",
	"c": "wireguard-go",
	"d": "roamsec (raw ESP)",
}

// pathEnv is what a path's start function gets.
type pathEnv struct {
	ctx context.Context
	bed *netns.Bed
	bin string // the binaries (-bin)
	dir string // a scratch directory of this path, for configs and keys
	src string // the module root
	// peers: road warriors for the several-peers row; paths that support
	// it set up peers 2… (setup.peers), others ignore it.
	peers int
	// profile: a path prefix for the daemons' profiles (-profile), or "".
	profile string
	// wgTxQueue: if not 0, wireguard-go's TUN devices get this transmit
	// queue (-wg-txqueuelen) instead of the tun driver's 500.
	wgTxQueue int
}

// setup is a running path: the tunnel endpoint processes, whose CPU time is
// measured (nil for the bare path), and the tunnel interfaces, whose
// counters are reported ("" when unknown).
type setup struct {
	rw, gw     *daemon
	rwIf, gwIf string
	stop       func()      // ends the daemons and undoes what start did
	peers      []extraPeer // road warriors 2… (-peers), running
}

// starter brings a path up on a fresh bed: after it returns, rw reaches
// srv (203.0.113.2) over the path. On error it must have cleaned up.
type starter func(env *pathEnv) (*setup, error)

// starters is where a path plugs in; roamsec's is startRoamsec
// (roamsec.go).
var starters = map[string]starter{
	"a": startBare,
	"b": func(env *pathEnv) (*setup, error) { return startRoamsec(env, "udp") },
	"c": startWireGuard,
	"d": func(env *pathEnv) (*setup, error) { return startRoamsec(env, "esp") },
}

// builds are the go build commands each path needs, run in the module
// root with -bin as $BIN.
var builds = map[string][][]string{
	"b": {{"build", "-o", "$BIN/", "./cmd/gateway", "./cmd/roadwarrior"}},
	"d": {{"build", "-o", "$BIN/", "./cmd/gateway", "./cmd/roadwarrior"}},
	"c": {{"build", "-o", "$BIN/wireguard-go", "golang.zx2c4.com/wireguard"}},
}

func build(ctx context.Context, o options, id string) error {
	goCmd, err := lookPath("go")
	if err != nil {
		goCmd = "/usr/local/go/bin/go"
	}
	for _, args := range builds[id] {
		a := make([]string, len(args))
		for i, s := range args {
			if strings.HasPrefix(s, "$BIN/") {
				s = o.bin + "/" + strings.TrimPrefix(s, "$BIN/")
			}
			a[i] = s
		}
		cmd := command(ctx, nil, goCmd, a...)
		cmd.Dir = o.srcDir
		out, err := cmd.CombinedOutput()
		logf("go %s", strings.Join(a, " "))
		if err != nil {
			return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, oneLine(string(out)))
		}
	}
	return nil
}

// startBare routes the server net from rw straight via gw: no tunnel.
func startBare(env *pathEnv) (*setup, error) {
	if err := env.bed.AddPlainRoutes(); err != nil {
		return nil, err
	}
	if err := env.bed.RW.Ping(netns.Srv4, 5*time.Second); err != nil {
		return nil, fmt.Errorf("bare path: rw cannot reach srv: %w", err)
	}
	return &setup{stop: func() {}}, nil
}

// checkBinary reports a missing or non-executable binary with how to make it.
func checkBinary(path, how string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("no %s (%s)", path, how)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable", path)
	}
	return nil
}

// waitTunnel waits until rw reaches srv over the path while the daemons
// stay up, for at most timeout.
func waitTunnel(ctx context.Context, bed *netns.Bed, timeout time.Duration, ds ...*daemon) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		for _, d := range ds {
			if derr := d.exited(); derr != nil {
				return derr
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err = bed.RW.Ping(netns.Srv4, 500*time.Millisecond); err == nil {
			return nil
		}
	}
	for _, d := range ds {
		if derr := d.exited(); derr != nil {
			return derr
		}
	}
	var logs []string
	for _, d := range ds {
		if out := lastLines(d.out.String(), 3); out != "" {
			logs = append(logs, d.name+" says: "+out)
		}
	}
	msg := ""
	if len(logs) > 0 {
		msg = "; " + strings.Join(logs, "; ")
	}
	return fmt.Errorf("rw does not reach srv %s through the tunnel within %v: %w%s", netns.Srv4, timeout, err, msg)
}

// lastLines returns the last n lines of s, joined with " | ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, " | "))
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

func writeFile(dir, name, content string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(content), 0o600)
}
