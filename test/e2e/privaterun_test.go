package e2e

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// privateRunEnv marks the test binary re-executed by inPrivateRun.
const privateRunEnv = "ROAMSEC_E2E_PRIVATE_RUN"

// inPrivateRun re-executes this test binary in a mount namespace of its
// own with a fresh tmpfs on /run/roamsec, and returns the exit code the
// caller should exit with (ok false: carry on in this process, as the
// re-executed one or where it cannot be done).
//
// The example configurations' control sockets are /run/roamsec/<role>.sock,
// and many tests run the daemons with them: any other daemon on the host
// (test/install's booted road warrior ran at the same time in CI; a second
// `go test` of this package; an installed gateway) would have its socket
// replaced, and `status` would read the wrong daemon. Namespaced /run/roamsec
// makes each run's sockets its own. The daemons, started through
// `ip netns exec`, inherit the mount. A Go program cannot unshare its mount
// namespace once it has threads (CLONE_FS is shared), hence the re-exec
// through util-linux's unshare(1), which execs in place (same PID).
func inPrivateRun() (code int, ok bool) {
	if os.Geteuid() != 0 || os.Getenv(privateRunEnv) != "" {
		return 0, false
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return 0, false
	}
	const script = `mkdir -p /run/roamsec && mount -t tmpfs -o mode=0755 roamsec-e2e /run/roamsec && exec "$0" "$@"`
	cmd := exec.Command(unshare, append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), privateRunEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		return 0, false
	}
	done := make(chan struct{})
	go func() { // forwards go test's timeout SIGQUIT and ^C to the tests
		for {
			select {
			case s := <-sig:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() < 0 {
			return 2, true // killed by a signal
		}
		return ee.ExitCode(), true
	}
	if err != nil {
		return 2, true
	}
	return 0, true
}
