// Package rig builds the roamsec daemons and runs them inside the
// namespaces of a test bed (test/netns), for end-to-end tests and the demo.
package rig

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// Root is the repository root (where go.mod is).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles cmd/gateway and cmd/roadwarrior into dir.
func Build(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/gateway", "./cmd/roadwarrior")
	cmd.Dir = Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// Proc is a daemon running in a namespace.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
	err  error
}

type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.log.Write(b)
}

// Start runs bin with args inside ns and waits until its log says the
// tunnel is up (or it exits, or timeout passes).
func Start(ns *netns.NS, bin string, timeout time.Duration, args ...string) (*Proc, error) {
	p, err := Launch(ns, bin, args...)
	if err != nil {
		return nil, err
	}
	deadline := time.After(timeout)
	for !strings.Contains(p.Log(), "tunnel up") {
		select {
		case <-p.done:
			return p, fmt.Errorf("%s exited before the tunnel came up (%v):\n%s", p.Name, p.err, p.Log())
		case <-deadline:
			p.Kill()
			return p, fmt.Errorf("%s: tunnel not up after %v:\n%s", p.Name, timeout, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p, nil
}

// Launch runs bin with args inside ns and returns at once (to kill it
// during its start-up, say).
func Launch(ns *netns.NS, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: filepath.Base(bin), done: make(chan struct{})}
	p.cmd = ns.Command(bin, args...)
	p.cmd.Stdout = lockedWriter{p}
	p.cmd.Stderr = lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log is everything the daemon wrote so far.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Stop sends SIGTERM and waits for the exit; it returns the exit error
// (nil for exit status 0).
func (p *Proc) Stop(timeout time.Duration) error { return p.Signal(syscall.SIGTERM, timeout) }

// Signal sends sig (SIGINT is Ctrl-C for `roadwarrior connect`) and waits
// for the exit, killing the process after timeout.
func (p *Proc) Signal(sig os.Signal, timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s: did not stop on %v", p.Name, sig)
	}
}

// Send delivers sig without waiting (SIGSTOP, SIGCONT).
func (p *Proc) Send(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill ends the daemon at once.
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Run runs bin with args in ns to completion (for -check, bad configs).
func Run(ctx context.Context, ns *netns.NS, bin string, args ...string) (string, int, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if ns != nil {
		cmd = ns.Command(bin, args...)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code, err = ee.ExitCode(), nil
	}
	return string(out), code, err
}

// ExampleConfig is the path of a config under packaging/examples.
func ExampleConfig(name string) string {
	return filepath.Join(Root(), "packaging", "examples", name)
}

// WriteFile writes data to dir/name with mode 0600 and returns the path.
func WriteFile(dir, name, data string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(data), 0o600)
}

// TCPTransfer sends size random bytes over TCP from the road warrior to
// the server (port 5201) and checks they arrive intact (SHA-256). It
// returns how long the transfer took.
func TCPTransfer(bed *netns.Bed, size int) (time.Duration, error) {
	var ln net.Listener
	if err := bed.Srv.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(netns.Srv4.String(), "5201"))
		return err
	}); err != nil {
		return 0, err
	}
	defer ln.Close()
	sum := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h := sha256.New()
		io.Copy(h, c)
		c.Close()
		sum <- [32]byte(h.Sum(nil))
	}()
	data := make([]byte, size)
	rand.Read(data)
	var c net.Conn
	if err := bed.RW.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(netns.Srv4.String(), "5201"), 5*time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		c.Close()
		return 0, err
	}
	c.Close()
	select {
	case got := <-sum:
		if got != sha256.Sum256(data) {
			return 0, errors.New("TCP data corrupted in the tunnel")
		}
	case <-time.After(60 * time.Second):
		return 0, errors.New("TCP transfer did not finish in 60 s")
	}
	return time.Since(start), nil
}

// Pid is the daemon's process ID (ip netns exec execs it in place).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// RSS is the daemon's resident set size now, in bytes (VmRSS).
func (p *Proc) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}
