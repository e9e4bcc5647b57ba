package e2e

import (
	"net/netip"
	"slices"
	"strconv"

	"context"
	"fmt"
	"github.com/roamsec/roamsec/internal/daemon"
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

// mobikeMove is one way a strongSwan road warrior's path changes: move
// acts on the path it is on now (its IKE SA's local address cur) and
// returns what puts the bed back for the next trial, or nil.
type mobikeMove struct {
	name string
	move func(bed *netns.Bed, cur netip.Addr) (restore func() error, err error)
}

var mobikeMoves = []mobikeMove{
	{"link-down", func(bed *netns.Bed, cur netip.Addr) (func() error, error) {
		link := netns.IfSecondary
		if netns.PrimaryNet4.Contains(cur) || netns.PrimaryNet6.Contains(cur) {
			link = netns.IfPrimary
		}
		return func() error { return bed.RW.LinkUp(link) }, bed.RW.LinkDown(link)
	}},
	// The address it uses changes (DHCP gave another): the new one added
	// on the same link, the old one deleted.
	{"addr-change", func(bed *netns.Bed, cur netip.Addr) (func() error, error) {
		b := cur.AsSlice()
		b[len(b)-1] ^= 1 // .2 <-> .3, ::2 <-> ::3
		next, _ := netip.AddrFromSlice(b)
		link, bits := netns.IfSecondary, 24
		if netns.PrimaryNet4.Contains(cur) || netns.PrimaryNet6.Contains(cur) {
			link = netns.IfPrimary
		}
		if cur.Is6() {
			bits = 64
		}
		add := []string{"ip", "addr", "add", fmt.Sprintf("%s/%d", next, bits), "dev", link}
		if cur.Is6() {
			add = append(add, "nodad")
		}
		if out, err := bed.RW.Run(add...); err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		if out, err := bed.RW.Run("ip", "addr", "del", fmt.Sprintf("%s/%d", cur, bits), "dev", link); err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		return nil, nil
	}},
}

// swanMOBIKERoadWarrior is a strongSwan road warrior with MOBIKE (its
// default) in virtual-address mode, or in RFC 3554 mode with both its
// uplink addresses in TSi.
func swanMOBIKERoadWarrior(rfc3554 bool) string {
	conn := swanRoadWarriorConn("home", "mobike = yes\nrekey_time = 0\ndpd_delay = 0", "rekey_time = 0")
	if rfc3554 {
		conn = strings.Replace(conn, "\t\tvips = 0.0.0.0\n", "", 1)
		conn = strings.Replace(conn, "remote_ts = 203.0.113.0/24", fmt.Sprintf("local_ts = %s/32,%s/32\n\t\t\t\tremote_ts = 203.0.113.0/24", netns.RWPrimary4, netns.RWSecondary4), 1)
	}
	return swanRoadWarriorConf(conn)
}

// startSwanPeerTS is startSwan for a charon whose selectors contain its
// own outer addresses (RFC 3554 mode): kernel-libipsec's allow_peer_ts.
func startSwanPeerTS(t *testing.T, ns *netns.NS, name, conf string) *strongswan.Charon {
	t.Helper()
	if err := strongswan.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := strongswan.Start(ctx, ns, strongswan.Config{Name: name, Swanctl: conf, AllowPeerTS: true,
		Debug: map[string]int{"ike": 2, "chd": 1, "knl": 1, "cfg": 1, "esp": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("strongSwan %s log tail:\n%s", name, c.Tail(80))
		}
		c.Stop(5 * time.Second)
	})
	return c
}

// mobikeBed is one cell's bed: a strongSwan road warrior connected to our
// gateway (shipped config) or to a strongSwan gateway.
type mobikeBed struct {
	bed      *netns.Bed
	swan     *strongswan.Charon
	gw       *rig.Proc // ours, or nil
	gwCfg    string
	swanGW   *strongswan.Charon
	logs     func() string
	ike0     strongswan.IKESA
	children int // the gateway's Child SAs before the move
}

func newMOBIKEBed(t *testing.T, swanGateway, rfc3554 bool) *mobikeBed {
	t.Helper()
	b := &mobikeBed{bed: netns.New(t)}
	if swanGateway {
		b.swanGW = startSwan(t, b.bed.GW, "gw", swanGatewayConf(pskCreds(t), "mobike = yes", "esp_proposals = aes256gcm16"), nil)
	} else {
		b.gw, b.gwCfg = startShippedGateway(t, b.bed)
	}
	if rfc3554 {
		b.swan = startSwanPeerTS(t, b.bed.RW, "rw", swanMOBIKERoadWarrior(true))
	} else {
		b.swan = startSwan(t, b.bed.RW, "rw", swanMOBIKERoadWarrior(false), nil)
	}
	b.logs = func() string {
		s := "strongSwan road warrior:\n" + b.swan.Tail(100)
		if b.gw != nil {
			out, _, _ := rig.Run(context.Background(), nil, filepath.Join(bin, "gateway"), "status", "-config", b.gwCfg)
			s += "\nroamsec gateway:\n" + b.gw.Log() + "\n" + out
		} else {
			s += "\nstrongSwan gateway:\n" + b.swanGW.Tail(60)
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.swan.Initiate(ctx, "home", "home"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, b.logs())
	}
	sas, err := b.swan.WaitSA(ctx, 10*time.Second, strongswan.ChildInstalled("home"))
	if err != nil {
		t.Fatal(err)
	}
	b.ike0, _ = strongswan.FindIKE(sas, "home")
	pingThrough(t, b.bed, "before the move", b.logs)
	if err := rig.EchoServer(b.bed); err != nil {
		t.Fatal(err)
	}
	if b.gw != nil {
		st := status(t, "gateway", b.gwCfg)
		if st.IKE == nil || len(st.IKE.SAs) != 1 {
			t.Fatalf("gateway status before the move: %+v", st.IKE)
		}
		b.children = len(st.Children)
	}
	return b
}

// trial moves the road warrior's path while a 50 Hz stream runs and
// returns the outage: the longest time without an answer around the move
// (the last answer before the interruption to the first after it). It checks what every move must keep: the
// same IKE SA (same SPIs, no new IKE_SA_INIT), no error in strongSwan's
// log, and on our gateway one IKE SA and as many Child SAs as before.
func (b *mobikeBed) trial(t *testing.T, m mobikeMove) time.Duration {
	t.Helper()
	s, err := rig.StartStream(b.bed, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(time.Now().Add(-100 * time.Millisecond)).IsZero() }) {
		t.Fatalf("%s: no traffic before the move\n%s", m.name, b.logs())
	}
	local0 := b.currentLocal(t)
	t0 := time.Now()
	restore, err := m.move(b.bed, netip.MustParseAddr(local0))
	if err != nil {
		t.Fatal(err)
	}
	if restore != nil {
		defer func() {
			if err := restore(); err != nil {
				t.Error(err)
			}
			time.Sleep(time.Second) // strongSwan sees the path come back
		}()
	}
	if !rig.WaitFor(20*time.Second, func() bool { return !s.FirstReplyAfter(t0).IsZero() }) {
		t.Fatalf("%s: no traffic after the move\n%s", m.name, b.logs())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sas, err := b.swan.WaitSA(ctx, 15*time.Second, func(sas []strongswan.IKESA) bool {
		i, ok := strongswan.FindIKE(sas, "home")
		c, ok2 := i.Child("home")
		return ok && ok2 && i.LocalHost != local0 && c.State == "INSTALLED" && len(i.TasksActive)+len(i.TasksQueued)+len(i.TasksPassive) == 0
	})
	if err != nil {
		t.Fatalf("%s: strongSwan's IKE SA did not settle on a new path: %v\n%s", m.name, err, b.logs())
	}
	// The outage: the longest time without an answer from just before
	// the move until the stream has run a while on the new path.
	time.Sleep(300 * time.Millisecond)
	outage := s.LongestGap(t0.Add(-100*time.Millisecond), time.Now())
	t.Logf("%s: %s -> %s at %s, outage %v", m.name, local0, b.currentLocal(t), t0.Format("15:04:05.000"), outage.Round(time.Millisecond))
	ike, _ := strongswan.FindIKE(sas, "home")
	if ike.SPIi != b.ike0.SPIi || ike.SPIr != b.ike0.SPIr {
		t.Errorf("%s: IKE SPIs changed %s/%s -> %s/%s: a new IKE SA", m.name, b.ike0.SPIi, b.ike0.SPIr, ike.SPIi, ike.SPIr)
	}
	log := b.swan.Log()
	for _, bad := range []string{"COOKIE2 mismatch", "closing IKE_SA", "deleting IKE_SA"} {
		if strings.Contains(log, bad) {
			t.Errorf("%s: strongSwan's log has %q\n%s", m.name, bad, b.logs())
		}
	}
	if strings.Contains(log, "home[2]") {
		t.Errorf("%s: strongSwan made a second IKE SA, want the one", m.name)
	}
	if b.gw != nil {
		var st daemon.Status
		if !rig.WaitFor(10*time.Second, func() bool {
			st = status(t, "gateway", b.gwCfg)
			return st.IKE != nil && len(st.IKE.SAs) == 1 && len(st.Children) == b.children
		}) {
			t.Errorf("%s: gateway holds %d IKE SAs and %d Child SAs after the move, want 1 and %d (nothing stale)\n%s",
				m.name, len(st.IKE.SAs), len(st.Children), b.children, b.logs())
		}
		if st.IKE != nil && len(st.IKE.SAs) == 1 && st.IKE.SAs[0].Remote.Addr().String() != ike.LocalHost {
			t.Errorf("%s: gateway's IKE SA is at %v, strongSwan at %s", m.name, st.IKE.SAs[0].Remote, ike.LocalHost)
		}
	}
	return outage
}

func (b *mobikeBed) currentLocal(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sas, err := b.swan.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i, _ := strongswan.FindIKE(sas, "home")
	return i.LocalHost
}

// TestStrongSwanMOBIKEResponder: a strongSwan 5.9 road warrior (MOBIKE,
// virtual address) roams while connected to the roamsec gateway (shipped
// config): its primary link goes down; its primary address changes. Each
// move keeps the IKE SA, leaves nothing stale, and traffic resumes.
// ROAMSEC_MOBIKE_TRIALS=N measures each cell N times (each trial moves off
// the path then in use, which is put back afterwards), against our
// gateway and against a strongSwan gateway in the same bed, and logs the
// medians.
func TestStrongSwanMOBIKEResponder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	trials := 1
	if n, err := strconv.Atoi(os.Getenv("ROAMSEC_MOBIKE_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	gateways := []bool{false}
	if trials > 1 {
		gateways = append(gateways, true)
	}
	for _, m := range mobikeMoves {
		for _, swanGW := range gateways {
			name := m.name + "/roamsec-gateway"
			if swanGW {
				name = m.name + "/strongswan-gateway"
			}
			t.Run(name, func(t *testing.T) {
				b := newMOBIKEBed(t, swanGW, false)
				var outages []time.Duration
				for i := 0; i < trials; i++ {
					outages = append(outages, b.trial(t, m))
					if t.Failed() {
						return
					}
				}
				if trials > 1 && b.gw != nil {
					// What the gateway did on each move, for the figures.
					var lines []string
					for _, l := range strings.Split(b.gw.Log(), "\n") {
						if strings.Contains(l, "MOBIKE") || strings.Contains(l, "Child SA") {
							lines = append(lines, l)
						}
					}
					t.Logf("gateway:\n%s", strings.Join(lines, "\n"))
				}
				slices.Sort(outages)
				t.Logf("%s: outage over %d trial(s): median %v, min %v, max %v (all %v)", name, len(outages),
					outages[len(outages)/2].Round(time.Millisecond), outages[0].Round(time.Millisecond), outages[len(outages)-1].Round(time.Millisecond), outages)
			})
		}
	}
}

// TestStrongSwanMOBIKEResponderRFC3554: the same link-down move with the
// strongSwan road warrior in RFC 3554 mode: no virtual address, both its
// uplink addresses in TSi (what the issue saw fail: the gateway sent ESP
// to the inner destination while strongSwan's SA lived on its IKE
// address). ROAMSEC_MOBIKE_TRIALS measures it as above (ours only).
//
// It needs the gateway to send ESP to where the road warrior receives it
// (its IKE address, or an address it has sent authenticated ESP from),
// not to the inner destination (tunnel/outer.go): strongSwan routes
// traffic from its second TS address (198.51.100.2), and its libipsec SA
// lives on its IKE address only.
func TestStrongSwanMOBIKEResponderRFC3554(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	trials := 1
	if n, err := strconv.Atoi(os.Getenv("ROAMSEC_MOBIKE_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	// Link down only: in RFC 3554 mode an address change changes the
	// road warrior's inner addresses (its TSi), which needs a new Child
	// SA, not a MOBIKE move; measured, the first change moved (412 ms, to
	// its IPv6 address) and traffic from the new address then had no SA.
	m := mobikeMoves[0]
	b := newMOBIKEBed(t, false, true)
	var outages []time.Duration
	for i := 0; i < trials; i++ {
		outages = append(outages, b.trial(t, m))
		if t.Failed() {
			return
		}
	}
	slices.Sort(outages)
	t.Logf("rfc3554/%s/roamsec-gateway: outage over %d trial(s): median %v (all %v)", m.name, len(outages), outages[len(outages)/2].Round(time.Millisecond), outages)
}

// TestStrongSwanCrashReconnectReplacesOldSA: a strongSwan road warrior
// killed with SIGKILL (no DELETE) and started again connects at once; its
// INITIAL_CONTACT makes the gateway drop the dead IKE SA then, not after
// DPD (30 s in the shipped config): one IKE SA, one Child SA, traffic.
func TestStrongSwanCrashReconnectReplacesOldSA(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := newMOBIKEBed(t, false, false)
	st0 := status(t, "gateway", b.gwCfg)
	if err := b.swan.Kill(); err != nil {
		t.Fatal(err)
	}
	again := startSwan(t, b.bed.RW, "rw-again", swanMOBIKERoadWarrior(false), nil)
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
