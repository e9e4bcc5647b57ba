package install

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// lateName is the gateway's name as the laptop knows it: unresolvable at
// boot (the container's /etc/hosts lacks it, as before the Wi-Fi is up).
const lateName = "gw-late.example"

var initPSK = regexp.MustCompile(`<<'EOF'\n(\S+)\nEOF`)

// TestSystemdBootRoadWarrior boots the cached Debian 12 root under its own
// systemd in the road-warrior namespace of a test bed, installs the road
// warrior's package and runs its unit against a gateway started from the
// shipped conffile after `gateway init` (on the bed's gateway side), as a
// laptop's owner would:
//
//   - `roamsec-roadwarrior init` with the key the gateway's init printed,
//     naming the gateway by a name that does not resolve yet: enable --now
//     returns, the unit stays active (no exit 6, no restart) and retries
//     the name; once the name resolves the tunnel carries ping;
//   - systemctl kill -s KILL: restarted, serving again;
//   - a Go runtime crash (exit 2): restarted;
//   - stopped, then `roadwarrior connect | head -3` (SIGPIPE once head has
//     left): the unit starts again and serves — nothing the dead connect
//     held in the kernel is in the way;
//   - purge leaves no TUN device and no rule.
func TestSystemdBootRoadWarrior(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: systemd-nspawn and network namespaces need root")
	}
	if testing.Short() {
		t.Skip("skipped in -short mode: boots Debian 12 under systemd-nspawn")
	}
	repo := repoRoot(t)
	ensureTool(t, "debootstrap", "debootstrap")
	ensureTool(t, "systemd-nspawn", "systemd-container")
	work := t.TempDir()
	var debs map[string]string
	var debErr, binErr error
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() { debs, debErr = buildDebs(repo, filepath.Join(work, "debs"), version1) })
	wg.Go(func() { binErr = rig.Build(filepath.Join(work, "bin")) })
	cached := cachedRoot(t)
	root := filepath.Join(work, "root")
	copyRoot(t, cached, root)
	wg.Wait()
	if debErr != nil || binErr != nil {
		t.Fatal(debErr, binErr)
	}

	bed := netns.New(t)
	gw, psk := shippedGateway(t, bed, filepath.Join(work, "bin", "gateway"))
	t.Cleanup(func() { gw.Stop(5 * time.Second) })

	ct := boot(t, root, bed.RW)
	ct.unit = "roamsec-roadwarrior"
	ct.run("dpkg", "-i", stageDeb(t, root, debs["roadwarrior"]))
	if err := os.WriteFile(filepath.Join(root, "var/tmp/gw.psk"), []byte(psk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ct.run("roamsec-roadwarrior", "init", "-gateway", lateName, "-psk-file", "/var/tmp/gw.psk")

	// Boot before the network: the name does not resolve.
	ct.run("systemctl", "enable", "--now", "roamsec-roadwarrior")
	if !waitFor(20*time.Second, func() bool {
		j, _ := ct.output("journalctl", "-q", "-u", "roamsec-roadwarrior", "-o", "cat")
		return strings.Contains(j, "cannot resolve the gateway's name yet; retrying")
	}) {
		t.Fatalf("no retry of the unresolvable name:\n%s", ct.status())
	}
	time.Sleep(5 * time.Second) // RestartSec=2s: an exit would show by now
	if st, n := ct.prop("ActiveState"), ct.prop("NRestarts"); st != "active" || n != "0" {
		t.Fatalf("with the gateway's name unresolvable: %s, %s restarts; want active, 0\n%s", st, n, ct.status())
	}
	hosts := filepath.Join(root, "etc/hosts")
	f, err := os.OpenFile(hosts, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644) // minbase has none
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(netns.GWPrimary4.String() + "\t" + lateName + "\n")
	f.Close()
	resolvable := time.Now()
	if n, ok := servingInner(bed, 60); !ok {
		t.Fatalf("no ping through the tunnel after the name resolved\n%s\ngw:\n%s", ct.status(), gw.Log())
	} else {
		t.Logf("serving %v after the name became resolvable (%d pings; back-off up to 30 s, Go rereads /etc/hosts at most every 5 s)", time.Since(resolvable).Round(time.Millisecond), n)
	}

	// SIGKILL, then a runtime crash: both restarted, serving again.
	for i, sig := range []string{"KILL", "QUIT"} {
		ct.run("systemctl", "kill", "-s", sig, "roamsec-roadwarrior")
		killed := time.Now()
		want := string(rune('1' + i))
		if !waitFor(30*time.Second, func() bool { return ct.prop("NRestarts") == want && ct.prop("ActiveState") == "active" }) {
			t.Fatalf("not restarted after SIG%s:\n%s", sig, ct.status())
		}
		if n, ok := servingInner(bed, 30); !ok {
			t.Fatalf("no ping through the tunnel after SIG%s and the restart\n%s\ngw:\n%s", sig, ct.status(), gw.Log())
		} else {
			t.Logf("SIG%s: active and serving again %v later (%d pings; RestartSec=2s)", sig, time.Since(killed).Round(time.Millisecond), n)
		}
	}

	// connect | head -3: head leaves after three lines, connect's next line
	// raises SIGPIPE; then the unit starts again and serves.
	ct.run("systemctl", "stop", "roamsec-roadwarrior")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	// connect's own exit status goes to stderr (not into head).
	out, err := ct.outputCtx(ctx, "sh", "-c", "(roamsec-roadwarrior connect "+lateName+"; echo \"connect exit $?\" >&2) | head -3; echo end")
	cancel()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "end") || !strings.Contains(out, "connect exit 0") {
		t.Fatalf("connect | head -3: %v; want connect to end with exit 0 once head left\n%s", err, out)
	}
	if strings.Contains(out, "IKE_AUTH") {
		t.Fatalf("head passed more than three lines:\n%s", out)
	}
	// It ended as on Ctrl-C, not killed: nothing of it left in the kernel.
	// (head leaves after "IKE_SA_INIT to …", so connect stops during its
	// IKE_AUTH: the gateway may hold the IKE SA it answered until DPD or
	// the unit's INITIAL_CONTACT below; no DELETE is expected here.)
	links, _ := bed.RW.Run("ip", "-br", "link")
	rules, _ := bed.RW.Run("ip", "rule")
	if strings.Contains(links, "roamsec0") || strings.Contains(rules, "fwmark") {
		t.Fatalf("connect | head -3 left kernel state:\n%s\n%s", links, rules)
	}
	if !waitFor(20*time.Second, func() bool {
		ps, _ := ct.output("sh", "-c", "for p in /proc/[0-9]*; do cat $p/comm; echo; done")
		return !strings.Contains(ps, "roamsec-roadwar")
	}) {
		t.Fatalf("connect still running 20 s after head left")
	}
	ct.run("systemctl", "start", "roamsec-roadwarrior")
	if n, ok := servingInner(bed, 30); !ok {
		t.Fatalf("no ping through the tunnel after connect | head -3 and a start\n%s", ct.status())
	} else {
		t.Logf("after connect | head -3: the unit serves again (%d pings)", n)
	}

	ct.run("dpkg", "--purge", "roamsec-roadwarrior")
	links, _ = bed.RW.Run("ip", "-br", "link")
	rules, _ = bed.RW.Run("ip", "rule")
	if strings.Contains(links, "roamsec0") || strings.Contains(rules, "fwmark") {
		t.Errorf("purge left kernel state:\n%s\n%s", links, rules)
	}
}

// shippedGateway starts the gateway from the shipped conffile after
// `gateway init` (its control socket moved into the test's directory) and
// returns it with the key init printed.
func shippedGateway(t *testing.T, bed *netns.Bed, bin string) (*rig.Proc, string) {
	t.Helper()
	dir := t.TempDir()
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "conffiles", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const sock = "control_socket: /run/roamsec/gateway.sock"
	if !strings.Contains(string(shipped), sock) {
		t.Fatalf("the shipped gateway.yaml no longer has %q", sock)
	}
	cfg, err := rig.WriteFile(dir, "gateway.yaml", strings.Replace(string(shipped), sock, "control_socket: "+filepath.Join(dir, "gw.sock"), 1))
	if err != nil {
		t.Fatal(err)
	}
	out, code, err := rig.Run(context.Background(), nil, bin, "init", "-dir", dir, "-address", lateName)
	m := initPSK.FindStringSubmatch(out)
	if err != nil || code != 0 || m == nil {
		t.Fatalf("gateway init: exit %d (%v):\n%s", code, err, out)
	}
	gw, err := rig.Start(bed.GW, bin, 15*time.Second, "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return gw, m[1]
}

// servingInner pings the gateway's inner address (the shipped
// configuration's) through the tunnel, once a second, up to n times.
func servingInner(bed *netns.Bed, n int) (int, bool) {
	for i := 1; i <= n; i++ {
		if _, err := bed.RW.Run("ping", "-c", "1", "-W", "1", "100.64.0.1"); err == nil {
			return i, true
		}
	}
	return n, false
}
