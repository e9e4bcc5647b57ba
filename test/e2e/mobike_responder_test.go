package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/strongswan"
)

// strongSwan 5.9 as the road warrior, roamsec as the gateway with the
// shipped config (packaging/examples/gateway-ike.yaml): the proposals
// strongSwan users configure, and MOBIKE (RFC 4555) with roamsec as the
// responder.

// startShippedGateway runs the gateway on the shipped IKEv2 example, with
// its control socket in a temporary directory, debug logs, the test PSK
// in rw1.psk next to it, and the replacements in edits (old, new, ...).
func startShippedGateway(t *testing.T, bed *netns.Bed, edits ...string) (gw *rig.Proc, cfgPath string) {
	t.Helper()
	data, err := os.ReadFile(rig.ExampleConfig("gateway-ike.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text := strings.Replace(string(data), "/run/roamsec/", dir+"/", 1)
	text = strings.Replace(text, "level: info", "level: debug", 1)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(text, edits[i]) {
			t.Fatalf("the shipped gateway config has no %q to replace", edits[i])
		}
		text = strings.Replace(text, edits[i], edits[i+1], 1)
	}
	cfg := writeCfg(t, dir, "gateway.yaml", text)
	writeCfg(t, dir, "rw1.psk", testPSK+"\n")
	gw, err = rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	return gw, cfg
}

// swanRoadWarriorConn is one strongSwan road-warrior connection in
// virtual-address mode (vips = 0.0.0.0) to our gateway, PSK, with extra
// connection and child lines.
func swanRoadWarriorConn(name, conn, child string) string {
	tab := func(s, in string) string { return in + strings.ReplaceAll(s, "\n", "\n"+in) }
	return fmt.Sprintf(`	%s {
		version = 2
		remote_addrs = %s
		vips = 0.0.0.0
%s
		local {
			auth = psk
			id = %s
		}
		remote {
			auth = psk
			id = %s
		}
		children {
			%s {
				remote_ts = 203.0.113.0/24
%s
			}
		}
	}
`, name, netns.GWPrimary4, tab(conn, "\t\t"), rwID, gwID, name, tab(child, "\t\t\t\t"))
}

func swanRoadWarriorConf(conns ...string) string {
	return "connections {\n" + strings.Join(conns, "") + "}\n" + pskCreds(nil).swanSecrets
}

// startInitGateway runs the gateway as a new user does: the shipped
// packaging/conffiles/gateway.yaml after `gateway init` wrote its key.
// Only the control socket moves into the test's directory (other runs use
// /run/roamsec on this machine). It returns the gateway, its config's path
// and the key init printed.
func startInitGateway(t *testing.T, bed *netns.Bed) (gw *rig.Proc, cfgPath, psk string) {
	t.Helper()
	shipped, err := os.ReadFile(filepath.Join(rig.Root(), "packaging", "conffiles", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const sock = "control_socket: /run/roamsec/gateway.sock"
	if !strings.Contains(string(shipped), sock) {
		t.Fatalf("the shipped config no longer has %q", sock)
	}
	cfgPath = writeCfg(t, dir, "gateway.yaml", strings.Replace(string(shipped), sock, "control_socket: "+filepath.Join(dir, "gateway.sock"), 1))
	gwBin := filepath.Join(bin, "gateway")
	out, code, err := rig.Run(context.Background(), nil, gwBin, "init", "-dir", dir, "-address", netns.GWPrimary4.String())
	m := initPSK.FindStringSubmatch(out)
	if err != nil || code != 0 || m == nil {
		t.Fatalf("gateway init: exit %d (%v):\n%s", code, err, out)
	}
	gw, err = rig.Start(bed.GW, gwBin, 15*time.Second, "-config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	return gw, cfgPath, m[1]
}

// The identities and the inner address of the shipped config.
const (
	initGWID    = "roamsec-gateway"
	initRWID    = "roadwarrior@roamsec"
	initGWInner = "100.64.0.1"
)

// swanInitConn is a strongSwan road warrior connection (virtual address,
// PSK) to the gateway of startInitGateway, with extra connection and
// child lines.
func swanInitConn(name, conn, child string) string {
	c := swanRoadWarriorConn(name, conn, child)
	c = strings.Replace(c, "id = "+rwID, "id = "+initRWID, 1)
	c = strings.Replace(c, "id = "+gwID, "id = "+initGWID, 1)
	return strings.Replace(c, "remote_ts = 203.0.113.0/24", "remote_ts = "+initGWInner+"/32", 1)
}

func swanInitConf(psk string, conns ...string) string {
	return "connections {\n" + strings.Join(conns, "") + "}\n" +
		fmt.Sprintf("secrets {\n\tike-1 {\n\t\tid-1 = %s\n\t\tid-2 = %s\n\t\tsecret = %q\n\t}\n}\n", initRWID, initGWID, psk)
}

// pingInit pings the shipped gateway's inner address from the road warrior.
func pingInit(t *testing.T, bed *netns.Bed, what string, logs func() string) {
	t.Helper()
	if err := pingOK(bed.RW, initGWInner); err != nil {
		t.Fatalf("%s: ping %s through the tunnel: %v\n%s", what, initGWInner, err, logs())
	}
}

// TestStrongSwanProposalsShippedGateway: strongSwan road warriors with
// the proposals their users commonly configure connect to the shipped
// gateway config (packaging/conffiles/gateway.yaml after `gateway init`:
// no proposals in it, so everything we implement, any combination), pass
// traffic, rekey their Child SA, with a PFS group where their ESP
// proposal names one, and rekey their IKE SA (RFC 7296 §2.18: the new
// SA's own KE, the suite kept). Last, a Child SA accepted without PFS and
// rekeyed with a group we do not implement (MODP-2048) gets
// NO_PROPOSAL_CHOSEN, never INVALID_KE_PAYLOAD for a group strongSwan did
// not offer (RFC 7296 §1.3), and the old Child SA keeps working.
func TestStrongSwanProposalsShippedGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cells := []struct {
		name, ike, esp string
		pfs            string // the DH group strongSwan's vici names for the rekeyed Child SA; "" none
	}{
		{"aes128gcm-prfsha384-x25519-pfs", "aes128gcm16-prfsha384-curve25519", "aes128gcm16-curve25519", "CURVE_25519"},
		{"aes256gcm-prfsha512-ecp384-pfs", "aes256gcm16-prfsha512-ecp384", "aes256gcm16-ecp384", "ECP_384"},
		{"aes256gcm-prfsha512-x25519", "aes256gcm16-prfsha512-curve25519", "aes256gcm16", ""},
		{"chacha-prfsha256-ecp256", "chacha20poly1305-prfsha256-ecp256", "chacha20poly1305", ""},
		{"chacha-prfsha384-x25519-pfs", "chacha20poly1305-prfsha384-curve25519", "chacha20poly1305-curve25519", "CURVE_25519"},
		{"two-suites", "aes128gcm16-prfsha256-ecp384,aes256gcm16-prfsha384-ecp256", "aes256gcm16,aes128gcm16", ""},
	}
	var conns []string
	for _, c := range cells {
		conns = append(conns, swanInitConn(c.name, "proposals = "+c.ike+"\nrekey_time = 0",
			"esp_proposals = "+c.esp+"\nrekey_time = 0"))
	}
	conns = append(conns, swanInitConn("modp", "proposals = aes256gcm16-prfsha256-ecp256\nrekey_time = 0",
		"esp_proposals = aes256gcm16-modp2048\nrekey_time = 0"),
		// KE with MODP-2048 first, ECP-256 also offered: INVALID_KE_PAYLOAD
		// naming ECP-256, then established (RFC 7296 §1.2).
		swanInitConn("invalidke", "proposals = aes256gcm16-prfsha256-modp2048-ecp256\nrekey_time = 0", "rekey_time = 0"),
		// Nothing we implement (AES-CBC, SHA-1, MODP-2048): refused, and
		// the refusal says what was offered and what we allow.
		swanInitConn("nothing", "proposals = aes128-sha1-modp2048\nrekey_time = 0", "rekey_time = 0"))
	bed := netns.New(t)
	gw, _, psk := startInitGateway(t, bed)
	swan := startSwan(t, bed.RW, "rw", swanInitConf(psk, conns...), nil)
	logs := func() string { return "roamsec:\n" + gw.Log() + "\nstrongSwan:\n" + swan.Tail(80) }
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) { proposalCell(t, bed, swan, c.name, c.esp, c.pfs, logs) })
	}
	for _, bad := range []string{"no proposal in common", "CREATE_CHILD_SA refused", "INVALID_KE_PAYLOAD", "rekey refused"} {
		if strings.Contains(gw.Log(), bad) {
			t.Errorf("gateway log has %q:\n%s", bad, gw.Log())
		}
	}
	t.Run("rekey with MODP-2048 refused", func(t *testing.T) { modpRekeyRefused(t, bed, gw, swan, logs) })
	t.Run("INVALID_KE_PAYLOAD names an offered group", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := swan.Initiate(ctx, "invalidke", "invalidke"); err != nil {
			t.Fatalf("initiate: %v\n%s", err, logs())
		}
		sas, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("invalidke"))
		if err != nil {
			t.Fatal(err)
		}
		if ike, _ := strongswan.FindIKE(sas, "invalidke"); ike.DH != "ECP_256" {
			t.Errorf("IKE SA's group %q, want ECP_256 (the offered group we implement)", ike.DH)
		}
		if !strings.Contains(swan.Log(), "peer didn't accept DH group MODP_2048, it requested ECP_256") {
			t.Errorf("strongSwan did not get INVALID_KE_PAYLOAD naming ECP_256\n%s", logs())
		}
		pingInit(t, bed, "after INVALID_KE_PAYLOAD", logs)
		if err := swan.TerminateWait(ctx, "invalidke"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("refusal logs the offer and what we allow", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := swan.Initiate(ctx, "nothing", "nothing"); err == nil {
			t.Fatalf("a proposal with nothing we implement was accepted\n%s", logs())
		}
		if !strings.Contains(swan.Log(), "NO_PROPOSAL_CHOSEN") {
			t.Errorf("strongSwan saw no NO_PROPOSAL_CHOSEN\n%s", logs())
		}
		var line string
		for _, l := range strings.Split(gw.Log(), "\n") {
			if strings.Contains(l, "IKE_SA_INIT refused: no proposal in common") {
				line = l
			}
		}
		if !strings.Contains(line, "offered=") || !strings.Contains(line, "MODP") || !strings.Contains(line, "allowed=") || !strings.Contains(line, "gcm") {
			t.Errorf("the refusal does not log what strongSwan offered and what we allow: %q\n%s", line, gw.Log())
		}
		t.Logf("%s", line)
	})
}

// proposalCell connects one strongSwan connection, pings, rekeys its
// Child SA (checking the PFS group), then its IKE SA (checking the suite
// is kept and the SPIs change), pings after each, and closes it.
func proposalCell(t *testing.T, bed *netns.Bed, swan *strongswan.Charon, name, esp, pfs string, logs func() string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := swan.Initiate(ctx, name, name); err != nil {
		t.Fatalf("strongSwan %s: initiate: %v\n%s", name, err, logs())
	}
	sas, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled(name))
	if err != nil {
		t.Fatalf("%v\n%s", err, logs())
	}
	ike0, _ := strongswan.FindIKE(sas, name)
	child0, _ := ike0.Child(name)
	t.Logf("%s: IKE %s-%d/%s/%s, ESP %s-%d", name, ike0.Encr, ike0.KeySize, ike0.PRF, ike0.DH, child0.Encr, child0.KeySize)
	pingInit(t, bed, name+": before the rekeys", logs)
	if err := swan.Rekey(ctx, name, false); err != nil {
		t.Fatal(err)
	}
	sas, err = swan.WaitSA(ctx, 15*time.Second, func(sas []strongswan.IKESA) bool {
		i, ok := strongswan.FindIKE(sas, name)
		ch, ok2 := i.Child(name)
		return ok && ok2 && ch.State == "INSTALLED" && ch.SPIIn != child0.SPIIn
	})
	if err != nil {
		t.Fatalf("Child SA rekey with %s: %v\n%s", esp, err, logs())
	}
	ike, _ := strongswan.FindIKE(sas, name)
	child1, _ := ike.Child(name)
	if child1.DH != pfs {
		t.Errorf("rekeyed Child SA's PFS group %q, want %q", child1.DH, pfs)
	}
	pingInit(t, bed, name+": after the Child SA rekey", logs)
	if err := swan.Rekey(ctx, name, true); err != nil {
		t.Fatal(err)
	}
	sas, err = swan.WaitSA(ctx, 15*time.Second, func(sas []strongswan.IKESA) bool {
		i, ok := strongswan.FindIKE(sas, name)
		return ok && i.State == "ESTABLISHED" && i.SPIi != ike0.SPIi
	})
	if err != nil {
		t.Fatalf("IKE SA rekey: %v\n%s", err, logs())
	}
	ike, _ = strongswan.FindIKE(sas, name)
	if ike.Encr != ike0.Encr || ike.KeySize != ike0.KeySize || ike.PRF != ike0.PRF || ike.DH != ike0.DH {
		t.Errorf("IKE SA rekeyed to %s-%d/%s/%s, want the suite kept (%s-%d/%s/%s)", ike.Encr, ike.KeySize, ike.PRF, ike.DH, ike0.Encr, ike0.KeySize, ike0.PRF, ike0.DH)
	}
	pingInit(t, bed, name+": after the IKE SA rekey", logs)
	if err := swan.TerminateWait(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// modpRekeyRefused: a Child SA accepted without PFS, rekeyed by
// strongSwan with MODP-2048 (which we do not implement): NO_PROPOSAL_CHOSEN
// (RFC 7296 §1.3: INVALID_KE_PAYLOAD only names a group the peer
// offered), the refusal logs the offer, the old Child SA keeps working.
func modpRekeyRefused(t *testing.T, bed *netns.Bed, gw *rig.Proc, swan *strongswan.Charon, logs func() string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := swan.Initiate(ctx, "modp", "modp"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, logs())
	}
	sas, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("modp"))
	if err != nil {
		t.Fatal(err)
	}
	ike, _ := strongswan.FindIKE(sas, "modp")
	child0, _ := ike.Child("modp")
	if err := swan.Rekey(ctx, "modp", false); err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(10*time.Second, func() bool { return strings.Contains(gw.Log(), "CREATE_CHILD_SA refused") }) {
		t.Fatalf("the MODP-2048 rekey was not refused\n%s", logs())
	}
	if !rig.WaitFor(5*time.Second, func() bool { return strings.Contains(swan.Log(), "NO_PROPOSAL_CHOSEN") }) {
		t.Errorf("strongSwan saw no NO_PROPOSAL_CHOSEN\n%s", logs())
	}
	if strings.Contains(swan.Log(), "INVALID_KE_PAYLOAD") {
		t.Errorf("INVALID_KE_PAYLOAD for a group strongSwan did not offer\n%s", logs())
	}
	if !strings.Contains(gw.Log(), "DH_MODP2048") {
		t.Errorf("the refusal does not log what strongSwan offered\n%s", gw.Log())
	}
	sas, err = swan.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ike, _ = strongswan.FindIKE(sas, "modp")
	if c, ok := ike.Child("modp"); !ok || c.SPIIn != child0.SPIIn {
		t.Fatalf("the old Child SA is gone after the refused rekey: %s", strongswan.FormatSAs(sas))
	}
	pingInit(t, bed, "the old Child SA after the refused rekey", logs)
}

// TestStrongSwanCrashReconnectReplacesOldSA: a strongSwan road warrior
// killed with SIGKILL (no DELETE) and started again connects at once; its
// INITIAL_CONTACT makes the gateway drop the dead IKE SA then, not after
// DPD (30 s in the shipped config): one IKE SA, one Child SA, traffic.
func TestStrongSwanCrashReconnectReplacesOldSA(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := newMOBIKEBed(t, mobikeModes[0], false)
	st0 := status(t, "gateway", b.gwCfg)
	if err := b.swan.Kill(); err != nil {
		t.Fatal(err)
	}
	again := startSwan(t, b.bed.RW, "rw-again", swanMOBIKERoadWarrior(mobikeModes[0]), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := again.Initiate(ctx, "home", "home"); err != nil {
		t.Fatalf("initiate after the crash: %v\n%s", err, b.gw.Log())
	}
	if _, err := again.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("home")); err != nil {
		t.Fatal(err)
	}
	var st daemon.Status
	if !rig.WaitFor(5*time.Second, func() bool {
		st = status(t, "gateway", b.gwCfg)
		return st.IKE != nil && len(st.IKE.SAs) == 1 && len(st.Children) == 1 && st.IKE.SAs[0].SPIi != st0.IKE.SAs[0].SPIi
	}) {
		t.Fatalf("gateway after the reconnect: %+v, %d Child SAs; want the new IKE SA only\n%s", st.IKE, len(st.Children), b.gw.Log())
	}
	if !strings.Contains(b.gw.Log(), "INITIAL_CONTACT: removing the old IKE SA") {
		t.Errorf("the old IKE SA went, but not by INITIAL_CONTACT\n%s", b.gw.Log())
	}
	t.Logf("old IKE SA replaced %v after the new charon initiated (DPD would take up to %v)", time.Since(start).Round(time.Millisecond), 2*30*time.Second+63*time.Second)
	pingThrough(t, b.bed, "after the reconnect", b.gw.Log, func() string { return again.Tail(60) })
}

// TestStrongSwanDeadRoadWarriorGoneWithinBound: a strongSwan road warrior
// killed with SIGKILL (no DELETE, never back) is gone from the gateway,
// IKE SA and Child SAs, within the configured bound (RFC 7296 §2.4: DPD
// plus the check's retransmissions, ike.Config.PeerGoneWithin): here dpd
// 2 s, retransmit_timeout 200 ms, 2 retransmissions: 2 x 2 s + 0.2 s x
// (2^3 - 1) = 5.4 s. The wait allows 3 s more for a loaded machine's
// timers and the status polling.
func TestStrongSwanDeadRoadWarriorGoneWithinBound(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const bound = 5400 * time.Millisecond
	bed := netns.New(t)
	gw, cfg := startShippedGateway(t, bed, "  dpd: 30s", "  dpd: 2s\n  retransmit_timeout: 200ms\n  retransmit_tries: 2\n ")
	swan := startSwan(t, bed.RW, "rw", swanRoadWarriorConf(swanRoadWarriorConn("home", "dpd_delay = 0", "")), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := swan.Initiate(ctx, "home", "home"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, gw.Log())
	}
	if _, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("home")); err != nil {
		t.Fatal(err)
	}
	if st := status(t, "gateway", cfg); st.IKE == nil || len(st.IKE.SAs) != 1 || len(st.Children) != 1 {
		t.Fatalf("gateway before the kill: %+v, %d Child SAs", st.IKE, len(st.Children))
	}
	if err := swan.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var st daemon.Status
	if !rig.WaitFor(bound+3*time.Second, func() bool {
		st = status(t, "gateway", cfg)
		return (st.IKE == nil || len(st.IKE.SAs) == 0) && len(st.Children) == 0
	}) {
		t.Fatalf("the dead road warrior's SAs are still on the gateway %v after the kill (bound %v): %+v, %d Child SAs\n%s",
			time.Since(killed).Round(time.Millisecond), bound, st.IKE, len(st.Children), gw.Log())
	}
	t.Logf("gone %v after the kill (bound %v)", time.Since(killed).Round(time.Millisecond), bound)
}
