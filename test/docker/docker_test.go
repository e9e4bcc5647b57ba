package docker

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

const testVersion = "9.8.7-test"

// The image scripts/docker.sh builds, unpacked and run like
// `docker run --cap-add NET_ADMIN --cap-add NET_RAW --device /dev/net/tun
// --network host roamsec/gateway` would run it: its entry point and
// environment, in its own root, in the gateway namespace of the test
// bed. It refuses to run without its pre-shared key; init from the image
// writes one (as into the mounted directory the Dockerfile's run line
// names); a road warrior built from this tree, configured by its own init
// with the printed key, connects; ping passes, the HEALTHCHECK command
// passes while the gateway runs and fails once it stopped, the status
// command works from inside the image like `docker exec`, and SIGTERM
// stops the gateway cleanly.
func TestImageRunsGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: building the image (buildah), mknod and network namespaces need root; run as root")
	}
	if testing.Short() {
		t.Skip("skipped in -short mode: builds the image with buildah and runs it on the test bed")
	}
	repo := rig.Root()

	// Build.
	start := time.Now()
	archive := buildImage(t, repo)
	st, err := os.Stat(archive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image built in %v: %s, %d KiB", time.Since(start).Round(time.Millisecond), archive, st.Size()/1024)

	// Unpack and look at it.
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	img, err := Unpack(archive, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, repo, rootfs, img)
	if t.Failed() {
		t.FailNow()
	}

	// What the runtime adds: --device /dev/net/tun.
	if err := os.MkdirAll(filepath.Join(rootfs, "dev/net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(rootfs, "dev/net/tun"), unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatal(err)
	}

	bed := netns.New(t)
	bin := t.TempDir()
	if err := rig.Build(bin); err != nil {
		t.Fatal(err)
	}
	// The README's first step: init from the image writes the key into
	// the mounted directory (here: the image's /etc/roamsec, as the
	// read-only mount of the second step would show it).
	initOut, err := runIn(rootfs, img, []string{"roamsec-gateway", "init", "-dir", "/etc/roamsec", "-address", netns.GWPrimary4.String()})
	m := regexp.MustCompile(`<<'EOF'\n(\S+)\nEOF`).FindStringSubmatch(initOut)
	if err != nil || m == nil {
		t.Fatalf("init from the image: %v\n%s", err, initOut)
	}
	if out, err := runIn(rootfs, img, append(slices.Clone(img.Config.Entrypoint), "-check")); err != nil || !strings.Contains(out, "configuration OK") {
		t.Fatalf("the image's entry point with -check and the key: %v\n%s", err, out)
	}
	entry := append(slices.Clone(img.Config.Entrypoint), img.Config.Cmd...)
	run := container(rootfs, img, entry)
	gw, err := rig.Start(bed.GW, run[0], 15*time.Second, run[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	if !strings.Contains(gw.Log(), "version="+testVersion) || !strings.Contains(gw.Log(), "config=/etc/roamsec/gateway.yaml") {
		t.Errorf("the gateway is not the image's:\n%s", gw.Log())
	}
	// The health check, run as Docker runs it (exec in the container).
	health := func() error {
		out, err := bed.GW.Run(container(rootfs, img, img.Config.Healthcheck.Test[1:])...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := health(); err != nil {
		t.Errorf("health check while the gateway runs: %v", err)
	}
	// The road warrior, configured by its init with the printed key.
	rwDir := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "roadwarrior"), "init", "-dir", rwDir, "-gateway", netns.GWPrimary4.String(), "-psk-file", "-")
	cmd.Stdin = strings.NewReader(m[1] + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("roadwarrior init: %v\n%s", err, out)
	}
	rwCfg := filepath.Join(rwDir, "roadwarrior.yaml")
	text, _ := os.ReadFile(rwCfg)
	os.WriteFile(rwCfg, []byte(strings.Replace(string(text), "/run/roamsec/roadwarrior.sock", filepath.Join(rwDir, "rw.sock"), 1)), 0o644)
	rw, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", rwCfg)
	if err != nil {
		t.Fatalf("%v\ngateway:\n%s", err, gw.Log())
	}
	t.Cleanup(func() { rw.Stop(5 * time.Second) })

	inner := netip.MustParseAddr("100.64.0.1") // the shipped configuration's inner address
	if !rig.WaitFor(20*time.Second, func() bool { return bed.RW.Ping(inner, time.Second) == nil }) {
		t.Fatalf("ping %s through the tunnel\ngateway:\n%s\nroad warrior:\n%s", inner, gw.Log(), rw.Log())
	}

	// docker exec CONTAINER roamsec-gateway status -json
	statusCmd := container(rootfs, img, []string{"roamsec-gateway", "status", "-json"})
	sout, err := bed.GW.Run(statusCmd...)
	if err != nil {
		t.Fatalf("status from inside the image: %v", err)
	}
	var status struct {
		Daemon, Version string
		SAs             []struct {
			SPI, Dir string
			Packets  uint64
		}
	}
	if err := json.Unmarshal([]byte(sout), &status); err != nil {
		t.Fatalf("status -json: %v\n%s", err, sout)
	}
	var inPackets uint64
	for _, sa := range status.SAs {
		if sa.Dir == "in" || sa.Dir == "inbound" {
			inPackets += sa.Packets
		}
	}
	if status.Daemon != "gateway" || status.Version != testVersion || len(status.SAs) == 0 || inPackets == 0 {
		t.Errorf("status from inside the image: %s", sout)
	}

	// docker stop: SIGTERM (the image's StopSignal), exit 0, nothing left.
	if err := rw.Stop(10 * time.Second); err != nil {
		t.Errorf("road warrior: %v\n%s", err, rw.Log())
	}
	if err := gw.Stop(10 * time.Second); err != nil {
		t.Fatalf("the image's gateway on SIGTERM: %v\n%s", err, gw.Log())
	}
	if !strings.Contains(gw.Log(), "stopped cleanly") {
		t.Errorf("gateway log:\n%s", gw.Log())
	}
	if err := health(); err == nil {
		t.Errorf("health check passes with the gateway stopped")
	}
	links, _ := bed.GW.Run("ip", "-br", "link")
	rules, _ := bed.GW.Run("ip", "rule")
	rules6, _ := bed.GW.Run("ip", "-6", "rule")
	if strings.Contains(links, "roamsec0") || strings.Contains(rules+rules6, "fwmark") {
		t.Errorf("the gateway left behind:\n%s\n%s\n%s", links, rules, rules6)
	}
}

// container is the command line that runs argv like a container runtime
// would, from the image's root: only the image's environment (plus
// HOSTNAME and HOME, as Docker adds them), its working directory, the
// root switched to rootfs. env and nsenter exec in turn, so the pid is
// the program's and signals reach it.
func container(rootfs string, img *Image, argv []string) []string {
	env := slices.Clone(img.Config.Env)
	has := func(k string) bool {
		return slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
	}
	if !has("PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if !has("HOSTNAME") {
		env = append(env, "HOSTNAME=roamsec-gateway")
	}
	if !has("HOME") {
		env = append(env, "HOME=/")
	}
	wd := img.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	// nsenter is the host's, found with the host's PATH before env -i.
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		nsenter = "/usr/bin/nsenter"
	}
	cmd := append([]string{"env", "-i"}, env...)
	cmd = append(cmd, nsenter, "--root="+rootfs, "--wdns="+wd, "--")
	return append(cmd, argv...)
}

// checkImage checks the image's configuration and exactly what it holds.
func checkImage(t *testing.T, repo, rootfs string, img *Image) {
	t.Helper()
	c := img.Config
	if img.OS != "linux" || img.Architecture != "amd64" {
		t.Errorf("image platform %s/%s", img.OS, img.Architecture)
	}
	if got, want := strings.Join(c.Entrypoint, " "), "/usr/sbin/roamsec-gateway -config /etc/roamsec/gateway.yaml"; got != want {
		t.Errorf("Entrypoint %q, want %q", got, want)
	}
	if len(c.Cmd) != 0 || c.User != "" {
		t.Errorf("Cmd %q, User %q: want none (root, the entry point alone)", c.Cmd, c.User)
	}
	if !slices.Contains(c.Env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin") {
		t.Errorf("Env %q lacks PATH", c.Env)
	}
	// RFC 7296 §2: IKE on UDP 500; §2.23 and RFC 3948: 4500 after NAT
	// detection, for IKE and ESP.
	for _, port := range []string{"500/udp", "4500/udp"} {
		if _, ok := c.ExposedPorts[port]; !ok {
			t.Errorf("ExposedPorts %v lacks %s", c.ExposedPorts, port)
		}
	}
	if h := c.Healthcheck; h == nil || len(h.Test) < 2 || h.Test[0] != "CMD" || !slices.Contains(h.Test, "status") || h.Interval <= 0 || h.Retries <= 0 {
		t.Errorf("Healthcheck %+v: want CMD roamsec-gateway status, with an interval and retries", h)
	}
	if c.StopSignal != "" && c.StopSignal != "SIGTERM" {
		t.Errorf("StopSignal %q: the gateway cleans up on SIGTERM", c.StopSignal)
	}
	if c.Labels["org.opencontainers.image.version"] != testVersion {
		t.Errorf("labels %v: no version %s", c.Labels, testVersion)
	}
	if img.RefName != "roamsec/gateway:latest" {
		t.Errorf("ref.name %q, want roamsec/gateway:latest", img.RefName)
	}

	// Exactly three files, root's, with these modes: nothing else
	// (FROM scratch: no shell, no libc).
	want := map[string]fs.FileMode{
		"etc/roamsec/gateway.yaml":          0o644, // no secret: the key is mounted
		"etc/ssl/certs/ca-certificates.crt": 0o644,
		"usr/sbin/roamsec-gateway":          0o755,
	}
	var files []string
	filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		rel, _ := filepath.Rel(rootfs, p)
		info, _ := d.Info()
		st := info.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || st.Gid != 0 {
			t.Errorf("/%s owned by %d:%d, want root", rel, st.Uid, st.Gid)
		}
		if d.IsDir() {
			return nil
		}
		files = append(files, rel)
		if m, ok := want[rel]; !ok || info.Mode() != m {
			t.Errorf("/%s: mode %v, want a regular file %v", rel, info.Mode(), m)
		}
		return nil
	})
	sort.Strings(files)
	if len(files) != len(want) {
		t.Errorf("image files %q, want only %d", files, len(want))
	}
	same := func(inImage, onHost string) {
		a, err1 := os.ReadFile(filepath.Join(rootfs, inImage))
		b, err2 := os.ReadFile(onHost)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("/%s differs from %s (%v, %v)", inImage, onHost, err1, err2)
		}
	}
	same("etc/roamsec/gateway.yaml", filepath.Join(repo, "packaging/conffiles/gateway.yaml"))
	same("etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt")

	bin := filepath.Join(rootfs, "usr/sbin/roamsec-gateway")
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	libs, _ := ef.ImportedLibraries()
	if ef.Section(".interp") != nil || len(libs) > 0 || ef.Machine != elf.EM_X86_64 {
		t.Errorf("%s: not a static amd64 binary (libs %v, machine %v)", bin, libs, ef.Machine)
	}
	// Without the pre-shared key mounted it refuses to run, saying why.
	if out, err := runIn(rootfs, img, append(slices.Clone(c.Entrypoint), "-check")); err == nil || !strings.Contains(out, "roadwarrior.psk") || !strings.Contains(out, "init") {
		t.Errorf("the image's entry point with -check and no key: %v, want a refusal naming the key and init\n%s", err, out)
	}
	if out, err := runIn(rootfs, img, []string{"roamsec-gateway", "-version"}); err != nil || strings.TrimSpace(out) != "roamsec gateway "+testVersion {
		t.Errorf("roamsec-gateway -version in the image: %q (%v)", out, err)
	}
}

// runIn runs argv from the image's root (in our network namespace) and
// returns its combined output.
func runIn(rootfs string, img *Image, argv []string) (string, error) {
	c := container(rootfs, img, argv)
	out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
	return string(out), err
}

// buildImage runs scripts/docker.sh and returns the archive it made.
func buildImage(t *testing.T, repo string) string {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(repo, "scripts/docker.sh"), "-o", t.TempDir())
	cmd.Env = append(os.Environ(), "VERSION="+testVersion)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/docker.sh: %v\n%s", err, stderr.String())
	}
	archive := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(archive); err != nil {
		t.Fatalf("docker.sh printed %q: %v", archive, err)
	}
	return archive
}
