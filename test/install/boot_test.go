package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// TestSystemdBoot boots the cached Debian 12 root under its own systemd
// (systemd-nspawn -b) in the gateway namespace of a test bed, installs
// the gateway package there and runs it as an administrator would, with
// the road warrior (built from this tree) on the host side of the bed:
//
//   - enable --now returns once the daemon said READY=1 (Type=notify), the
//     unit is active, the daemon holds exactly its three capabilities,
//     and the tunnel carries ping;
//   - systemctl kill -s KILL: systemd restarts it, the new instance
//     replaces the rules the killed one left, and the tunnel serves again;
//   - a broken file: systemctl reload fails and the daemon keeps serving;
//     systemctl restart ends "failed", not restarted, with the reason in
//     one line at priority err (journalctl -p err);
//   - a run-time failure at every start (exit 4) is restarted at most 5
//     times a minute, then the unit stays failed;
//   - an upgrade with the conffile edited, unattended
//     (DEBIAN_FRONTEND=noninteractive, --force-confold, no stdin), keeps
//     the edit and restarts the daemon;
//   - purge stops it and leaves no unit, file, TUN device or rule.
func TestSystemdBoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: systemd-nspawn and network namespaces need root")
	}
	if testing.Short() {
		t.Skip("skipped in -short mode: boots Debian 12 under systemd-nspawn (the first run downloads about 40 MB)")
	}
	repo := repoRoot(t)
	ensureTool(t, "debootstrap", "debootstrap")
	ensureTool(t, "systemd-nspawn", "systemd-container")
	work := t.TempDir()
	versions := []string{version1, version2}
	var debsOf [2]map[string]string // by version, then role
	var buildErr [2]error
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for i, v := range versions {
		wg.Go(func() { debsOf[i], buildErr[i] = buildDebs(repo, filepath.Join(work, "debs-"+v), v) })
	}
	var binErr error
	wg.Go(func() { binErr = rig.Build(filepath.Join(work, "bin")) })
	cached := cachedRoot(t)
	root := filepath.Join(work, "root")
	copyRoot(t, cached, root)
	wg.Wait()
	for _, err := range append(buildErr[:], binErr) {
		if err != nil {
			t.Fatal(err)
		}
	}

	bed := netns.New(t)
	ct := boot(t, root, bed.GW)
	c := &chroot{t: t, root: root}
	deb := stageGateway(t, root, debsOf[0])
	ct.run("dpkg", "-i", deb)

	// The administrator's configuration: the example pair of the bed
	// (static keys), edited — the upgrade must keep it.
	cfg, err := os.ReadFile(rig.ExampleConfig("gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, "# local change, must survive upgrades\n"...)
	cfgPath := filepath.Join(root, "etc/roamsec/gateway.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	ct.run("systemctl", "enable", "--now", "roamsec-gateway")
	t.Logf("enable --now returned after %v", time.Since(start).Round(time.Millisecond))
	if st := ct.prop("ActiveState"); st != "active" {
		t.Fatalf("after enable --now: %s\n%s", st, ct.status())
	}
	pid := ct.prop("MainPID")
	caps := ct.run("grep", "^Cap", "/proc/"+pid+"/status")
	// CAP_NET_BIND_SERVICE 10, CAP_NET_ADMIN 12, CAP_NET_RAW 13.
	for _, want := range []string{"CapEff:\t0000000000003400", "CapBnd:\t0000000000003400", "CapAmb:\t0000000000003400"} {
		if !strings.Contains(caps, want) {
			t.Errorf("the daemon's capabilities: want %q in\n%s", want, caps)
		}
	}

	// The example's control socket is /run/roamsec/roadwarrior.sock on this
	// host, which test/e2e's road warriors use while this package runs:
	// this one gets its own, or their status would read this daemon.
	rwText, err := os.ReadFile(rig.ExampleConfig("roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const sock = "control_socket: /run/roamsec/roadwarrior.sock"
	if !strings.Contains(string(rwText), sock) {
		t.Fatalf("example roadwarrior.yaml changed: no %q", sock)
	}
	rwCfg, err := rig.WriteFile(t.TempDir(), "roadwarrior.yaml",
		strings.Replace(string(rwText), sock, "control_socket: "+filepath.Join(t.TempDir(), "rw.sock"), 1))
	if err != nil {
		t.Fatal(err)
	}
	rw, err := rig.Start(bed.RW, filepath.Join(work, "bin", "roadwarrior"), 15*time.Second, "-config", rwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Stop(5 * time.Second) })
	if d, ok := serving(bed, 20); !ok {
		t.Fatalf("no ping through the tunnel\n%s\n%s", ct.status(), rw.Log())
	} else {
		t.Logf("tunnel serving: first answer after %d pings", d)
	}

	// SIGKILL: restarted (NRestarts 1), the stale rule replaced, serving.
	ct.run("systemctl", "kill", "-s", "KILL", "roamsec-gateway")
	killed := time.Now()
	if !waitFor(30*time.Second, func() bool { return ct.prop("NRestarts") == "1" && ct.prop("ActiveState") == "active" }) {
		t.Fatalf("not restarted after SIGKILL:\n%s", ct.status())
	}
	t.Logf("active again %v after SIGKILL (RestartSec=2s)", time.Since(killed).Round(time.Millisecond))
	if n, ok := serving(bed, 30); !ok {
		t.Fatalf("no ping through the tunnel after the restart\n%s", ct.status())
	} else {
		t.Logf("serving again after the restart: first answer after %d pings (the restarted gateway's outbound sequence numbers start again at 1, below the road warrior's replay window)", n)
	}
	if rules, _ := bed.GW.Run("ip", "rule"); strings.Count(rules, "lookup 220") != 1 {
		t.Errorf("rules after the restart:\n%s", rules)
	}

	// A Go runtime crash: SIGQUIT makes the runtime dump its goroutines
	// and exit with status 2, as a panic does. It is restarted (2 is not
	// in RestartPreventExitStatus).
	ct.run("systemctl", "kill", "-s", "QUIT", "roamsec-gateway")
	if !waitFor(30*time.Second, func() bool { return ct.prop("NRestarts") == "2" && ct.prop("ActiveState") == "active" }) {
		t.Fatalf("not restarted after a runtime crash (exit 2):\n%s", ct.status())
	}
	if j := ct.run("journalctl", "-q", "-u", "roamsec-gateway", "-o", "cat"); !strings.Contains(j, "status=2/INVALIDARGUMENT") {
		t.Errorf("no exit status 2 in the journal:\n%s", j)
	}

	// A broken file: reload refused, the daemon keeps running unchanged.
	broken := bytes.Replace(cfg, []byte("transform: aes256gcm16"), []byte("transform: aes512gcm16"), 1)
	if bytes.Equal(broken, cfg) {
		t.Fatal("the example config has no transform: aes256gcm16 to break")
	}
	os.WriteFile(cfgPath, broken, 0o600)
	if out, err := ct.output("systemctl", "reload", "roamsec-gateway"); err == nil {
		t.Errorf("systemctl reload accepted a broken file: %s", out)
	}
	if st, p := ct.prop("ActiveState"), ct.prop("MainPID"); st != "active" || p == "0" {
		t.Fatalf("after a refused reload: %s (pid %s)\n%s", st, p, ct.status())
	}
	// restart: the start fails (exit 3), the unit ends failed, no loop.
	if out, err := ct.output("systemctl", "restart", "roamsec-gateway"); err == nil {
		t.Errorf("systemctl restart with a broken file succeeded: %s", out)
	}
	time.Sleep(7 * time.Second) // RestartSec=2s: a loop would have restarted it twice by now
	if st, res, n := ct.prop("ActiveState"), ct.prop("Result"), ct.prop("NRestarts"); st != "failed" || res != "exit-code" || n != "0" {
		t.Errorf("with a broken file: ActiveState=%s Result=%s NRestarts=%s, want failed exit-code 0\n%s", st, res, n, ct.status())
	}
	errs := ct.run("journalctl", "-q", "-p", "err", "-u", "roamsec-gateway", "-o", "cat", "--since", "-60s")
	var refused []string
	for _, l := range strings.Split(errs, "\n") {
		if strings.Contains(l, "configuration refused") {
			refused = append(refused, l)
		}
	}
	// One from ExecReload's -check, one from the start that failed.
	if len(refused) != 2 || !strings.Contains(refused[1], "/etc/roamsec/gateway.yaml:") || !strings.Contains(refused[1], "transform") {
		t.Errorf("journalctl -p err: want the reason on one line per refusal (reload, start):\n%s", errs)
	} else {
		t.Logf("journalctl -p err:\n%s", errs)
	}
	os.WriteFile(cfgPath, cfg, 0o600)

	// A run-time failure at every start (exit 4: a link named roamsec0
	// that is not a TUN device takes the name): restarted, but at most 5
	// starts a minute (StartLimitBurst), then "failed", not a loop.
	if out, err := bed.GW.Run("ip", "link", "add", "roamsec0", "type", "veth", "peer", "name", "roamsec0p"); err != nil {
		t.Fatal(err, out)
	}
	ct.run("systemctl", "reset-failed", "roamsec-gateway")
	ct.output("systemctl", "start", "roamsec-gateway")
	// Five failed starts take about 5 × (RestartSec 2 s + the start).
	stable := func() bool {
		n := ct.prop("NRestarts")
		time.Sleep(7 * time.Second) // > 3 × RestartSec: a loop would have restarted it
		return ct.prop("ActiveState") == "failed" && ct.prop("NRestarts") == n
	}
	if !waitFor(90*time.Second, stable) {
		t.Errorf("a daemon failing at every start is restarted forever: NRestarts=%s\n%s", ct.prop("NRestarts"), ct.status())
	}
	n := ct.prop("NRestarts")
	if k, _ := strconv.Atoi(n); k < 1 || k > 5 {
		t.Errorf("a daemon failing at every start: %s restarts, want 1 to 5 (exit 4 is retried; StartLimitBurst=5)", n)
	}
	limit, _ := ct.output("journalctl", "-q", "-u", "roamsec-gateway", "-o", "cat", "--grep", "repeated too quickly")
	t.Logf("failing at every start (exit 4): %s restarts, then failed; %s", n, strings.TrimSpace(limit))
	bed.GW.Run("ip", "link", "del", "roamsec0")
	ct.run("systemctl", "reset-failed", "roamsec-gateway")
	ct.run("systemctl", "start", "roamsec-gateway")

	// Unattended upgrade with the edited conffile.
	deb = stageGateway(t, root, debsOf[1])
	pidBefore := ct.prop("MainPID")
	ct.run("env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", "--force-confold", deb)
	if got := strings.TrimSpace(ct.run("dpkg-query", "-W", "-f=${Status} ${Version}", "roamsec-gateway")); got != "install ok installed "+debVersion(version2) {
		t.Errorf("after the upgrade: %q", got)
	}
	if data, _ := os.ReadFile(cfgPath); !bytes.Equal(data, cfg) {
		t.Errorf("the upgrade lost the edit of /etc/roamsec/gateway.yaml")
	}
	if st, p := ct.prop("ActiveState"), ct.prop("MainPID"); st != "active" || p == pidBefore {
		t.Errorf("after the upgrade: %s, pid %s (before %s): want active, restarted", st, p, pidBefore)
	}

	// Purge: stopped, nothing left.
	ct.run("dpkg", "--purge", "roamsec-gateway")
	for _, p := range []string{"usr/sbin/roamsec-gateway", "lib/systemd/system/roamsec-gateway.service", "etc/roamsec", "etc/systemd/system/multi-user.target.wants/roamsec-gateway.service"} {
		if c.exists(p) {
			t.Errorf("purge left /%s", p)
		}
	}
	if out, _ := ct.output("systemctl", "is-active", "roamsec-gateway"); strings.TrimSpace(out) == "active" {
		t.Error("the gateway still runs after purge")
	}
	links, _ := bed.GW.Run("ip", "-br", "link")
	rules, _ := bed.GW.Run("ip", "rule")
	if strings.Contains(links, "roamsec0") || strings.Contains(rules, "fwmark") {
		t.Errorf("purge left kernel state:\n%s\n%s", links, rules)
	}
}

// stageGateway copies the gateway's .deb into the root's /var/tmp (the
// booted system's /tmp is a fresh tmpfs) and returns its path inside.
func stageGateway(t *testing.T, root string, debs map[string]string) string {
	t.Helper()
	return stageDeb(t, root, debs["gateway"])
}

// stageDeb copies a .deb into the root's /var/tmp and returns its path
// inside.
func stageDeb(t *testing.T, root, deb string) string {
	t.Helper()
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	p := "/var/tmp/" + filepath.Base(deb)
	if err := os.WriteFile(filepath.Join(root, p), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// serving pings the server through the tunnel, once a second, up to n
// times, and says after how many the first answer came.
func serving(bed *netns.Bed, n int) (int, bool) {
	for i := 1; i <= n; i++ {
		if _, err := bed.RW.Run("ping", "-c", "1", "-W", "1", netns.Srv4.String()); err == nil {
			return i, true
		}
	}
	return n, false
}

func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return cond()
}

// container is a booted systemd-nspawn container.
type container struct {
	t    *testing.T
	init int    // PID of its systemd, in our PID namespace
	unit string // the unit prop and status look at; "" is the gateway's
}

func (c *container) unitName() string {
	if c.unit == "" {
		return "roamsec-gateway"
	}
	return c.unit
}

// boot starts systemd in root, in ns, and waits until it is up.
func boot(t *testing.T, root string, ns *netns.NS) *container {
	t.Helper()
	cmd := exec.Command("systemd-nspawn", "-q", "-b", "-D", root, "--register=no", "--keep-unit",
		"--capability=CAP_NET_ADMIN", "--network-namespace-path=/run/netns/"+ns.Name, "--console=pipe")
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // nspawn: shut the container down
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ct := &container{t: t}
	start := time.Now()
	if !waitFor(90*time.Second, func() bool {
		if ct.init == 0 {
			ct.init = initOf(cmd.Process.Pid)
			return false
		}
		s, _ := ct.output("systemctl", "is-system-running")
		s = strings.TrimSpace(s)
		return s == "running" || s == "degraded"
	}) {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the container did not boot in 90 s (init %d):\n%s", ct.init, out.String())
	}
	s, _ := ct.output("systemctl", "is-system-running")
	t.Logf("booted in %v (%s)", time.Since(start).Round(time.Millisecond), strings.TrimSpace(s))
	if strings.TrimSpace(s) == "degraded" {
		f, _ := ct.output("systemctl", "--failed", "--no-legend")
		t.Logf("failed units in the container (not ours): %s", f)
	}
	return ct
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// initOf finds the container's PID 1 (systemd) among nspawn's
// descendants: the process whose innermost PID is 1.
func initOf(nspawn int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var ppid int
		var nspid []string
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
		}
		if len(nspid) >= 2 && nspid[len(nspid)-1] == "1" && descends(ppid, nspawn) {
			return pid
		}
	}
	return 0
}

func descends(pid, ancestor int) bool {
	for range 8 {
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces, cut after ')'.
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return false
}

// output runs a command inside the container (all its namespaces) with a
// clean environment and no input.
func (c *container) output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.outputCtx(ctx, name, args...)
}

func (c *container) outputCtx(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.init), "-a", name}, args...)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C.UTF-8", "HOME=/root", "TERM=dumb", "SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0",
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *container) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.output(name, args...)
	if err != nil {
		c.t.Fatalf("in the container: %s %s: %v\n%s\n%s", name, strings.Join(args, " "), err, out, c.status())
	}
	return out
}

// prop is one property of the gateway's unit.
func (c *container) prop(name string) string {
	out, _ := c.output("systemctl", "show", "-p", name, "--value", c.unitName())
	return strings.TrimSpace(out)
}

// status is systemctl status and the unit's journal, for messages.
func (c *container) status() string {
	s, _ := c.output("systemctl", "status", "--no-pager", "-l", "-n", "0", c.unitName())
	j, _ := c.output("journalctl", "-q", "--no-pager", "-u", c.unitName(), "-n", "40")
	return s + "\n" + j
}
