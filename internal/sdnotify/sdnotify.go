// Package sdnotify speaks systemd's notification protocol (sd_notify(3)):
// newline-separated VAR=VALUE assignments in one datagram to the
// AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
// abstract namespace), and the watchdog interval from $WATCHDOG_USEC.
//
// It is written here rather than taken from go-systemd: the protocol is
// one datagram on one socket, and the daemons' module keeps its
// dependency graph small (issue 15).
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Messages the daemons send (sd_notify(3)).
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// ErrNoSocket: not started by systemd with NotifyAccess (no
// $NOTIFY_SOCKET); callers go on without notifying.
var ErrNoSocket = errors.New("sdnotify: NOTIFY_SOCKET not set")

// Notify sends the assignments in one datagram. Without $NOTIFY_SOCKET it
// returns ErrNoSocket and sends nothing.
func Notify(assignments ...string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return ErrNoSocket
	}
	return NotifySocket(path, assignments...)
}

// NotifySocket is Notify to the socket path (tests).
func NotifySocket(path string, assignments ...string) error {
	for _, a := range assignments {
		if !strings.Contains(a, "=") || strings.Contains(a, "\n") {
			return fmt.Errorf("sdnotify: %q is not one VAR=VALUE line", a)
		}
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // the abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(assignments, "\n"))); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// Status is the STATUS= line systemctl status shows.
func Status(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// WatchdogInterval is how often systemd wants WATCHDOG=1 ($WATCHDOG_USEC,
// when $WATCHDOG_PID is unset or ours); 0 means no watchdog. Send at half
// of it, as sd_watchdog_enabled(3) advises.
func WatchdogInterval() time.Duration {
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	us, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || us == 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}
