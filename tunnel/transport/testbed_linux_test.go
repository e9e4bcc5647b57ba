package transport

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// testbed is two network namespaces joined by one veth pair carrying two
// IPv4 and two IPv6 address pairs, so a sender has a second source address
// to pick per packet. All test traffic stays inside these namespaces.
type testbed struct {
	nsA, nsB string
}

// Addresses on the link. Index 0 is the primary pair, index 1 the second.
var (
	addrA4 = [2]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")}
	addrB4 = [2]netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.2")}
	addrA6 = [2]netip.Addr{netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:2::1")}
	addrB6 = [2]netip.Addr{netip.MustParseAddr("2001:db8:1::2"), netip.MustParseAddr("2001:db8:2::2")}
	// Not assigned anywhere.
	addrNone4 = netip.MustParseAddr("203.0.113.9")
)

var testbedSeq atomic.Uint32

func newTestbed(tb testing.TB) *testbed {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and raw sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2 (ip)")
	}
	prefix := fmt.Sprintf("rstp-%d-%d", os.Getpid(), testbedSeq.Add(1))
	t := &testbed{nsA: prefix + "-a", nsB: prefix + "-b"}
	for _, ns := range []string{t.nsA, t.nsB} {
		run(tb, "ip", "netns", "add", ns)
		tb.Cleanup(func() {
			// Deleting the namespace takes the veth end in it along.
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				tb.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	// Created directly inside the namespaces, so the root namespace never
	// sees these interfaces and their names cannot collide.
	const macA, macB = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
	run(tb, "ip", "link", "add", "name", "rsa", "address", macA, "netns", t.nsA, "type", "veth",
		"peer", "name", "rsb", "address", macB, "netns", t.nsB)
	for _, side := range []struct {
		ns, dev, peerMAC string
		v4, v6, peer     [2]netip.Addr
		peer6            [2]netip.Addr
	}{
		{t.nsA, "rsa", macB, addrA4, addrA6, addrB4, addrB6},
		{t.nsB, "rsb", macA, addrB4, addrB6, addrA4, addrA6},
	} {
		for i := range 2 {
			run(tb, "ip", "-n", side.ns, "addr", "add", side.v4[i].String()+"/24", "dev", side.dev)
			// nodad: usable at once instead of after duplicate detection.
			run(tb, "ip", "-n", side.ns, "addr", "add", side.v6[i].String()+"/64", "dev", side.dev, "nodad")
			// Static neighbours: no ARP/ND wait (a second for IPv6 on a
			// fresh link) and no reordering of the first packets.
			for _, peer := range []netip.Addr{side.peer[i], side.peer6[i]} {
				run(tb, "ip", "-n", side.ns, "neigh", "add", peer.String(), "lladdr", side.peerMAC, "dev", side.dev, "nud", "permanent")
			}
		}
		run(tb, "ip", "-n", side.ns, "link", "set", "lo", "up")
		run(tb, "ip", "-n", side.ns, "link", "set", side.dev, "up")
	}
	// Until linkwatch activates the device (asynchronously, after carrier
	// comes up) its qdisc is noop and silently drops what is sent.
	for _, side := range [][2]string{{t.nsA, "rsa"}, {t.nsB, "rsb"}} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, err := exec.Command("ip", "-n", side[0], "link", "show", "dev", side[1]).CombinedOutput()
			if err == nil && strings.Contains(string(out), "state UP") && !strings.Contains(string(out), "qdisc noop") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("%s in %s not up: %s", side[1], side[0], out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return t
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a thread that has entered namespace ns. Sockets created
// there stay in ns. The thread is never unlocked, so the runtime discards
// it when fn's goroutine ends and nothing else ever runs in ns by accident.
func inNS(tb testing.TB, ns string, fn func() error) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		tb.Fatalf("in namespace %s: %v", ns, err)
	}
}

func listenESPIn(tb testing.TB, ns string, local netip.Addr) *ESPConn {
	tb.Helper()
	var c *ESPConn
	inNS(tb, ns, func() (err error) {
		c, err = ListenRawESP(local)
		return err
	})
	tb.Cleanup(func() { c.Close() })
	return c
}

func listenUDPIn(tb testing.TB, ns string, local netip.AddrPort) *UDPConn {
	tb.Helper()
	var c *UDPConn
	inNS(tb, ns, func() (err error) {
		c, err = ListenUDP(local)
		return err
	})
	tb.Cleanup(func() { c.Close() })
	return c
}
