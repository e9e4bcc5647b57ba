package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/internal/enroll"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/strongswan"
)

// One-time key pairs (issue 13, seed 002): the gateway is Host and Target;
// a road warrior in a fresh namespace connects with nothing but a code;
// the same code again, an altered one, a revoked one and an expired one
// are refused with their own exit code; two gateway processes sharing one
// Host admit exactly one of two road warriors racing with the same code;
// the accounting log shows every step.

const oneTimeGW = `role: gateway
log: {level: debug}
control_socket: %[1]s/%[2]s.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 100.64.1.0/24}
transport:
  listen: [192.0.2.1]
ike:
  id: gw.roamsec.example
  local_ts: [203.0.113.0/24]
  one_time:
    database: %[3]s/keys.json
    accounting: %[3]s/accounting.jsonl
    name: %[2]s
    virtual_pool: [100.64.1.0/24]
`

type issued struct {
	Code  string `json:"code"`
	KeyID string `json:"key_id"`
}

// issueCodes runs `gateway enroll issue USER -json` against the database
// in dir.
func issueCodes(t *testing.T, ns *netns.NS, dir, user string, args ...string) []issued {
	t.Helper()
	all := append([]string{"enroll", "issue", user, "-db", dir + "/keys.json", "-accounting", dir + "/accounting.jsonl", "-json"}, args...)
	out, errOut, code := runCLI(t, ns, "gateway", all...)
	if code != 0 {
		t.Fatalf("enroll issue: exit %d: %s", code, errOut)
	}
	var keys []issued
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("enroll issue -json: %v\n%s", err, out)
	}
	return keys
}

// connectOnce runs connect -one-time in ns with its own control socket.
func connectOnce(t *testing.T, ns *netns.NS, dir, code string) *cliProc {
	t.Helper()
	return startCLI(t, ns.Command(filepath.Join(bin, "roadwarrior"), "connect", netns.GatewayName, "-one-time", code,
		"-remote-ts", "203.0.113.0/24", "-control-socket", filepath.Join(dir, "rw-"+ns.Name+".sock")))
}

// accounting reads the accounting log's events.
func accounting(t *testing.T, dir string) []enroll.Event {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "accounting.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []enroll.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e enroll.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("accounting log line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

func eventsOf(evs []enroll.Event, keyID string) []string {
	var out []string
	for _, e := range evs {
		if e.KeyID == keyID {
			out = append(out, e.Event+map[bool]string{true: ":" + string(e.Reason), false: ""}[e.Reason != ""])
		}
	}
	return out
}

// alterUser re-encodes a code with another user and a correct checksum:
// what a forger who knows the format would try (the code's own checksum
// cannot stop it; the Host must).
func alterUser(t *testing.T, code, user string) string {
	t.Helper()
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	b, err := enc.DecodeString(strings.ReplaceAll(code, "-", ""))
	if err != nil {
		t.Fatal(err)
	}
	payload := append(slices.Clone(b[:17]), user...)
	h := sha256.New()
	h.Write([]byte("roamsec one-time code"))
	h.Write(payload)
	return enc.EncodeToString(append(payload, h.Sum(nil)[:4]...))
}

func startOneTimeGW(t *testing.T, ns *netns.NS, dir, name string) *rig.Proc {
	t.Helper()
	cfg, err := rig.WriteFile(dir, name+".yaml", fmt.Sprintf(oneTimeGW, dir, name, dir))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := rig.Start(ns, filepath.Join(bin, "gateway"), 15*time.Second, "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	return gw
}

// refused checks that connect with code exits with want and says why.
func refused(t *testing.T, ns *netns.NS, dir, code string, want int, says string) {
	t.Helper()
	p := connectOnce(t, ns, dir, code)
	if got := p.wait(40 * time.Second); got != want {
		t.Fatalf("connect -one-time: exit %d, want %d\n%s", got, want, p)
	}
	if !strings.Contains(p.Stderr(), says) {
		t.Fatalf("connect -one-time: stderr does not say %q:\n%s", says, p)
	}
	noLeftovers(t, ns)
}

func TestOneTimeKeysEndToEnd(t *testing.T) {
	bed := netns.New(t)
	dir := t.TempDir()
	keys := issueCodes(t, bed.GW, dir, "alice", "-count", "3")
	expiring := issueCodes(t, bed.GW, dir, "alice", "-expires", "1s")
	gw := startOneTimeGW(t, bed.GW, dir, "gw-a")

	// A fresh namespace, only the code: connected, traffic flows.
	start := time.Now()
	p := connectOnce(t, bed.RW, dir, keys[0].Code)
	waitConnected(t, p, gw.Log)
	pingThrough(t, bed, "one-time", p.String, gw.Log)
	t.Logf("connect -one-time to traffic: %v\n%s", time.Since(start).Round(time.Millisecond), p.Stdout())
	if !strings.Contains(p.Stdout(), "virtual address 100.64.1.") && !strings.Contains(p.Stdout(), "100.64.1.") {
		t.Errorf("no virtual address from the one-time pool:\n%s", p.Stdout())
	}
	p.cmd.Process.Signal(os.Interrupt)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("disconnect: exit %d\n%s", code, p)
	}
	noLeftovers(t, bed.RW)
	// Nothing of it stays on the borrowed machine: the control socket,
	// its one file, is gone (the key lived in memory only).
	if _, err := os.Stat(filepath.Join(dir, "rw-"+bed.RW.Name+".sock")); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}

	// The same code again: the key is used.
	refused(t, bed.RW, dir, keys[0].Code, daemon.ExitOneTimeRefused, "refused the one-time code")
	// A typo: caught by the checksum before anything is sent.
	typo := []byte(keys[1].Code)
	typo[3] = map[bool]byte{true: 'B', false: 'A'}[typo[3] == 'A']
	refused(t, bed.RW, dir, string(typo), daemon.ExitOneTimeCode, "checksum")
	// Altered to claim another user, checksum recomputed: the Host refuses.
	refused(t, bed.RW, dir, alterUser(t, keys[1].Code, "mallory"), daemon.ExitOneTimeRefused, "refused the one-time code")
	// Revoked.
	if out, errOut, code := runCLI(t, bed.GW, "gateway", "enroll", "revoke", keys[2].KeyID, "-db", dir+"/keys.json", "-accounting", dir+"/accounting.jsonl"); code != 0 {
		t.Fatalf("revoke: exit %d: %s%s", code, out, errOut)
	}
	refused(t, bed.RW, dir, keys[2].Code, daemon.ExitOneTimeRefused, "refused the one-time code")
	// Expired.
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	refused(t, bed.RW, dir, expiring[0].Code, daemon.ExitOneTimeRefused, "refused the one-time code")
	// The altered code's key stays valid for its holder: connect with it.
	p = connectOnce(t, bed.RW, dir, keys[1].Code)
	waitConnected(t, p, gw.Log)
	p.cmd.Process.Signal(os.Interrupt)
	p.wait(15 * time.Second)

	list, _, _ := runCLI(t, bed.GW, "gateway", "enroll", "list", "-db", dir+"/keys.json")
	t.Logf("enroll list:\n%s", list)
	out, errOut, code := runCLI(t, bed.GW, "gateway", "status", "-json", "-config", filepath.Join(dir, "gw-a.yaml"))
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("gateway status -json: exit %d, %v: %s%s", code, err, out, errOut)
	}
	if o := st.IKE.OneTime; o == nil || o.Admitted != 2 || !maps.Equal(o.Refused, map[string]uint64{"used": 1, "wrong_user": 1, "revoked": 1, "expired": 1}) {
		t.Errorf("gateway status: one-time counters %+v", st.IKE.OneTime)
	}
	gw.Stop(5 * time.Second)
	evs := accounting(t, dir)
	for _, c := range []struct {
		key  string
		want []string
	}{
		{keys[0].KeyID, []string{"issued", "request", "verified", "marked_used", "authorized", "tunnel_up", "tunnel_down", "request", "refused:used"}},
		{keys[1].KeyID, []string{"issued", "request", "refused:wrong_user", "request", "verified", "marked_used", "authorized", "tunnel_up", "tunnel_down"}},
		{keys[2].KeyID, []string{"issued", "revoked", "request", "refused:revoked"}},
		{expiring[0].KeyID, []string{"issued", "request", "refused:expired"}},
	} {
		if got := eventsOf(evs, c.key); !slices.Equal(got, c.want) {
			t.Errorf("accounting for key %s: %v, want %v", c.key, got, c.want)
		}
	}
	for _, e := range evs {
		if e.KeyID == keys[0].KeyID && e.Event == enroll.EvTunnelDown && (e.BytesIn == 0 || e.BytesOut == 0 || e.PacketsIn < 3) {
			t.Errorf("tunnel_down without the ping's bytes: %+v", e)
		}
	}
}

// Two gateways (processes, each in its own bed) share one Host database;
// two road warriors start with the same code at once: exactly one is
// admitted, the other refused as used.
func TestOneTimeKeyRacingGatewaysAdmitOne(t *testing.T) {
	bedA, bedB := netns.New(t), netns.New(t)
	dir := t.TempDir()
	keys := issueCodes(t, bedA.GW, dir, "bob")
	gwA := startOneTimeGW(t, bedA.GW, dir, "gw-a")
	gwB := startOneTimeGW(t, bedB.GW, dir, "gw-b")
	pa := connectOnce(t, bedA.RW, dir, keys[0].Code)
	pb := connectOnce(t, bedB.RW, dir, keys[0].Code)
	up := func(p *cliProc) bool { return strings.Contains(p.Stdout(), "connected — Ctrl-C to disconnect") }
	if !rig.WaitFor(40*time.Second, func() bool { return (up(pa) || pa.exited()) && (up(pb) || pb.exited()) }) {
		t.Fatalf("neither settled:\nA: %s\nB: %s\n%s\n%s", pa, pb, gwA.Log(), gwB.Log())
	}
	winners := 0
	for _, p := range []*cliProc{pa, pb} {
		switch {
		case up(p):
			winners++
		case p.wait(5*time.Second) == daemon.ExitOneTimeRefused:
		default:
			t.Errorf("exit %d, neither connected nor refused:\n%s", p.wait(5*time.Second), p)
		}
	}
	if winners != 1 {
		t.Fatalf("%d road warriors admitted, want exactly 1\nA: %s\nB: %s", winners, pa, pb)
	}
	var used, refusedUsed int
	for _, e := range accounting(t, dir) {
		switch {
		case e.Event == enroll.EvMarkedUsed:
			used++
		case e.Event == enroll.EvRefused && e.Reason == enroll.ReasonUsed:
			refusedUsed++
		}
	}
	if used != 1 || refusedUsed != 1 {
		t.Fatalf("accounting: %d marked_used, %d refused as used; want 1 and 1", used, refusedUsed)
	}
}

// TestOneTimeConnectTime measures connect -one-time to the first echo
// through the tunnel; ROAMSEC_BENCH_OTK=N runs N trials and logs the
// median.
func TestOneTimeConnectTime(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ROAMSEC_BENCH_OTK"))
	if n == 0 {
		t.Skip("ROAMSEC_BENCH_OTK=N measures N connections")
	}
	bed := netns.New(t)
	dir := t.TempDir()
	keys := issueCodes(t, bed.GW, dir, "carol", "-count", strconv.Itoa(n))
	gw := startOneTimeGW(t, bed.GW, dir, "gw-a")
	var ds []time.Duration
	for _, k := range keys {
		start := time.Now()
		p := connectOnce(t, bed.RW, dir, k.Code)
		ok := rig.WaitFor(30*time.Second, func() bool {
			_, err := bed.RW.Run("ping", "-c", "1", "-W", "0.2", netns.Srv4.String())
			return err == nil || p.exited()
		})
		if !ok || p.exited() {
			t.Fatalf("no traffic:\n%s\n%s", p, gw.Log())
		}
		ds = append(ds, time.Since(start))
		p.cmd.Process.Signal(os.Interrupt)
		p.wait(15 * time.Second)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("connect -one-time to traffic, %d trials: median %v (min %v, max %v); loadavg %s", n, ds[n/2].Round(time.Millisecond), ds[0].Round(time.Millisecond), ds[n-1].Round(time.Millisecond), strings.TrimSpace(string(load)))
}

// The mapping is standard IKEv2: strongSwan 5.9, given the code's key pair
// as a raw Ed25519 key (pubkey authentication, RFC 7427/8420), the
// identity as ID_KEY_ID and the gateway's secret as a PSK for the
// gateway's side, connects to our gateway once; the second time the key
// is used.
func TestStrongSwanWithAOneTimeKey(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bed := netns.New(t)
	dir := t.TempDir()
	keys := issueCodes(t, bed.GW, dir, "erin")
	gw := startOneTimeGW(t, bed.GW, dir, "gw-a")
	k, err := auth.ParseOneTimeCode(keys[0].Code)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Credential().Key)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(k.PublicKey())
	secret := k.GatewaySecret()
	conf := fmt.Sprintf(`connections {
	otk {
		version = 2
		remote_addrs = %s
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-ecp256
		rekey_time = 0
		local {
			auth = pubkey
			id = "@#%x"
			pubkeys = erin.pem
		}
		remote {
			auth = psk
			id = gw.roamsec.example
		}
		children {
			otk {
				remote_ts = 203.0.113.0/24
				esp_proposals = aes256gcm16
				rekey_time = 0
			}
		}
	}
}
secrets {
	ike-gw {
		id-gw = gw.roamsec.example
		secret = 0x%x
	}
}
`, netns.GWPrimary4, k.Identity().Data, secret)
	files := map[string][]byte{
		"private/erin.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"pubkey/erin.pem":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
	}
	swan := startSwan(t, bed.RW, "otk", conf, files)
	logs := func() string { return "roamsec:\n" + gw.Log() + "\nstrongSwan:\n" + swan.Tail(80) }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := swan.Initiate(ctx, "otk", "otk"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, logs())
	}
	if _, err := swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("otk")); err != nil {
		t.Fatalf("%v\n%s", err, logs())
	}
	pingThrough(t, bed, "strongSwan with a one-time key", logs)
	if err := swan.TerminateWait(ctx, "otk"); err != nil {
		t.Fatalf("terminate: %v\n%s", err, logs())
	}
	// Used: the second attempt is refused.
	if err := swan.Initiate(ctx, "otk", "otk"); err == nil {
		t.Fatalf("the used key connected again\n%s", logs())
	}
	var marked, refusedUsed int
	for _, e := range accounting(t, dir) {
		switch {
		case e.Event == enroll.EvMarkedUsed && e.KeyID == keys[0].KeyID:
			marked++
		case e.Event == enroll.EvRefused && e.Reason == enroll.ReasonUsed:
			refusedUsed++
		}
	}
	if marked != 1 || refusedUsed != 1 {
		t.Fatalf("accounting: %d marked_used, %d refused as used\n%s", marked, refusedUsed, logs())
	}
}
