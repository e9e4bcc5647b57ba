// Package etcd starts a real etcd server (Debian's etcd-server,
// /usr/bin/etcd) inside a test's network namespace, its data in a
// temporary directory, for the one-time key Host's etcd backend (issue
// 13). Clients in the test process reach it through Dial, which makes
// their sockets inside the namespace.
package etcd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// Port is the client port etcd listens on.
const Port = 2379

// Server is one etcd process.
type Server struct {
	NS        *netns.NS
	Endpoints []string // http://ADDR:2379, one per listening address
	proc      *rig.Proc
}

// Start runs etcd in ns listening for clients on addrs (documentation
// addresses already on ns's interfaces, or 127.0.0.1 of ns), its peer port
// on ns's loopback; it waits until etcd serves, and stops it in
// t.Cleanup. It skips the test if etcd is not installed.
func Start(t testing.TB, ns *netns.NS, addrs ...netip.Addr) *Server {
	t.Helper()
	return start(t, ns, "http", nil, addrs)
}

// StartTLS is Start serving https: certFile and keyFile are the server's
// (the addresses among its IP SANs), and clients must present a
// certificate caFile signed (--client-cert-auth).
func StartTLS(t testing.TB, ns *netns.NS, caFile, certFile, keyFile string, addrs ...netip.Addr) *Server {
	t.Helper()
	return start(t, ns, "https", []string{"--cert-file", certFile, "--key-file", keyFile, "--trusted-ca-file", caFile, "--client-cert-auth"}, addrs)
}

func start(t testing.TB, ns *netns.NS, scheme string, extra []string, addrs []netip.Addr) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd: not installed (Debian package etcd-server; scripts/deps.sh installs it)")
	}
	s := &Server{NS: ns}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, scheme+"://"+netip.AddrPortFrom(a, Port).String())
	}
	urls := strings.Join(s.Endpoints, ",")
	dir := t.TempDir()
	args := append([]string{"--name", "test", "--data-dir", dir + "/data",
		"--listen-client-urls", urls, "--advertise-client-urls", urls,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "test=http://127.0.0.1:2380", "--initial-cluster-state", "new",
		"--log-outputs", "stderr", "--logger", "zap"}, extra...)
	s.proc, err = rig.Launch(ns, bin, args...)
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.proc.Stop(10 * time.Second); err != nil && !strings.Contains(err.Error(), "signal") {
			t.Logf("etcd stop: %v", err)
		}
	})
	// Serving: every client address accepts a connection.
	serving := func() bool {
		for _, a := range addrs {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c, err := s.Dial(ctx, netip.AddrPortFrom(a, Port).String())
			cancel()
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	}
	if !rig.WaitFor(30*time.Second, func() bool { return s.proc.Exited() || serving() }) || s.proc.Exited() {
		t.Fatalf("etcd did not start:\n%s", s.proc.Log())
	}
	return s
}

// Log is what etcd wrote.
func (s *Server) Log() string { return s.proc.Log() }

// Dial connects to addr from inside the server's namespace: a
// grpc.WithContextDialer function for the etcd client.
func (s *Server) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := s.NS.Do(func() error {
		var err error
		// The socket is made here, on the thread inside the namespace;
		// connecting it may go on elsewhere.
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, s.NS.Name, err)
	}
	return c, nil
}
