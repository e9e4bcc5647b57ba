package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// A Then answer is sent before its After runs (disconnect: the client
// learns the daemon's pid, then the daemon stops).
func TestCLIControlThenRunsAfterTheAnswer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	ran := make(chan struct{})
	serve(t, path, func(cmd string) (any, error) {
		return Then{Data: map[string]int{"pid": 42}, After: func() { close(ran) }}, nil
	})
	var got map[string]int
	if err := Query(path, "disconnect", &got); err != nil || got["pid"] != 42 {
		t.Fatalf("%v %v", got, err)
	}
	select {
	case <-ran:
	case <-time.After(2 * time.Second):
		t.Fatal("After never ran")
	}
}

// The helper client for TestCLIControlGroupMayReadNotDisconnect: it runs as another
// user (the test binary again, under setuid credentials).
func TestCLIControlHelperClient(t *testing.T) {
	sock := os.Getenv("ROAMSEC_CONTROL_SOCK")
	if sock == "" {
		t.Skip("helper for TestCLIControlGroupMayReadNotDisconnect")
	}
	var out map[string]any
	err := Query(sock, os.Getenv("ROAMSEC_CONTROL_CMD"), &out)
	switch {
	case err == nil:
		fmt.Println("RESULT ok")
	case errors.Is(err, os.ErrPermission):
		fmt.Println("RESULT permission:", err)
	default:
		fmt.Println("RESULT error:", err)
	}
}

// control_group: the socket is 0660 with that group; a member (not root)
// may ask for status, but not disconnect (SO_PEERCRED decides, whatever
// the mode); a non-member cannot open the socket at all.
func TestCLIControlGroupMayReadNotDisconnect(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (setuid to nobody for the client)")
	}
	const nobody, nogroup = 65534, 65534
	dir, err := os.MkdirTemp("", "roamsec-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	// The test binary, where nobody may run it.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "control.test")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "d.sock")
	warned := make(chan string, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeWith(ctx, path, Options{Group: nogroup, Privileged: []string{"disconnect"}, Warn: func(m string) { warned <- m }},
			func(cmd string) (any, error) { return map[string]string{"cmd": cmd}, nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	var fi os.FileInfo
	for range 200 { // chown and chmod follow the listen
		if fi, err = os.Stat(path); err == nil && fi.Mode().Perm() == 0o660 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != nogroup {
		t.Fatalf("socket mode %v gid %v, want 0660 and %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, nogroup)
	}
	select {
	case m := <-warned:
		t.Errorf("warning for a reachable socket: %s", m)
	default:
	}
	client := func(uid, gid uint32, groups []uint32, cmd string) string {
		c := exec.Command(exe, "-test.run=^TestCLIControlHelperClient$", "-test.v")
		c.Env = append(os.Environ(), "ROAMSEC_CONTROL_SOCK="+path, "ROAMSEC_CONTROL_CMD="+cmd)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
		out, _ := c.CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "RESULT ") {
				return strings.TrimPrefix(l, "RESULT ")
			}
		}
		t.Fatalf("helper: %s", out)
		return ""
	}
	if r := client(nobody, nogroup, []uint32{nogroup}, "status"); r != "ok" {
		t.Errorf("group member, status: %s", r)
	}
	if r := client(nobody, nogroup, []uint32{nogroup}, "disconnect"); !strings.HasPrefix(r, "permission:") || !strings.Contains(r, "only root") {
		t.Errorf("group member, disconnect: %s", r)
	}
	if r := client(nobody, 1, []uint32{1}, "status"); !strings.HasPrefix(r, "permission:") || !strings.Contains(r, "control_group") {
		t.Errorf("not a member, status: %s", r)
	}
	var got map[string]string
	if err := Query(path, "disconnect", &got); err != nil || got["cmd"] != "disconnect" {
		t.Errorf("root, disconnect: %v %v", got, err)
	}
}

// A control group that cannot search the socket's directory is told so.
func TestCLIControlGroupUnreachableWarns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to the group)")
	}
	dir := t.TempDir() // 0700, root's
	path := filepath.Join(dir, "d.sock")
	warned := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeWith(ctx, path, Options{Group: 65534, Warn: func(m string) { warned <- m }}, func(string) (any, error) { return 1, nil })
	}()
	defer func() { cancel(); <-done }()
	select {
	case m := <-warned:
		if !strings.Contains(m, "cannot reach the socket") || !strings.Contains(m, filepath.Dir(dir)) {
			t.Fatalf("warning %q", m)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no warning")
	}
}

// A Stream answer arrives item by item, in order, all of them (a gateway's
// 10,000 Child SAs), and its end is checked; a refusal is still an error.
func TestQueryStreamDeliversEveryItemInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	const n = 10000
	serve(t, path, func(cmd string) (any, error) {
		if cmd != "sa list stream" {
			return nil, errors.New("unknown command")
		}
		return Stream{Items: func(yield func(any) bool) {
			for i := range n {
				if !yield(map[string]int{"i": i}) {
					return
				}
			}
		}}, nil
	})
	next := 0
	err := QueryStream(path, "sa list stream", func(b json.RawMessage) error {
		var v map[string]int
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		if v["i"] != next {
			return fmt.Errorf("item %d arrived as number %d", v["i"], next)
		}
		next++
		return nil
	})
	if err != nil || next != n {
		t.Fatalf("%d of %d items: %v", next, n, err)
	}
	if err := QueryStream(path, "reboot", func(json.RawMessage) error { return nil }); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("refused command: %v", err)
	}
	// A client that gives up half way: the daemon's goroutine ends (the
	// test's Serve cleanup would hang otherwise).
	stop := errors.New("enough")
	if err := QueryStream(path, "sa list stream", func(json.RawMessage) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("stopping early: %v", err)
	}
}

// A command with a body (context put): the body arrives whole, bounded by
// MaxBody, and only through Body; without the length it is not one.
func TestQueryBodyDeliversTheBodyBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	got := make(chan string, 4)
	o := Options{Group: NoGroup, BodyCommands: []string{"context put"}, MaxBody: 1 << 20,
		Body: func(cmd string, body []byte) (any, error) { got <- cmd; return len(body), nil }}
	go func() {
		done <- ServeWith(ctx, path, o, func(cmd string) (any, error) { return nil, fmt.Errorf("plain %q", cmd) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	for range 100 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	body := make([]byte, 300000) // more than a socket buffer
	var n int
	if err := QueryBody(path, "context put 7", body, &n); err != nil || n != len(body) {
		t.Fatalf("QueryBody = %d, %v", n, err)
	}
	if cmd := <-got; cmd != "context put 7" {
		t.Fatalf("Body got command %q", cmd)
	}
	if err := QueryBody(path, "context put 7", make([]byte, 1<<20+1), &n); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("oversized body: %v", err)
	}
	if err := Query(path, "context put", &n); err == nil || !strings.Contains(err.Error(), "plain") {
		t.Fatalf("without a length: %v", err)
	}
}
