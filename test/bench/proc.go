package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// lookPath finds a command also in the sbin directories, which a non-login
// root shell may lack in PATH.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if st, err := os.Stat(d + "/" + name); err == nil && st.Mode()&0o111 != 0 {
			return d + "/" + name, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH", name)
}

// command returns name args... to run in the namespace ns (nil: ours) that
// ctx ends, and that dies with us even if we are killed (Pdeathsig; `ip
// netns exec` execs the command, so the signal reaches it).
func command(ctx context.Context, ns *netns.NS, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if ns != nil {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, name, args...)
	}
	// Own process group: a Ctrl-C on the terminal reaches only us, and we
	// end the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	return cmd
}

// runOut runs a short command and returns its output; the error carries it.
func runOut(ctx context.Context, name string, args ...string) (string, error) {
	return runIn(ctx, nil, name, args...)
}

func runIn(ctx context.Context, ns *netns.NS, name string, args ...string) (string, error) {
	cmd := command(ctx, ns, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	where := ""
	if ns != nil {
		where = ns.Name + ": "
	}
	logf("%s%s %s", where, name, strings.Join(args, " "))
	if err != nil {
		return out.String(), fmt.Errorf("%s%s %s: %w: %s", where, name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// daemon is a long-running process in a namespace (tunnel endpoint, iperf3
// server).
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // set before done is closed
}

func startDaemon(ctx context.Context, ns *netns.NS, env []string, name string, args ...string) (*daemon, error) {
	cmd := command(ctx, ns, name, args...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemon{name: ns.Name + ": " + name, cmd: cmd, out: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	logf("start %s %s", d.name, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", d.name, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited returns a descriptive error if the daemon has ended, else nil.
func (d *daemon) exited() error {
	select {
	case <-d.done:
		msg := strings.TrimSpace(d.out.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 && len(msg) > 400 {
			msg = msg[i+1:] // the last line says why, usually
		}
		st := "exited"
		if d.err != nil {
			st = d.err.Error()
		}
		if msg == "" {
			return fmt.Errorf("%s: %s", d.name, st)
		}
		return fmt.Errorf("%s: %s: %s", d.name, st, msg)
	default:
		return nil
	}
}

// stop ends the daemon: SIGTERM, then SIGKILL after a grace period.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(3 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// cpuTicks returns utime+stime of process pid, all threads, in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc/pid/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc/pid/stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

// clkTck is USER_HZ, the unit of /proc/PID/stat and /proc/stat times: 100
// on every Linux architecture Go supports.
const clkTck = 100

// systemCPU returns the busy and total jiffies of all CPUs (/proc/stat).
func systemCPU() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, errors.New("bad /proc/stat")
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice]:
	// guest time is already counted in user.
	for i, s := range f[1:] {
		if i >= 8 {
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}
