// Package install installs the .debs of scripts/deb.sh (built with nfpm)
// for real, with dpkg, into a minimal Debian bookworm built by
// debootstrap, and checks what an administrator would see: the files, the
// conffiles and their modes, dpkg --verify against the packages' md5sums,
// the binaries, the units (systemd-analyze verify inside the system), an
// upgrade that keeps a modified conffile and a purge that leaves nothing
// behind.
//
// The debootstrap root (minbase + systemd, about 40 MB to download once)
// is cached in /var/cache/roamsec-debootstrap and copied for each run, so
// the cache stays clean; delete that directory to rebuild it.
package install

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	cacheDir = "/var/cache/roamsec-debootstrap"
	suite    = "bookworm"
	// What is cached: the name says what the root holds.
	rootName = suite + "-minbase-systemd"
	// deb.sh stamps these; dpkg sees 9.8.7~test-1 < 9.8.8~test-1.
	version1 = "9.8.7-test"
	version2 = "9.8.8-test"
)

var roles = []string{"gateway", "roadwarrior"}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "scripts/deb.sh")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mirror() string {
	if m := os.Getenv("ROAMSEC_DEBIAN_MIRROR"); m != "" {
		return m
	}
	return "http://deb.debian.org/debian"
}

func TestInstallUpgradePurge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: debootstrap, chroot and dpkg in the chroot need root; run as root")
	}
	if testing.Short() {
		t.Skip("skipped in -short mode: builds both packages and installs them in a debootstrap chroot (the first run downloads about 40 MB)")
	}
	repo := repoRoot(t)
	ensureTool(t, "debootstrap", "debootstrap")
	ensureTool(t, "dpkg-deb", "dpkg")

	// The two builds and the root are independent: build while copying.
	work := t.TempDir()
	type build struct {
		debs map[string]string // role -> .deb
		err  error
	}
	builds := map[string]*build{version1: {}, version2: {}}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // before work goes, also after a t.Fatal below
	for v, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.debs, b.err = buildDebs(repo, filepath.Join(work, "debs-"+v), v)
		}()
	}
	cached := cachedRoot(t)
	root := filepath.Join(work, "root")
	start := time.Now()
	copyRoot(t, cached, root)
	t.Logf("root copied from %s in %v", cached, time.Since(start).Round(time.Millisecond))
	wg.Wait()
	for v, b := range builds {
		if b.err != nil {
			t.Fatalf("scripts/deb.sh VERSION=%s: %v", v, b.err)
		}
	}

	// Nothing may start: the chroot has no running systemd, and
	// invoke-rc.d asks policy-rc.d anyway.
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &chroot{t: t, root: root}

	// systemd-analyze verify works in this chroot (no /proc mounted): a
	// unit whose binary is missing must be refused.
	broken := "etc/systemd/system/roamsec-verify-control.service"
	if err := os.WriteFile(filepath.Join(root, broken), []byte("[Service]\nExecStart=/usr/sbin/roamsec-no-such-binary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.output("systemd-analyze", "verify", "--man=no", "/"+broken); err == nil || !strings.Contains(out, "roamsec-no-such-binary") {
		t.Fatalf("systemd-analyze verify accepted a unit with a missing binary in the chroot (%v): %s", err, out)
	}
	os.Remove(filepath.Join(root, broken))

	// Install version 1.
	c.dpkg(append([]string{"-i"}, c.stage(builds[version1].debs)...)...)
	for _, role := range roles {
		t.Run("installed/"+role, func(t *testing.T) {
			c := &chroot{t: t, root: root}
			checkInstalled(c, repo, role, version1)
		})
	}
	if t.Failed() {
		t.FailNow()
	}

	// The administrator enables the gateway and edits both conffiles.
	c.run("systemctl", "enable", "roamsec-gateway.service")
	if got := c.isEnabled("roamsec-gateway"); got != "enabled" {
		t.Fatalf("systemctl is-enabled after enable: %q", got)
	}
	edited := map[string][]byte{}
	// Both files exist after init (checkInstalled ran it): the gateway's
	// conffile and the configuration the road warrior's init wrote.
	for _, role := range roles {
		p := filepath.Join(root, "etc/roamsec", role+".yaml")
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, "# local change, must survive upgrades\n"...)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		edited[role] = data
	}

	// Upgrade to version 2: the edits stay, silently (the packaged
	// conffile did not change, so dpkg asks nothing), the gateway stays
	// enabled, and nothing is left beside the conffiles.
	c.dpkg(append([]string{"-i"}, c.stage(builds[version2].debs)...)...)
	for _, role := range roles {
		t.Run("upgraded/"+role, func(t *testing.T) {
			c := &chroot{t: t, root: root}
			pkg := "roamsec-" + role
			if got := c.query(pkg, "${Status} ${Version}"); got != "install ok installed "+debVersion(version2) {
				t.Errorf("dpkg-query %s: %q", pkg, got)
			}
			if got := strings.TrimSpace(c.run("/usr/sbin/"+pkg, "-version")); got != "roamsec "+role+" "+version2 {
				t.Errorf("%s -version after the upgrade: %q", pkg, got)
			}
			p := filepath.Join(root, "etc/roamsec", role+".yaml")
			if data, err := os.ReadFile(p); err != nil || !bytes.Equal(data, edited[role]) {
				t.Errorf("/etc/roamsec/%s.yaml lost the local change in the upgrade (%v)", role, err)
			}
			checkMode(t, p, 0o644) // no secret in it: the key is in roadwarrior.psk
			if out := c.run("/usr/sbin/"+pkg, "-check", "-config", "/etc/roamsec/"+role+".yaml"); !strings.Contains(out, "configuration OK") {
				t.Errorf("-check of the edited configuration: %s", out)
			}
			checkMode(t, filepath.Join(root, "etc/roamsec/roadwarrior.psk"), 0o600)
		})
	}
	if left, _ := filepath.Glob(filepath.Join(root, "etc/roamsec/*.dpkg-*")); len(left) > 0 {
		t.Errorf("upgrade left %v", left)
	}
	// dpkg --verify sees the edited conffile (c) as changed, nothing else
	// (the road warrior's configuration is init's, not dpkg's).
	verify, _ := c.output("dpkg", "--verify", "roamsec-gateway", "roamsec-roadwarrior")
	if want := "??5?????? c /etc/roamsec/gateway.yaml\n"; verify != want {
		t.Errorf("dpkg --verify after the upgrade with edited conffiles:\n%s\nwant:\n%s", verify, want)
	}
	if got := c.isEnabled("roamsec-gateway"); got != "enabled" {
		t.Errorf("the gateway was enabled before the upgrade, is-enabled now says %q", got)
	}
	if got := c.isEnabled("roamsec-roadwarrior"); got != "disabled" {
		t.Errorf("the road warrior was not enabled, is-enabled now says %q", got)
	}

	// Remove (not purge) the road warrior: binary and unit go, the
	// configuration init wrote stays.
	c.dpkg("--remove", "roamsec-roadwarrior")
	if got := c.query("roamsec-roadwarrior", "${Status}"); got != "deinstall ok config-files" {
		t.Errorf("after dpkg --remove: status %q", got)
	}
	for _, p := range []string{"usr/sbin/roamsec-roadwarrior", "lib/systemd/system/roamsec-roadwarrior.service"} {
		if c.exists(p) {
			t.Errorf("dpkg --remove left /%s", p)
		}
	}
	if !c.exists("etc/roamsec/roadwarrior.yaml") || !c.exists("etc/roamsec/roadwarrior.psk") {
		t.Error("dpkg --remove took the configuration or key init wrote")
	}

	// Purge both: nothing of ours is left.
	before := c.etcSystemd()
	// The road warrior first: its postrm removes the configuration its
	// init wrote, which no package owns (purged after the gateway, dpkg
	// would rightly warn that /etc/roamsec still holds it).
	c.dpkg("--purge", "roamsec-roadwarrior", "roamsec-gateway")
	for _, role := range roles {
		pkg := "roamsec-" + role
		if out, err := c.output("dpkg-query", "-W", "-f=${Status}", pkg); err == nil && strings.TrimSpace(out) != "" {
			t.Errorf("after purge dpkg-query still knows %s: %q", pkg, out)
		}
		for _, p := range []string{
			"usr/sbin/" + pkg,
			"lib/systemd/system/" + pkg + ".service",
			"usr/share/doc/" + pkg,
			"usr/share/man/man8/" + pkg + ".8.gz",
			"etc/systemd/system/" + pkg + ".service",
			"etc/systemd/system/multi-user.target.wants/" + pkg + ".service",
			"var/lib/systemd/deb-systemd-helper-enabled/" + pkg + ".service.dsh-also",
			"var/lib/systemd/deb-systemd-helper-masked/" + pkg + ".service",
		} {
			if c.exists(p) {
				t.Errorf("purge left /%s", p)
			}
		}
	}
	if c.exists("etc/roamsec") {
		t.Error("purge left /etc/roamsec")
	}
	if after := c.etcSystemd(); len(after) > 0 {
		var ours []string
		for _, p := range after {
			if strings.Contains(p, "roamsec") {
				ours = append(ours, p)
			}
		}
		if len(ours) > 0 {
			t.Errorf("purge left in /etc/systemd and the helper state: %v (before: %v)", ours, before)
		}
	}
}

// checkInstalled checks one freshly installed package.
func checkInstalled(c *chroot, repo, role, version string) {
	t := c.t
	pkg := "roamsec-" + role
	if got := c.query(pkg, "${Status} ${Version}"); got != "install ok installed "+debVersion(version) {
		t.Errorf("dpkg-query %s: %q", pkg, got)
	}

	// Every path dpkg -L lists is there.
	var files []string
	for _, p := range strings.Split(strings.TrimSpace(c.run("dpkg", "-L", pkg)), "\n") {
		if p == "/." || p == "" {
			continue
		}
		files = append(files, p)
		if !c.exists(strings.TrimPrefix(p, "/")) {
			t.Errorf("dpkg -L %s lists %s, which is missing", pkg, p)
		}
	}
	wantFiles := []string{
		"/usr/sbin/" + pkg,
		"/lib/systemd/system/" + pkg + ".service",
		"/usr/share/man/man8/" + pkg + ".8.gz",
		"/usr/share/doc/" + pkg + "/copyright",
		"/usr/share/doc/" + pkg + "/examples/" + role + "-ike.yaml",
	}
	if role == "gateway" {
		wantFiles = append(wantFiles, "/etc/roamsec/gateway.yaml")
	}
	for _, want := range wantFiles {
		if !contains(files, want) {
			t.Errorf("dpkg -L %s does not list %s:\n%s", pkg, want, strings.Join(files, "\n"))
		}
	}

	// The gateway's configuration is a registered conffile with the
	// shipped content and no secret in it (0644); the road warrior has no
	// conffile (init writes its configuration).
	conf := "/etc/roamsec/" + role + ".yaml"
	conffiles := strings.TrimSpace(c.query(pkg, "${Conffiles}"))
	if role == "gateway" {
		shipped, err := os.ReadFile(filepath.Join(repo, "packaging/conffiles/gateway.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		sum := md5.Sum(shipped)
		if want := conf + " " + hex.EncodeToString(sum[:]); conffiles != want {
			t.Errorf("%s conffiles: %q, want %q", pkg, conffiles, want)
		}
		checkMode(t, filepath.Join(c.root, conf), 0o644)
	} else if conffiles != "" {
		t.Errorf("%s conffiles: %q, want none", pkg, conffiles)
	}
	checkMode(t, filepath.Join(c.root, "usr/sbin", pkg), 0o755)
	checkMode(t, filepath.Join(c.root, "usr/share/doc", pkg, "examples", role+"-ike.yaml"), 0o644)

	// dpkg --verify: every file matches the package's md5sums; a file
	// changed behind dpkg's back is reported (so the sums were read).
	if out, err := c.output("dpkg", "--verify", pkg); err != nil || out != "" {
		t.Errorf("dpkg --verify %s after installation: %v\n%s", pkg, err, out)
	}
	doc := filepath.Join(c.root, "usr/share/doc", pkg, "copyright")
	if orig, err := os.ReadFile(doc); err != nil {
		t.Error(err)
	} else {
		os.WriteFile(doc, append(orig, "changed\n"...), 0o644)
		out, _ := c.output("dpkg", "--verify", pkg)
		if want := "??5??????   /usr/share/doc/" + pkg + "/copyright\n"; out != want {
			t.Errorf("dpkg --verify %s with a changed copyright file: %q, want %q", pkg, out, want)
		}
		os.WriteFile(doc, orig, 0o644)
	}
	if st := c.run("stat", "-c", "%U:%G", "/usr/sbin/"+pkg); st != "root:root\n" {
		t.Errorf("owner of the binary: %q", st)
	}

	// The binary runs inside the installed system.
	for _, flag := range []string{"--version", "-version"} {
		if got := strings.TrimSpace(c.run("/usr/sbin/"+pkg, flag)); got != "roamsec "+role+" "+version {
			t.Errorf("%s %s = %q, want %q", pkg, flag, got, "roamsec "+role+" "+version)
		}
	}
	// The first run: refused (exit 3, saying to run init) until init has
	// written the key (and the road warrior's configuration); then -check
	// accepts it unedited.
	if out, err := c.output("/usr/sbin/"+pkg, "-check", "-config", conf); err == nil || !strings.Contains(out, "init") {
		t.Errorf("%s -check before init: %v, want a refusal saying to run init:\n%s", pkg, err, out)
	}
	if role == "gateway" {
		c.run("/usr/sbin/"+pkg, "init")
	} else {
		c.run("/usr/sbin/"+pkg, "init", "-gateway", "192.0.2.1")
	}
	checkMode(t, filepath.Join(c.root, "etc/roamsec/roadwarrior.psk"), 0o600)
	if out := c.run("/usr/sbin/"+pkg, "-check", "-config", conf); !strings.Contains(out, "configuration OK") {
		t.Errorf("%s -check after init: %s", pkg, out)
	}

	// The unit, verified by the installed system's own systemd, and not
	// enabled on installation (an administrator decides when it runs).
	unit := "/lib/systemd/system/" + pkg + ".service"
	out, err := c.output("systemd-analyze", "verify", "--man=no", unit)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s in the chroot: %v\n%s", unit, err, out)
	}
	if got := c.isEnabled(pkg); got != "disabled" {
		t.Errorf("systemctl is-enabled %s after installation: %q, want disabled", pkg, got)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if st.Mode().Perm() != want || !st.Mode().IsRegular() {
		t.Errorf("%s: mode %v, want regular file %v", path, st.Mode(), want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// debVersion is deb.sh's package version for a VERSION.
func debVersion(v string) string { return strings.ReplaceAll(v, "-", "~") + "-1" }

// buildDebs runs scripts/deb.sh for version into dir and returns the
// packages by role.
func buildDebs(repo, dir, version string) (map[string]string, error) {
	cmd := exec.Command("bash", filepath.Join(repo, "scripts/deb.sh"), "-o", dir)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "VERSION="+version, "DEB_REVISION=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v\n%s", err, stderr.String())
	}
	debs := map[string]string{}
	for _, p := range strings.Fields(stdout.String()) {
		for _, role := range roles {
			if strings.HasPrefix(filepath.Base(p), "roamsec-"+role+"_") {
				debs[role] = p
			}
		}
	}
	if len(debs) != len(roles) {
		return nil, fmt.Errorf("deb.sh printed %q, want one .deb per role", stdout.String())
	}
	return debs, nil
}

// chroot runs commands inside the installed system.
type chroot struct {
	t    *testing.T
	root string
	n    int
}

// output runs name args inside the root with a clean environment and no
// input (so dpkg can never wait for an answer); it returns the combined
// output.
func (c *chroot) output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{c.root, name}, args...)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "HOME=/root", "TERM=dumb",
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is output that fails the test on an error.
func (c *chroot) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.output(name, args...)
	if err != nil {
		c.t.Fatalf("chroot %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// dpkg runs dpkg in the root; a warning in its output fails too.
func (c *chroot) dpkg(args ...string) {
	c.t.Helper()
	out := c.run("dpkg", args...)
	c.t.Logf("dpkg %s:\n%s", strings.Join(args, " "), out)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(strings.ToLower(line), "warning") || strings.Contains(line, "error") {
			c.t.Errorf("dpkg %s: %s", strings.Join(args, " "), line)
		}
	}
}

// stage copies the .debs into the root's /tmp and returns their paths
// inside the root, in role order.
func (c *chroot) stage(debs map[string]string) []string {
	c.t.Helper()
	c.n++
	dir := fmt.Sprintf("/tmp/roamsec-debs-%d", c.n)
	if err := os.MkdirAll(filepath.Join(c.root, dir), 0o755); err != nil {
		c.t.Fatal(err)
	}
	var paths []string
	for _, role := range roles {
		data, err := os.ReadFile(debs[role])
		if err != nil {
			c.t.Fatal(err)
		}
		p := dir + "/" + filepath.Base(debs[role])
		if err := os.WriteFile(filepath.Join(c.root, p), data, 0o644); err != nil {
			c.t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func (c *chroot) query(pkg, format string) string {
	c.t.Helper()
	return strings.TrimSpace(c.run("dpkg-query", "-W", "-f="+format, pkg))
}

// exists reports whether path (relative to the root) exists inside the
// root, following the root's own symlinks (/lib -> usr/lib) there.
func (c *chroot) exists(path string) bool {
	_, err := c.output("test", "-e", "/"+path)
	if err == nil {
		return true
	}
	// test -L too: a dangling symlink (a mask to /dev/null) counts.
	_, err = c.output("test", "-L", "/"+path)
	return err == nil
}

func (c *chroot) isEnabled(pkg string) string {
	out, _ := c.output("systemctl", "is-enabled", strings.TrimSuffix(pkg, ".service")+".service")
	return strings.TrimSpace(out)
}

// etcSystemd lists /etc/systemd and the helper state, for messages.
func (c *chroot) etcSystemd() []string {
	var list []string
	for _, dir := range []string{"etc/systemd/system", "var/lib/systemd/deb-systemd-helper-enabled", "var/lib/systemd/deb-systemd-helper-masked"} {
		filepath.Walk(filepath.Join(c.root, dir), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				list = append(list, strings.TrimPrefix(p, c.root))
			}
			return nil
		})
	}
	sort.Strings(list)
	return list
}

// --- tools -------------------------------------------------------------

var aptMu sync.Mutex

// ensureTool installs pkg with apt-get if cmd is not on PATH.
func ensureTool(t *testing.T, cmd, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err == nil {
		return
	}
	aptMu.Lock()
	defer aptMu.Unlock()
	install := func() ([]byte, error) {
		c := exec.Command("apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", pkg)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return c.CombinedOutput()
	}
	t.Logf("apt-get install %s (for %s)", pkg, cmd)
	if out, err := install(); err != nil {
		// Stale package lists: update and try once more.
		if uout, uerr := exec.Command("apt-get", "update", "-q").CombinedOutput(); uerr != nil {
			t.Fatalf("apt-get install %s: %v\n%s\napt-get update: %v\n%s", pkg, err, out, uerr, uout)
		}
		if out, err := install(); err != nil {
			t.Fatalf("apt-get install %s: %v\n%s", pkg, err, out)
		}
	}
	if _, err := exec.LookPath(cmd); err != nil {
		t.Fatalf("%s still missing after apt-get install %s", cmd, pkg)
	}
}

// --- the cached debootstrap root ----------------------------------------

// cachedRoot returns the cached minimal bookworm with systemd, building
// it first when missing. The cache is complete only once its stamp file
// exists; concurrent test processes wait on a lock.
func cachedRoot(t *testing.T) string {
	t.Helper()
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	root := filepath.Join(cacheDir, rootName)
	stamp := root + ".complete"
	args := []string{"--variant=minbase", "--include=systemd", suite, "TARGET", mirror()}
	want := "debootstrap " + strings.Join(args, " ") + "\n" + pruned + "\n"
	if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
		if _, err := os.Stat(filepath.Join(root, "usr/bin/systemd-analyze")); err == nil {
			return root
		}
	}
	// Missing, stale or unfinished: start over.
	os.Remove(stamp)
	for _, p := range []string{root, root + ".tmp"} {
		if err := removeTree(p); err != nil {
			t.Fatal(err)
		}
	}
	debs := filepath.Join(cacheDir, "debs") // survives failed attempts
	if err := os.MkdirAll(debs, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := root + ".tmp"
	start := time.Now()
	t.Logf("building the debootstrap root %s (once; about 40 MB from %s)", root, mirror())
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		if attempt > 1 {
			wait := time.Duration(attempt*attempt) * 5 * time.Second
			t.Logf("debootstrap attempt %d failed (%v); retrying in %v", attempt-1, firstLine(lastErr), wait)
			time.Sleep(wait)
		}
		if err := removeTree(tmp); err != nil {
			t.Fatal(err)
		}
		lastErr = debootstrap(t, tmp, debs, args)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		removeTree(tmp)
		t.Fatalf("debootstrap of %s from %s failed 3 times (network? mirror? set ROAMSEC_DEBIAN_MIRROR): %v", suite, mirror(), lastErr)
	}
	if err := prune(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("du", "-sh", debs, root).Output()
	t.Logf("debootstrap root ready in %v (downloaded, root):\n%s", time.Since(start).Round(time.Second), out)
	os.RemoveAll(debs)
	return root
}

// pruned says in the stamp what prune removed (a cache made without it
// is rebuilt).
const pruned = "pruned: apt lists and caches"

// prune removes apt's package lists and caches (about 90 of 240 MB) from
// a fresh root: the test installs with dpkg, and every run copies the
// root.
func prune(root string) error {
	for _, pattern := range []string{"var/lib/apt/lists/*_*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return err
		}
		for _, p := range m {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func debootstrap(t *testing.T, target, debs string, args []string) error {
	full := []string{"--cache-dir=" + debs}
	for _, a := range args {
		if a == "TARGET" {
			a = target
		}
		full = append(full, a)
	}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-time.Minute))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "debootstrap", full...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	out, err := cmd.CombinedOutput()
	// debootstrap unmounts what it mounted, except when killed.
	if uerr := unmountUnder(target); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if err != nil {
		// The log inside the target says what went wrong.
		log, _ := os.ReadFile(filepath.Join(target, "debootstrap/debootstrap.log"))
		return fmt.Errorf("debootstrap %s: %w\n%s\n--- debootstrap.log (tail) ---\n%s", strings.Join(full, " "), err, tail(string(out), 30), tail(string(log), 30))
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(fmt.Sprint(err), "\n")
	return s
}

// copyRoot copies the cached root to dst with cp -a (device nodes,
// owners, modes, hard links) and unmounts anything under dst at cleanup,
// before the temporary directory goes.
func copyRoot(t *testing.T, src, dst string) {
	t.Helper()
	t.Cleanup(func() {
		if err := unmountUnder(dst); err != nil {
			t.Error(err)
		}
	})
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
}

// removeTree unmounts whatever is mounted under path and then removes it;
// it refuses to remove a tree that still has mounts.
func removeTree(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountUnder(path); err != nil {
		return err
	}
	return os.RemoveAll(path)
}

// unmountUnder detaches every mount at or below path, deepest first, and
// fails if any remains.
func unmountUnder(path string) error {
	for range 3 {
		mounts, err := mountsUnder(path)
		if err != nil || len(mounts) == 0 {
			return err
		}
		for _, m := range mounts {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
	if mounts, _ := mountsUnder(path); len(mounts) > 0 {
		return fmt.Errorf("still mounted under %s: %v", path, mounts)
	}
	return nil
}

// mountsUnder lists the mount points at or below path (from
// /proc/self/mountinfo), longest first.
func mountsUnder(path string) ([]string, error) {
	path = filepath.Clean(path)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var list []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == path || strings.HasPrefix(mp, path+"/") {
			list = append(list, mp)
		}
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i]) > len(list[j]) })
	return list, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
