package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, path string, h Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	for range 100 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("socket never answered")
}

func TestQueryAnswersAndErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	serve(t, path, func(cmd string) (any, error) {
		if cmd == "status" {
			return map[string]int{"sas": 4}, nil
		}
		return nil, errors.New("unknown command")
	})
	var got map[string]int
	if err := Query(path, "status", &got); err != nil || got["sas"] != 4 {
		t.Fatalf("%v %v", got, err)
	}
	if err := Query(path, "reboot", &got); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
	// Only root may open it: the daemon holds keys and moves SAs.
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
}

func TestQueryWithoutDaemonSaysWhat(t *testing.T) {
	err := Query(filepath.Join(t.TempDir(), "none.sock"), "status", new(any))
	if err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Fatalf("%v", err)
	}
}

// A socket file left by a daemon that died is replaced; a live one is not
// taken over.
func TestStaleSocketReplacedLiveOneKept(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens
	serve(t, stale, func(string) (any, error) { return 1, nil })
	var n int
	if err := Query(stale, "status", &n); err != nil || n != 1 {
		t.Fatalf("after a stale socket: %v %v", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := Serve(ctx, stale, func(string) (any, error) { return 2, nil }); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second daemon on a live socket: %v", err)
	}
}
