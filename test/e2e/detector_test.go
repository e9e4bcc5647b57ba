package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// tcpFlow is one established TCP connection from the road warrior to the
// server, carrying a known byte pattern a little every few milliseconds;
// the server checks every byte, so a reset, a stall or corruption shows.
type tcpFlow struct {
	got, lastRead atomic.Int64
	bad           atomic.Int64 // offset+1 of the first wrong byte
	conn          net.Conn
	ln            net.Listener
	stop          chan struct{}
	wg            sync.WaitGroup
	mu            sync.Mutex
	errs          []error
}

func pattern(off int64) byte { return byte(off % 251) }

func startTCPFlow(t *testing.T, bed *netns.Bed, port int) *tcpFlow {
	t.Helper()
	f := &tcpFlow{stop: make(chan struct{})}
	addr := net.JoinHostPort(netns.Srv4.String(), fmt.Sprint(port))
	if err := bed.Srv.Do(func() (err error) { f.ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	f.wg.Go(f.serve)
	if err := bed.RW.Do(func() (err error) { f.conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		f.ln.Close()
		f.wg.Wait()
		t.Fatalf("TCP through the tunnel: %v", err)
	}
	f.wg.Go(f.write)
	t.Cleanup(f.close)
	return f
}

func (f *tcpFlow) fail(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
}

func (f *tcpFlow) serve() {
	c, err := f.ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := c.Read(buf)
		for _, b := range buf[:n] {
			if b != pattern(off) && f.bad.Load() == 0 {
				f.bad.Store(off + 1)
			}
			off++
		}
		f.got.Store(off)
		f.lastRead.Store(time.Now().UnixNano())
		if err != nil {
			if err != io.EOF {
				f.fail(fmt.Errorf("server read: %w", err))
			}
			return
		}
	}
}

func (f *tcpFlow) write() {
	chunk := make([]byte, 512)
	var off int64
	for {
		select {
		case <-f.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		for i := range chunk {
			chunk[i] = pattern(off + int64(i))
		}
		f.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := f.conn.Write(chunk); err != nil {
			f.fail(fmt.Errorf("client write at %d: %w", off, err))
			return
		}
		off += int64(len(chunk))
	}
}

func (f *tcpFlow) close() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	if f.conn != nil {
		f.conn.Close()
	}
	f.ln.Close()
	f.wg.Wait()
}

// check stops the flow and reports whether all of it arrived intact and
// kept flowing to the end.
func (f *tcpFlow) check(t *testing.T, since time.Time) {
	t.Helper()
	before := f.got.Load()
	if !rig.WaitFor(10*time.Second, func() bool { return f.got.Load() > before+4096 }) {
		t.Errorf("the TCP connection is not flowing at the end (%d bytes in all)", f.got.Load())
	}
	f.close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := errors.Join(f.errs...); err != nil {
		t.Errorf("TCP connection: %v", err)
	}
	if b := f.bad.Load(); b != 0 {
		t.Errorf("TCP data corrupted at byte %d", b-1)
	}
	t.Logf("TCP: %d bytes intact over %v", f.got.Load(), time.Since(since).Round(time.Second))
}

var (
	switchLine = regexp.MustCompile(`msg="path switch" .*\bn=(\d+) from="([^"]*)" to="([^"]*)"`)
	stateLine  = regexp.MustCompile(`msg="path state" .*\bpath="(\w+) [^"]*" from=(\S+) to=(\S+) source=(\S+) at=(\S+)`)
)

// pathLog is what the road warrior's log says about its paths.
type pathLog struct {
	switches []string // "from->to"
	states   []string // "path:from->to@at"
}

func readPathLog(t *testing.T, log string) pathLog {
	t.Helper()
	var pl pathLog
	for _, l := range strings.Split(log, "\n") {
		if m := switchLine.FindStringSubmatch(l); m != nil {
			if want := fmt.Sprint(len(pl.switches) + 1); m[1] != want {
				t.Errorf("switch numbered %s, want %s (one line per switch): %s", m[1], want, l)
			}
			pl.switches = append(pl.switches, strings.Fields(m[2])[0]+"->"+strings.Fields(m[3])[0])
		} else if strings.Contains(l, `msg="path switch"`) {
			t.Errorf("a path switch line without its number: %s", l)
		}
		if m := stateLine.FindStringSubmatch(l); m != nil {
			if _, err := time.Parse(time.RFC3339Nano, m[5]); err != nil {
				t.Errorf("path state without a time: %s", l)
			}
			pl.states = append(pl.states, m[1]+":"+m[2]+"->"+m[3]+"@"+m[5])
		} else if strings.Contains(l, `msg="path state"`) {
			t.Errorf("unparsed path state line: %s", l)
		}
	}
	return pl
}

func (pl pathLog) statesOf(path string) []string {
	var out []string
	for _, s := range pl.states {
		if strings.HasPrefix(s, path+":") {
			out = append(out, s)
		}
	}
	return out
}

// detectorBed starts the shipped example daemons (RFC 3554 mode, probes:
// this kernel has no SCTP) with a short switch-back hold, a UDP stream and
// a TCP connection through the tunnel, and waits until both paths have
// answered.
func detectorBed(t *testing.T, port int) (bed *netns.Bed, rwCfg string, rw *rig.Proc, s *rig.Stream, flow *tcpFlow) {
	t.Helper()
	bed = netns.New(t)
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	rwText, err := os.ReadFile(rig.ExampleConfig("roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rwText), "switch_back: 10s") {
		t.Fatal("example config changed: no switch_back: 10s")
	}
	// Control sockets of their own: tests of other packages (or other
	// checkouts) may run the example daemons on this machine meanwhile.
	dir := t.TempDir()
	rwText = []byte(ownSocket(t, string(rwText), "roadwarrior", dir))
	rwCfg, err = rig.WriteFile(dir, "roadwarrior.yaml", strings.Replace(string(rwText), "switch_back: 10s", "switch_back: 2s", 1))
	if err != nil {
		t.Fatal(err)
	}
	gwText, err := os.ReadFile(rig.ExampleConfig("gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gwCfg, err := rig.WriteFile(dir, "gateway.yaml", ownSocket(t, string(gwText), "gateway", dir))
	if err != nil {
		t.Fatal(err)
	}
	_, rw = up(t, bed, gwCfg, rwCfg)
	if s, err = rig.StartStream(bed, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if !rig.WaitFor(10*time.Second, func() bool { return !s.FirstReplyAfter(time.Time{}).IsZero() }) {
		t.Fatalf("no traffic through the tunnel\n%s\n%s", rw.Log(), netState(bed))
	}
	flow = startTCPFlow(t, bed, port)
	if !rig.WaitFor(10*time.Second, func() bool {
		m := status(t, "roadwarrior", rwCfg).Mobility
		return m != nil && len(m.Paths) == 2 && m.Paths[0].State == "active" && m.Paths[1].State == "active"
	}) {
		t.Fatalf("the paths never both answered\n%s", rw.Log())
	}
	return bed, rwCfg, rw, s, flow
}

// ownSocket points an example config's control socket into dir.
func ownSocket(t *testing.T, text, role, dir string) string {
	t.Helper()
	old := "control_socket: /run/roamsec/" + role + ".sock"
	if !strings.Contains(text, old) {
		t.Fatalf("example config %s changed: no %q", role, old)
	}
	return strings.Replace(text, old, "control_socket: "+filepath.Join(dir, role+".sock"), 1)
}

// lossy drops pct % of what arrives on ifname in ns (nftables' random
// number generator: there is no netem here).
func lossy(ns *netns.NS, ifname string, pct int) error {
	script := fmt.Sprintf("table netdev rsb_lossy {\n\tchain in {\n\t\ttype filter hook ingress device %q priority -400;\n\t\tnumgen random mod 100 < %d drop\n\t}\n}\n", ifname, pct)
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft: %w: %s", ns.Name, err, out)
	}
	return nil
}

func nftCounters(ns *netns.NS) string {
	out, _ := ns.Run("nft", "list", "table", "netdev", "rsb_lossy")
	return out
}

// A lossy primary (3 % of the road warrior's packets to the gateway lost,
// the link up) is not a dead one: the clean secondary is never suspected,
// traffic either stays on the primary or moves to the clean secondary and
// stays (never to a worse path, never back and forth), every switch is
// logged once and counted once, and an established TCP connection carries
// its data intact throughout.
func TestDetectorLossyPrimary(t *testing.T) {
	bed, rwCfg, rw, s, flow := detectorBed(t, 5311)
	t0 := time.Now()
	if err := lossy(bed.GW, netns.IfPrimary, 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Second)
	sent0, ans0 := s.Counts()
	flow.check(t, t0)
	st := status(t, "roadwarrior", rwCfg)
	pl := readPathLog(t, rw.Log())
	m := st.Mobility
	if m == nil || len(m.Paths) != 2 {
		t.Fatalf("mobility status %+v", m)
	}
	if m.Switches != len(pl.switches) {
		t.Errorf("status counts %d switches, the log shows %d: %v", m.Switches, len(pl.switches), pl.switches)
	}
	if sec := pl.statesOf("secondary"); len(sec) != 1 {
		t.Errorf("the clean secondary changed state: %v", sec)
	}
	switch {
	case len(pl.switches) == 0:
		if !m.Paths[0].InUse {
			t.Errorf("no switch logged, but the primary is not in use: %+v", m.Paths)
		}
	case len(pl.switches) <= 2 && pl.switches[0] == "primary->secondary":
		// Moved to the clean path; back only once the primary measured as
		// good as it (the switch-back rule), at most once in 20 s.
	default:
		t.Errorf("flapping or a move to a worse path: %v", pl.switches)
	}
	for _, p := range m.Paths {
		if p.Loss != nil && p.RTTMs != nil {
			t.Logf("path %s: %s, loss %.1f%%, rtt %.1f ms, in use %v", p.Name, p.State, 100**p.Loss, *p.RTTMs, p.InUse)
		}
	}
	t.Logf("lossy primary, 20 s: switches logged %d, counted %d %v; primary transitions %v; UDP stream %d/%d answered\nnft: %s",
		len(pl.switches), m.Switches, pl.switches, pl.statesOf("primary"), ans0, sent0, nftCounters(bed.GW))
}

// A busy road warrior (busy loops on every core and then some, load
// above 10 on this machine) delays every heartbeat alike: no path is
// taken for dead, nothing switches, and the TCP connection carries on.
func TestDetectorUnderLoad(t *testing.T) {
	bed, rwCfg, rw, s, flow := detectorBed(t, 5312)
	t0 := time.Now()
	n := 5 * runtime.NumCPU()
	var loops []*exec.Cmd
	for range n {
		c := bed.RW.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		loops = append(loops, c)
	}
	stopLoops := func() {
		for _, c := range loops {
			c.Process.Kill()
			c.Wait()
		}
		loops = nil
	}
	t.Cleanup(stopLoops)
	time.Sleep(15 * time.Second)
	load, _ := os.ReadFile("/proc/loadavg")
	stopLoops()
	time.Sleep(2 * time.Second)
	sent0, ans0 := s.Counts()
	flow.check(t, t0)
	st := status(t, "roadwarrior", rwCfg)
	pl := readPathLog(t, rw.Log())
	m := st.Mobility
	if m == nil || len(m.Paths) != 2 {
		t.Fatalf("mobility status %+v", m)
	}
	if m.Switches != len(pl.switches) {
		t.Errorf("status counts %d switches, the log shows %d: %v", m.Switches, len(pl.switches), pl.switches)
	}
	if len(pl.switches) != 0 || !m.Paths[0].InUse {
		t.Errorf("a spurious switch under load, with no fault: %v\n%v", pl.switches, pl.states)
	}
	t.Logf("%d busy loops for 15 s, loadavg %s: switches logged %d, counted %d; transitions %v; UDP stream %d/%d answered",
		n, strings.TrimSpace(string(load)), len(pl.switches), m.Switches, pl.states, ans0, sent0)
}
