package packaging_test

// TestDeb builds both packages with scripts/deb.sh (nfpm, through
// packaging/cmd/mkdeb; its -check mode runs lintian and systemd-analyze
// too) and then checks them again here, from the outside: the files and
// their modes, the conffiles, md5sums, the control fields, the units'
// hardening, lintian's verdict, systemd-analyze verify, the man pages, the
// example configurations and the packaged binaries themselves; and that a
// second build gives the same bytes.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const testVersion = "9.8.7-test" // stamped via VERSION; the packages get 9.8.7~test-1

func TestDeb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: checking the .debs needs root (deb.sh -check installs lintian with apt-get); run as root")
	}
	if testing.Short() {
		t.Skip("skipped in -short mode: builds both packages twice and runs lintian (about 40 s)")
	}
	for _, tool := range []string{"dpkg-deb", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s not found (not a Debian system)", tool)
		}
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(repo, "scripts/deb.sh"), "-o", out, "-check")
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "DEB_REVISION=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/deb.sh -check: %v\n%s", err, stderr.String())
	}
	debs := strings.Fields(stdout.String())
	if len(debs) != 2 {
		t.Fatalf("deb.sh printed %q, want two .deb paths", debs)
	}

	// Reproducible: the same tree and SOURCE_DATE_EPOCH (deb.sh takes the
	// last commit's) give the same bytes.
	again := t.TempDir()
	cmd = exec.Command("bash", filepath.Join(repo, "scripts/deb.sh"), "-o", again)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "DEB_REVISION=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/deb.sh (second build): %v\n%s", err, out)
	}
	for _, deb := range debs {
		a, errA := os.ReadFile(deb)
		b, errB := os.ReadFile(filepath.Join(again, filepath.Base(deb)))
		if errA != nil || errB != nil {
			t.Fatalf("reading the two builds: %v, %v", errA, errB)
		}
		if !bytes.Equal(a, b) {
			// Unless the source changed in between (the binaries differ):
			// others may be editing the tree while this test runs.
			if m1, m2 := run(t, "dpkg-deb", "-I", deb, "md5sums"), run(t, "dpkg-deb", "-I", filepath.Join(again, filepath.Base(deb)), "md5sums"); binarySum(m1) != binarySum(m2) {
				t.Logf("%s: the binaries of the two builds differ (the tree changed during the test?): reproducibility not checked", filepath.Base(deb))
				continue
			}
			t.Errorf("%s: a second build of the same tree differs (not reproducible)", filepath.Base(deb))
		}
	}
	_, licensed := os.Stat(filepath.Join(repo, "LICENSE"))
	for i, role := range []string{"gateway", "roadwarrior"} {
		t.Run(role, func(t *testing.T) {
			checkDeb(t, debs[i], role, licensed == nil)
		})
	}
}

func checkDeb(t *testing.T, deb, role string, licensed bool) {
	pkg := "roamsec-" + role
	wantVersion := "9.8.7~test-1"
	if base := filepath.Base(deb); base != pkg+"_"+wantVersion+"_amd64.deb" {
		t.Errorf("package file %s, want %s_%s_amd64.deb", base, pkg, wantVersion)
	}

	// Control fields.
	for field, want := range map[string]string{
		"Package": pkg, "Version": wantVersion, "Architecture": "amd64",
		"Section": "net", "Priority": "optional", "Source": "roamsec",
		"Maintainer": "roamsec maintainers <roamsec@roamsec.invalid>",
		"Homepage":   "https://github.com/roamsec/roamsec",
	} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("control %s = %q, want %q", field, got, want)
		}
	}

	desc := run(t, "dpkg-deb", "-f", deb, "Description")
	if synopsis, long, _ := strings.Cut(desc, "\n"); !strings.Contains(synopsis, "IPsec VPN") || !strings.Contains(long, "\n .\n") || !strings.Contains(long, "systemd unit") {
		t.Errorf("Description: %q", desc)
	}

	// Files and modes: exactly these regular files, owned by root.
	want := map[string]string{
		"./usr/sbin/" + pkg:                                          "-rwxr-xr-x",
		"./lib/systemd/system/" + pkg + ".service":                   "-rw-r--r--",
		"./usr/share/man/man8/" + pkg + ".8.gz":                      "-rw-r--r--",
		"./usr/share/doc/" + pkg + "/copyright":                      "-rw-r--r--",
		"./usr/share/doc/" + pkg + "/changelog.Debian.gz":            "-rw-r--r--",
		"./usr/share/doc/" + pkg + "/examples/" + role + "-ike.yaml": "-rw-r--r--",
		"./usr/share/doc/" + pkg + "/examples/" + role + ".yaml":     "-rw-r--r--",
		"./usr/share/lintian/overrides/" + pkg:                       "-rw-r--r--",
	}
	// The gateway's configuration holds no secret (init writes the key);
	// the road warrior's is written by init, not shipped.
	if role == "gateway" {
		want["./etc/roamsec/gateway.yaml"] = "-rw-r--r--"
	}
	// The road warrior is also `roadwarrior`, as people type it.
	wantLinks := map[string]string{}
	if role == "roadwarrior" {
		wantLinks["./usr/sbin/roadwarrior"] = "roamsec-roadwarrior"
		wantLinks["./usr/share/man/man8/roadwarrior.8.gz"] = "roamsec-roadwarrior.8.gz"
	}
	got, links := map[string]string{}, map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		mode, owner, path := f[0], f[1], f[5]
		if owner != "root/root" {
			t.Errorf("%s owned by %s, want root/root", path, owner)
		}
		switch mode[0] {
		case 'd':
			if mode != "drwxr-xr-x" {
				t.Errorf("directory %s has mode %s, want drwxr-xr-x", path, mode)
			}
		case '-':
			got[path] = mode
		case 'l':
			if len(f) < 8 || f[6] != "->" {
				t.Fatalf("dpkg-deb -c symlink line %q", line)
			}
			links[path] = f[7]
		default:
			t.Errorf("unexpected entry %s", line)
		}
	}
	for path, mode := range want {
		if got[path] != mode {
			t.Errorf("%s: mode %q, want %q", path, got[path], mode)
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("unexpected file %s", path)
		}
	}
	if !maps.Equal(links, wantLinks) {
		t.Errorf("symlinks %v, want %v", links, wantLinks)
	}

	// Conffiles and maintainer scripts.
	if role == "gateway" {
		if c := strings.TrimSpace(run(t, "dpkg-deb", "-I", deb, "conffiles")); c != "/etc/roamsec/gateway.yaml" {
			t.Errorf("conffiles = %q, want /etc/roamsec/gateway.yaml", c)
		}
	} else if c, err := exec.Command("dpkg-deb", "-I", deb, "conffiles").Output(); err == nil && len(bytes.TrimSpace(c)) > 0 {
		t.Errorf("the road warrior ships conffiles %q, want none (init writes its configuration)", c)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		body := run(t, "dpkg-deb", "-I", deb, s)
		if !strings.HasPrefix(body, "#!/bin/sh") || !strings.Contains(body, "set -e") || strings.Contains(body, "@PKG@") {
			t.Errorf("%s: not a finished sh script:\n%s", s, body)
		}
		if strings.Contains(body, "enable --now") || strings.Contains(body, "invoke start") {
			t.Errorf("%s starts the service, but the shipped config has public keys", s)
		}
		// deb-systemd-helper's was-enabled is true for a unit it has never
		// seen: enable only for units it knows (debhelper's dont-enable
		// snippet). test/install checks the outcome in a real system.
		if strings.Contains(body, "deb-systemd-helper enable") && !strings.Contains(body, "deb-systemd-helper debian-installed") {
			t.Errorf("%s enables the unit on first installation (no debian-installed guard)", s)
		}
	}

	// md5sums: one line per regular file, with the right sum (checked
	// against the extracted files below).
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-I", deb, "md5sums")), "\n") {
		sum, path, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 32 {
			t.Errorf("md5sums line %q", line)
			continue
		}
		sums["./"+strings.TrimPrefix(path, "./")] = sum
	}
	if len(sums) != len(want) {
		t.Errorf("md5sums has %d entries, the package %d files", len(sums), len(want))
	}

	// lintian: no errors (the script already required that; from here too).
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian missing after deb.sh -check")
	}
	lint, _ := exec.Command("lintian", deb).CombinedOutput()
	for _, line := range strings.Split(string(lint), "\n") {
		if strings.HasPrefix(line, "E:") {
			t.Errorf("lintian error: %s", line)
		}
		if strings.HasPrefix(line, "W:") {
			t.Logf("lintian warning: %s", line)
		}
	}

	// Extract and look inside.
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/sbin", pkg)
	for path, sum := range sums {
		data, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Errorf("md5sums lists %s: %v", path, err)
			continue
		}
		if got := md5.Sum(data); hex.EncodeToString(got[:]) != sum {
			t.Errorf("md5sums: %s has md5 %x, the file says %s", path, got, sum)
		}
	}

	// Static: no program interpreter, no shared libraries.
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	libs, _ := ef.ImportedLibraries()
	if ef.Section(".interp") != nil || len(libs) > 0 {
		t.Errorf("%s is dynamically linked (libs %v)", bin, libs)
	}
	if ef.Section(".symtab") != nil {
		t.Errorf("%s is not stripped", bin)
	}
	ef.Close()

	if v := strings.TrimSpace(run(t, bin, "-version")); v != "roamsec "+role+" "+testVersion {
		t.Errorf("%s -version = %q, want %q", pkg, v, "roamsec "+role+" "+testVersion)
	}
	checkFirstRun(t, bin, root, role)

	// The IKEv2 example, as documentation: the file of the repository, and
	// the packaged binary accepts it once its pre-shared key is there.
	ikeName := role + "-ike.yaml"
	ike, err := os.ReadFile(filepath.Join(root, "usr/share/doc", pkg, "examples", ikeName))
	if err != nil {
		t.Fatal(err)
	}
	if example, err := os.ReadFile(filepath.Join("examples", ikeName)); err != nil || !bytes.Equal(example, ike) {
		t.Errorf("examples/%s in the package differs from packaging/examples/%s (%v)", ikeName, ikeName, err)
	}
	ikeDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ikeDir, ikeName), ike, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ikeDir, "rw1.psk"), []byte("example-psk-for-the-test-only-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(t, bin, "-check", "-offline", "-config", filepath.Join(ikeDir, ikeName)); !strings.Contains(out, "configuration OK") {
		t.Errorf("-check of examples/%s with its PSK file: %s", ikeName, out)
	}

	// The unit: hardening directives present, and systemd-analyze verify
	// clean against the extracted package (the host's units beside it).
	unitPath := filepath.Join(root, "lib/systemd/system", pkg+".service")
	unit := readUnit(t, unitPath)
	for key, want := range map[string]string{
		"ExecStart":               "/usr/sbin/" + pkg + " -config /etc/roamsec/" + role + ".yaml",
		"Restart":                 "on-failure",
		"CapabilityBoundingSet":   "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"AmbientCapabilities":     "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"RuntimeDirectory":        "roamsec",
		"DeviceAllow":             "/dev/net/tun rw",
		"DevicePolicy":            "closed",
		"ProtectKernelModules":    "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectControlGroups":    "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"ReadWritePaths":          "/run/roamsec",
		"WantedBy":                "multi-user.target",
	} {
		if got := unit[key]; got != want {
			t.Errorf("%s.service: %s=%q, want %q", pkg, key, got, want)
		}
	}
	if _, ok := unit["PrivateDevices"]; ok {
		t.Errorf("%s.service: PrivateDevices= would hide /dev/net/tun", pkg)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze missing")
	}
	run(t, "cp", "-an", "/lib/systemd/system/.", filepath.Join(root, "lib/systemd/system")+"/")
	va, err := exec.Command("systemd-analyze", "verify", "--man=no", "--generators=no", "--root="+root, unitPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(va)) > 0 {
		t.Errorf("systemd-analyze verify %s.service: %v\n%s", pkg, err, va)
	}

	// Man page: the sections the brief asks for, and the exit codes.
	man := gunzip(t, filepath.Join(root, "usr/share/man/man8", pkg+".8.gz"))
	for _, s := range []string{".TH " + strings.ToUpper(pkg) + " 8", ".SH SYNOPSIS", ".SH OPTIONS", ".SH FILES", ".SH EXIT STATUS", ".SH EXAMPLES",
		"\\-config", "\\-check", "\\-offline", "\\-version", "status", ".B init", "/etc/roamsec/" + role + ".yaml", "roamsec " + testVersion} {
		if !strings.Contains(man, s) {
			t.Errorf("man page lacks %q", s)
		}
	}
	if !regexp.MustCompile(`(?s)\.B 0\n.*\.B 2\n.*\.B 3\n.*\.B 4\n`).MatchString(man) {
		t.Error("man page: EXIT STATUS does not list 0, 2, 3, 4")
	}

	// copyright: machine-readable; proprietary unless a LICENSE appears.
	cr, err := os.ReadFile(filepath.Join(root, "usr/share/doc", pkg, "copyright"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(cr), "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") {
		t.Error("copyright is not in the machine-readable format")
	}
	if unlicensed := strings.Contains(string(cr), "UNLICENSED — proprietary, all rights reserved"); unlicensed == licensed {
		t.Errorf("copyright says UNLICENSED=%v but the repository has a LICENSE=%v: update packaging/debian/copyright", unlicensed, licensed)
	}

	// changelog.Debian.gz names this version.
	cl := gunzip(t, filepath.Join(root, "usr/share/doc", pkg, "changelog.Debian.gz"))
	if first, _, _ := strings.Cut(cl, "\n"); first != "roamsec ("+wantVersion+") unstable; urgency=medium" {
		t.Errorf("changelog.Debian.gz starts %q", first)
	}
}

// binarySum returns the md5sums line of the binary in /usr/sbin.
func binarySum(md5sums string) string {
	for _, line := range strings.Split(md5sums, "\n") {
		if strings.Contains(line, "usr/sbin/") {
			return line
		}
	}
	return ""
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readUnit returns a unit file's settings, the last value of each key
// (enough for keys set once).
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// checkFirstRun: the shipped configuration (the gateway's conffile, the
// road warrior's none) refuses to run until init has written the key, and
// passes -check once it has.
func checkFirstRun(t *testing.T, bin, root, role string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, role+".yaml")
	if role == "gateway" {
		shipped, err := os.ReadFile(filepath.Join(root, "etc/roamsec/gateway.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if repo, _ := os.ReadFile(filepath.Join("conffiles", "gateway.yaml")); !bytes.Equal(repo, shipped) {
			t.Errorf("/etc/roamsec/gateway.yaml differs from packaging/conffiles/gateway.yaml")
		}
		os.WriteFile(cfg, shipped, 0o644)
	}
	out, err := exec.Command(bin, "-check", "-config", cfg).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "init") {
		t.Errorf("-check before init: %v, want exit 3 saying to run init:\n%s", err, out)
	}
	args := []string{"init", "-dir", dir}
	if role == "roadwarrior" {
		args = append(args, "-gateway", "192.0.2.1")
	}
	run(t, bin, args...)
	if out := run(t, bin, "-check", "-config", cfg); !strings.Contains(out, "configuration OK") {
		t.Errorf("-check of the shipped configuration after init: %s", out)
	}
}
