package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// sd_notify(3): all assignments of one call go in one datagram,
// newline-separated, to a path or an abstract ("@") socket.
func TestNotifyOneDatagramPathAndAbstract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	abstract := "@roamsec-sdnotify-test-" + strconv.Itoa(os.Getpid())
	for _, tc := range []struct{ env, listen string }{{path, path}, {abstract, "\x00" + abstract[1:]}} {
		c := listen(t, tc.listen)
		t.Setenv("NOTIFY_SOCKET", tc.env)
		if err := Notify(Ready, Status("tunnel up: roamsec0")); err != nil {
			t.Fatal(err)
		}
		if got, want := read(t, c), "READY=1\nSTATUS=tunnel up: roamsec0"; got != want {
			t.Fatalf("%s: got %q, want %q", tc.env, got, want)
		}
	}
}

// Without NOTIFY_SOCKET (not under systemd) nothing is sent.
func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify(Ready); err != ErrNoSocket {
		t.Fatalf("got %v, want ErrNoSocket", err)
	}
}

// One assignment is one line: a newline inside would inject another
// variable, so it is refused; STATUS folds newlines.
func TestNotifyRefusesInjectedLines(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "n"))
	if err := NotifySocket(c.LocalAddr().String(), "STATUS=a\nREADY=1"); err == nil {
		t.Fatal("a newline in an assignment was sent")
	}
	if err := NotifySocket(c.LocalAddr().String(), "READY"); err == nil {
		t.Fatal("an assignment without = was sent")
	}
	if s := Status("a\nb"); s != "STATUS=a b" {
		t.Fatalf("Status folds newlines: %q", s)
	}
}

// sd_watchdog_enabled(3): WATCHDOG_USEC in microseconds, ignored when
// WATCHDOG_PID names another process.
func TestWatchdogIntervalFromEnvironment(t *testing.T) {
	cases := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"10000000", "", 10 * time.Second},
		{"10000000", strconv.Itoa(os.Getpid()), 10 * time.Second},
		{"10000000", "1", 0},
		{"garbage", "", 0},
		{"0", "", 0},
	}
	for _, c := range cases {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		if got := WatchdogInterval(); got != c.want {
			t.Errorf("USEC=%q PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}
