package daemon

import (
	"os"
	"syscall"
)

// Signals. Everything the daemon installs in the kernel is removed on
// every exit a process can see coming; SIGKILL cannot be caught, and the
// next start replaces what it left (tun.Device.AddBypassRule).
//
//   - SIGTERM (systemctl stop, docker stop), SIGINT (Ctrl-C): stop cleanly.
//   - SIGHUP: the daemon re-reads its configuration (systemctl reload);
//     `roadwarrior connect` treats it as its terminal closing and stops
//     cleanly.
//   - SIGPIPE: the daemon ignores it: its output is the journal's
//     stream, and a journald restart must not take the tunnel down with
//     it (the lost log lines are the lesser harm). `roadwarrior connect`
//     stops cleanly: whoever read its output has gone (`connect | head`).
var (
	exitSignals   = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE}
	daemonSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
)

func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "Ctrl-C"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP: the terminal closed"
	case syscall.SIGPIPE:
		return "SIGPIPE: the output's reader left"
	}
	return sig.String()
}
