package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// The road warrior's command line, end to end: `roadwarrior connect`
// shows each step and runs the daemon in the foreground, SIGINT and
// `roadwarrior disconnect` end it cleanly, status and `gateway sa list`
// agree on the SPIs, each failure a person can hit has its own exit code
// and a message that says what to do, and the Prometheus endpoint is
// scraped.

// cliProc is a command whose stdout and stderr are kept apart.
type cliProc struct {
	cmd            *exec.Cmd
	mu             sync.Mutex
	stdout, stderr bytes.Buffer
	done           chan struct{}
	code           int
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startCLI(t *testing.T, cmd *exec.Cmd) *cliProc {
	t.Helper()
	p := &cliProc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = lockedBuf{&p.mu, &p.stdout}
	cmd.Stderr = lockedBuf{&p.mu, &p.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if err != nil && p.code == 0 {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-p.done
			}
		}
	})
	return p
}

func (p *cliProc) Stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *cliProc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *cliProc) String() string {
	return fmt.Sprintf("stdout:\n%s\nstderr:\n%s", p.Stdout(), p.Stderr())
}

// wait waits for the exit and returns the exit code (-1 on timeout).
func (p *cliProc) wait(d time.Duration) int {
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		return -1
	}
}

func (p *cliProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// connect starts `roadwarrior connect ARGS` in the road warrior's
// namespace.
func connect(t *testing.T, bed *netns.Bed, args ...string) *cliProc {
	t.Helper()
	return startCLI(t, bed.RW.Command(filepath.Join(bin, "roadwarrior"), append([]string{"connect"}, args...)...))
}

// waitConnected waits for the "connected" line.
func waitConnected(t *testing.T, p *cliProc, logs ...func() string) {
	t.Helper()
	if !rig.WaitFor(25*time.Second, func() bool { return strings.Contains(p.Stdout(), "connected — Ctrl-C to disconnect") || p.exited() }) || p.exited() {
		var all []string
		for _, l := range logs {
			all = append(all, l())
		}
		t.Fatalf("connect did not connect (exit %d):\n%s\n%s", p.wait(0), p, strings.Join(all, "\n"))
	}
}

// runCLI runs a short command in ns and returns its output and exit code.
func runCLI(t *testing.T, ns *netns.NS, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := ns.Command(filepath.Join(bin, name), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if err != nil && code <= 0 {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errb.String(), code
}

// cliRW is a road warrior without mobility, for the failures: one uplink,
// short retransmissions (3 tries from 200 ms: about 3 s of silence).
const cliRW = `role: roadwarrior
log: {level: debug}
control_socket: %[1]s/rwf.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 192.0.2.2}
transport:
  listen: [192.0.2.2]
ike:
  id: rw1@roamsec.example
  gateway: %[2]s
  gateway_id: gw.roamsec.example
  local_ts: [%[3]s]
  remote_ts: [203.0.113.0/24]
  psk_file: %[4]s
  retransmit_timeout: 200ms
  retransmit_tries: 3
`

func lines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// inOrder checks that each pattern matches a later line than the one
// before.
func inOrder(t *testing.T, out string, pats ...string) {
	t.Helper()
	ls := lines(out)
	i := 0
	for _, p := range pats {
		re := regexp.MustCompile(p)
		for i < len(ls) && !re.MatchString(ls[i]) {
			i++
		}
		if i == len(ls) {
			t.Fatalf("no line matching %q (in this order) in:\n%s", p, out)
		}
		i++
	}
}

func noLeftovers(t *testing.T, ns *netns.NS) {
	t.Helper()
	links, _ := ns.Run("ip", "-br", "link")
	rules4, _ := ns.Run("ip", "-4", "rule")
	if strings.Contains(links, "roamsec0") || strings.Contains(rules4, "fwmark") {
		t.Fatalf("%s: left behind:\n%s\n%s", ns.Name, links, rules4)
	}
}

// TestConnectCLIStepsPingStatusAndCtrlC: connect by name shows the steps
// in order, the tunnel carries ping, status -json from another process
// shows the IKE SA and SPIs that match the gateway's sa list -json, and
// SIGINT ends it with exit 0, DELETE sent, nothing left behind.
func TestConnectCLIStepsPingStatusAndCtrlC(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })

	start := time.Now()
	p := connect(t, bed, netns.GatewayName, "-config", rwCfg)
	waitConnected(t, p, gw.Log)
	t.Logf("connected in %v; transcript:\n%s", time.Since(start).Round(time.Millisecond), p.Stdout())
	inOrder(t, p.Stdout(),
		`^resolving gw\.example → 192\.0\.2\.1$`,
		`^TUN roamsec0 up`,
		`^IKE_SA_INIT to 192\.0\.2\.1:500: proposing `,
		`^IKE_AUTH as rw1@roamsec\.example \(pre-shared key\) to 192\.0\.2\.1:4500$`,
		`^IKE SA established with gw\.roamsec\.example at 192\.0\.2\.1:4500: `,
		`^tunnel up: inner addresses 192\.0\.2\.2,198\.51\.100\.2 .*SPIs in 0x[0-9a-f]+ out 0x[0-9a-f]+; 192\.0\.2\.2,198\.51\.100\.2 <=> 203\.0\.113\.0/24`,
		`^path monitoring SA: SPIs in 0x[0-9a-f]+ out 0x[0-9a-f]+`,
		`^connected — Ctrl-C to disconnect$`)
	for _, path := range []string{`^path primary \(192\.0\.2\.2 → 192\.0\.2\.1\): answers \(active(, in use)?\)$`, `^path secondary \(198\.51\.100\.2 → 198\.51\.100\.1\): answers \(active(, in use)?\)$`} {
		inOrder(t, p.Stdout(), path, `^connected`)
	}
	pingThrough(t, bed, "connect", p.String, gw.Log)

	// status -json (another process, over the control socket) and the
	// gateway's sa list -json tell the same SPIs, swapped.
	out, errOut, code := runCLI(t, bed.RW, "roadwarrior", "status", "-json", "-config", rwCfg)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	if st.IKE == nil || st.IKE.State != "established" || st.IKE.PeerID != "gw.roamsec.example" || st.IKE.Proposal == "" || st.IKE.Peer != "192.0.2.1:4500" || len(st.Children) != 2 {
		t.Fatalf("status: IKE %+v, %d Child SAs\n%s", st.IKE, len(st.Children), out)
	}
	if st.Mobility == nil || len(st.Mobility.Paths) != 2 || !st.Mobility.Paths[0].InUse {
		t.Fatalf("status: mobility %+v", st.Mobility)
	}
	out, errOut, code = runCLI(t, bed.GW, "gateway", "sa", "list", "-json", "-config", gwCfg)
	if code != 0 {
		t.Fatalf("gateway sa list: exit %d: %s", code, errOut)
	}
	var gwSAs []daemon.ChildStatus
	if err := json.Unmarshal([]byte(out), &gwSAs); err != nil {
		t.Fatalf("sa list -json: %v\n%s", err, out)
	}
	if len(gwSAs) != len(st.Children) {
		t.Fatalf("gateway has %d Child SAs, road warrior %d:\n%s", len(gwSAs), len(st.Children), out)
	}
	for _, c := range st.Children {
		found := false
		for _, g := range gwSAs {
			if g.SPIIn == c.SPIOut && g.SPIOut == c.SPIIn {
				found = true
				if g.Peer != "rw1@roamsec.example" || g.Remote != c.Local || g.Local != c.Remote {
					t.Errorf("gateway's view of %s: %+v, road warrior's %+v", c.Name, g, c)
				}
			}
		}
		if !found {
			t.Errorf("road warrior's Child SA %s (in %s out %s) not in the gateway's sa list:\n%s", c.Name, c.SPIIn, c.SPIOut, out)
		}
		if c.Name == "" || c.PacketsOut == 0 && !c.HostToHost {
			t.Errorf("Child SA %+v: no packets out after the ping", c)
		}
	}
	human, _, _ := runCLI(t, bed.GW, "gateway", "sa", "list", "-config", gwCfg)
	t.Logf("gateway sa list:\n%s", human)
	if len(lines(human)) != 2 || !strings.Contains(human, "rw1@roamsec.example  SPIs in ") {
		t.Errorf("gateway sa list: want one line per Child SA:\n%s", human)
	}
	human, _, _ = runCLI(t, bed.GW, "gateway", "status", "-config", gwCfg)
	t.Logf("gateway status:\n%s", human)
	if !strings.Contains(human, "IKE: responder as gw.roamsec.example: 1 IKE SAs up") {
		t.Errorf("gateway status:\n%s", human)
	}
	human, _, _ = runCLI(t, bed.RW, "roadwarrior", "status", "-config", rwCfg)
	t.Logf("roadwarrior status:\n%s", human)
	if !strings.Contains(human, "IKE SA: ESTABLISHED") || !strings.Contains(human, "Path failure detector") {
		t.Errorf("roadwarrior status:\n%s", human)
	}

	// Ctrl-C: DELETE to the gateway, exit 0, nothing left.
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("after SIGINT: exit %d\n%s", code, p)
	}
	if !strings.Contains(p.Stdout(), "disconnecting: DELETE sent to 192.0.2.1:4500\ndisconnected (Ctrl-C): IKE SA deleted") {
		t.Fatalf("no disconnect lines:\n%s", p)
	}
	t.Logf("the whole transcript, exit 0:\n%s", p.Stdout())
	if !rig.WaitFor(5*time.Second, func() bool { return strings.Contains(gw.Log(), "deleted by the peer") }) {
		t.Fatalf("gateway did not get the DELETE:\n%s", gw.Log())
	}
	noLeftovers(t, bed.RW)
	if _, err := os.Stat(filepath.Join(filepath.Dir(rwCfg), "rw.sock")); err == nil {
		t.Error("control socket left behind")
	}
}

// TestConnectCLIDisconnectJSONLogs: connect -json -v with JSON logs; a
// second process's `roadwarrior disconnect` ends it cleanly. Every stdout
// line is one JSON event (the last: disconnected, exit 0, with the
// status), every stderr line a JSON log record, and the PSK is nowhere.
func TestConnectCLIDisconnectJSONLogs(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	b, _ := os.ReadFile(rwCfg)
	os.WriteFile(rwCfg, bytes.Replace(b, []byte("log: {level: debug}"), []byte("log: {level: debug, format: json}"), 1), 0o600)
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	p := connect(t, bed, "-json", "-v", "-config", rwCfg)
	if !rig.WaitFor(25*time.Second, func() bool { return strings.Contains(p.Stdout(), `"event":"connected"`) || p.exited() }) || p.exited() {
		t.Fatalf("no connected event:\n%s\ngw:\n%s", p, gw.Log())
	}
	pingThrough(t, bed, "connect -json", p.String)
	out, errOut, code := runCLI(t, bed.RW, "roadwarrior", "disconnect", "-config", rwCfg)
	if code != 0 || !strings.Contains(out, "disconnected") {
		t.Fatalf("disconnect: exit %d\n%s%s\nconnect:\n%s", code, out, errOut, p)
	}
	// disconnect waited for the road warrior's exit (ip netns exec, its
	// parent here, follows at once).
	if code := p.wait(2 * time.Second); code != 0 {
		t.Fatalf("connect after disconnect: exit %d\n%s", code, p)
	}
	var events []daemon.Event
	for _, l := range lines(p.Stdout()) {
		var e daemon.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Event == "" || e.Message == "" {
			t.Fatalf("stdout line is not a JSON event (%v): %s", err, l)
		}
		events = append(events, e)
	}
	var names []string
	for _, e := range events {
		names = append(names, e.Event)
	}
	t.Logf("events: %s", strings.Join(names, " "))
	want := []string{"resolved", "tun", "IKE_SA_INIT", "IKE_AUTH", "established", "tunnel_up", "CHILD_SA", "connected", "disconnected"}
	j := 0
	for _, n := range names {
		if j < len(want) && n == want[j] {
			j++
		}
	}
	if j != len(want) {
		t.Fatalf("events %v, want in order %v", names, want)
	}
	last := events[len(events)-1]
	if last.Exit == nil || *last.Exit != 0 || last.Status == nil || last.Status.IKE == nil || len(last.Status.Children) == 0 ||
		!strings.Contains(last.Message, "roadwarrior disconnect") {
		b, _ := json.Marshal(last)
		t.Fatalf("last event %s", b)
	}
	sc := bufio.NewScanner(strings.NewReader(p.Stderr()))
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec["level"] == nil || rec["msg"] == nil {
			t.Fatalf("stderr line is not a JSON log record: %s", sc.Text())
		}
		n++
	}
	if n < 10 || !strings.Contains(p.Stderr(), `"msg":"disconnect asked for over the control socket`) {
		t.Fatalf("%d JSON log records:\n%s", n, p.Stderr())
	}
	if strings.Contains(p.Stdout()+p.Stderr()+out+errOut, testPSK) || strings.Contains(p.Stdout()+p.Stderr(), fmt.Sprintf("%x", testPSK)) {
		t.Fatal("the PSK appears in connect's output")
	}
	if !rig.WaitFor(5*time.Second, func() bool { return strings.Contains(gw.Log(), "deleted by the peer") }) {
		t.Fatalf("gateway did not get the DELETE:\n%s", gw.Log())
	}
	noLeftovers(t, bed.RW)
}

// TestConnectCLIFailures: each failure a person can hit, with its exit
// code and its advice.
func TestConnectCLIFailures(t *testing.T) {
	bed := netns.New(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "psk")
	bad := filepath.Join(dir, "wrong-psk")
	os.WriteFile(good, []byte(testPSK+"\n"), 0o600)
	os.WriteFile(bad, []byte("not-the-gateways-psk-0123456789\n"), 0o600)
	gwCfg, _ := ikeConfigs(t, "192.0.2.2", "1h")
	rwCfg := func(name, gateway, localTS, psk string) string {
		return writeCfg(t, dir, name+".yaml", fmt.Sprintf(cliRW, dir, gateway, localTS, psk))
	}

	cases := []struct {
		name      string
		gateway   bool // a gateway runs
		cfg       string
		args      []string
		code      int
		want      string
		within    time.Duration
		noTUNLeft bool
	}{
		{name: "unreachable", cfg: rwCfg("unreach", "192.0.2.99", "192.0.2.2", good), code: daemon.ExitUnreachable,
			want: "no answer from 192.0.2.99 on UDP 500: is the gateway up, and is UDP 500/4500 open?", within: 6 * time.Second},
		{name: "unreachable by name", cfg: rwCfg("unreach-name", "192.0.2.99", "192.0.2.2", good), args: []string{netns.GatewayName}, code: daemon.ExitUnreachable,
			want: "no answer from gw.example (192.0.2.1) on UDP 500: is the gateway up, and is UDP 500/4500 open?", within: 6 * time.Second},
		{name: "name not found", cfg: rwCfg("noname", "192.0.2.1", "192.0.2.2", good), args: []string{"no-such-gateway.invalid"}, code: daemon.ExitNameUnknown,
			want: "no-such-gateway.invalid", within: 6 * time.Second},
		{name: "wrong psk", gateway: true, cfg: rwCfg("wrongpsk", "192.0.2.1", "192.0.2.2", bad), code: daemon.ExitAuthRefused,
			want: "refused our authentication as rw1@roamsec.example: check ike.id and the pre-shared key", within: 10 * time.Second},
		{name: "ts refused", gateway: true, cfg: rwCfg("ts", "192.0.2.1", "192.0.2.2, 203.0.113.2", good), code: daemon.ExitTSRefused,
			want: "the gateway refused the addresses we asked for (TS_UNACCEPTABLE", within: 10 * time.Second},
		{name: "config error", cfg: writeCfg(t, dir, "typo.yaml", strings.Replace(fmt.Sprintf(cliRW, dir, "192.0.2.1", "192.0.2.2", good), "retransmit_tries:", "retransmit_trys:", 1)),
			code: daemon.ExitConfig, want: "typo.yaml:20: ike.retransmit_trys: unknown field (did you mean \"retransmit_tries\"?)", within: 5 * time.Second},
	}
	var gw *rig.Proc
	parent := t
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.gateway && gw == nil {
				var err error
				if gw, err = rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg); err != nil {
					t.Fatal(err)
				}
				parent.Cleanup(func() { gw.Stop(5 * time.Second) })
			}
			start := time.Now()
			p := connect(t, bed, append(c.args, "-config", c.cfg)...)
			code := p.wait(c.within + 10*time.Second)
			took := time.Since(start)
			t.Logf("exit %d after %v:\n%s", code, took.Round(time.Millisecond), p)
			if code != c.code {
				t.Fatalf("exit %d, want %d", code, c.code)
			}
			if !strings.Contains(p.Stderr(), c.want) {
				t.Fatalf("stderr lacks %q", c.want)
			}
			if took > c.within {
				t.Errorf("took %v, want within %v", took, c.within)
			}
			noLeftovers(t, bed.RW)
		})
	}

	// Not root: no permission for the TUN device (the profile readable by
	// that user, so that is what fails).
	t.Run("permission", func(t *testing.T) {
		udir, err := os.MkdirTemp("", "roamsec-cli-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(udir) })
		os.Chmod(udir, 0o755)
		os.Chmod(bin, 0o755)
		psk := filepath.Join(udir, "psk")
		os.WriteFile(psk, []byte(testPSK), 0o600)
		cfg := writeCfg(t, udir, "rw.yaml", fmt.Sprintf(cliRW, udir, "192.0.2.1", "192.0.2.2", psk))
		for _, f := range []string{psk, cfg} {
			os.Chown(f, 65534, 65534)
		}
		p := startCLI(t, bed.RW.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
			filepath.Join(bin, "roadwarrior"), "connect", "-config", cfg))
		code := p.wait(15 * time.Second)
		t.Logf("exit %d:\n%s", code, p)
		if code != daemon.ExitPermission || !strings.Contains(p.Stderr(), "run as root (sudo") {
			t.Fatalf("exit %d, want %d with advice", code, daemon.ExitPermission)
		}
		// And status as that user: the control socket of a root daemon is
		// not theirs (here: no daemon; the config is readable).
		p = startCLI(t, bed.RW.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
			filepath.Join(bin, "roadwarrior"), "status", "-config", cfg))
		if code := p.wait(10 * time.Second); code != daemon.ExitRuntime || !strings.Contains(p.Stderr(), "is it running?") {
			t.Fatalf("status without a daemon: exit %d\n%s", code, p)
		}
	})
}

// TestMetricsCLIScrape: both daemons serve Prometheus metrics; a scrape
// after traffic and a failover shows per-SA packets and bytes, the IKE SA
// established, the paths' states, the switch and how long it took.
func TestMetricsCLIScrape(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	for _, f := range []string{gwCfg, rwCfg} {
		b, _ := os.ReadFile(f)
		os.WriteFile(f, append(b, []byte("metrics: {listen: \"127.0.0.1:9273\"}\n")...), 0o600)
	}
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	p := connect(t, bed, "-config", rwCfg)
	waitConnected(t, p, gw.Log)
	pingThrough(t, bed, "metrics", p.String, gw.Log)

	// A failover: once traffic is on the primary (whichever path answered
	// first, it returns there after switch_back), its link goes down;
	// connect reports the switch.
	if !rig.WaitFor(10*time.Second, func() bool {
		out, _, _ := runCLI(t, bed.RW, "roadwarrior", "status", "-json", "-config", rwCfg)
		var st daemon.Status
		return json.Unmarshal([]byte(out), &st) == nil && st.Mobility != nil && len(st.Mobility.Paths) == 2 && st.Mobility.Paths[0].InUse
	}) {
		t.Fatalf("traffic never on the primary:\n%s", p)
	}
	before := strings.Count(p.Stdout(), "switched from primary to secondary")
	if err := bed.RW.LinkDown(netns.IfPrimary); err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(10*time.Second, func() bool { return strings.Count(p.Stdout(), "switched from primary to secondary") > before }) {
		t.Fatalf("no switch reported:\n%s", p)
	}
	pingThrough(t, bed, "after the failover", p.String, gw.Log)

	// The namespace applies to the dialling thread: dial in it, then
	// speak HTTP/1.0 on that connection.
	scrape := func(ns *netns.NS) string {
		var c net.Conn
		if err := ns.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", "127.0.0.1:9273", 5*time.Second)
			return err
		}); err != nil {
			t.Fatalf("scrape in %s: %v", ns.Name, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("scrape in %s: %v", ns.Name, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("scrape in %s: %v %v", ns.Name, resp.Status, err)
		}
		return string(b)
	}
	value := func(body, series string) float64 {
		t.Helper()
		for _, l := range lines(body) {
			if strings.HasPrefix(l, series+" ") {
				v, err := strconv.ParseFloat(strings.TrimSpace(l[len(series):]), 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
		t.Fatalf("no series %s in:\n%s", series, body)
		return 0
	}
	sum := func(body, prefix string) (s float64) {
		for _, l := range lines(body) {
			if strings.HasPrefix(l, prefix) {
				f := strings.Fields(l)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				s += v
			}
		}
		return s
	}
	rw := scrape(bed.RW)
	gwm := scrape(bed.GW)
	if value(rw, "roamsec_ike_sas_established_total") != 1 || value(rw, "roamsec_ike_sas") != 1 || value(rw, "roamsec_child_sas") != 2 {
		t.Errorf("road warrior's IKE metrics:\n%s", grep(rw, "roamsec_ike|roamsec_child"))
	}
	if value(gwm, "roamsec_ike_sas") != 1 || value(gwm, "roamsec_child_sas") != 2 {
		t.Errorf("gateway's IKE metrics:\n%s", grep(gwm, "roamsec_ike|roamsec_child"))
	}
	for _, m := range []struct{ body, who string }{{rw, "road warrior"}, {gwm, "gateway"}} {
		if sum(m.body, `roamsec_sa_packets_total{child="gw.roamsec.example#1/net",dir="out"`) == 0 && m.who == "road warrior" ||
			sum(m.body, `roamsec_sa_packets_total{child="rw1@roamsec.example`) == 0 && m.who == "gateway" ||
			sum(m.body, "roamsec_sa_bytes_total") == 0 {
			t.Errorf("%s: no per-SA packets or bytes:\n%s", m.who, grep(m.body, "roamsec_sa_"))
		}
	}
	if value(rw, `roamsec_path_state{local="192.0.2.2",path="primary",peer="192.0.2.1",state="active"}`) != 0 ||
		value(rw, `roamsec_path_state{local="198.51.100.2",path="secondary",peer="198.51.100.1",state="active"}`) != 1 ||
		value(rw, `roamsec_path_in_use{local="198.51.100.2",path="secondary",peer="198.51.100.1"}`) != 1 ||
		value(rw, "roamsec_path_switches_total") < 1 ||
		sum(rw, "roamsec_last_path_switch_duration_seconds{") <= 0 {
		t.Errorf("road warrior's path metrics:\n%s", grep(rw, "roamsec_path|roamsec_last"))
	}
	if strings.Contains(rw+gwm, testPSK) {
		t.Fatal("the PSK appears in the metrics")
	}
	t.Logf("road warrior's metrics (roamsec_ only):\n%s", grep(rw, "^roamsec_"))
	t.Logf("connect's transcript:\n%s", p.Stdout())
	bed.RW.LinkUp(netns.IfPrimary)
}

func grep(body, pat string) string {
	re := regexp.MustCompile(pat)
	var out []string
	for _, l := range lines(body) {
		if re.MatchString(l) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
