package strongswan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

const testPSK = "strongswan-test-not-a-secret-0123456789"

// gwConf is a gateway in virtual-address mode: pool 100.64.0.0/24, PSK,
// AES-GCM-16 256 with PRF SHA2-256 and ECP-256, the server net behind it,
// DPD every second.
func gwConf() string {
	return fmt.Sprintf(`connections {
	rw {
		version = 2
		local_addrs = %%any
		remote_addrs = %%any
		pools = p
		proposals = aes256gcm16-prfsha256-ecp256
		dpd_delay = 1s
		local {
			auth = psk
			id = gw.example
		}
		remote {
			auth = psk
			id = rw.example
		}
		children {
			net {
				local_ts = %s
				remote_ts = dynamic
				esp_proposals = aes256gcm16
				dpd_action = clear
			}
		}
	}
}
pools {
	p {
		addrs = 100.64.0.0/24
	}
}
secrets {
	ike-1 {
		id-1 = gw.example
		id-2 = rw.example
		secret = %q
	}
}
`, netns.ServerNet4, testPSK)
}

// rwConf is the road warrior: a virtual address from the gateway's pool,
// the server net through the tunnel.
func rwConf() string {
	return fmt.Sprintf(`connections {
	home {
		version = 2
		remote_addrs = %s
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-ecp256
		local {
			auth = psk
			id = rw.example
		}
		remote {
			auth = psk
			id = gw.example
		}
		children {
			home {
				local_ts = dynamic
				remote_ts = %s
				esp_proposals = aes256gcm16
			}
		}
	}
}
secrets {
	ike-1 {
		id-1 = gw.example
		id-2 = rw.example
		secret = %q
	}
}
`, netns.GWPrimary4, netns.ServerNet4, testPSK)
}

// needStrongSwan skips unless root and installs strongSwan (a failed
// install fails the test).
func needStrongSwan(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, strongSwan packages)")
	}
	t0 := time.Now()
	if err := Install(); err != nil {
		t.Fatalf("Install: %v", err)
	}
	t.Logf("Install: %v", time.Since(t0).Round(time.Millisecond))
}

func start(t *testing.T, ctx context.Context, ns *netns.NS, cfg Config) *Charon {
	t.Helper()
	c, err := Start(ctx, ns, cfg)
	if err != nil {
		t.Fatalf("Start %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", c.Name(), c.Tail(80))
		}
		if err := c.Stop(5 * time.Second); err != nil {
			t.Errorf("Stop %s: %v", c.Name(), err)
		}
	})
	return c
}

func spis(s IKESA) []string {
	var l []string
	for _, c := range s.Installed() {
		l = append(l, c.SPIIn, c.SPIOut)
	}
	return l
}

// TestTwoCharons proves the harness against a strongSwan gateway and a
// strongSwan road warrior on the bed.
func TestTwoCharons(t *testing.T) {
	needStrongSwan(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	bed := netns.New(t)
	gw := start(t, ctx, bed.GW, Config{
		Name:    "gw",
		Swanctl: gwConf(),
		Debug:   map[string]int{"ike": 2},
		// DPD gives up after 0.5 + 0.5 + 0.5 s instead of 165 s.
		ExtraCharon: "retransmit_timeout = 0.5\nretransmit_tries = 2\nretransmit_base = 1.0",
	})
	rw := start(t, ctx, bed.RW, Config{Name: "rw", Swanctl: rwConf(), Debug: map[string]int{"ike": 2}})

	t0 := time.Now()
	if err := rw.Initiate(ctx, "home", ""); err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	rwSAs, err := rw.WaitSA(ctx, 5*time.Second, ChildInstalled("home"))
	if err != nil {
		t.Fatal(err)
	}
	gwSAs, err := gw.WaitSA(ctx, 5*time.Second, ChildInstalled("net"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("up in %v:\nrw: %sgw: %s", time.Since(t0).Round(time.Millisecond), FormatSAs(rwSAs), FormatSAs(gwSAs))

	// Both sides list the same SA pair.
	r, _ := FindIKE(rwSAs, "home")
	g, _ := FindIKE(gwSAs, "rw")
	if r.SPIi == "" || r.SPIr == "" || r.SPIi != g.SPIi || r.SPIr != g.SPIr {
		t.Errorf("IKE SPIs rw %s/%s, gw %s/%s", r.SPIi, r.SPIr, g.SPIi, g.SPIr)
	}
	if !r.Initiator || g.Initiator {
		t.Errorf("initiator: rw %v gw %v", r.Initiator, g.Initiator)
	}
	if r.Encr != "AES_GCM_16" || r.KeySize != 256 || r.DH != "ECP_256" || r.PRF != "PRF_HMAC_SHA2_256" {
		t.Errorf("IKE algorithms %s-%d %s %s", r.Encr, r.KeySize, r.PRF, r.DH)
	}
	if r.LocalHost != netns.RWPrimary4.String() || r.RemoteHost != netns.GWPrimary4.String() ||
		r.LocalID != "rw.example" || r.RemoteID != "gw.example" {
		t.Errorf("rw IKE SA %s", r)
	}
	if len(r.LocalVIPs) != 1 || !slices.Equal(r.LocalVIPs, g.RemoteVIPs) || !strings.HasPrefix(r.LocalVIPs[0], "100.64.0.") {
		t.Errorf("virtual IPs: rw local %v, gw remote %v", r.LocalVIPs, g.RemoteVIPs)
	}
	// kernel-libipsec wants ESP in UDP, so each side fakes its
	// NAT_DETECTION_SOURCE_IP: both see the other "behind a NAT".
	if !r.NATRemote || !g.NATRemote || r.NATLocal || g.NATLocal || !r.NATAny {
		t.Errorf("NAT flags: rw local %v remote %v any %v; gw local %v remote %v any %v",
			r.NATLocal, r.NATRemote, r.NATAny, g.NATLocal, g.NATRemote, g.NATAny)
	}
	rc, _ := r.Child("home")
	gc, _ := g.Child("net")
	if rc.SPIIn == "" || rc.SPIIn != gc.SPIOut || rc.SPIOut != gc.SPIIn {
		t.Errorf("ESP SPIs rw %s/%s, gw %s/%s", rc.SPIIn, rc.SPIOut, gc.SPIIn, gc.SPIOut)
	}
	if rc.Mode != "TUNNEL" || rc.Protocol != "ESP" || rc.Encr != "AES_GCM_16" || rc.KeySize != 256 || !rc.Encap {
		t.Errorf("rw Child SA %s (encap %v)", rc, rc.Encap)
	}
	if !slices.Equal(rc.RemoteTS, []string{netns.ServerNet4.String()}) || !slices.Equal(rc.LocalTS, []string{r.LocalVIPs[0] + "/32"}) {
		t.Errorf("rw traffic selectors %v === %v", rc.LocalTS, rc.RemoteTS)
	}

	// Raw vici calls.
	if m, err := rw.Call(ctx, "version", nil); err != nil || !strings.HasPrefix(fmt.Sprint(m["version"]), "5.") {
		t.Errorf("vici version: %v %v", m, err)
	}
	if _, conns, err := gw.CallStream(ctx, "list-conns", Msg{"ike": "rw"}, "list-conn"); err != nil ||
		len(conns) != 1 || conns[0]["rw"] == nil {
		t.Errorf("vici list-conns: %v %v", conns, err)
	}

	// Through the tunnel: the gateway's inner side and the server behind it.
	for _, dst := range []netip.Addr{netns.GWServer4, netns.Srv4} {
		if err := bed.RW.Ping(dst, 5*time.Second); err != nil {
			t.Fatalf("ping through the tunnel: %v\nrw: %s", err, FormatSAs(mustSAs(t, ctx, rw)))
		}
	}
	rwSAs = mustSAs(t, ctx, rw)
	r, _ = FindIKE(rwSAs, "home")
	if rc, _ = r.Child("home"); rc.PacketsOut < 2 || rc.PacketsIn < 2 || rc.BytesIn == 0 {
		t.Errorf("rw Child SA counters after 2 pings: %s", rc)
	}

	// Rekeying the Child SA: new SPIs on both sides, the old ones no longer
	// installed (strongSwan lists the old SA, no longer INSTALLED, for
	// another 5 s: it keeps the inbound SA for packets in flight).
	old := spis(r)
	t0 = time.Now()
	if err := rw.Rekey(ctx, "home", false); err != nil {
		t.Fatal(err)
	}
	rekeyed := func(sas []IKESA) bool {
		s, _ := FindIKE(sas, "home")
		now := spis(s)
		return len(now) == 2 && !slices.ContainsFunc(now, func(x string) bool { return slices.Contains(old, x) })
	}
	if rwSAs, err = rw.WaitSA(ctx, 5*time.Second, rekeyed); err != nil {
		t.Fatal(err)
	}
	r, _ = FindIKE(rwSAs, "home")
	rc, _ = r.Child("home")
	_, err = gw.WaitSA(ctx, 5*time.Second, func(sas []IKESA) bool {
		g, _ := FindIKE(sas, "rw")
		return slices.Equal(spis(g), []string{rc.SPIOut, rc.SPIIn})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Child SA rekeyed in %v: %v -> %s/%s\nrw: %s", time.Since(t0).Round(time.Millisecond), old, rc.SPIIn, rc.SPIOut, FormatSAs(rwSAs))
	if err := bed.RW.Ping(netns.Srv4, 5*time.Second); err != nil {
		t.Fatalf("ping after the Child SA rekeying: %v", err)
	}

	// Rekeying the IKE SA: new IKE SPIs, the Child SA stays.
	t0 = time.Now()
	if err := rw.Rekey(ctx, "home", true); err != nil {
		t.Fatal(err)
	}
	if rwSAs, err = rw.WaitSA(ctx, 5*time.Second, func(sas []IKESA) bool {
		s, ok := FindIKE(sas, "home")
		return ok && len(sas) == 1 && s.State == "ESTABLISHED" && s.SPIi != r.SPIi && s.SPIr != r.SPIr &&
			slices.Equal(spis(s), spis(r))
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("IKE SA rekeyed in %v: %s_i -> %s_i", time.Since(t0).Round(time.Millisecond), r.SPIi, rwSAs[0].SPIi)
	if err := rw.Rekey(ctx, "nonexistent", false); err == nil {
		t.Error("Rekey of an unknown child: no error")
	}
	if err := rw.Initiate(ctx, "nonexistent", ""); err == nil || !strings.Contains(err.Error(), "log tail") {
		t.Errorf("Initiate of an unknown child: %v", err)
	} else {
		t.Logf("Initiate of an unknown child: %.300s", err)
	}

	// Terminate with DELETE, then up again.
	if err := rw.TerminateWait(ctx, "home"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Charon{rw, gw} {
		if _, err := c.WaitSA(ctx, 2*time.Second, NoIKESA("")); err != nil {
			t.Fatal(err)
		}
	}
	if err := rw.Initiate(ctx, "home", ""); err != nil {
		t.Fatalf("Initiate after Terminate: %v", err)
	}
	if _, err := gw.WaitSA(ctx, 5*time.Second, ChildInstalled("net")); err != nil {
		t.Fatal(err)
	}

	// A road warrior that dies without a DELETE: the gateway's DPD
	// (dpd_delay 1 s, retransmissions 0.5 s x 3) removes the SAs.
	if err := rw.Kill(); err != nil {
		t.Fatal(err)
	}
	if rw.Alive() {
		t.Fatal("rw alive after Kill")
	}
	t0 = time.Now()
	if _, err := gw.WaitSA(ctx, 15*time.Second, NoIKESA("")); err != nil {
		t.Fatal(err)
	}
	t.Logf("gw's DPD removed the SAs %v after the kill", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(gw.Log(), "giving up after") {
		t.Errorf("gw log has no DPD give-up:\n%s", gw.Tail(30))
	}

	// Stop removes everything.
	for _, c := range []*Charon{rw, gw} {
		dir := c.Dir()
		if err := c.Stop(5 * time.Second); err != nil {
			t.Errorf("Stop %s: %v", c.Name(), err)
		}
		if c.Alive() {
			t.Errorf("%s alive after Stop", c.Name())
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s still there after Stop (%v)", c.Name(), dir, err)
		}
		if _, err := c.SAs(ctx); err == nil {
			t.Errorf("%s: SAs after Stop: no error", c.Name())
		}
	}
}

// TestStartFails: a swanctl.conf charon rejects gives an error with the
// log's tail, and nothing is left behind.
func TestStartFails(t *testing.T) {
	needStrongSwan(t)
	ns := netns.NewNS(t)
	before := tempDirs()
	_, err := Start(context.Background(), ns, Config{
		Name:    "bad",
		Swanctl: "connections {\n\tx {\n\t\tproposals = no-such-algorithm\n\t}\n}\n",
	})
	if err == nil {
		t.Fatal("Start with a bad proposal: no error")
	}
	t.Logf("Start: %v", err)
	if !strings.Contains(err.Error(), "log tail") {
		t.Errorf("error without the log tail: %v", err)
	}
	if after := tempDirs(); len(after) > len(before) {
		t.Errorf("temp dirs left: %v -> %v", before, after)
	}
}

func tempDirs() []string {
	ents, _ := os.ReadDir(os.TempDir())
	var l []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("%s%d-", tempPrefix, os.Getpid())) {
			l = append(l, e.Name())
		}
	}
	return l
}

func mustSAs(t *testing.T, ctx context.Context, c *Charon) []IKESA {
	t.Helper()
	sas, err := c.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sas
}

// TestPeerTS: RFC 3554 mode, the Child SA's selectors are the peers' own
// outer addresses. With AllowPeerTS the ping from rw's primary address to
// gw's goes through the tunnel while IKE and ESP in UDP between the same
// addresses bypass it.
func TestPeerTS(t *testing.T) {
	needStrongSwan(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bed := netns.New(t)
	conf := func(local, remote, id, peer string, gateway bool) string {
		addrs := "remote_addrs = " + remote
		if gateway {
			addrs = "remote_addrs = %any"
		}
		return fmt.Sprintf(`connections {
	c {
		version = 2
		local_addrs = %s
		%s
		proposals = aes256gcm16-prfsha256-ecp256
		local {
			auth = psk
			id = %s
		}
		remote {
			auth = psk
			id = %s
		}
		children {
			c {
				local_ts = %s/32
				remote_ts = %s/32
				esp_proposals = aes256gcm16
			}
		}
	}
}
secrets {
	ike-1 {
		id-1 = gw.example
		id-2 = rw.example
		secret = %q
	}
}
`, local, addrs, id, peer, local, remote, testPSK)
	}
	gw := start(t, ctx, bed.GW, Config{Name: "gw", AllowPeerTS: true,
		Swanctl: conf(netns.GWPrimary4.String(), netns.RWPrimary4.String(), "gw.example", "rw.example", true)})
	rw := start(t, ctx, bed.RW, Config{Name: "rw", AllowPeerTS: true, Debug: map[string]int{"knl": 1},
		Swanctl: conf(netns.RWPrimary4.String(), netns.GWPrimary4.String(), "rw.example", "gw.example", false)})
	if err := rw.Initiate(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.WaitSA(ctx, 5*time.Second, ChildInstalled("c")); err != nil {
		t.Fatal(err)
	}
	if err := bed.RW.Ping(netns.GWPrimary4, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	sas := mustSAs(t, ctx, rw)
	s, _ := FindIKE(sas, "c")
	c, _ := s.Child("c")
	if c.PacketsOut == 0 || c.PacketsIn == 0 {
		t.Errorf("the ping did not go through the tunnel: %s", c)
	}
	want := netns.GWPrimary4.String() + "/32"
	if !slices.Equal(c.RemoteTS, []string{want}) || s.RemoteHost != netns.GWPrimary4.String() {
		t.Errorf("not inner = outer: %s", s)
	}
	// Still alive over IKE after the tunnel routes are in: a rekey works.
	if err := rw.Rekey(ctx, "c", false); err != nil {
		t.Fatal(err)
	}
	if _, err := rw.WaitSA(ctx, 5*time.Second, func(sas []IKESA) bool {
		s, _ := FindIKE(sas, "c")
		n, _ := s.Child("c")
		return n.State == "INSTALLED" && n.SPIIn != c.SPIIn
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("rw: %s", FormatSAs(mustSAs(t, ctx, rw)))
}

// TestCertificates: Config.Files with a CA, certificates and PKCS#8 keys
// as Go writes them; both sides authenticate with ECDSA certificates.
func TestCertificates(t *testing.T) {
	needStrongSwan(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "roamsec test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		p8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	gwCert, gwKey := leaf("gw.example", 2)
	rwCert, rwKey := leaf("rw.example", 3)
	conf := func(id, peer, remoteAddrs, child, extra, pools string) string {
		return fmt.Sprintf(`connections {
	c {
		version = 2
		remote_addrs = %s
		%s
		proposals = aes256gcm16-prfsha256-ecp256
		local {
			auth = pubkey
			certs = %s.pem
			id = %s
		}
		remote {
			auth = pubkey
			id = %s
		}
		children {
			c {
				%s
				esp_proposals = aes256gcm16
			}
		}
	}
}
%s`, remoteAddrs, extra, strings.TrimSuffix(id, ".example"), id, peer, child, pools)
	}
	bed := netns.New(t)
	gw := start(t, ctx, bed.GW, Config{Name: "gw",
		Swanctl: conf("gw.example", "rw.example", "%any", "local_ts = "+netns.ServerNet4.String(),
			"pools = p", "pools {\n\tp {\n\t\taddrs = 100.64.0.0/24\n\t}\n}\n"),
		Files: map[string][]byte{"x509ca/ca.pem": caPEM, "x509/gw.pem": gwCert, "private/gw.pem": gwKey}})
	rw := start(t, ctx, bed.RW, Config{Name: "rw",
		Swanctl: conf("rw.example", "gw.example", netns.GWPrimary4.String(), "remote_ts = "+netns.ServerNet4.String(),
			"vips = 0.0.0.0", ""),
		Files: map[string][]byte{"x509ca/ca.pem": caPEM, "x509/rw.pem": rwCert, "private/rw.pem": rwKey}})
	if fi, err := os.Stat(rw.SwanctlDir() + "/private/rw.pem"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private/rw.pem: %v %v", fi.Mode(), err)
	}
	if err := rw.Initiate(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	sas, err := gw.WaitSA(ctx, 5*time.Second, ChildInstalled("c"))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := FindIKE(sas, "c"); s.RemoteID != "rw.example" {
		t.Errorf("gw: peer %q", s.RemoteID)
	}
	if !strings.Contains(gw.Log(), `authentication of 'rw.example' with ECDSA`) {
		t.Errorf("gw log: no ECDSA authentication of rw.example:\n%s", gw.Tail(40))
	}
	// Certificates loaded through vici as well: load-cert.
	out, err := rw.Swanctl(ctx, "--list-certs")
	if err != nil || !strings.Contains(out, "rw.example") {
		t.Errorf("swanctl --list-certs: %v\n%s", err, out)
	}
}
