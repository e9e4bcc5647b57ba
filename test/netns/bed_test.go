package netns

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const (
	pingOK   = 5 * time.Second        // generous: CI machines can be slow
	pingFail = 700 * time.Millisecond // long enough for several echoes
)

func mustPing(t *testing.T, n *NS, dst netip.Addr) {
	t.Helper()
	if err := n.Ping(dst, pingOK); err != nil {
		t.Errorf("%s -> %s: %v", n.Name, dst, err)
	}
}

func mustNotPing(t *testing.T, n *NS, dst netip.Addr) {
	t.Helper()
	if err := n.Ping(dst, pingFail); err == nil {
		t.Errorf("%s -> %s: got a reply, want none", n.Name, dst)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestBed(t *testing.T) {
	var names []string
	var hostsDir string
	t.Run("up", func(t *testing.T) {
		b := New(t)
		for _, n := range []*NS{b.RW, b.GW, b.Srv} {
			if len(n.Name) > 15 {
				t.Errorf("namespace name %q longer than 15", n.Name)
			}
			if !exists(nsRunDir + "/" + n.Name) {
				t.Errorf("namespace %s missing", n.Name)
			}
			names = append(names, n.Name)
		}
		hostsDir = b.hostsDir

		t.Run("uplinks", func(t *testing.T) {
			for _, dst := range []netip.Addr{GWPrimary4, GWPrimary6, GWSecondary4, GWSecondary6} {
				mustPing(t, b.RW, dst)
			}
		})
		t.Run("server", func(t *testing.T) {
			mustPing(t, b.Srv, GWServer4)
			mustPing(t, b.Srv, GWServer6)
		})
		t.Run("no route rw to server net", func(t *testing.T) {
			mustNotPing(t, b.RW, Srv4)
			mustNotPing(t, b.RW, Srv6)
		})
		t.Run("hosts", func(t *testing.T) {
			for _, c := range []struct {
				db   string
				want netip.Addr
			}{{"ahostsv4", GWPrimary4}, {"ahostsv6", GWPrimary6}} {
				out, err := b.RW.Run("getent", c.db, GatewayName)
				if err != nil {
					t.Fatal(err)
				}
				f := strings.Fields(out)
				if len(f) == 0 {
					t.Fatalf("getent %s %s: empty", c.db, GatewayName)
				}
				if got, err := netip.ParseAddr(f[0]); err != nil || got != c.want {
					t.Errorf("getent %s %s = %q, want %s", c.db, GatewayName, f[0], c.want)
				}
			}
			// Only rw has the entry.
			if out, err := b.GW.Run("getent", "hosts", GatewayName); err == nil {
				t.Errorf("gw resolves %s: %q", GatewayName, out)
			}
		})
		t.Run("link down", func(t *testing.T) {
			if err := b.RW.LinkDown(IfPrimary); err != nil {
				t.Fatal(err)
			}
			mustNotPing(t, b.RW, GWPrimary4)
			mustNotPing(t, b.RW, GWPrimary6)
			mustPing(t, b.RW, GWSecondary4) // the other uplink is unaffected
			if err := b.RW.LinkUp(IfPrimary); err != nil {
				t.Fatal(err)
			}
			mustPing(t, b.RW, GWPrimary4)
			mustPing(t, b.RW, GWPrimary6)
		})
		t.Run("blackhole", func(t *testing.T) {
			if err := b.Blackhole(IfSecondary); err != nil {
				t.Fatal(err)
			}
			mustNotPing(t, b.RW, GWSecondary4)
			mustNotPing(t, b.RW, GWSecondary6)
			mustNotPing(t, b.GW, RWSecondary4) // both directions
			mustPing(t, b.RW, GWPrimary4)
			out, err := b.RW.Run("ip", "-br", "link", "show", IfSecondary)
			if err != nil || !strings.Contains(out, "UP") {
				t.Errorf("link should stay up while blackholed: %q %v", out, err)
			}
			if err := b.Unblackhole(IfSecondary); err != nil {
				t.Fatal(err)
			}
			mustPing(t, b.RW, GWSecondary4)
			mustPing(t, b.RW, GWSecondary6)
			mustPing(t, b.GW, RWSecondary4)
		})
		t.Run("plain routes", func(t *testing.T) {
			if err := b.AddPlainRoutes(); err != nil {
				t.Fatal(err)
			}
			mustPing(t, b.RW, Srv4)
			mustPing(t, b.RW, Srv6)
		})
		t.Run("Do", func(t *testing.T) {
			// Do switches only fn's thread: the namespace's interface is
			// visible inside and not outside.
			var inside bool
			if err := b.GW.Do(func() error {
				_, err := os.Stat("/proc/sys/net/ipv4/conf/" + IfServer)
				inside = err == nil
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat("/proc/sys/net/ipv4/conf/" + IfServer)
			if !inside || err == nil {
				t.Errorf("inside=%v, outside visible=%v", inside, err == nil)
			}
		})
	})
	if len(names) == 0 {
		return // skipped
	}
	for _, n := range names {
		if exists(nsRunDir + "/" + n) {
			t.Errorf("namespace %s left after cleanup", n)
		}
	}
	if exists(hostsDir) {
		t.Errorf("%s left after cleanup", hostsDir)
	}
}

func TestParallelBeds(t *testing.T) {
	a, b := New(t), New(t)
	if a.ID == b.ID {
		t.Fatalf("two beds share ID %s", a.ID)
	}
	// Same addresses, separate namespaces: each works on its own.
	if err := a.RW.LinkDown(IfPrimary); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, a.RW, GWPrimary4)
	mustPing(t, b.RW, GWPrimary4)
}

func TestSweep(t *testing.T) {
	live := NewNS(t) // ours: must survive (made first: it sweeps too)
	// A pid that just exited stands in for a crashed test binary.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("cannot run true:", err)
	}
	name := prefix + pad36(uint64(cmd.Process.Pid), 5) + "zzz-rw"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { deleteNS(name); os.RemoveAll(etcNetns + "/" + name) })
	if err := os.MkdirAll(etcNetns+"/"+name, 0o755); err != nil {
		t.Fatal(err)
	}
	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swept %v", removed)
	if len(removed) != 2 {
		t.Errorf("Sweep removed %v, want the namespace and its /etc/netns dir", removed)
	}
	if exists(nsRunDir+"/"+name) || exists(etcNetns+"/"+name) {
		t.Errorf("stale %s not swept", name)
	}
	if !exists(nsRunDir + "/" + live.Name) {
		t.Errorf("live %s swept", live.Name)
	}
}

// TestCleanupOnFailure runs a test that builds a bed and fails, in a child
// process, and checks that the bed is gone anyway.
func TestCleanupOnFailure(t *testing.T) {
	if os.Getenv("NETNS_FAILING_CHILD") == "1" {
		b := New(t)
		fmt.Println("BED", b.RW.Name, b.GW.Name, b.Srv.Name)
		t.Fatal("failing on purpose")
	}
	skipUnlessCapable(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupOnFailure$", "-test.v")
	cmd.Env = append(os.Environ(), "NETNS_FAILING_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child test passed; output:\n%s", out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "BED" {
			names = f[1:]
		}
	}
	if len(names) == 0 {
		t.Fatalf("child built no bed; output:\n%s", out)
	}
	for _, n := range names {
		if exists(nsRunDir+"/"+n) || exists(etcNetns+"/"+n) {
			t.Errorf("%s left behind by the failed test", n)
		}
	}
}

// TestLoadAddrs: the load generator's addresses are on rw and gw reaches
// each of them (first, middle, last) through rw's primary link.
func TestLoadAddrs(t *testing.T) {
	b := New(t)
	addrs, err := b.AddLoadAddrs(300)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 300 || addrs[0] != netip.MustParseAddr("100.64.0.1") || addrs[299] != netip.MustParseAddr("100.64.1.44") {
		t.Fatalf("addresses %v .. %v (%d)", addrs[0], addrs[len(addrs)-1], len(addrs))
	}
	for _, a := range []netip.Addr{addrs[0], addrs[150], addrs[299]} {
		mustPing(t, b.GW, a)
	}
	if _, err := b.AddLoadAddrs(0); err == nil {
		t.Error("AddLoadAddrs(0) accepted")
	}
}
