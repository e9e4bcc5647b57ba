package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/freeradius"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/pki"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/strongswan"
)

// EAP through RADIUS (issue 13): FreeRADIUS runs in the server namespace
// of the bed with its own configuration; the roamsec gateway relays a
// strongSwan 5.9 road warrior's EAP to it (RFC 7296 §2.16, RFC 3579),
// first to a RADIUS server that never answers (the failover), and
// reports accounting (RFC 2866) to it.

const (
	eapSecret   = "radius-shared-secret-0123"
	eapUser     = "carol@roamsec.example"
	eapPassword = "carol-Passw0rd-eap"
	eapVIP      = "100.64.0.77" // Framed-IP-Address: not the pool's first address
	eapClass    = "roamsec-gold"
	eapSession  = 3600
	eapOnlyUser = "erin@roamsec.example" // her policy allows EAP-only (RFC 5998)
	// frank's sessions last eapShortSession seconds (RADIUS Session-Timeout).
	eapShortUser    = "frank@roamsec.example"
	eapShortSession = 6
)

// eapBed is the gateway, FreeRADIUS and the PKI of the EAP tests.
type eapBed struct {
	bed    *netns.Bed
	gw     *rig.Proc
	gwCfg  string
	radius *freeradius.Server
	ca     *pki.CA
	gwLeaf *pki.Leaf
}

func startEAPBed(t *testing.T, tls bool) *eapBed {
	t.Helper()
	if err := freeradius.Available(); err != nil {
		t.Skip(err)
	}
	b := &eapBed{bed: netns.New(t)}
	var err error
	if b.ca, err = pki.NewCA("roamsec EAP test CA", pki.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if b.gwLeaf, err = b.ca.Issue(gwID, pki.ECDSAP256, []string{gwID}, nil, nil); err != nil {
		t.Fatal(err)
	}
	rcfg := freeradius.Config{Listen: netns.Srv4, Client: netip.PrefixFrom(netns.GWServer4, 32), Secret: eapSecret,
		Users: []freeradius.User{{Name: eapUser, Password: eapPassword, Reply: []string{
			"Framed-IP-Address = " + eapVIP, "Session-Timeout = " + strconv.Itoa(eapSession), fmt.Sprintf("Class = %q", eapClass)}},
			{Name: eapOnlyUser, Password: eapPassword},
			{Name: eapShortUser, Password: eapPassword, Reply: []string{"Session-Timeout = " + strconv.Itoa(eapShortSession)}}}}
	if tls {
		// strongSwan's EAP-TLS checks the server's certificate against
		// the gateway's IKE identity (no aaa_id configured).
		srv, err := b.ca.Issue("radius.roamsec.example", pki.ECDSAP256, []string{gwID}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		rcfg.TLS = &freeradius.TLS{CertPEM: srv.CertPEM, KeyPEM: srv.KeyPEM, CAPEM: b.ca.PEM}
	}
	if b.radius, err = freeradius.Start(b.bed.Srv, rcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FreeRADIUS log tail:\n%s", b.radius.Tail(60))
		}
		b.radius.Stop()
	})
	dir := t.TempDir()
	writeCfg(t, dir, "radius.secret", eapSecret+"\n")
	writeCfg(t, dir, "psk", testPSK+"\n") // a PSK road warrior next to the EAP ones
	certPath, keyPath, err := b.gwLeaf.Write(dir, "gw")
	if err != nil {
		t.Fatal(err)
	}
	// The first server is silent (no host there): every request fails
	// over to FreeRADIUS after timeout × (retries + 1).
	b.gwCfg = writeCfg(t, dir, "gw.yaml", fmt.Sprintf(`role: gateway
log: {level: debug}
control_socket: %[1]s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 100.64.0.0/24}
transport:
  listen: [192.0.2.1, 198.51.100.1]
ike:
  id: %[2]s
  cert: %[3]s
  key: %[4]s
  local_ts: [203.0.113.0/24]
  peers:
    - {id: %[6]s, psk_file: psk, virtual_pool: 100.64.0.0/24}
    - {id: %[7]s, auth: eap-radius, eap_only: true, virtual_pool: 100.64.0.0/24}
    - {id: laptop.roamsec.example, auth: eap-radius, eap_ask_identity: true, virtual_pool: 100.64.0.0/24}
    - {auth: eap-radius, virtual_pool: 100.64.0.0/24}
radius:
  servers:
    - {address: 203.0.113.99, secret_file: radius.secret}
    - {address: %[5]s:1812, secret_file: radius.secret}
  timeout: 300ms
  retries: 1
  interim: 1s
`, dir, gwID, certPath, keyPath, netns.Srv4, rwID, eapOnlyUser))
	if b.gw, err = rig.Start(b.bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", b.gwCfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.gw.Stop(5 * time.Second) })
	return b
}

// swanEAP is a strongSwan road warrior's connection name with EAP method
// auth (eap-mschapv2, eap-tls) as user, against the gateway's certificate.
func swanEAP(name, auth, user string) string {
	extra := ""
	if auth == "eap-tls" {
		extra = "\n\t\t\tcerts = carol.pem"
	}
	return fmt.Sprintf(`	%s {
		version = 2
		remote_addrs = %s
		vips = 0.0.0.0
		rekey_time = 0
		local {
			auth = %s
			id = %s%s
		}
		remote {
			auth = pubkey
			id = %s
		}
		children {
			%s {
				remote_ts = 203.0.113.0/24
				esp_proposals = aes256gcm16
				rekey_time = 0
			}
		}
	}
`, name, netns.GWPrimary4, auth, user, extra, gwID, name)
}

const swanEAPPlugins = strongswan.DefaultPlugins + " eap-identity eap-mschapv2 eap-tls md5 sha1"

func (b *eapBed) startSwan(t *testing.T, conns string, files map[string][]byte) *strongswan.Charon {
	t.Helper()
	if err := strongswan.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if files == nil {
		files = map[string][]byte{}
	}
	files["x509ca/ca.pem"] = b.ca.PEM
	c, err := strongswan.Start(ctx, b.bed.RW, strongswan.Config{Name: "rw", Swanctl: conns, Files: files, Plugins: swanEAPPlugins,
		Debug: map[string]int{"ike": 2, "cfg": 1, "tls": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("strongSwan log tail:\n%s", c.Tail(80))
		}
		c.Stop(5 * time.Second)
	})
	return c
}

// TestEAPMSCHAPv2ThroughRADIUS: a strongSwan road warrior with
// EAP-MSCHAPv2 connects; its virtual address is FreeRADIUS's
// Framed-IP-Address; the gateway tells it to reauthenticate before the
// Session-Timeout (AUTH_LIFETIME: strongSwan schedules its
// reauthentication); traffic flows; after the DELETE, FreeRADIUS's detail
// file has Start and Stop, with Class echoed and the bytes and packets
// the gateway's SAs counted. A wrong password is refused (Access-Reject,
// EAP-Failure) and makes no SA.
func TestEAPMSCHAPv2ThroughRADIUS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := startEAPBed(t, false)
	conns := "connections {\n" + swanEAP("home", "eap-mschapv2", eapUser) + swanEAP("bad", "eap-mschapv2", "dave@roamsec.example") +
		swanEAP("short", "eap-mschapv2", eapShortUser) +
		strings.Replace(swanEAP("laptop", "eap-mschapv2", "laptop.roamsec.example"), "id = laptop.roamsec.example", "id = laptop.roamsec.example\n\t\t\teap_id = "+eapUser, 1) + "}\n" +
		fmt.Sprintf("secrets {\n\teap-carol {\n\t\tid = %s\n\t\tsecret = %q\n\t}\n\teap-frank {\n\t\tid = %s\n\t\tsecret = %q\n\t}\n\teap-dave {\n\t\tid = dave@roamsec.example\n\t\tsecret = \"not-the-password\"\n\t}\n}\n",
			eapUser, eapPassword, eapShortUser, eapPassword)
	swan := b.startSwan(t, conns, nil)
	logs := func() string { return "roamsec:\n" + b.gw.Log() + "\nstrongSwan:\n" + swan.Tail(60) }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ike := connectHomeVIP(ctx, t, swan, "EAP-MSCHAPv2", logs)
	if ike.ReauthTime <= 0 || ike.ReauthTime > eapSession {
		t.Errorf("strongSwan's reauthentication in %d s, want within the Session-Timeout %d s (AUTH_LIFETIME)", ike.ReauthTime, eapSession)
	}
	pingThrough(t, b.bed, "EAP road warrior", logs)
	if out, err := b.bed.RW.Run("ping", "-c", "5", "-i", "0.2", "-s", "1000", "-W", "2", netns.Srv4.String()); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	// interim: 1s: an Interim-Update comes while the SA is up.
	if !rig.WaitFor(5*time.Second, func() bool {
		recs, _ := b.radius.Accounting()
		return len(recs) >= 2 && recs[1]["Acct-Status-Type"] == "Interim-Update"
	}) {
		t.Fatalf("no Interim-Update\n%s", logs())
	}
	out, errOut, code := runCLI(t, b.bed.GW, "gateway", "sa", "list", "-json", "-config", b.gwCfg)
	if code != 0 {
		t.Fatalf("sa list: %d %s", code, errOut)
	}
	var cs []daemon.ChildStatus
	if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != 1 {
		t.Fatalf("sa list: %v\n%s", err, out)
	}
	got := cs[0]
	if got.Peer != eapUser || len(got.VirtualIP) != 1 || got.VirtualIP[0] != eapVIP {
		t.Errorf("gateway's Child SA: %+v", got)
	}
	if err := swan.TerminateWait(ctx, "home"); err != nil {
		t.Fatal(err)
	}
	var recs []freeradius.Record
	if !rig.WaitFor(10*time.Second, func() bool {
		recs, _ = b.radius.Accounting()
		return len(recs) >= 3 && recs[len(recs)-1]["Acct-Status-Type"] == "Stop"
	}) {
		t.Fatalf("FreeRADIUS's detail file has %d records, want Start, Interim-Update and Stop\n%v\n%s", len(recs), recs, logs())
	}
	st, sp := recs[0], recs[len(recs)-1]
	if st["Acct-Status-Type"] != "Start" || recs[1]["Acct-Status-Type"] != "Interim-Update" {
		t.Fatalf("accounting records %v", recs)
	}
	for _, r := range recs {
		if r["User-Name"] != eapUser || r["Class"] == "" || r["Framed-IP-Address"] != eapVIP || r["Acct-Session-Id"] != st["Acct-Session-Id"] {
			t.Errorf("accounting record %v: want User-Name %s, Class, Framed-IP-Address %s, one Acct-Session-Id", r, eapUser, eapVIP)
		}
	}
	if c := sp["Class"]; c != eapClass && c != "0x"+fmt.Sprintf("%x", eapClass) {
		t.Errorf("Class %q echoed, want %q", c, eapClass)
	}
	for k, want := range map[string]uint64{"Acct-Input-Octets": got.BytesIn, "Acct-Output-Octets": got.BytesOut,
		"Acct-Input-Packets": got.PacketsIn, "Acct-Output-Packets": got.PacketsOut} {
		if v, _ := strconv.ParseUint(sp[k], 10, 64); v != want || want == 0 {
			t.Errorf("Stop %s = %s, the gateway's SAs counted %d", k, sp[k], want)
		}
	}
	t.Logf("accounting Stop: in %s bytes / %s packets, out %s / %s, session %s s",
		sp["Acct-Input-Octets"], sp["Acct-Input-Packets"], sp["Acct-Output-Octets"], sp["Acct-Output-Packets"], sp["Acct-Session-Time"])

	t.Run("Session-Timeout bounds the IKE SA", func(t *testing.T) {
		// RFC 4478: strongSwan is told to reauthenticate within the
		// Session-Timeout; however it does (a new IKE SA with EAP
		// again), or if it does not, the gateway deletes the first IKE
		// SA when the time is up, and accounting stops its session.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		before, _ := b.radius.Accounting()
		if err := swan.Initiate(ctx, "short", "short"); err != nil {
			t.Fatalf("initiate: %v\n%s", err, logs())
		}
		var sid string
		if !rig.WaitFor(5*time.Second, func() bool {
			recs, _ := b.radius.Accounting()
			for _, r := range recs[len(before):] {
				if r["User-Name"] == eapShortUser && r["Acct-Status-Type"] == "Start" {
					sid = r["Acct-Session-Id"]
					return true
				}
			}
			return false
		}) {
			t.Fatalf("no accounting Start for %s", eapShortUser)
		}
		stopped := func() bool {
			recs, _ := b.radius.Accounting()
			for _, r := range recs {
				if r["Acct-Session-Id"] == sid && r["Acct-Status-Type"] == "Stop" {
					return true
				}
			}
			return false
		}
		if !rig.WaitFor(time.Duration(eapShortSession+4)*time.Second, stopped) {
			t.Fatalf("the %d s session still runs after %d s\n%s", eapShortSession, eapShortSession+4, logs())
		}
		how := "strongSwan reauthenticated"
		if strings.Contains(b.gw.Log(), "RADIUS Session-Timeout: deleting the IKE SA") {
			how = "the gateway deleted the IKE SA"
		}
		t.Logf("the %d s session ended within its Session-Timeout: %s", eapShortSession, how)
		swan.Terminate(ctx, "short")
	})

	t.Run("EAP identity asked for", func(t *testing.T) {
		// The laptop's policy asks for the EAP identity: its IKE identity
		// is a host name, the user (and so the Framed-IP-Address) carol.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := swan.Initiate(ctx, "laptop", "laptop"); err != nil {
			t.Fatalf("initiate: %v\n%s", err, logs())
		}
		sas, err := swan.SAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ike, _ := strongswan.FindIKE(sas, "laptop")
		if len(ike.LocalVIPs) != 1 || ike.LocalVIPs[0] != eapVIP {
			t.Errorf("virtual address %v, want carol's Framed-IP-Address %s", ike.LocalVIPs, eapVIP)
		}
		if !strings.Contains(b.radius.Log(), `User-Name = "`+eapUser+`"`) || !strings.Contains(swan.Log(), "EAP_IDENTITY") {
			t.Errorf("no EAP identity exchange for carol\n%s", logs())
		}
		if err := swan.TerminateWait(ctx, "laptop"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("wrong password refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := swan.Initiate(ctx, "bad", "bad"); err == nil {
			t.Errorf("strongSwan connected with a wrong password\n%s", logs())
		}
		if !rig.WaitFor(5*time.Second, func() bool { return strings.Contains(b.gw.Log(), "EAP authentication refused") }) {
			t.Errorf("gateway log has no refusal\n%s", logs())
		}
		if !strings.Contains(b.radius.Log(), "Login incorrect") {
			t.Errorf("FreeRADIUS did not reject the login")
		}
		out, _, _ := runCLI(t, b.bed.GW, "gateway", "sa", "list", "-json", "-config", b.gwCfg)
		var cs []daemon.ChildStatus
		json.Unmarshal([]byte(out), &cs)
		if len(cs) != 0 {
			t.Errorf("Child SAs after a refused login: %s", out)
		}
		out, _, _ = runCLI(t, b.bed.GW, "gateway", "status", "-json", "-config", b.gwCfg)
		var st daemon.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.RADIUS == nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		if r := st.RADIUS; r.EAPAccepted < 2 || r.EAPRejected != 1 || r.Failovers != 1 || r.Timeouts != 1 || r.AccountingLost != 0 {
			t.Errorf("status radius: %+v: want 2+ accepted, 1 rejected, the one failover from the silent server, nothing lost", *r)
		}
	})
}

// TestEAPTLSThroughRADIUS: a strongSwan road warrior with EAP-TLS (its
// certificate checked by FreeRADIUS, FreeRADIUS's by strongSwan against
// the gateway's identity) connects through the gateway, gets the Framed-IP-Address
// and passes traffic; the MSK of the TLS session authenticates IKE.
func TestEAPTLSThroughRADIUS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := startEAPBed(t, true)
	carol, err := b.ca.Issue("carol", pki.ECDSAP256, nil, nil, []string{eapUser})
	if err != nil {
		t.Fatal(err)
	}
	erin, err := b.ca.Issue("erin", pki.ECDSAP256, nil, nil, []string{eapOnlyUser})
	if err != nil {
		t.Fatal(err)
	}
	only := strings.NewReplacer("auth = pubkey", "auth = eap-tls", "carol.pem", "erin.pem").Replace(swanEAP("only", "eap-tls", eapOnlyUser))
	swan := b.startSwan(t, "connections {\n"+swanEAP("home", "eap-tls", eapUser)+only+"}\n", map[string][]byte{"x509/carol.pem": carol.CertPEM, "private/carol.pem": carol.KeyPEM,
		"x509/erin.pem": erin.CertPEM, "private/erin.pem": erin.KeyPEM})
	logs := func() string { return "roamsec:\n" + b.gw.Log() + "\nstrongSwan:\n" + swan.Tail(60) }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connectHomeVIP(ctx, t, swan, "EAP-TLS", logs)
	if !strings.Contains(swan.Log(), "EAP_TLS") {
		t.Errorf("strongSwan did not run EAP-TLS\n%s", logs())
	}
	pingThrough(t, b.bed, "EAP-TLS road warrior", logs)
	if err := swan.TerminateWait(ctx, "home"); err != nil {
		t.Fatal(err)
	}

	t.Run("EAP-only", func(t *testing.T) {
		// RFC 5998: strongSwan asks (EAP_ONLY_AUTHENTICATION); erin's
		// policy allows it, so the gateway sends no signature, and with
		// remote auth = eap-tls strongSwan takes EAP-TLS's mutual
		// authentication and MSK instead. (strongSwan refuses EAP-only
		// with EAP-MSCHAPv2, which it does not count as mutual.)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := swan.Initiate(ctx, "only", "only"); err != nil {
			t.Fatalf("initiate: %v\n%s", err, logs())
		}
		// (carol's, before, was [ IDr CERT AUTH EAP/REQ/TLS ].)
		if !strings.Contains(swan.Log(), "parsed IKE_AUTH response 1 [ IDr EAP/REQ/") {
			t.Errorf("the gateway's first IKE_AUTH response to erin is not IDr and EAP alone\n%s", logs())
		}
		pingThrough(t, b.bed, "EAP-only road warrior", logs)
		if err := swan.TerminateWait(ctx, "only"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestEAPBench (make bench-eap; ROAMSEC_BENCH_EAP=N): the same strongSwan
// road warrior connects and disconnects N times with EAP-MSCHAPv2 through
// FreeRADIUS and N times with its PSK, alternating (the gateway signs with
// its certificate in both), against the same gateway:
// the median connect time (vici initiate until the Child SA is up: both
// IKE exchanges, and the RADIUS round trips for EAP) and the sequential
// handshakes per second of each. The first of each is left out (the
// failover from the silent first RADIUS server is in it).
func TestEAPBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ROAMSEC_BENCH_EAP"))
	if n <= 0 {
		t.Skip("set ROAMSEC_BENCH_EAP=N (make bench-eap)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := startEAPBed(t, false)
	// The gateway proves itself with its certificate to both (it has one).
	psk := strings.Replace(swanEAP("psk", "eap-mschapv2", rwID), "auth = eap-mschapv2", "auth = psk", 1)
	conns := "connections {\n" + swanEAP("eap", "eap-mschapv2", eapUser) + psk + "}\n" +
		fmt.Sprintf("secrets {\n\teap-carol {\n\t\tid = %s\n\t\tsecret = %q\n\t}\n", eapUser, eapPassword) +
		fmt.Sprintf("\tike-1 {\n\t\tid-1 = %s\n\t\tid-2 = %s\n\t\tsecret = %q\n\t}\n}\n", rwID, gwID, testPSK)
	swan := b.startSwan(t, conns, nil)
	times := map[string][]time.Duration{}
	for i := 0; i <= n; i++ {
		for _, name := range []string{"eap", "psk"} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			start := time.Now()
			if err := swan.Initiate(ctx, name, name); err != nil {
				cancel()
				t.Fatalf("%s #%d: %v\n%s", name, i, err, b.gw.Log())
			}
			d := time.Since(start)
			if err := swan.TerminateWait(ctx, name); err != nil {
				cancel()
				t.Fatal(err)
			}
			cancel()
			if i > 0 {
				times[name] = append(times[name], d)
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	for _, name := range []string{"eap", "psk"} {
		ds := slices.Clone(times[name])
		slices.Sort(ds)
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		t.Logf("%s: %d connects, median %v, min %v, max %v: %.1f handshakes/s sequential (loadavg %s)", name, len(ds),
			ds[len(ds)/2].Round(100*time.Microsecond), ds[0].Round(100*time.Microsecond), ds[len(ds)-1].Round(100*time.Microsecond),
			float64(len(ds))/sum.Seconds(), strings.TrimSpace(string(load)))
	}
}

// TestEAPRoamsecRoadWarrior: our own road warrior as the EAP peer
// (EAP-MSCHAPv2, eap_password_file) through our gateway to FreeRADIUS: a
// wrong password is refused (and the road warrior says so), the right one
// gets the Framed-IP-Address and traffic flows.
func TestEAPRoamsecRoadWarrior(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := startEAPBed(t, false)
	dir := t.TempDir()
	caPath, err := b.ca.Write(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	rw := func(password string) (*rig.Proc, string) {
		writeCfg(t, dir, "eap.password", password+"\n")
		cfg := eapRoadWarriorConfig(t, dir, caPath, "  retransmit_timeout: 500ms\n")
		p, err := rig.Start(b.bed.RW, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p, cfg
	}

	bad, _ := rw("not-the-password")
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Contains(bad.Log(), "EAP-Failure") }) {
		t.Errorf("a wrong password was not refused with EAP-Failure\nroad warrior:\n%s\ngateway:\n%s", bad.Log(), b.gw.Log())
	}
	if strings.Contains(bad.Log(), "virtual address installed") {
		t.Errorf("a tunnel with a wrong password")
	}
	bad.Stop(5 * time.Second)

	start := time.Now()
	good, _ := rw(eapPassword)
	t.Cleanup(func() { good.Stop(5 * time.Second) })
	if !rig.WaitFor(20*time.Second, func() bool { return strings.Contains(good.Log(), "virtual address installed") }) {
		t.Fatalf("no tunnel\nroad warrior:\n%s\ngateway:\n%s", good.Log(), b.gw.Log())
	}
	t.Logf("our road warrior with EAP-MSCHAPv2 through RADIUS: tunnel up %v after start", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(good.Log(), "addr="+eapVIP) {
		t.Errorf("virtual address is not the Framed-IP-Address %s\n%s", eapVIP, good.Log())
	}
	pingThrough(t, b.bed, "our EAP road warrior", func() string { return "road warrior:\n" + good.Log() + "\ngateway:\n" + b.gw.Log() })
}

// TestEAPRoamsecRoadWarriorStrongSwanGateway: our EAP-MSCHAPv2 peer
// against strongSwan 5.9 as the EAP server (its own eap-mschapv2, asking
// for the EAP identity first): the interop proof of the peer side.
func TestEAPRoamsecRoadWarriorStrongSwanGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bed := netns.New(t)
	ca, err := pki.NewCA("roamsec EAP test CA", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ca.Issue(gwID, pki.ECDSAP256, []string{gwID}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := strongswan.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	swan, err := strongswan.Start(ctx, bed.GW, strongswan.Config{Name: "gw", Plugins: swanEAPPlugins,
		Debug: map[string]int{"ike": 2, "cfg": 1}, Files: map[string][]byte{"x509ca/ca.pem": ca.PEM, "x509/gw.pem": gw.CertPEM, "private/gw.pem": gw.KeyPEM},
		Swanctl: fmt.Sprintf(`connections {
	rw {
		version = 2
		pools = p
		local {
			auth = pubkey
			certs = gw.pem
			id = %s
		}
		remote {
			auth = eap-mschapv2
			eap_id = %%any
		}
		children {
			net {
				local_ts = 203.0.113.0/24
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
	eap-carol {
		id = %s
		secret = %q
	}
}
`, gwID, eapUser, eapPassword)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("strongSwan log tail:\n%s", swan.Tail(80))
		}
		swan.Stop(5 * time.Second)
	})
	dir := t.TempDir()
	caPath, err := ca.Write(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	writeCfg(t, dir, "eap.password", eapPassword+"\n")
	cfg := eapRoadWarriorConfig(t, dir, caPath, "")
	rw, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Stop(5 * time.Second) })
	if !rig.WaitFor(20*time.Second, func() bool { return strings.Contains(rw.Log(), "virtual address installed") }) {
		t.Fatalf("no tunnel\nroad warrior:\n%s\nstrongSwan:\n%s", rw.Log(), swan.Tail(60))
	}
	if !strings.Contains(swan.Log(), "EAP-MS-CHAPv2 succeeded") && !strings.Contains(swan.Log(), "EAP method EAP_MSCHAPV2 succeeded") {
		t.Errorf("strongSwan did not run EAP-MSCHAPv2\n%s", swan.Tail(60))
	}
	pingThrough(t, bed, "our EAP road warrior, strongSwan gateway", func() string { return "road warrior:\n" + rw.Log() + "\nstrongSwan:\n" + swan.Tail(60) })
}

// eapRoadWarriorConfig writes our road warrior's config for EAP-MSCHAPv2
// (its password in dir/eap.password, the gateway's CA at caPath), with
// extra lines appended to its ike section.
func eapRoadWarriorConfig(t *testing.T, dir, caPath, extra string) string {
	t.Helper()
	return writeCfg(t, dir, "rw.yaml", fmt.Sprintf(`role: roadwarrior
log: {level: debug}
control_socket: %s/rw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24}
transport:
  listen: [192.0.2.2]
ike:
  id: %s
  gateway: 192.0.2.1
  gateway_id: %s
  mode: virtual
  remote_ts: [203.0.113.0/24]
  eap_password_file: eap.password
  cas: [%s]
`, dir, eapUser, gwID, caPath)+extra)
}

// connectHomeVIP initiates strongSwan's "home" connection, waits for its
// Child SA and checks that the RADIUS server's Framed-IP-Address became
// its virtual address; it returns strongSwan's IKE SA.
func connectHomeVIP(ctx context.Context, t *testing.T, swan *strongswan.Charon, method string, logs func() string) strongswan.IKESA {
	t.Helper()
	start := time.Now()
	if err := swan.Initiate(ctx, "home", "home"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, logs())
	}
	sas, err := swan.WaitSA(ctx, 20*time.Second, strongswan.ChildInstalled("home"))
	if err != nil {
		t.Fatalf("%v\n%s", err, logs())
	}
	t.Logf("%s through RADIUS (one silent server first): connected in %v", method, time.Since(start).Round(time.Millisecond))
	ike, _ := strongswan.FindIKE(sas, "home")
	if len(ike.LocalVIPs) != 1 || ike.LocalVIPs[0] != eapVIP {
		t.Errorf("virtual address %v, want Framed-IP-Address %s", ike.LocalVIPs, eapVIP)
	}
	return ike
}
