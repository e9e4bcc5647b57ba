package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
func startShippedGateway(t *testing.T, bed *netns.Bed, edits ...string) (*rig.Proc, string) {
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
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	return gw, dir
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

// TestStrongSwanProposalsShippedGateway: strongSwan road warriors with
// the proposals their users commonly configure connect to the shipped
// gateway config (no proposals in it: everything we implement, any
// combination), pass traffic, and rekey their Child SA, with a PFS group
// where their ESP proposal names one. Last, a Child SA accepted without
// PFS and rekeyed with a group we do not implement (MODP-2048) gets
// NO_PROPOSAL_CHOSEN, never INVALID_KE_PAYLOAD for a group strongSwan did
// not offer, and the old Child SA keeps working.
func TestStrongSwanProposalsShippedGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cells := []struct {
		name, ike, esp string
		pfs            string // the DH group strongSwan's vici names for the rekeyed Child SA; "" none
	}{
		{"aes128-sha384-x25519-pfs", "aes128gcm16-prfsha384-curve25519", "aes128gcm16-curve25519", "CURVE_25519"},
		{"aes256-sha512-ecp384-pfs", "aes256gcm16-prfsha512-ecp384", "aes256gcm16-ecp384", "ECP_384"},
		{"chacha-sha256-ecp256", "chacha20poly1305-prfsha256-ecp256", "chacha20poly1305", ""},
		{"two-suites", "aes128gcm16-prfsha256-ecp384,aes256gcm16-prfsha384-ecp256", "aes256gcm16,aes128gcm16", ""},
	}
	var conns []string
	for _, c := range cells {
		conns = append(conns, swanRoadWarriorConn(c.name, "proposals = "+c.ike+"\nrekey_time = 0",
			"esp_proposals = "+c.esp+"\nrekey_time = 0"))
	}
	conns = append(conns, swanRoadWarriorConn("modp", "proposals = aes256gcm16-prfsha256-ecp256\nrekey_time = 0",
		"esp_proposals = aes256gcm16-modp2048\nrekey_time = 0"))
	bed := netns.New(t)
	gw, _ := startShippedGateway(t, bed)
	swan := startSwan(t, bed.RW, "rw", swanRoadWarriorConf(conns...), nil)
	logs := func() string { return "roamsec:\n" + gw.Log() + "\nstrongSwan:\n" + swan.Tail(80) }
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := swan.Initiate(ctx, c.name, c.name); err != nil {
				t.Fatalf("strongSwan %s: initiate: %v\n%s", c.ike, err, logs())
			}
			sas, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled(c.name))
			if err != nil {
				t.Fatalf("%v\n%s", err, logs())
			}
			ike, _ := strongswan.FindIKE(sas, c.name)
			child0, _ := ike.Child(c.name)
			t.Logf("%s: IKE %s-%d/%s/%s, ESP %s-%d", c.name, ike.Encr, ike.KeySize, ike.PRF, ike.DH, child0.Encr, child0.KeySize)
			pingThrough(t, bed, c.name+": before the rekey", logs)
			if err := swan.Rekey(ctx, c.name, false); err != nil {
				t.Fatal(err)
			}
			sas, err = swan.WaitSA(ctx, 15*time.Second, func(sas []strongswan.IKESA) bool {
				i, ok := strongswan.FindIKE(sas, c.name)
				ch, ok2 := i.Child(c.name)
				return ok && ok2 && ch.State == "INSTALLED" && ch.SPIIn != child0.SPIIn
			})
			if err != nil {
				t.Fatalf("Child SA rekey with %s: %v\n%s", c.esp, err, logs())
			}
			ike, _ = strongswan.FindIKE(sas, c.name)
			child1, _ := ike.Child(c.name)
			if child1.DH != c.pfs {
				t.Errorf("rekeyed Child SA's PFS group %q, want %q", child1.DH, c.pfs)
			}
			pingThrough(t, bed, c.name+": after the rekey", logs)
			if err := swan.TerminateWait(ctx, c.name); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, bad := range []string{"no proposal in common", "CREATE_CHILD_SA refused", "INVALID_KE_PAYLOAD"} {
		if strings.Contains(gw.Log(), bad) {
			t.Errorf("gateway log has %q:\n%s", bad, gw.Log())
		}
	}
	t.Run("rekey with MODP-2048 refused", func(t *testing.T) {
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
		pingThrough(t, bed, "the old Child SA after the refused rekey", logs)
	})
}
