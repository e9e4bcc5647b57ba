package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/pki"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/strongswan"
)

// Interoperability with strongSwan 5.9 (charon, kernel-libipsec) in both
// roles, PSK and certificates, virtual-address mode (what strongSwan road
// warriors use): traffic, rekeying under traffic, DPD, DELETE. strongSwan's
// ESP proposals name no ESN: kernel-libipsec refuses it ("ESN not
// supported"), and we offer both.

const (
	rwID = "rw1@roamsec.example"
	gwID = "gw.roamsec.example"
)

// creds is one authentication setup for both sides.
type creds struct {
	name string
	// roamsec side: lines for the ike section; files written into dir.
	ourIKE func(dir string, gateway bool) string
	// strongSwan side: local and remote auth blocks, secrets, files.
	swanLocal, swanRemote string
	swanSecrets           string
	swanFiles             map[string][]byte
	// fragments: both sides fragment encrypted messages above 576 bytes
	// (RFC 7383), so IKE_AUTH with certificates goes in pieces both ways.
	fragments bool
}

func pskCreds(t *testing.T) creds {
	return creds{
		name: "psk",
		ourIKE: func(dir string, gateway bool) string {
			os.WriteFile(filepath.Join(dir, "psk"), []byte(testPSK), 0o600)
			if gateway {
				return "  peers:\n    - {id: " + rwID + ", psk_file: psk, virtual_pool: 100.64.0.0/24}\n"
			}
			return "  psk_file: psk\n"
		},
		swanLocal: "auth = psk", swanRemote: "auth = psk",
		swanSecrets: fmt.Sprintf("secrets {\n\tike-1 {\n\t\tid-1 = %s\n\t\tid-2 = %s\n\t\tsecret = \"%s\"\n\t}\n}\n", rwID, gwID, testPSK),
	}
}

// certCreds: a test CA issues ECDSA certificates for both, the road
// warrior's with its email identity, the gateway's with its name.
func certCreds(t *testing.T, swanIsGateway bool, alg pki.KeyAlg) creds {
	ca, err := pki.NewCA("roamsec test CA", alg)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := ca.Issue("rw1", alg, nil, nil, []string{rwID})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ca.Issue(gwID, alg, []string{gwID}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := rw, gw
	if !swanIsGateway {
		ours, theirs = gw, rw
	}
	return creds{
		name: "cert-" + alg.String(),
		ourIKE: func(dir string, gateway bool) string {
			caPath, err1 := ca.Write(dir, "ca")
			certPath, keyPath, err2 := ours.Write(dir, "me")
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			s := fmt.Sprintf("  cert: %s\n  key: %s\n  cas: [%s]\n", certPath, keyPath, caPath)
			if gateway {
				s += "  peers:\n    - {id: " + rwID + ", virtual_pool: 100.64.0.0/24}\n"
			}
			return s
		},
		swanLocal: "auth = pubkey\n\t\t\tcerts = me.pem", swanRemote: "auth = pubkey",
		swanFiles: map[string][]byte{"x509ca/ca.pem": ca.PEM, "x509/me.pem": theirs.CertPEM, "private/me.pem": theirs.KeyPEM},
	}
}

func writeCfg(t *testing.T, dir, name, body string) string {
	t.Helper()
	p, err := rig.WriteFile(dir, name, body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startSwan(t *testing.T, ns *netns.NS, name, conf string, files map[string][]byte, extra ...string) *strongswan.Charon {
	t.Helper()
	if err := strongswan.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := strongswan.Start(ctx, ns, strongswan.Config{Name: name, Swanctl: conf, Files: files, ExtraCharon: strings.Join(extra, "\n"),
		Debug: map[string]int{"ike": 2, "chd": 1, "knl": 1, "cfg": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			os.WriteFile(filepath.Join(os.TempDir(), "roamsec-swan-"+name+".log"), []byte(c.Log()), 0o600)
			t.Logf("strongSwan %s log tail (whole log in %s):\n%s", name, os.TempDir()+"/roamsec-swan-"+name+".log", c.Tail(80))
		}
		c.Stop(5 * time.Second)
	})
	return c
}

// pingThrough pings the server behind the gateway from the road warrior.
func pingThrough(t *testing.T, bed *netns.Bed, what string, logs ...func() string) {
	t.Helper()
	var out string
	var err error
	for i := 0; i < 3; i++ { // the first echo may race the last install
		if out, err = bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", netns.Srv4.String()); err == nil {
			return
		}
	}
	var all []string
	for _, l := range logs {
		all = append(all, l())
	}
	t.Fatalf("%s: ping through the tunnel: %v\n%s\n%s", what, err, out, strings.Join(all, "\n----\n"))
}

// streamAcross runs a 50 Hz UDP echo stream while cond becomes true, and
// reports how many datagrams were lost.
func streamAcross(t *testing.T, bed *netns.Bed, d time.Duration, cond func() bool, logs func() string) (sent, lost int) {
	t.Helper()
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	s, err := rig.StartStream(bed, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ok := rig.WaitFor(d, cond)
	time.Sleep(500 * time.Millisecond)
	s.Close()
	sent, got := s.Counts()
	if !ok {
		t.Fatalf("condition not met within %v\n%s", d, logs())
	}
	return sent, sent - got
}

// startVirtualRW starts our road warrior in virtual-address mode against a
// strongSwan gateway at 192.0.2.1 and waits for its virtual address;
// ikeExtra are more lines of its ike section, tail more sections.
func startVirtualRW(t *testing.T, bed *netns.Bed, cr creds, listen, ikeExtra, tail string, swan *strongswan.Charon) *rig.Proc {
	t.Helper()
	dir := t.TempDir()
	rwCfg := writeCfg(t, dir, "rw.yaml", fmt.Sprintf(`role: roadwarrior
log: {level: debug}
control_socket: %s/rw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24}
transport:
  listen: %s
ike:
  id: %s
  gateway: 192.0.2.1
  gateway_id: %s
  mode: virtual
  remote_ts: [203.0.113.0/24]
%s%s%s`, dir, listen, rwID, gwID, ikeExtra, cr.ourIKE(dir, false), tail))
	rw, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", rwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Stop(5 * time.Second) })
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Contains(rw.Log(), "virtual address installed") }) {
		t.Fatalf("no tunnel\nroamsec:\n%s\nstrongSwan:\n%s", rw.Log(), swan.Tail(60))
	}
	return rw
}

// fragmentOpt returns opt when cr asks for RFC 7383 fragments.
func fragmentOpt(cr creds, opt string) string {
	if cr.fragments {
		return opt
	}
	return ""
}

// swanGatewayConf is a strongSwan gateway for our road warrior in
// virtual-address mode (pool 100.64.0.0/24, protecting 203.0.113.0/24),
// with extra connection and child lines, one key = value per line.
func swanGatewayConf(cr creds, conn, child string) string {
	tab := func(s, in string) string { return in + strings.ReplaceAll(s, "\n", "\n"+in) }
	return fmt.Sprintf(`connections {
	rw {
		version = 2
		local_addrs = %%any
		pools = p
		proposals = aes256gcm16-prfsha256-ecp256
%s
		local {
			%s
			id = %s
		}
		remote {
			%s
			id = %s
		}
		children {
			net {
				local_ts = 203.0.113.0/24
%s
			}
		}
	}
}
pools {
	p {
		addrs = 100.64.0.0/24
	}
}
%s`, tab(conn, "\t\t"), cr.swanLocal, gwID, cr.swanRemote, rwID, tab(child, "\t\t\t\t"), cr.swanSecrets)
}

// trafficAcrossRekeys: ping and TCP through the tunnel, then a 50 Hz
// stream across two Child SA rekeys and an IKE SA rekey (ours is the log
// that shows them), which must lose (almost) nothing, then ping again.
func trafficAcrossRekeys(t *testing.T, bed *netns.Bed, what string, ours func() string, swan *strongswan.Charon) {
	t.Helper()
	theirs := func() string { return swan.Tail(60) }
	pingThrough(t, bed, what+": before", ours, theirs)
	if _, err := rig.TCPTransfer(bed, 2<<20); err != nil {
		t.Fatal(err)
	}
	sent, lost := streamAcross(t, bed, 40*time.Second, func() bool {
		return strings.Count(ours(), "Child SA rekeyed") >= 2 && strings.Contains(ours(), "IKE SA rekeyed")
	}, ours)
	t.Logf("%s: stream across the Child and IKE SA rekeys: %d sent, %d lost", what, sent, lost)
	if lost > 5 {
		t.Errorf("%s: lost %d of %d datagrams across rekeys", what, lost, sent)
	}
	pingThrough(t, bed, what+": after", ours, theirs)
}

// TestStrongSwanGatewayRoamsecRoadWarrior: roamsec initiates to a
// strongSwan gateway, asks for a virtual address, passes traffic; the
// Child SA and the IKE SA are rekeyed by strongSwan under traffic (short
// lifetimes); strongSwan's DELETE is honoured.
func TestStrongSwanGatewayRoamsecRoadWarrior(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, mk := range []func(*testing.T) creds{pskCreds,
		func(t *testing.T) creds { return certCreds(t, true, pki.ECDSAP256) },
		func(t *testing.T) creds { c := certCreds(t, true, pki.RSA2048); c.fragments = true; return c },
		func(t *testing.T) creds { return certCreds(t, true, pki.Ed25519) }} {
		cr := mk(t)
		t.Run(cr.name, func(t *testing.T) {
			bed := netns.New(t)
			swan := startSwan(t, bed.GW, "gw", swanGatewayConf(cr,
				"rekey_time = 20s\nover_time = 10s\nrand_time = 2s\ndpd_delay = 2s",
				"esp_proposals = aes256gcm16,aes256gcm16-ecp256\nrekey_time = 8s\nlife_time = 20s\nrand_time = 2s"), cr.swanFiles, fragmentOpt(cr, "fragment_size = 576"))
			rw := startVirtualRW(t, bed, cr, "[192.0.2.2]", "  dpd: 2s\n  child_lifetime: 1h\n  ike_lifetime: 1h\n"+fragmentOpt(cr, "  fragment_size: 576\n"), "", swan)
			if cr.fragments {
				// RFC 7383 both ways: strongSwan split its IKE_AUTH
				// response, and reassembled our request from fragments.
				for _, want := range []string{"splitting IKE message", "received fragment #"} {
					if !strings.Contains(swan.Log(), want) {
						t.Errorf("strongSwan log lacks %q: IKE_AUTH was not fragmented", want)
					}
				}
			}
			// strongSwan rekeys the Child SA every ~8 s and the IKE SA every
			// ~20 s.
			trafficAcrossRekeys(t, bed, cr.name+": strongSwan's rekeys", rw.Log, swan)
			// DELETE from strongSwan is honoured: our SAs go.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := swan.Terminate(ctx, "rw"); err != nil {
				t.Fatal(err)
			}
			if !rig.WaitFor(5*time.Second, func() bool { return strings.Contains(rw.Log(), "deleted by the peer") }) {
				t.Fatalf("strongSwan's DELETE not honoured:\n%s", rw.Log())
			}
		})
	}
}

// TestStrongSwanRoadWarriorRoamsecGateway: a strongSwan road warrior
// (vips = 0.0.0.0) connects to the roamsec gateway, gets an address from
// its pool, passes traffic; roamsec rekeys Child and IKE SA under traffic;
// a strongSwan killed with SIGKILL is found dead by DPD and its SAs go.
func TestStrongSwanRoadWarriorRoamsecGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, mk := range []func(*testing.T) creds{pskCreds, func(t *testing.T) creds { return certCreds(t, false, pki.ECDSAP256) }} {
		cr := mk(t)
		t.Run(cr.name, func(t *testing.T) {
			bed := netns.New(t)
			dir := t.TempDir()
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
  dpd: 1s
  retransmit_timeout: 500ms
  retransmit_tries: 3
  child_lifetime: 8s
  ike_lifetime: 20s
%s`, dir, gwID, cr.ourIKE(dir, true)))
			gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { gw.Stop(5 * time.Second) })
			swan := startSwan(t, bed.RW, "rw", fmt.Sprintf(`connections {
	home {
		version = 2
		remote_addrs = %s
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-ecp256
		rekey_time = 0
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
				esp_proposals = aes256gcm16,aes256gcm16-ecp256
				rekey_time = 0
			}
		}
	}
}
%s`, netns.GWPrimary4, cr.swanLocal, rwID, cr.swanRemote, gwID, cr.swanSecrets), cr.swanFiles)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := swan.Initiate(ctx, "home", "home"); err != nil {
				t.Fatalf("strongSwan initiate: %v\nroamsec:\n%s", err, gw.Log())
			}
			sas, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("home"))
			if err != nil {
				t.Fatal(err)
			}
			ike, _ := strongswan.FindIKE(sas, "home")
			if len(ike.LocalVIPs) != 1 || !netip.MustParsePrefix("100.64.0.0/24").Contains(netip.MustParseAddr(ike.LocalVIPs[0])) {
				t.Fatalf("strongSwan's virtual address %v, want one from our pool", ike.LocalVIPs)
			}
			// We rekey the Child SA every ~8 s and the IKE SA every ~20 s.
			trafficAcrossRekeys(t, bed, cr.name+": roamsec's rekeys", gw.Log, swan)
			// SIGKILL: no DELETE; our liveness check finds it dead.
			if err := swan.Kill(); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			if !rig.WaitFor(15*time.Second, func() bool { return strings.Contains(gw.Log(), "IKE SA failed") }) {
				t.Fatalf("killed peer not detected:\n%s", gw.Log())
			}
			t.Logf("%s: dead peer detected after %v", cr.name, time.Since(killed).Round(time.Millisecond))
		})
	}
}

// TestStrongSwanMOBIKEFailover: a roamsec road warrior with two uplinks
// and a strongSwan gateway. Our path monitoring finds the primary dead;
// the road warrior moves its outbound SA and tells strongSwan with MOBIKE
// (RFC 4555 UPDATE_SA_ADDRESSES); strongSwan keeps the IKE SA (same IKE
// SPIs) and, since kernel-libipsec cannot move an SA, rekeys the Child SA,
// which we accept. Traffic resumes on the secondary.
func TestStrongSwanMOBIKEFailover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cr := pskCreds(t)
	bed := netns.New(t)
	swan := startSwan(t, bed.GW, "gw", swanGatewayConf(cr, "mobike = yes\ndpd_delay = 5s", "esp_proposals = aes256gcm16"), nil)
	rw := startVirtualRW(t, bed, cr, "[192.0.2.2, 198.51.100.2]", "  dpd: 5s\n", `mobility:
  paths:
    - {name: primary, local: 192.0.2.2, peer: 192.0.2.1, link: rsb-pri}
    - {name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec}
  switch_back: 1s
  detector: probe
`, swan)
	pingThrough(t, bed, "before the failover", rw.Log, func() string { return swan.Tail(60) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sas, err := swan.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ike0, _ := strongswan.FindIKE(sas, "rw")
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	s, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := rig.Deaths(bed)[0] // the primary link goes down
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	dead := time.Now()
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(dead).IsZero() }) {
		d.Restore()
		t.Fatalf("no traffic on the secondary\nroamsec:\n%s\nstrongSwan:\n%s", rw.Log(), swan.Tail(80))
	}
	over := s.FirstReplyAfter(dead).Sub(dead)
	sas, err = swan.WaitSA(ctx, 10*time.Second, func(sas []strongswan.IKESA) bool {
		i, ok := strongswan.FindIKE(sas, "rw")
		return ok && i.RemoteHost == netns.RWSecondary4.String()
	})
	if err != nil {
		t.Fatalf("strongSwan did not move the IKE SA to the secondary: %v\n%s", err, swan.Tail(80))
	}
	ike1, _ := strongswan.FindIKE(sas, "rw")
	if ike1.SPIi != ike0.SPIi || ike1.SPIr != ike0.SPIr {
		t.Errorf("IKE SPIs changed across MOBIKE: %s/%s -> %s/%s", ike0.SPIi, ike0.SPIr, ike1.SPIi, ike1.SPIr)
	}
	if !strings.Contains(swan.Log(), "UPDATE_SA_ADDRESSES") && !strings.Contains(swan.Log(), "UPD_SA_ADDR") {
		t.Errorf("no UPDATE_SA_ADDRESSES seen by strongSwan")
	}
	t.Logf("MOBIKE with strongSwan: traffic on the secondary %v after the link went down", over.Round(time.Millisecond))
	d.Restore()
}
