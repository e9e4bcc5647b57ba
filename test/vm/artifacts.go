package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// DefaultCacheDir holds the downloaded and prepared kernel and busybox;
// ROAMSEC_VM_CACHE overrides it.
const DefaultCacheDir = "/var/cache/roamsec-vm"

// CacheDir is the cache directory in use.
func CacheDir() string {
	if d := os.Getenv("ROAMSEC_VM_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// artifacts are the prepared pieces of a boot, all inside the cache.
type artifacts struct {
	kernel  string // ELF vmlinux (PVH entry) if it could be unpacked, else the bzImage
	release string // uname -r of the kernel
	modules string // the lib/modules/<release> directory
	busybox string // a static busybox
}

// keptModuleDirs are the parts of the kernel's module tree kept in the cache
// (with the dependencies of every module in them): networking, libraries,
// crypto and the virtual network drivers directly in drivers/net (veth, tun,
// dummy, macvlan, ifb, ...). Drivers for hardware, sound and file systems are
// left out: about 45 MB kept of 400.
var keptModuleDirs = []string{"kernel/net/", "kernel/lib/", "kernel/crypto/", "kernel/drivers/net/"}

func keepModule(rel string) bool {
	for _, d := range keptModuleDirs {
		if strings.HasPrefix(rel, d) {
			rest := rel[len(d):]
			// drivers/net: only the top level, not ethernet/, wireless/, ...
			return d != "kernel/drivers/net/" || !strings.Contains(rest, "/") || strings.HasPrefix(rest, "ipvlan/")
		}
	}
	return false
}

// prepare returns the artifacts, downloading and building what the cache
// lacks. It is idempotent and safe to call from several processes at once:
// entries appear in the cache by an atomic rename, built under a lock.
func prepare(ctx context.Context, logf func(string, ...any)) (*artifacts, error) {
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("vm cache: %w", err)
	}
	var err error
	for try := 0; try < 2; try++ {
		if try > 0 {
			// apt's lists may be missing, or name a version the mirror
			// has dropped: refresh them once and look again.
			logf("vm: %v; running apt-get update", err)
			if uerr := aptUpdate(ctx); uerr != nil {
				break
			}
		}
		var a *artifacts
		a, err = prepareOnce(ctx, cache, logf)
		if err == nil {
			return a, nil
		}
		var ae *aptError
		if !errors.As(err, &ae) {
			return nil, err
		}
	}
	// Offline: fall back on whatever the cache holds.
	if a, cerr := newestCached(cache); cerr == nil {
		logf("vm: %v; using the cached kernel %s", err, a.release)
		return a, nil
	}
	return nil, err
}

// aptError is a failure of apt that apt-get update may cure.
type aptError struct{ err error }

func (e *aptError) Error() string { return e.err.Error() }
func (e *aptError) Unwrap() error { return e.err }

func prepareOnce(ctx context.Context, cache string, logf func(string, ...any)) (*artifacts, error) {
	kpkg, kver, bbver, err := lookupVersions(ctx)
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(cache, "kernel", sanitize(kpkg+"_"+kver))
	bbdir := filepath.Join(cache, "busybox", sanitize(bbver))
	if a, err := loadArtifacts(kdir, bbdir); err == nil {
		return a, nil
	}

	unlock, err := lockCache(ctx, cache)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if a, err := loadArtifacts(kdir, bbdir); err == nil {
		return a, nil // built by another process while we waited
	}
	// Leftovers of an interrupted build (only the lock holder makes them).
	old, _ := filepath.Glob(filepath.Join(cache, "tmp-*"))
	for _, d := range old {
		os.RemoveAll(d)
	}
	if !exists(bbdir) {
		if err := buildBusybox(ctx, cache, bbver, bbdir, logf); err != nil {
			return nil, err
		}
		pruneOthers(filepath.Dir(bbdir), bbdir)
	}
	if !exists(kdir) {
		if err := buildKernel(ctx, cache, kpkg, kver, kdir, logf); err != nil {
			return nil, err
		}
		pruneOthers(filepath.Dir(kdir), kdir)
	}
	return loadArtifacts(kdir, bbdir)
}

// lookupVersions asks apt for the kernel package linux-image-amd64 depends
// on now, its version, and busybox-static's version. apt-cache takes almost
// a second here (no pkgcache.bin on these machines), so it is asked once,
// and once per process.
func lookupVersions(ctx context.Context) (kpkg, kver, bbver string, err error) {
	lookupMu.Lock()
	defer lookupMu.Unlock()
	if lookupMemo != nil {
		return lookupMemo[0], lookupMemo[1], lookupMemo[2], nil
	}
	recs, err := aptShow(ctx, "linux-image-amd64", "busybox-static")
	if err != nil {
		return "", "", "", err
	}
	for _, dep := range strings.Split(recs["linux-image-amd64"]["Depends"], ",") {
		f := strings.Fields(dep)
		if len(f) > 0 && strings.HasPrefix(f[0], "linux-image-") {
			kpkg = f[0]
			if len(f) == 3 && f[1] == "(=" {
				kver = strings.TrimSuffix(f[2], ")")
			}
			break
		}
	}
	if kpkg == "" {
		return "", "", "", fmt.Errorf("vm: linux-image-amd64 depends on no linux-image-* package (Depends: %q)", recs["linux-image-amd64"]["Depends"])
	}
	if kver == "" {
		km, err := aptShow(ctx, kpkg)
		if err != nil {
			return "", "", "", err
		}
		kver = km[kpkg]["Version"]
	}
	bbver = recs["busybox-static"]["Version"]
	if kver == "" || bbver == "" {
		return "", "", "", &aptError{errors.New("vm: apt-cache show printed no Version")}
	}
	lookupMemo = &[3]string{kpkg, kver, bbver}
	return kpkg, kver, bbver, nil
}

var (
	lookupMu   sync.Mutex
	lookupMemo *[3]string
)

// forgetLookup drops the memo, after apt-get update.
func forgetLookup() {
	lookupMu.Lock()
	lookupMemo = nil
	lookupMu.Unlock()
}

// aptShow returns the fields of the candidate version of each package.
func aptShow(ctx context.Context, pkgs ...string) (map[string]map[string]string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", append([]string{"show", "--no-all-versions"}, pkgs...)...).Output()
	if err != nil {
		return nil, &aptError{fmt.Errorf("vm: apt-cache show %s: %v", strings.Join(pkgs, " "), cmdErr(err))}
	}
	recs := map[string]map[string]string{}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for more := true; more; {
		more = sc.Scan()
		line := sc.Text()
		if !more || line == "" {
			if m["Package"] != "" && recs[m["Package"]] == nil {
				recs[m["Package"]] = m
			}
			m = map[string]string{}
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			m[k] = strings.TrimSpace(v)
		}
	}
	for _, p := range pkgs {
		if recs[p] == nil {
			return nil, &aptError{fmt.Errorf("vm: apt-cache show: no package %s", p)}
		}
	}
	return recs, nil
}

func aptUpdate(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm: apt-get update: %v: %s", err, lastLines(string(out), 5))
	}
	forgetLookup()
	return nil
}

// aptDownload fetches pkg=ver into dir and returns the .deb's path.
func aptDownload(ctx context.Context, dir, pkg, ver string) (string, error) {
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-qq", pkg+"="+ver)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &aptError{fmt.Errorf("vm: apt-get download %s=%s: %v: %s", pkg, ver, err, lastLines(string(out), 5))}
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("vm: apt-get download %s: found %d .deb files", pkg, len(debs))
	}
	return debs[0], nil
}

func buildBusybox(ctx context.Context, cache, ver, dest string, logf func(string, ...any)) error {
	logf("vm: fetching busybox-static %s into %s", ver, cache)
	tmp, err := os.MkdirTemp(cache, "tmp-busybox-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	deb, err := aptDownload(ctx, tmp, "busybox-static", ver)
	if err != nil {
		return err
	}
	x := filepath.Join(tmp, "x")
	if err := run(ctx, "dpkg", "-x", deb, x); err != nil {
		return err
	}
	stage := filepath.Join(tmp, "out")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(x, "bin", "busybox"), filepath.Join(stage, "busybox")); err != nil {
		return err
	}
	return publish(stage, dest)
}

func buildKernel(ctx context.Context, cache, pkg, ver, dest string, logf func(string, ...any)) error {
	logf("vm: fetching %s %s into %s", pkg, ver, cache)
	tmp, err := os.MkdirTemp(cache, "tmp-kernel-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	deb, err := aptDownload(ctx, tmp, pkg, ver)
	if err != nil {
		return err
	}
	x := filepath.Join(tmp, "x")
	if err := run(ctx, "dpkg", "-x", deb, x); err != nil {
		return err
	}
	os.Remove(deb)
	rels, _ := filepath.Glob(filepath.Join(x, "lib", "modules", "*"))
	if len(rels) != 1 {
		return fmt.Errorf("vm: %s ships %d module trees", pkg, len(rels))
	}
	release := filepath.Base(rels[0])
	if err := run(ctx, depmodPath(), "-b", x, release); err != nil {
		return err
	}
	dep, err := readModulesDep(filepath.Join(rels[0], "modules.dep"))
	if err != nil {
		return err
	}

	// The kept part of the module tree, closed under dependencies.
	keep := map[string]bool{}
	var add func(string)
	add = func(m string) {
		if keep[m] {
			return
		}
		keep[m] = true
		for _, d := range dep[m] {
			add(d)
		}
	}
	for m := range dep {
		if keepModule(m) {
			add(m)
		}
	}
	stage := filepath.Join(tmp, "out")
	smods := filepath.Join(stage, "lib", "modules", release)
	for m := range keep {
		if err := copyFile(filepath.Join(rels[0], m), filepath.Join(smods, m)); err != nil {
			return err
		}
	}
	for _, f := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		if err := copyFile(filepath.Join(rels[0], f), filepath.Join(smods, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := run(ctx, depmodPath(), "-b", stage, release); err != nil {
		return err
	}

	bz := filepath.Join(x, "boot", "vmlinuz-"+release)
	if err := copyFile(bz, filepath.Join(stage, "vmlinuz")); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(x, "boot", "config-"+release), filepath.Join(stage, "config")); err != nil {
		return err
	}
	// The bzImage's payload is XZ-compressed; unpacked to an ELF vmlinux it
	// boots through its PVH entry, a few seconds faster under TCG. Without
	// python3 the bzImage is booted as it is.
	if err := unpackVmlinux(ctx, bz, filepath.Join(stage, "vmlinux")); err != nil {
		logf("vm: booting the bzImage (slower): %v", err)
	}
	return publish(stage, dest)
}

// unpackScript finds the XZ stream in a bzImage, decompresses it (ignoring
// what follows the stream) and checks that an ELF image came out.
const unpackScript = `
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
if i < 0:
    sys.exit('no XZ stream in ' + sys.argv[1])
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:])
if out[:4] != b'\x7fELF':
    sys.exit('the XZ stream is not an ELF image')
open(sys.argv[2], 'wb').write(out)
`

func unpackVmlinux(ctx context.Context, bz, out string) error {
	py, err := exec.LookPath("python3")
	if err != nil {
		if _, e := os.Stat("/usr/bin/python3"); e != nil {
			return fmt.Errorf("no python3 to unpack the bzImage")
		}
		py = "/usr/bin/python3"
	}
	if err := run(ctx, py, "-c", unpackScript, bz, out); err != nil {
		os.Remove(out)
		return err
	}
	return nil
}

// readModulesDep parses modules.dep: module path -> its dependencies' paths.
func readModulesDep(file string) (map[string][]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	dep := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		m, ds, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		dep[m] = strings.Fields(ds)
	}
	return dep, nil
}

func loadArtifacts(kdir, bbdir string) (*artifacts, error) {
	a := &artifacts{busybox: filepath.Join(bbdir, "busybox")}
	if !exists(a.busybox) {
		return nil, fmt.Errorf("vm: no busybox in the cache at %s", bbdir)
	}
	rels, _ := filepath.Glob(filepath.Join(kdir, "lib", "modules", "*"))
	if len(rels) != 1 {
		return nil, fmt.Errorf("vm: no kernel in the cache at %s", kdir)
	}
	a.release = filepath.Base(rels[0])
	a.modules = rels[0]
	for _, k := range []string{"vmlinux", "vmlinuz"} {
		if p := filepath.Join(kdir, k); exists(p) {
			a.kernel = p
			break
		}
	}
	if a.kernel == "" {
		return nil, fmt.Errorf("vm: no kernel image in %s", kdir)
	}
	return a, nil
}

// newestCached returns the most recently built cache entries.
func newestCached(cache string) (*artifacts, error) {
	newest := func(dir string) string {
		ents, _ := os.ReadDir(dir)
		type e struct {
			p string
			t int64
		}
		var es []e
		for _, d := range ents {
			if info, err := d.Info(); err == nil && d.IsDir() {
				es = append(es, e{filepath.Join(dir, d.Name()), info.ModTime().UnixNano()})
			}
		}
		sort.Slice(es, func(i, j int) bool { return es[i].t > es[j].t })
		if len(es) == 0 {
			return filepath.Join(dir, "none")
		}
		return es[0].p
	}
	return loadArtifacts(newest(filepath.Join(cache, "kernel")), newest(filepath.Join(cache, "busybox")))
}

// lockCache takes an exclusive flock on the cache's lock file, giving up
// when ctx ends.
func lockCache(ctx context.Context, cache string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vm cache: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("vm cache lock: %w", err)
		}
		return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
	case <-ctx.Done():
		go func() { <-done; f.Close() }()
		return nil, ctx.Err()
	}
}

// publish moves a finished staging directory to its place in one rename.
func publish(stage, dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	return os.Rename(stage, dest)
}

// pruneOthers removes the cache entries beside keep: older kernel or
// busybox versions Debian has moved on from.
func pruneOthers(dir, keep string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if p := filepath.Join(dir, e.Name()); p != keep {
			os.RemoveAll(p)
		}
	}
}

func depmodPath() string {
	if p, err := exec.LookPath("depmod"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
		if exists(p) {
			return p
		}
	}
	return "depmod"
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm: %s %s: %v: %s", filepath.Base(name), strings.Join(args[:min(len(args), 1)], " "), err, lastLines(string(out), 5))
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// sanitize makes a package version usable as a file name (epochs have ':').
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

func cmdErr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Sprintf("%v: %s", err, lastLines(string(ee.Stderr), 3))
	}
	return err.Error()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
