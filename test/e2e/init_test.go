package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

var initPSK = regexp.MustCompile(`<<'EOF'\n(\S+)\nEOF`)

// A first run that works: the gateway's shipped configuration
// (packaging/conffiles/gateway.yaml) refuses to start until `gateway init`
// has written a fresh pre-shared key; `roadwarrior init` takes that key as
// init printed it and writes the road warrior's configuration; both
// daemons then start from exactly those files and carry traffic. Only the
// control socket paths are moved into the test's directory (other runs
// may use /run/roamsec on this machine).
func TestInitFirstRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bed := netns.New(t)
	gwDir, rwDir := t.TempDir(), t.TempDir()
	shipped, err := os.ReadFile(filepath.Join(rig.Root(), "packaging", "conffiles", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ownSocket := func(text, dir, role string) string {
		from := "control_socket: /run/roamsec/" + role + ".sock"
		if !strings.Contains(text, from) {
			t.Fatalf("%s config no longer has %q", role, from)
		}
		return strings.Replace(text, from, "control_socket: "+filepath.Join(dir, role+".sock"), 1)
	}
	gwCfg, err := rig.WriteFile(gwDir, "gateway.yaml", ownSocket(string(shipped), gwDir, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	gwBin, rwBin := filepath.Join(bin, "gateway"), filepath.Join(bin, "roadwarrior")

	// Before init: refused, exit 3, naming the missing key and init.
	out, code, err := rig.Run(context.Background(), bed.GW, gwBin, "-config", gwCfg)
	if err != nil || code != 3 || !strings.Contains(out, "ike.peers[0].psk_file") || !strings.Contains(out, "roamsec-gateway init") {
		t.Fatalf("shipped config before init: exit %d (%v), want 3 naming psk_file and init:\n%s", code, err, out)
	}

	out, code, err = rig.Run(context.Background(), nil, gwBin, "init", "-dir", gwDir, "-address", netns.GWPrimary4.String())
	if err != nil || code != 0 {
		t.Fatalf("gateway init: exit %d (%v):\n%s", code, err, out)
	}
	st, err := os.Stat(filepath.Join(gwDir, "roadwarrior.psk"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("roadwarrior.psk: %v, mode %v; want 0600", err, st.Mode())
	}
	m := initPSK.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "roamsec-roadwarrior init -gateway "+netns.GWPrimary4.String()+" -psk-file -") {
		t.Fatalf("gateway init does not print the road warrior's command line with the key:\n%s", out)
	}
	psk := m[1]
	onDisk, _ := os.ReadFile(filepath.Join(gwDir, "roadwarrior.psk"))
	if strings.TrimSpace(string(onDisk)) != psk || len(psk) < 40 {
		t.Fatalf("printed key (%d bytes) is not the one written", len(psk))
	}
	// A second init keeps the key (no surprise re-keying of every laptop).
	if out, _, _ := rig.Run(context.Background(), nil, gwBin, "init", "-dir", gwDir); !strings.Contains(out, "kept") || !strings.Contains(out, psk) {
		t.Fatalf("second gateway init did not keep the key:\n%s", out)
	}

	// The road warrior: exactly the command line init printed.
	cmd := exec.Command(rwBin, "init", "-dir", rwDir, "-gateway", netns.GWPrimary4.String(), "-psk-file", "-")
	cmd.Stdin = strings.NewReader(psk + "\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("roadwarrior init: %v\n%s", err, b)
	}
	rwText, err := os.ReadFile(filepath.Join(rwDir, "roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rwCfg, err := rig.WriteFile(rwDir, "roadwarrior.yaml", ownSocket(string(rwText), rwDir, "roadwarrior"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ns       *netns.NS
		bin, cfg string
	}{{bed.GW, gwBin, gwCfg}, {bed.RW, rwBin, rwCfg}} {
		if out, code, err := rig.Run(context.Background(), c.ns, c.bin, "-check", "-config", c.cfg); err != nil || code != 0 {
			t.Fatalf("%s -check after init: exit %d (%v):\n%s", filepath.Base(c.bin), code, err, out)
		}
	}

	gw, rw := up(t, bed, gwCfg, rwCfg)
	ok := rig.WaitFor(20*time.Second, func() bool {
		_, err := bed.RW.Run("ping", "-c", "1", "-W", "1", "100.64.0.1")
		return err == nil
	})
	if !ok {
		gst, _, _ := rig.Run(context.Background(), nil, gwBin, "status", "-config", gwCfg)
		rst, _, _ := rig.Run(context.Background(), nil, rwBin, "status", "-config", rwCfg)
		t.Fatalf("no ping to the gateway's inner address 100.64.0.1 through the tunnel\ngw:\n%s\n%s\nrw:\n%s\n%s\n%s", gw.Log(), gst, rw.Log(), rst, netState(bed))
	}
	if !strings.Contains(rw.Log(), "virtual address installed") {
		t.Fatalf("road warrior got no virtual address:\n%s", rw.Log())
	}
	statusAsGroupMember(t, gw, gwBin, gwCfg)
}

// A member of control_group (nobody:nogroup here) runs `gateway status
// -config F` on the shipped configuration: it reads only the control
// socket's path, not the pre-shared key it may not read (0600, root's).
func statusAsGroupMember(t *testing.T, gw *rig.Proc, gwBin, gwCfg string) {
	t.Helper()
	gw.Stop(10 * time.Second)
	dir := filepath.Dir(gwCfg)
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	text, _ := os.ReadFile(gwCfg)
	const from = "# control_group: roamsec"
	if !strings.Contains(string(text), from) {
		t.Fatalf("the shipped configuration no longer has %q", from)
	}
	os.WriteFile(gwCfg, []byte(strings.Replace(string(text), from, "control_group: nogroup", 1)), 0o644)
	os.Chmod(gwCfg, 0o644)
	bed := netns.New(t)
	gw2, err := rig.Start(bed.GW, gwBin, 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Stop(5 * time.Second)
	// The test's binaries are in a root-only directory: a copy nobody can run.
	data, err := os.ReadFile(gwBin)
	if err != nil {
		t.Fatal(err)
	}
	gwBin = filepath.Join(dir, "gateway")
	if err := os.WriteFile(gwBin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gwBin, "status", "-config", gwCfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "IKE: responder as roamsec-gateway") || !strings.Contains(string(out), "IKE messages:") {
		t.Fatalf("status as a control_group member: %v\n%s", err, out)
	}
	// Not a member (nobody with another group): the socket refuses.
	cmd = exec.Command(gwBin, "status", "-config", gwCfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65533}}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("status by a non-member succeeded:\n%s", out)
	}
}
