package strongswan

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

const depsScript = "scripts/deps-strongswan.sh"

var (
	installMu   sync.Mutex
	installDone bool
)

// Install runs scripts/deps-strongswan.sh (Debian 12, as root): the
// strongSwan 5.9 packages, nothing started through systemd. Idempotent and
// quick once installed (the script then installs nothing; this process
// runs it once). Parallel test binaries are serialised by a lock file.
func Install() error {
	installMu.Lock()
	defer installMu.Unlock()
	if installDone && Available() == nil {
		return nil
	}
	script, err := scriptPath()
	if err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "roamsec-deps-strongswan.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("strongswan: lock: %w", err)
	}
	out, err := exec.Command("bash", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("strongswan: bash %s: %w\n%s", script, err, out)
	}
	if err := Available(); err != nil {
		return fmt.Errorf("%w (after %s: %s)", err, script, strings.TrimSpace(string(out)))
	}
	installDone = true
	return nil
}

// scriptPath finds scripts/deps-strongswan.sh in the repository: from this
// source file's directory (test/strongswan), else from `go env GOMOD`.
func scriptPath() (string, error) {
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", depsScript)
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
		tried = append(tried, p)
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if mod := strings.TrimSpace(string(out)); err == nil && mod != "" && mod != os.DevNull {
		p := filepath.Join(filepath.Dir(mod), depsScript)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("strongswan: %s not found (tried %v)", depsScript, tried)
}

// Available returns nil if charon-systemd and swanctl are installed.
func Available() error {
	var errs []error
	for _, bin := range []string{CharonBin, SwanctlBin} {
		if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("strongswan: %s missing: run scripts/deps-strongswan.sh (as root) or Install", bin))
		}
	}
	return errors.Join(errs...)
}
