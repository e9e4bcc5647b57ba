// Package strongswan runs strongSwan's charon (charon-systemd with the
// userspace ESP backend kernel-libipsec) in a network namespace of the test
// bed (test/netns) as a test peer, and drives it over its vici socket: load,
// initiate, terminate, rekey, list SAs, kill. See
// /work/shared/notes/strongswan-peer.md for what strongSwan does on these
// machines.
//
//	if err := strongswan.Install(); err != nil { t.Fatal(err) }
//	gw, err := strongswan.Start(ctx, bed.GW, strongswan.Config{Name: "gw", Swanctl: conf})
//	defer gw.Stop(5 * time.Second)
//	err = gw.Initiate(ctx, "child", "")
//	sas, err := gw.WaitSA(ctx, 5*time.Second, strongswan.ChildInstalled("child"))
//
// Every charon gets its own temp dir (strongswan.conf, the swanctl dir
// DIR/swanctl, the vici socket DIR/charon.vici, its log DIR/charon.log),
// removed by Stop. Needs root.
package strongswan

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// The binaries (Debian 12 packages, see Install).
const (
	CharonBin  = "/usr/sbin/charon-systemd"
	SwanctlBin = "/usr/sbin/swanctl"
)

// DefaultPlugins is the explicit load list of the notes: kernel-libipsec
// (the kernel here has no ESP), kdf (else "KDF_PRF with PRF_HMAC_SHA2_256
// not supported"), openssl for AES-GCM, the DH groups, the signatures and
// private keys in any PEM form Go writes (PKCS#8, SEC 1, PKCS#1).
const DefaultPlugins = "random nonce openssl kdf pem pkcs1 x509 pubkey revocation constraints " +
	"kernel-libipsec kernel-netlink socket-default vici updown"

// PeerTSMark is the packet mark of AllowPeerTS: charon's own sockets carry
// it (socket-default fwmark) and the routing rule to its tunnel routes
// (kernel-netlink fwmark = !mark) skips it, so IKE and ESP-in-UDP packets to
// the peer's outer address do not enter the tunnel whose selectors contain
// that address.
const PeerTSMark = "0x42"

// Config is one charon.
type Config struct {
	// Name is used in errors and in the temp dir's name.
	Name string
	// Swanctl is the whole swanctl.conf (connections { } secrets { }
	// pools { }), loaded with swanctl --load-all. One key = value per line:
	// several on one line fail with "invalid value".
	Swanctl string
	// Files are extra files relative to the swanctl dir, e.g.
	// "x509ca/ca.pem", "x509/gw.pem", "private/gw.pem", written 0600 before
	// the load.
	Files map[string][]byte
	// AllowPeerTS sets kernel-libipsec's allow_peer_ts = yes and the
	// PeerTSMark pair: needed for Child SAs whose selectors contain the
	// peers' own outer addresses (RFC 3554 mode, inner = outer).
	AllowPeerTS bool
	// Debug sets filelog levels by subsystem ("ike", "chd", "knl", "cfg",
	// "net", "enc", "esp", ...; "default" replaces the default 1).
	Debug map[string]int
	// ExtraCharon are extra lines inside charon-systemd { }, e.g.
	// "retransmit_timeout = 1". A plugins { } section here is merged with
	// the one written for the vici socket.
	ExtraCharon string
	// Plugins replaces DefaultPlugins as the load list when set.
	Plugins string
	// Dir, when set, is used (created if needed) instead of a fresh temp
	// dir, and Stop leaves it in place (logs kept). Keep it short: the vici
	// socket's path must fit in 108 bytes.
	Dir string
}

// Charon is one charon-systemd running in a namespace.
type Charon struct {
	name   string
	dir    string
	ownDir bool // a temp dir of ours: Stop removes it
	sock   string
	ns     *netns.NS
	cmd    *exec.Cmd
	logf   *os.File
	done   chan struct{}
	werr   error // of cmd.Wait, valid once done is closed

	mu      sync.Mutex
	idle    []*viciConn // vici connections not in use
	stopped bool
}

const tempPrefix = "roamsec-strongswan-"

// swanctlDirs are the credential directories of a swanctl dir.
var swanctlDirs = []string{"x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey",
	"private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12", "conf.d"}

// Start writes the configuration into a new temp dir (Config.Dir if set),
// starts charon-systemd in ns, waits for its vici socket and loads the
// swanctl dir with swanctl --load-all. On failure it stops the charon and
// removes the temp dir again; the error has the tail of charon's log.
func Start(ctx context.Context, ns *netns.NS, cfg Config) (*Charon, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "charon"
	}
	c := &Charon{name: cfg.Name, ns: ns, done: make(chan struct{})}
	if cfg.Dir != "" {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
		c.dir = cfg.Dir
	} else {
		sweepTempDirs()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-%s-", tempPrefix, os.Getpid(), safeName(cfg.Name)))
		if err != nil {
			return nil, err
		}
		c.dir, c.ownDir = dir, true
	}
	c.sock = filepath.Join(c.dir, "charon.vici")
	if len(c.sock) >= 108 {
		c.cleanup()
		return nil, fmt.Errorf("%s: vici socket path %s too long for a unix socket", c.name, c.sock)
	}
	if err := c.start(ctx, cfg); err != nil {
		if c.cmd != nil && c.cmd.Process != nil {
			err = fmt.Errorf("%w\n%s log tail:\n%s", err, c.name, c.Tail(40))
		}
		return nil, errors.Join(err, c.Stop(5*time.Second))
	}
	return c, nil
}

func (c *Charon) start(ctx context.Context, cfg Config) error {
	sw := c.SwanctlDir()
	// The directories swanctl --load-all reads; it complains about each
	// one missing.
	for _, d := range swanctlDirs {
		if err := os.MkdirAll(filepath.Join(sw, d), 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(c.dir, "strongswan.conf"), []byte(strongswanConf(c.sock, cfg)), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sw, "swanctl.conf"), []byte(cfg.Swanctl), 0o600); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Files)) {
		p := filepath.Join(sw, filepath.FromSlash(name))
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return fmt.Errorf("%s: file %q not inside the swanctl dir", c.name, name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, cfg.Files[name], 0o600); err != nil {
			return err
		}
	}
	// Truncated, not appended to: a Config.Dir reused by a second charon.
	logf, err := os.Create(filepath.Join(c.dir, "charon.log"))
	if err != nil {
		return err
	}
	c.logf = logf
	c.cmd = c.ns.Command(CharonBin)
	c.cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(c.dir, "strongswan.conf"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C at the terminal reaches only us, and we
	// stop the daemons in order. Pdeathsig: should we be killed, so is
	// charon (ip netns exec execs it, which keeps the setting).
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		c.cmd = nil
		return fmt.Errorf("%s: start %s: %w", c.name, CharonBin, err)
	}
	go func() { c.werr = c.cmd.Wait(); close(c.done) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		if vc, err := dialVici(c.sock); err == nil {
			c.putConn(vc)
			break
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s: charon exited at start (%v)", c.name, c.werr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no vici socket %s after 15 s", c.name, c.sock)
		}
	}
	return c.Load(ctx)
}

// Load (re)loads everything in the swanctl dir: swanctl --load-all. Start
// calls it; call it again after changing files under SwanctlDir.
func (c *Charon) Load(ctx context.Context) error {
	out, err := c.Swanctl(ctx, "--load-all", "--noprompt", "--file", filepath.Join(c.SwanctlDir(), "swanctl.conf"))
	if err != nil {
		return fmt.Errorf("%s: swanctl --load-all: %w", c.name, err)
	}
	// swanctl 5.9 exits 0 for some failures (an unparsable file it skips).
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "failed") {
			return fmt.Errorf("%s: swanctl --load-all: %s\n%s", c.name, strings.TrimSpace(l), out)
		}
	}
	return nil
}

// Swanctl runs swanctl with args against this charon (--uri added,
// SWANCTL_DIR set) and returns its combined output; the error has it too.
// The command comes first: Swanctl(ctx, "--list-sas").
func (c *Charon) Swanctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, SwanctlBin, append(args, "--uri", c.URI())...)
	cmd.Env = append(os.Environ(), "SWANCTL_DIR="+c.SwanctlDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("swanctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// strongswanConf is one daemon's strongswan.conf: its own vici socket, the
// load list, logs to stderr with millisecond timestamps, nothing to the
// journal.
func strongswanConf(sock string, cfg Config) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	plugins := cfg.Plugins
	if plugins == "" {
		plugins = DefaultPlugins
	}
	w("charon-systemd {")
	w("\tload = %s", plugins)
	w("\tfilelog {")
	w("\t\tstderr {")
	if _, ok := cfg.Debug["default"]; !ok {
		w("\t\t\tdefault = 1")
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Debug)) {
		w("\t\t\t%s = %d", k, cfg.Debug[k])
	}
	w("\t\t\ttime_format = %%H:%%M:%%S")
	w("\t\t\ttime_add_ms = yes")
	w("\t\t\tflush_line = yes")
	w("\t\t}")
	w("\t}")
	w("\tjournal {")
	w("\t\tdefault = -1")
	w("\t}")
	w("\tplugins {")
	w("\t\tvici {")
	w("\t\t\tsocket = unix://%s", sock)
	w("\t\t}")
	if cfg.AllowPeerTS {
		w("\t\tkernel-libipsec {")
		w("\t\t\tallow_peer_ts = yes")
		w("\t\t}")
		w("\t\tsocket-default {")
		w("\t\t\tfwmark = %s", PeerTSMark)
		w("\t\t}")
		w("\t\tkernel-netlink {")
		w("\t\t\tfwmark = !%s", PeerTSMark)
		w("\t\t}")
	}
	w("\t}")
	for _, l := range strings.Split(strings.TrimSpace(cfg.ExtraCharon), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			w("\t%s", l)
		}
	}
	w("}")
	return b.String()
}

// Name is Config.Name.
func (c *Charon) Name() string { return c.name }

// Dir is the charon's directory: strongswan.conf, charon.log, charon.vici
// and the swanctl dir.
func (c *Charon) Dir() string { return c.dir }

// SwanctlDir is Dir()/swanctl: swanctl.conf and Config.Files.
func (c *Charon) SwanctlDir() string { return filepath.Join(c.dir, "swanctl") }

// URI is the vici socket as swanctl's --uri takes it.
func (c *Charon) URI() string { return "unix://" + c.sock }

// NS is the namespace the charon runs in.
func (c *Charon) NS() *netns.NS { return c.ns }

// PID is charon's process id (0 if it never started).
func (c *Charon) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Alive reports whether the process is still running.
func (c *Charon) Alive() bool {
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Log is charon's whole log so far (stdout and stderr).
func (c *Charon) Log() string {
	data, _ := os.ReadFile(filepath.Join(c.dir, "charon.log"))
	return string(data)
}

// Tail is the last n lines of the log.
func (c *Charon) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(c.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop ends charon with SIGTERM (it sends DELETEs for its IKE SAs without
// waiting for answers), SIGKILL if it has not exited after timeout, waits
// for it and removes the temp dir (not a Config.Dir). An error only if it
// had to be killed or the dir could not be removed. Safe to call twice and
// after Kill.
func (c *Charon) Stop(timeout time.Duration) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()
	var err error
	if c.Alive() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(timeout):
			c.cmd.Process.Kill()
			<-c.done
			err = fmt.Errorf("%s: charon did not stop on SIGTERM within %v, killed", c.name, timeout)
		}
	}
	return errors.Join(err, c.cleanup())
}

// cleanup closes the connections and the log and removes an own temp dir.
func (c *Charon) cleanup() error {
	c.mu.Lock()
	for _, vc := range c.idle {
		vc.Close()
	}
	c.idle = nil
	c.mu.Unlock()
	if c.logf != nil {
		c.logf.Close()
	}
	if c.ownDir {
		return os.RemoveAll(c.dir)
	}
	return nil
}

// Kill ends charon with SIGKILL, as a peer that dies without a DELETE, and
// waits for the process. Its TUN device goes with it; the temp dir stays
// until Stop.
func (c *Charon) Kill() error {
	if !c.Alive() {
		return nil
	}
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: kill: %w", c.name, err)
	}
	<-c.done
	return nil
}

func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}

// sweepTempDirs removes temp dirs left by processes that died without
// cleaning up (killed with SIGKILL); their charons got SIGTERM through
// Pdeathsig, and netns sweeps their namespaces.
func sweepTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(d), tempPrefix), "%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}
