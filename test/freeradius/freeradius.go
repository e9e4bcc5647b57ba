// Package freeradius runs FreeRADIUS 3 (Debian's freeradius package) in a
// network namespace of the test bed (test/netns) as the AAA server of the
// gateway's EAP tests: its own configuration directory (radiusd.conf,
// clients, users, the eap module with EAP-MSCHAPv2 and EAP-TLS, detail
// accounting), written fresh for each server and removed by Stop. It
// never reads or writes /etc/freeradius. Needs root.
//
//	srv, err := freeradius.Start(ns, freeradius.Config{Listen: addr, Secret: "s3cret", Users: users})
//	defer srv.Stop()
//	recs, _ := srv.Accounting() // the detail file's records
package freeradius

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// Bin is the server (Debian's freeradius package).
const Bin = "/usr/sbin/freeradius"

// Available says whether the server is installed.
func Available() error {
	if _, err := os.Stat(Bin); err != nil {
		return fmt.Errorf("freeradius not installed (scripts/deps.sh installs it): %w", err)
	}
	return nil
}

// User is one entry of the users file.
type User struct {
	Name, Password string
	// Reply attributes on Access-Accept, e.g. "Framed-IP-Address =
	// 100.64.0.77", "Session-Timeout = 3600", `Class = "gold"`.
	Reply []string
}

// Config is one server.
type Config struct {
	Listen netip.Addr // auth on 1812, accounting on 1813
	Client netip.Prefix
	Secret string
	Users  []User
	// TLS, if set, enables EAP-TLS: the server's certificate and key, and
	// the CA that issued the clients' certificates (PEM).
	TLS *TLS
}

// TLS is EAP-TLS's server side.
type TLS struct{ CertPEM, KeyPEM, CAPEM []byte }

// Server is one running freeradius.
type Server struct {
	dir  string
	cmd  *exec.Cmd
	log  *syncBuf
	done chan struct{}
}

// Start writes the configuration and starts `freeradius -f -X -d DIR` in
// ns; it returns once the server logs that it is ready.
func Start(ns *netns.NS, cfg Config) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "roamsec-freeradius-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, log: &syncBuf{}, done: make(chan struct{})}
	if err := s.write(cfg); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.cmd = ns.Command(Bin, "-f", "-X", "-d", dir, "-n", "radiusd")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.log.String(), "Ready to process requests") {
		select {
		case <-s.done:
			err := fmt.Errorf("freeradius exited: %v\n%s", s.cmd.ProcessState, s.Tail(40))
			os.RemoveAll(dir)
			return nil, err
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("freeradius not ready after 20s\n%s", s.Tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s, nil
}

// Log is everything the server printed (-X: every request and reply).
func (s *Server) Log() string { return s.log.String() }

// Tail is the last n lines of the log.
func (s *Server) Tail(n int) string {
	l := strings.Split(strings.TrimRight(s.log.String(), "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Dir is the configuration directory.
func (s *Server) Dir() string { return s.dir }

// Stop ends the server (SIGTERM, then SIGKILL) and removes its directory.
func (s *Server) Stop() error {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	return os.RemoveAll(s.dir)
}

// Record is one accounting request as the detail module wrote it.
type Record map[string]string

// Accounting reads the detail file: one Record per accounting request,
// in the order received, values without their quotes.
func (s *Server) Accounting() ([]Record, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "detail"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Record
	var cur Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if cur != nil {
				out = append(out, cur)
				cur = nil
			}
		case !strings.HasPrefix(line, "\t"):
			cur = Record{} // the header line: a timestamp
		case cur != nil:
			k, v, ok := strings.Cut(strings.TrimSpace(line), " = ")
			if ok {
				cur[k] = strings.Trim(v, `"`)
			}
		}
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out, nil
}

// syncBuf is a bytes.Buffer the process writes while tests read it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
