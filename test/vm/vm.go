// Package vm boots Debian's stock kernel in qemu and runs a shell script in
// it, for tests that need kernel features the host lacks (SCTP: the machines
// this project builds on have no SCTP, Debian's kernel has it as a module).
//
// A run: qemu (software emulation, TCG; KVM does not work on these machines)
// boots the kernel of the package linux-image-amd64 depends on, unpacked to
// an ELF vmlinux booted through its PVH entry, with an initramfs built here:
// a static busybox with every applet linked in /bin, kernel modules, and the
// caller's files. Its /init mounts proc, sys, dev (devtmpfs, devpts, shm),
// tmpfs on /tmp and /run (/var/run links to it), loads the modules
// (crc32c_generic ip6_udp_tunnel udp_tunnel libcrc32c sctp veth tun, then
// Options.Modules), brings lo up, runs Options.Script with sh, prints its
// exit status and powers off. Boot (qemu start to script start) measured
// 3-4 s on an idle machine, about 5-6 s with both cores busy; booting the
// bzImage instead of the vmlinux takes about 6.5 s. The kernel command line
// has "quiet": printing boot messages on the emulated serial port is slow.
//
// Inside the VM: root, PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin,
// HOME=/root (the working directory), TMPDIR=/tmp; busybox applets (sh, ip,
// tc, nsenter, unshare, ping, nc, mount, sysctl, timeout, ...; busybox ip has
// no "netns": use unshare/nsenter, or the Go binary's own setns). The
// initramfs has no nft or iptables of its own, and busybox tc cannot add
// qdiscs: pack the host's programs with HostBinary, which brings their
// shared libraries and the dynamic loader along. The host's iproute2 ip
// gives "ip netns" (test/netns's bed runs on it); the host's nft with
// "nf_tables" in Options.Modules gives nftables, so test/netns's
// Bed.Blackhole (a netdev ingress chain with policy drop) works in the VM
// as on the host: that is how to drop a path silently. ("ip link set DEV
// down" is not silent: the peer veth loses its carrier.)
//
// Go test binaries (BuildStatic with test) run in /root: add what they read
// from testdata through Files.
//
// Artifacts are fetched with apt-get download (never installed) and kept in
// CacheDir, keyed by package version; the first run takes about 10 s more.
// Each run asks apt-cache for the current versions once per process (0.8 s).
// Needs: qemu-system-x86 (scripts/deps.sh installs it), apt, dpkg, depmod
// (kmod), python3 (to unpack the bzImage; without it the bzImage boots,
// slower), and root for apt-get.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options describe one run.
type Options struct {
	// Files to put in the VM: path inside the VM -> path on the host. Modes
	// are kept; symbolic links on the host are followed. Static binaries
	// (see BuildStatic) run as they are; dynamically linked host programs
	// need their libraries too (see HostBinary).
	Files map[string]string
	// Script is run with sh as root in /root. Its output (stdout and
	// stderr) is Result.Output, its exit status Result.ExitCode.
	Script string
	// Timeout bounds the VM's run, boot included (not the first download);
	// 0 means 3 minutes.
	Timeout time.Duration
	// Memory in MiB; 0 means 512.
	Memory int
	// CPUs; 0 means 2.
	CPUs int
	// Modules are loaded after the default ones, with their dependencies,
	// by name (sch_netem, nf_tables, dummy, bridge, ...). Modules of
	// kernel/net, kernel/lib, kernel/crypto and the top level of
	// kernel/drivers/net are available.
	Modules []string
}

// Result of a run that booted and finished.
type Result struct {
	// Output is what the script printed, carriage returns removed (kernel
	// warnings printed meanwhile on the console are mixed in).
	Output string
	// ExitCode is the script's exit status.
	ExitCode int
	// BootTime runs from qemu's start to the script's start, RunTime from
	// there to the script's end.
	BootTime, RunTime time.Duration
	// Console is the whole serial console, boot messages included.
	Console string
}

// DefaultModules are loaded in this order in every VM.
var DefaultModules = []string{"crc32c_generic", "ip6_udp_tunnel", "udp_tunnel", "libcrc32c", "sctp", "veth", "tun"}

const qemuBinary = "qemu-system-x86_64"

// Available tells why a VM cannot run on this machine, or nil if it can.
func Available() error {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return fmt.Errorf("vm: needs linux/amd64, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		return fmt.Errorf("vm: %s not found: install qemu-system-x86 (make deps)", qemuBinary)
	}
	if _, err := newestCached(CacheDir()); err == nil {
		return nil // everything else is needed only to fill the cache
	}
	for _, c := range []string{"apt-get", "apt-cache", "dpkg"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("vm: %s not found, and the cache %s is empty", c, CacheDir())
		}
	}
	if depmodPath() == "depmod" {
		return fmt.Errorf("vm: depmod not found: install kmod (make deps)")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("vm: the cache %s is empty and filling it (apt-get) needs root", CacheDir())
	}
	return nil
}

// Run boots the VM, runs o.Script in it and returns its output and exit
// status. The error reports failures of the harness only (qemu missing,
// download failed, no boot, kernel panic, timeout): a failing script is a
// Result with ExitCode != 0. With a timeout the Result holds what was seen.
func Run(ctx context.Context, o Options) (Result, error) {
	if err := Available(); err != nil {
		return Result{}, err
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Memory == 0 {
		o.Memory = 512
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	a, err := prepare(ctx, func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) })
	if err != nil {
		return Result{}, err
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	marker := "ROAMSEC-VM-" + hex.EncodeToString(nonce[:])

	initrd, err := os.CreateTemp("", "roamsec-vm-*.cpio")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(initrd.Name())
	err = writeInitramfs(initrd, a, o, marker)
	if cerr := initrd.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Result{}, err
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBinary,
		"-accel", "tcg,thread=multi", "-cpu", "max",
		"-smp", strconv.Itoa(o.CPUs), "-m", strconv.Itoa(o.Memory),
		"-nographic", "-nic", "none", "-no-reboot",
		"-kernel", a.kernel, "-initrd", initrd.Name(),
		"-append", "console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check")
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("vm: %s: %w", qemuBinary, err)
	}
	con := newConsole(marker, start)
	done := make(chan struct{})
	go func() {
		defer close(done)
		con.read(stdout)
	}()
	// The script has ended once its exit line is read: power-off follows
	// at once, but give qemu a bound.
	go func() {
		select {
		case <-con.exited:
			select {
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
			case <-done:
			}
		case <-done:
		}
	}()
	<-done
	werr := cmd.Wait()
	res, perr := con.result()
	switch {
	case perr == nil:
		return res, nil
	case ctx.Err() != nil:
		return res, fmt.Errorf("vm: %v after %v (%v); console:\n%s", ctx.Err(), time.Since(start).Round(time.Millisecond), perr, lastLines(res.Console, 30))
	default:
		return res, fmt.Errorf("vm: %v (qemu: %v %s); console:\n%s", perr, werr, strings.TrimSpace(stderr.String()), lastLines(res.Console, 30))
	}
}

// console collects the serial console and notes when the markers pass.
type console struct {
	marker        string
	start         time.Time
	mu            sync.Mutex
	buf           strings.Builder
	began, ended  time.Time
	exited        chan struct{}
	exitCode      int
	sawEnd        bool
	scriptStarted int // offset in buf of the script's output
	endAt         int // offset in buf of the EXIT line
}

func newConsole(marker string, start time.Time) *console {
	return &console{marker: marker, start: start, exited: make(chan struct{})}
}

func (c *console) read(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			c.line(line)
		}
		if err != nil {
			return
		}
	}
}

func (c *console) line(line string) {
	now := time.Now()
	line = strings.ReplaceAll(line, "\r", "")
	c.mu.Lock()
	defer c.mu.Unlock()
	text := strings.TrimRight(line, "\n")
	// The START line can follow the firmware's output on the same line.
	switch {
	case c.began.IsZero() && strings.HasSuffix(text, c.marker+" START"):
		c.buf.WriteString(line)
		c.began = now
		c.scriptStarted = c.buf.Len()
		return
	case !c.began.IsZero() && !c.sawEnd && strings.HasPrefix(text, c.marker+" EXIT "):
		code, err := strconv.Atoi(strings.TrimPrefix(text, c.marker+" EXIT "))
		if err == nil {
			c.ended, c.exitCode, c.sawEnd = now, code, true
			c.endAt = c.buf.Len()
			c.buf.WriteString(line)
			close(c.exited)
			return
		}
	}
	c.buf.WriteString(line)
}

// result cuts the script's output out of the console: it lies between the
// START line and the "\n" printed before the EXIT line.
func (c *console) result() (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.buf.String()
	r := Result{Console: all}
	if c.began.IsZero() {
		return r, errors.New("the VM did not reach the script")
	}
	r.BootTime = c.began.Sub(c.start)
	out := all[c.scriptStarted:]
	if !c.sawEnd {
		r.Output = out
		r.RunTime = time.Since(c.began)
		return r, errors.New("the script did not finish")
	}
	out = strings.TrimSuffix(all[c.scriptStarted:c.endAt], "\n") // /init's printf '\n'
	r.Output, r.ExitCode, r.RunTime = out, c.exitCode, c.ended.Sub(c.began)
	return r, nil
}

// initScript is /init. %[1]s is the marker, %[2]s the module directory.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
while read -r m; do
	insmod %[2]s/$m || echo "roamsec-vm: insmod $m failed"
done </etc/roamsec-vm/modules
ip link set lo up
hostname roamsec-vm
cd /root
echo "%[1]s START"
sh /etc/roamsec-vm/script </dev/null 2>&1
rc=$?
printf '\n%[1]s EXIT %%d\n' $rc
sync
poweroff -f
`

// writeInitramfs writes the cpio archive of a run.
func writeInitramfs(w io.Writer, a *artifacts, o Options, marker string) error {
	mods, err := moduleOrder(a.modules, append(append([]string{}, DefaultModules...), o.Modules...))
	if err != nil {
		return err
	}
	modDir := "/lib/modules/" + a.release
	c := newCPIOWriter(w)
	for _, d := range []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc", "/var"} {
		c.Dir(d)
	}
	c.CharDev("/dev/console", 0o600, 5, 1)
	c.CharDev("/dev/null", 0o666, 1, 3)
	c.Symlink("/var/run", "/run")
	c.File("/bin/busybox", a.busybox)
	c.Bytes("/init", 0o755, []byte(fmt.Sprintf(initScript, marker, modDir)))
	c.Bytes("/etc/roamsec-vm/script", 0o755, []byte(o.Script))
	c.Bytes("/etc/roamsec-vm/modules", 0o644, []byte(strings.Join(mods, "\n")+"\n"))
	c.Bytes("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	c.Bytes("/etc/group", 0o644, []byte("root:x:0:\n"))
	c.Bytes("/etc/hosts", 0o644, []byte("127.0.0.1 localhost roamsec-vm\n::1 localhost\n"))
	for _, m := range mods {
		c.File(path.Join(modDir, m), filepath.Join(a.modules, m))
	}
	for _, f := range []string{"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep", "modules.symbols", "modules.symbols.bin", "modules.builtin", "modules.builtin.bin", "modules.order"} {
		if exists(filepath.Join(a.modules, f)) {
			c.File(path.Join(modDir, f), filepath.Join(a.modules, f))
		}
	}
	vmPaths := make([]string, 0, len(o.Files))
	for p := range o.Files {
		vmPaths = append(vmPaths, p)
	}
	sort.Strings(vmPaths)
	for _, p := range vmPaths {
		if !path.IsAbs(p) {
			return fmt.Errorf("vm: file %q: paths inside the VM must be absolute", p)
		}
		c.File(p, o.Files[p])
	}
	return c.Close()
}

// moduleOrder returns the .ko files (relative to the module directory) to
// insmod for the named modules, each after its dependencies, each once.
// Built-in modules are skipped.
func moduleOrder(modDir string, names []string) ([]string, error) {
	dep, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	byName := map[string]string{}
	for m := range dep {
		byName[modName(m)] = m
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(m string) {
		if seen[m] {
			return
		}
		seen[m] = true
		ds := dep[m]
		for i := len(ds) - 1; i >= 0; i-- { // modules.dep lists the deepest last
			visit(ds[i])
		}
		order = append(order, m)
	}
	for _, n := range names {
		n = strings.ReplaceAll(n, "-", "_")
		m, ok := byName[n]
		if !ok {
			if builtin[n] {
				continue
			}
			return nil, fmt.Errorf("vm: no kernel module %q in the cache (kept: %s)", n, strings.Join(keptModuleDirs, " "))
		}
		visit(m)
	}
	return order, nil
}

// modName turns kernel/net/sctp/sctp.ko into sctp, with "-" read as "_".
func modName(p string) string {
	n := path.Base(p)
	n = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, ".xz"), ".zst"), ".ko")
	return strings.ReplaceAll(n, "-", "_")
}
