package vm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildStatic builds the Go package pkg (an import path or a ./relative
// directory, resolved from the current directory) into the static binary
// out for the VM: CGO_ENABLED=0, GOOS=linux, GOARCH=amd64. With test it
// builds the package's test binary (go test -c); run it in the VM as
// "out -test.v -test.run ...".
func BuildStatic(pkg, out string, test bool) error {
	args := []string{"build"}
	if test {
		args = []string{"test", "-c"}
	}
	args = append(args, "-trimpath", "-o", out, pkg)
	cmd := exec.Command(goTool(), args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vm: go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if g := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" && exists(g) {
		return g
	}
	return "/usr/local/go/bin/go"
}

// HostBinary returns the Files entries that let the dynamically linked
// host program prog (a path, or a name looked up in PATH, /usr/sbin and
// /sbin) run in the VM: the program at the same path, its ELF interpreter
// (the dynamic loader, /lib64/ld-linux-x86-64.so.2) and every shared
// library ldd lists, transitively, at the paths ldd prints. Both kernels
// and user lands are Debian 12's, so they fit. For a static program it
// returns the program alone. Libraries loaded with dlopen are not found
// (nft, ip and tc load none), and programs that read data files (tc's
// distribution tables, say) need those added too.
//
// nft (nftables) works this way: HostBinary("nft") plus "nf_tables" in
// Options.Modules (nfnetlink comes with it) is enough for netdev ingress
// drops like test/netns's BlockIngress; rules using other expressions may
// need their nft_* modules.
func HostBinary(prog string) (map[string]string, error) {
	abs, err := lookHost(prog)
	if err != nil {
		return nil, err
	}
	files := map[string]string{abs: abs}
	var stderr bytes.Buffer
	cmd := exec.Command("ldd", abs)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(string(out)+stderr.String(), "not a dynamic executable") {
			return files, nil
		}
		return nil, fmt.Errorf("vm: ldd %s: %v %s", abs, err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
		// "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)".
		f := strings.Fields(sc.Text())
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("vm: %s: library %s not found", abs, f[0])
		case len(f) >= 3 && f[1] == "=>":
			lib = f[2]
		case len(f) >= 1:
			lib = f[0]
		}
		if !filepath.IsAbs(lib) {
			continue // the vDSO, or a line that names no file
		}
		files[lib] = lib
	}
	return files, nil
}

// HostBinaries is HostBinary for several programs, the entries merged.
func HostBinaries(progs ...string) (map[string]string, error) {
	files := map[string]string{}
	for _, p := range progs {
		fs, err := HostBinary(p)
		if err != nil {
			return nil, err
		}
		for k, v := range fs {
			files[k] = v
		}
	}
	return files, nil
}

// hostPackages names the Debian package of programs the tests pack, for
// the error when one is missing.
var hostPackages = map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}

// lookHost finds prog in PATH or, for a bare name, in the sbin
// directories (PATH may lack them for non-root users).
func lookHost(prog string) (string, error) {
	abs, err := exec.LookPath(prog)
	if err != nil && !strings.Contains(prog, "/") {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if p := filepath.Join(d, prog); exists(p) {
				abs, err = p, nil
				break
			}
		}
	}
	if err != nil {
		if pkg := hostPackages[filepath.Base(prog)]; pkg != "" {
			return "", fmt.Errorf("vm: %s is not on this host: install %s (make deps): %w", prog, pkg, err)
		}
		return "", fmt.Errorf("vm: %w", err)
	}
	return filepath.Abs(abs)
}
