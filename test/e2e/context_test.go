package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/strongswan"
)

// contextSeqJump is the -seq-jump of the test's context put: small enough
// to see in the capture, far more than the old gateway sends between get
// and its death at 100 packets a second.
const contextSeqJump = 100000

// TestContextPutCarriesOnAfterSIGKILL_Seed004 is seed 004's scenario on
// the real daemons: a road warrior talks through gateway 1; `gateway
// context get -all` seals its IKE SA and Child SAs with the cluster key;
// gateway 1 dies by SIGKILL; a second gateway process, same configuration
// and service addresses (no standby machinery), takes the file with
// `gateway context put`. Traffic resumes with the same SPIs and no
// IKE_SA_INIT; later the road warrior's DPD and Child SA rekeys go to the
// new gateway and work. The capture of the gateway's links shows no (SPI,
// sequence number) sent twice: the jump. Road warriors: ours (RFC 3554
// mode, path monitoring) and strongSwan 5.9 (virtual address).
func TestContextPutCarriesOnAfterSIGKILL_Seed004(t *testing.T) {
	t.Run("roamsec", func(t *testing.T) {
		bed := netns.New(t)
		gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "10s")
		contextTakeover(t, bed, gwCfg, func(gw1 *rig.Proc) func() string {
			rw, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", rwCfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rw.Stop(5 * time.Second) })
			if !rig.WaitFor(15*time.Second, func() bool { return strings.Count(gw1.Log(), "Child SA installed") >= 2 }) {
				t.Fatalf("no Child SAs\nrw:\n%s\ngw:\n%s", rw.Log(), gw1.Log())
			}
			return rw.Log
		})
	})
	t.Run("strongswan", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		bed := netns.New(t)
		dir := t.TempDir()
		cr := pskCreds(t)
		gwCfg := writeCfg(t, dir, "gw.yaml", fmt.Sprintf(`role: gateway
log: {level: debug}
control_socket: %s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 100.64.0.0/24}
transport:
  listen: [192.0.2.1, 198.51.100.1]
ike:
  id: %s
  local_ts: [203.0.113.0/24]
%s`, dir, gwID, cr.ourIKE(dir, true)))
		contextTakeover(t, bed, gwCfg, func(gw1 *rig.Proc) func() string {
			// strongSwan checks liveness every 2 s and rekeys its Child SA
			// every ~10 s: both must reach gateway 2 and work.
			swan := startSwan(t, bed.RW, "rw", fmt.Sprintf(`connections {
	home {
		version = 2
		remote_addrs = %s
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-ecp256
		rekey_time = 0
		dpd_delay = 2s
		local {
			%s
			id = %s
		}
		remote {
			%s
			id = %s
		}
		children {
			home {
				remote_ts = 203.0.113.0/24
				esp_proposals = aes256gcm16
				rekey_time = 10s
				rand_time = 1s
			}
		}
	}
}
%s`, netns.GWPrimary4, cr.swanLocal, rwID, cr.swanRemote, gwID, cr.swanSecrets), cr.swanFiles)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := swan.Initiate(ctx, "home", "home"); err != nil {
				t.Fatalf("strongSwan initiate: %v\nroamsec:\n%s", err, gw1.Log())
			}
			if _, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("home")); err != nil {
				t.Fatal(err)
			}
			return func() string { return swan.Tail(80) }
		})
	})
}

// contextTakeover runs the scenario with the road warrior startPeer
// starts against gateway 1 (it returns its log).
func contextTakeover(t *testing.T, bed *netns.Bed, gwCfg string, startPeer func(gw1 *rig.Proc) func() string) {
	dir := filepath.Dir(gwCfg)
	keyFile := filepath.Join(dir, "cluster.key")
	if out, err := exec.Command(filepath.Join(bin, "gateway"), "ha", "keygen", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("gateway ha keygen: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(gwCfg)
	os.WriteFile(gwCfg, append(data, []byte("ha: {cluster_key: cluster.key}\n")...), 0o600)
	if out, err := exec.Command(filepath.Join(bin, "gateway"), "-check", "-offline", "-config", gwCfg).CombinedOutput(); err != nil {
		t.Fatalf("-check with ha.cluster_key: %v\n%s", err, out)
	}
	stopCapture, err := rig.Capture(bed.GW, t.TempDir(), netns.IfPrimary, netns.IfSecondary)
	if err != nil {
		t.Fatal(err)
	}
	defer stopCapture()
	gw1, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer gw1.Kill()
	rwLog := startPeer(gw1)
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	s, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(time.Now().Add(-100 * time.Millisecond)).IsZero() }) {
		t.Fatalf("no traffic through gateway 1\nrw:\n%s\ngw:\n%s", rwLog(), gw1.Log())
	}
	time.Sleep(time.Second) // a hundred sequence numbers each way

	// One IKE SA by its peer's identity.
	if out, err := exec.Command(filepath.Join(bin, "gateway"), "context", "get", "-config", gwCfg, rwID).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("gateway context get: 1 IKE SAs")) {
		t.Fatalf("context get %s: %v\n%.300q", rwID, err, out)
	}
	file := filepath.Join(dir, "context.sealed")
	get := exec.Command(filepath.Join(bin, "gateway"), "context", "get", "-all", "-config", gwCfg)
	var stderr bytes.Buffer
	get.Stderr = &stderr
	sealed, err := get.Output()
	if err != nil {
		t.Fatalf("context get: %v\n%s\ngw:\n%s", err, stderr.String(), gw1.Log())
	}
	tKill := time.Now()
	gw1.Kill() // SIGKILL
	os.WriteFile(file, sealed, 0o600)
	if bytes.Contains(sealed, []byte("rw1@roamsec.example")) || bytes.Contains(sealed, []byte(`"sk_d"`)) {
		t.Fatal("the context file shows its contents: it must be sealed")
	}
	gw1Children := childSPIs(gw1.Log())

	gw2, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Stop(5 * time.Second)
	var put []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cmd := exec.Command(filepath.Join(bin, "gateway"), "context", "put", "-seq-jump", fmt.Sprint(contextSeqJump), "-config", gwCfg, file)
		if put, err = cmd.CombinedOutput(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	tPut := time.Now()
	if err != nil || !strings.Contains(string(put), "imported 1 IKE SAs") {
		t.Fatalf("context put: %v\n%s\ngw2:\n%s", err, put, gw2.Log())
	}
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(tPut).IsZero() }) {
		t.Fatalf("no traffic after context put\nrw:\n%s\ngw2:\n%s\n%s", rwLog(), gw2.Log(), netState(bed))
	}
	outage := s.FirstReplyAfter(tKill).Sub(tKill)
	// The same file again: refused (the SAs are here), said, exit code.
	again, err := exec.Command(filepath.Join(bin, "gateway"), "context", "put", "-config", gwCfg, file).CombinedOutput()
	if err == nil || !strings.Contains(string(again), "already installed here") {
		t.Errorf("a second context put of the same file: %v\n%s", err, again)
	}
	// The same Child SAs, by SPI, on the new gateway.
	gw2Children := childSPIs(gw2.Log())
	for spis := range gw1Children {
		if !gw2Children[spis] {
			t.Errorf("Child SA %s of gateway 1 not carried on by gateway 2 (it has %v)", spis, gw2Children)
		}
	}
	// The road warrior's own rekeys (every ~10 s) and liveness checks
	// (every 2 s) now go to gateway 2.
	if !rig.WaitFor(25*time.Second, func() bool { return strings.Contains(gw2.Log(), "Child SA rekeyed") }) {
		t.Fatalf("no Child SA rekey with gateway 2\nrw:\n%s\ngw2:\n%s", rwLog(), gw2.Log())
	}
	tRekey := time.Now()
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(tRekey).IsZero() }) {
		t.Fatalf("no traffic after the rekey with gateway 2\nrw:\n%s\ngw2:\n%s", rwLog(), gw2.Log())
	}
	s.Close()
	sent, got := s.Counts()
	checkContextWire(t, stopCapture(), tKill)
	t.Logf("context file %d bytes; outage from SIGKILL to the first answered echo %v (kill to put %v); stream %d sent, %d answered",
		len(sealed), outage.Round(time.Millisecond), tPut.Sub(tKill).Round(time.Millisecond), sent, got)
	if l := gw2.Log(); strings.Contains(l, "IKE SA failed") || strings.Contains(l, "IKE SA down") || strings.Contains(l, "IKE SA established") {
		t.Errorf("gateway 2's IKE SA went down, or a new one came up:\n%s", l)
	}
}

var installedRE = regexp.MustCompile(`Child SA installed.*spi_in=(0x[0-9a-f]+) spi_out=(0x[0-9a-f]+)`)

// childSPIs are the installed Child SAs' "in/out" SPIs, from a gateway's
// log.
func childSPIs(log string) map[string]bool {
	out := map[string]bool{}
	for _, m := range installedRE.FindAllStringSubmatch(log, -1) {
		out[m[1]+"/"+m[2]] = true
	}
	return out
}

// checkContextWire reads the capture of the gateway's links: no ESP
// (SPI, sequence number) the gateway side sent twice, and no IKE_SA_INIT
// (exchange 34) after the kill.
func checkContextWire(t *testing.T, file string, tKill time.Time) {
	t.Helper()
	esp, gw := checkGatewayWire(t, file, tKill, func(src string) bool { return src == "192.0.2.1" || src == "198.51.100.1" })
	fromGW, afterKill, maxBefore := len(gw), 0, 0
	jumped := false
	for _, p := range gw {
		if p.at.After(tKill) {
			afterKill++
			jumped = jumped || p.seq > contextSeqJump
		} else {
			maxBefore = max(maxBefore, p.seq)
		}
	}
	if fromGW == 0 || afterKill == 0 || !jumped {
		t.Fatalf("capture: %d ESP packets, %d from the gateway, %d after the kill, jump seen %v", esp, fromGW, afterKill, jumped)
	}
	t.Logf("wire: %d ESP packets, %d from the gateway side, none twice (highest sequence before the kill %d; after it, past the jump of %d); no IKE_SA_INIT after the kill",
		esp, fromGW, maxBefore, contextSeqJump)
}
