package e2e

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// notifySocket is what systemd listens on for a Type=notify unit
// (sd_notify(3)): every datagram, in order.
type notifySocket struct {
	path string
	c    *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n.c = c
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

// count is how many datagrams so far carry the assignment a.
func (n *notifySocket) count(a string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, m := range n.msgs {
		for _, l := range strings.Split(m, "\n") {
			if l == a {
				k++
			}
		}
	}
	return k
}

func (n *notifySocket) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.msgs, " | ")
}

// TestNotifyReadyWatchdogReloadStopping runs the gateway as systemd would
// run a Type=notify unit with WatchdogSec (NOTIFY_SOCKET, WATCHDOG_USEC)
// and checks the protocol: READY=1 only once the tunnel is up, WATCHDOG=1
// at half the interval, on SIGHUP RELOADING=1 then READY=1 with the new
// log level applied and the other changed sections named, a broken file
// refused on reload with the daemon still serving, STOPPING=1 on SIGTERM
// and a clean exit.
func TestNotifyReadyWatchdogReloadStopping(t *testing.T) {
	bed := netns.New(t)
	ns := listenNotify(t)
	orig, err := os.ReadFile(rig.ExampleConfig("gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, err := rig.WriteFile(dir, "gw.yaml", string(orig))
	if err != nil {
		t.Fatal(err)
	}
	cmd := bed.GW.Command(filepath.Join(bin, "gateway"), "-config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=400000")
	var mu sync.Mutex
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = lockedBuf{&mu, &out}, lockedBuf{&mu, &out}
	log := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	}()
	if !rig.WaitFor(15*time.Second, func() bool { return ns.count("READY=1") == 1 }) {
		t.Fatalf("no READY=1: %s\n%s", ns, log())
	}
	// The log goes through a pipe: give it a moment.
	logHas := func(subs ...string) bool {
		return rig.WaitFor(5*time.Second, func() bool {
			for _, sub := range subs {
				if !strings.Contains(log(), sub) {
					return false
				}
			}
			return true
		})
	}
	if !logHas("tunnel up") {
		t.Fatalf("READY=1 but no tunnel up:\n%s", log())
	}
	if !rig.WaitFor(5*time.Second, func() bool { return ns.count("WATCHDOG=1") >= 3 }) {
		t.Fatalf("fewer than 3 WATCHDOG=1 in 5 s with WATCHDOG_USEC=400000: %s", ns)
	}

	// A valid change: log level debug (applied), tun MTU (at the next restart).
	edited := strings.Replace(strings.Replace(string(orig), "level: info", "level: debug", 1), "  mtu: 0\n", "  mtu: 1300\n", 1)
	if edited == string(orig) || !strings.Contains(edited, "mtu: 1300") {
		t.Fatal("example config no longer has log.level info / a tun section")
	}
	os.WriteFile(cfg, []byte(edited), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	if !rig.WaitFor(10*time.Second, func() bool { return ns.count("READY=1") == 2 }) {
		t.Fatalf("no READY=1 after the reload: %s\n%s", ns, log())
	}
	if ns.count("RELOADING=1") != 1 || !logHas("msg=reloaded", "log_level=DEBUG", "take effect at the next restart", "sections=[tun]") {
		t.Fatalf("reload: %s\n%s", ns, log())
	}

	// A broken file: refused, the daemon keeps serving as it was.
	os.WriteFile(cfg, []byte(strings.Replace(edited, "transform: aes256gcm16", "transform: aes512gcm16", 1)), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	if !rig.WaitFor(10*time.Second, func() bool { return ns.count("READY=1") == 3 }) {
		t.Fatalf("no READY=1 after the refused reload: %s\n%s", ns, log())
	}
	if !logHas("reload refused", "transform") {
		t.Fatalf("refused reload not logged:\n%s", log())
	}
	if out, err := bed.GW.Run("ip", "-br", "link", "show", "roamsec0"); err != nil || !strings.Contains(out, "roamsec0") {
		t.Fatalf("TUN gone after a refused reload: %v %s", err, out)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", waitErr, log())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit 15 s after SIGTERM\n%s", log())
	}
	if ns.count("STOPPING=1") != 1 {
		t.Fatalf("no STOPPING=1: %s", ns)
	}
	t.Logf("notifications: %s", ns)
}
