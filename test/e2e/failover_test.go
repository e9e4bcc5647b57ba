package e2e

import (
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// mobilitySection adds the two IPv4 paths of the test bed to the road
// warrior's example config.
const mobilitySection = `
mobility:
  paths:
    - {name: primary, local: 192.0.2.2, peer: 192.0.2.1, link: rsb-pri}
    - {name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec}
  primary: primary
  switch_back: 1s
  detector: netlink
`

// stream sends a numbered UDP datagram every interval from the road
// warrior to the server's echo port and records when each answer came
// back. The socket is not bound to an address, so every datagram takes
// the source the routing gives it at that moment.
type stream struct {
	mu      sync.Mutex
	sent    map[uint32]time.Time
	replies []time.Time
	conn    *net.UDPConn
	stop    chan struct{}
	done    sync.WaitGroup
}

func startStream(t *testing.T, bed *netns.Bed, interval time.Duration) *stream {
	t.Helper()
	s := &stream{sent: map[uint32]time.Time{}, stop: make(chan struct{})}
	if err := bed.RW.Do(func() (err error) {
		s.conn, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netns.Srv4, 7))
	s.done.Go(func() {
		buf := make([]byte, 64)
		for {
			n, err := s.conn.Read(buf)
			if err != nil {
				return
			}
			if n == 4 {
				s.mu.Lock()
				s.replies = append(s.replies, time.Now())
				s.mu.Unlock()
			}
		}
	})
	s.done.Go(func() {
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for seq := uint32(0); ; seq++ {
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
			b := []byte{byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
			s.mu.Lock()
			s.sent[seq] = time.Now()
			s.mu.Unlock()
			s.conn.WriteToUDP(b, dst) // errors (no route for a moment) are lost datagrams
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		s.conn.Close()
		s.done.Wait()
	}
}

// firstReplyAfter is the time of the first answer after t0, or zero.
func (s *stream) firstReplyAfter(t0 time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.replies {
		if r.After(t0) {
			return r
		}
	}
	return time.Time{}
}

func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

var spiRe = regexp.MustCompile(`spi=(0x[0-9a-f]+)`)

// One SA across an interface switch (netlink detector): the road
// warrior's primary link goes down mid-stream; traffic resumes over the
// secondary uplink with the same SAs (same SPIs, no renegotiation: the
// daemons have no IKE at all), and returns to the primary when it comes
// back. Timings are reported, not asserted.
func TestFailoverOnLinkDownKeepsTheSA(t *testing.T) {
	bed := netns.New(t)
	udpEchoServer(t, bed)
	dir := t.TempDir()
	rwText, err := os.ReadFile(rig.ExampleConfig("roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rwCfg, err := rig.WriteFile(dir, "roadwarrior.yaml", string(rwText)+mobilitySection)
	if err != nil {
		t.Fatal(err)
	}
	gw, rw := up(t, bed, rig.ExampleConfig("gateway.yaml"), rwCfg)
	s := startStream(t, bed, 10*time.Millisecond)
	if !waitFor(5*time.Second, func() bool { return !s.firstReplyAfter(time.Time{}).IsZero() }) {
		t.Fatalf("no traffic through the tunnel before the failover\n%s\n%s", rw.Log(), netState(bed))
	}
	spisBefore := spiRe.FindAllString(rw.Log(), -1)

	down := time.Now()
	if err := bed.RW.LinkDown(netns.IfPrimary); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return !s.firstReplyAfter(down).IsZero() }) {
		t.Fatalf("no traffic after the primary link went down\nrw:\n%s\n%s", rw.Log(), netState(bed))
	}
	resumed := s.firstReplyAfter(down).Sub(down)
	if !strings.Contains(rw.Log(), "path switch") || !strings.Contains(rw.Log(), "to=\"secondary") {
		t.Fatalf("no path switch logged:\n%s", rw.Log())
	}
	if src, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String()); !strings.Contains(src, "src "+netns.RWSecondary4.String()) {
		t.Fatalf("new flows do not start from the secondary address (RFC 3554 mode): %s", src)
	}

	up := time.Now()
	if err := bed.RW.LinkUp(netns.IfPrimary); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		out, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String())
		return strings.Contains(out, "src "+netns.RWPrimary4.String())
	}) {
		t.Fatalf("did not switch back to the primary:\n%s", rw.Log())
	}
	back := time.Since(up)
	t0 := time.Now()
	if !waitFor(5*time.Second, func() bool { return !s.firstReplyAfter(t0).IsZero() }) {
		t.Fatalf("no traffic after switching back:\n%s", rw.Log())
	}
	s.close()

	// The same SAs all along: the SPIs logged at start are the only ones,
	// and both daemons stop cleanly with their counters.
	for _, p := range []*rig.Proc{rw, gw} {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	spisAfter := spiRe.FindAllString(rw.Log(), -1)
	seen := map[string]bool{}
	for _, x := range spisBefore {
		seen[x] = true
	}
	for _, x := range spisAfter {
		if !seen[x] {
			t.Fatalf("a new SPI appeared: %s (before: %v)", x, spisBefore)
		}
	}
	if !strings.Contains(gw.Log(), "drops=map[]") {
		t.Errorf("gateway dropped packets:\n%s", gw.Log())
	}
	t.Logf("link down -> traffic on the secondary: %v; link up -> back on the primary after %v (switch_back 1s)", resumed.Round(time.Millisecond), back.Round(time.Millisecond))
}

func udpEchoServer(t *testing.T, bed *netns.Bed) {
	t.Helper()
	var c *net.UDPConn
	if err := bed.Srv.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netns.Srv4, 7)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
}
