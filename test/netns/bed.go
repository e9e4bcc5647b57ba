// Package netns builds the network-namespace test bed every end-to-end test
// of roamsec runs on:
//
//	      primary: 192.0.2.0/24, 2001:db8:1::/64
//	    .2 ┌──────────── IfPrimary ────────────┐ .1
//	┌──────┴─┐                              ┌──┴─────┐ .1   IfServer    .2 ┌─────┐
//	│   rw   │                              │   gw   ├─────────────────────┤ srv │
//	└──────┬─┘                              └──┬─────┘  203.0.113.0/24     └─────┘
//	    .2 └─────────── IfSecondary ───────────┘ .1      2001:db8:3::/64
//	      secondary: 198.51.100.0/24, 2001:db8:2::/64
//
// (IPv6 host parts are ::1 for gw, ::2 for rw and srv.) rw is the road
// warrior with two uplinks; gw is the gateway and forwards; srv sits behind
// gw with default routes via it. rw has no route to the server net: the VPN
// installs it, or AddPlainRoutes does to measure the bare veth path.
//
// Everything lives in namespaces named rsb<pid><n>-<role>: nothing is
// created in, or sent from, the caller's namespace. Interface names are
// fixed since each namespace has its own. Needs root, ip (iproute2) and, for
// BlockIngress and Blackhole, nft (nftables).
package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// Interface names, the same at both ends of each link.
const (
	IfPrimary   = "rsb-pri"
	IfSecondary = "rsb-sec"
	IfServer    = "rsb-srv"
)

// GatewayName resolves to GWPrimary4 and GWPrimary6 for commands run in rw
// through NS.Command / NS.Run (via /etc/netns/<rw>/hosts).
const GatewayName = "gw.example"

// Addresses of the bed (documentation ranges only).
var (
	PrimaryNet4 = netip.MustParsePrefix("192.0.2.0/24")
	PrimaryNet6 = netip.MustParsePrefix("2001:db8:1::/64")
	RWPrimary4  = netip.MustParseAddr("192.0.2.2")
	RWPrimary6  = netip.MustParseAddr("2001:db8:1::2")
	GWPrimary4  = netip.MustParseAddr("192.0.2.1")
	GWPrimary6  = netip.MustParseAddr("2001:db8:1::1")

	SecondaryNet4 = netip.MustParsePrefix("198.51.100.0/24")
	SecondaryNet6 = netip.MustParsePrefix("2001:db8:2::/64")
	RWSecondary4  = netip.MustParseAddr("198.51.100.2")
	RWSecondary6  = netip.MustParseAddr("2001:db8:2::2")
	GWSecondary4  = netip.MustParseAddr("198.51.100.1")
	GWSecondary6  = netip.MustParseAddr("2001:db8:2::1")

	ServerNet4 = netip.MustParsePrefix("203.0.113.0/24")
	ServerNet6 = netip.MustParsePrefix("2001:db8:3::/64")
	GWServer4  = netip.MustParseAddr("203.0.113.1")
	GWServer6  = netip.MustParseAddr("2001:db8:3::1")
	Srv4       = netip.MustParseAddr("203.0.113.2")
	Srv6       = netip.MustParseAddr("2001:db8:3::2")
)

// Bed is one instance of the topology.
type Bed struct {
	ID          string // common name prefix, e.g. "rsb00k3z001"
	RW, GW, Srv *NS
	hostsDir    string // /etc/netns/<rw>, removed on Close
	closed      bool
}

const (
	prefix   = "rsb"
	nsRunDir = "/run/netns"
	etcNetns = "/etc/netns"
)

var seq atomic.Uint32

// newID returns prefix + 5 base-36 digits of our pid + 3 of a counter: with
// "-srv" that is 15 characters. The pid lets Sweep tell stale leftovers of
// dead processes from beds of parallel runs. IDs still in use (a leftover
// of an earlier process with our pid) are skipped.
func newID() string {
	for {
		id := prefix + pad36(uint64(os.Getpid()), 5) + pad36(uint64(seq.Add(1)%46656), 3)
		if m, _ := filepath.Glob(nsRunDir + "/" + id + "-*"); len(m) == 0 {
			return id
		}
	}
}

func pad36(v uint64, w int) string {
	s := strconv.FormatUint(v, 36)
	if len(s) < w {
		s = strings.Repeat("0", w-len(s)) + s
	}
	return s
}

// New builds a bed for a test and tears it down in t.Cleanup, also when the
// test fails. It skips the test when not root or when ip is missing.
func New(t testing.TB) *Bed {
	t.Helper()
	skipUnlessCapable(t)
	b, err := NewStandalone()
	if err != nil {
		t.Fatalf("netns bed: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("netns bed teardown: %v", err)
		}
	})
	return b
}

// NewNS makes a single empty namespace (lo up, no DAD) for tests that need no
// topology, deleted in t.Cleanup. It skips like New.
func NewNS(t testing.TB) *NS {
	t.Helper()
	skipUnlessCapable(t)
	sweepQuiet()
	n, err := newNS(newID() + "-ns")
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() {
		if err := n.close(); err != nil {
			t.Errorf("netns teardown: %v", err)
		}
	})
	return n
}

func skipUnlessCapable(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns: needs root to create network namespaces (run the test as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netns: needs the ip command (iproute2)")
	}
}

// NewStandalone builds a bed for programs that are not tests (demos,
// benchmarks); the caller must Close it.
func NewStandalone() (*Bed, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netns: needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("netns: needs the ip command (iproute2): %w", err)
	}
	sweepQuiet()
	b := &Bed{ID: newID()}
	if err := b.build(); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

func (b *Bed) build() error {
	var err error
	if b.RW, err = newNS(b.ID + "-rw"); err != nil {
		return err
	}
	if b.GW, err = newNS(b.ID + "-gw"); err != nil {
		return err
	}
	if b.Srv, err = newNS(b.ID + "-srv"); err != nil {
		return err
	}
	if err := b.GW.sysctl(map[string]string{
		"net/ipv4/ip_forward":          "1",
		"net/ipv6/conf/all/forwarding": "1",
	}); err != nil {
		return err
	}
	links := []struct {
		a, z   *NS
		name   string
		net4   netip.Prefix
		net6   netip.Prefix
		a4, a6 netip.Addr
		z4, z6 netip.Addr
	}{
		{b.RW, b.GW, IfPrimary, PrimaryNet4, PrimaryNet6, RWPrimary4, RWPrimary6, GWPrimary4, GWPrimary6},
		{b.RW, b.GW, IfSecondary, SecondaryNet4, SecondaryNet6, RWSecondary4, RWSecondary6, GWSecondary4, GWSecondary6},
		{b.Srv, b.GW, IfServer, ServerNet4, ServerNet6, Srv4, Srv6, GWServer4, GWServer6},
	}
	for i, l := range links {
		if err := veth(l.a, l.z, l.name, 100+i, 200+i); err != nil {
			return err
		}
		for _, e := range []struct {
			ns     *NS
			v4, v6 netip.Addr
		}{{l.a, l.a4, l.a6}, {l.z, l.z4, l.z6}} {
			if err := e.ns.addAddr(l.name, netip.PrefixFrom(e.v4, l.net4.Bits())); err != nil {
				return err
			}
			if err := e.ns.addAddr(l.name, netip.PrefixFrom(e.v6, l.net6.Bits())); err != nil {
				return err
			}
			if err := e.ns.LinkUp(l.name); err != nil {
				return err
			}
		}
	}
	for _, n := range []*NS{b.RW, b.GW, b.Srv} {
		if err := n.waitIPv6(""); err != nil {
			return err
		}
	}
	if err := b.Srv.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), GWServer4); err != nil {
		return err
	}
	if err := b.Srv.AddRoute(netip.MustParsePrefix("::/0"), GWServer6); err != nil {
		return err
	}
	return b.writeHosts()
}

// writeHosts makes `ip netns exec <rw>` resolve GatewayName.
func (b *Bed) writeHosts() error {
	dir := etcNetns + "/" + b.RW.Name
	var err error
	for range 3 { // a concurrent cleanup may remove an empty /etc/netns under us
		if err = os.MkdirAll(dir, 0o755); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	b.hostsDir = dir
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n%s\t%s\n",
		GWPrimary4, GatewayName, GWPrimary6, GatewayName)
	return os.WriteFile(dir+"/hosts", []byte(hosts), 0o644)
}

// veth links a and z with a veth pair named name at both ends, created
// directly in a with its peer in z, so it never appears in our namespace.
//
// The ends get distinct ifindexes: in fresh namespaces both would otherwise
// get the same one, and linkwatch then takes the veth for a non-stacked
// device (ifindex == iflink) and delays its carrier event by up to a second.
func veth(a, z *NS, name string, aIndex, zIndex int) error {
	out, err := exec.Command("ip", "-n", a.Name, "link", "add", name, "index", strconv.Itoa(aIndex),
		"type", "veth", "peer", "name", name, "index", strconv.Itoa(zIndex), "netns", z.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("veth %s %s<->%s: %w: %s", name, a.Name, z.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddPlainRoutes routes the server net from rw via gw's primary addresses,
// without any VPN, so a benchmark can measure the bare veth path.
func (b *Bed) AddPlainRoutes() error {
	return errors.Join(
		b.RW.AddRoute(ServerNet4, GWPrimary4),
		b.RW.AddRoute(ServerNet6, GWPrimary6),
	)
}

// Blackhole silently drops everything on the link ifname (IfPrimary,
// IfSecondary or IfServer) in both directions by dropping at the ingress of
// both ends; links stay up and senders see no error. Unblackhole undoes it.
func (b *Bed) Blackhole(ifname string) error {
	ends, err := b.ends(ifname)
	if err != nil {
		return err
	}
	for i, n := range ends {
		if err := n.BlockIngress(ifname); err != nil {
			for _, m := range ends[:i] {
				m.UnblockIngress(ifname)
			}
			return err
		}
	}
	return nil
}

// Unblackhole removes what Blackhole installed.
func (b *Bed) Unblackhole(ifname string) error {
	ends, err := b.ends(ifname)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range ends {
		errs = append(errs, n.UnblockIngress(ifname))
	}
	return errors.Join(errs...)
}

func (b *Bed) ends(ifname string) ([]*NS, error) {
	switch ifname {
	case IfPrimary, IfSecondary:
		return []*NS{b.RW, b.GW}, nil
	case IfServer:
		return []*NS{b.GW, b.Srv}, nil
	}
	return nil, fmt.Errorf("netns: unknown link %q", ifname)
}

// Close deletes the namespaces (and with them every interface, route and
// nft rule in them) and the /etc/netns entry. It is safe to call twice.
func (b *Bed) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for _, n := range []*NS{b.RW, b.GW, b.Srv} {
		if n != nil {
			errs = append(errs, n.close())
		}
	}
	if b.hostsDir != "" {
		errs = append(errs, os.RemoveAll(b.hostsDir))
		os.Remove(etcNetns) // only succeeds when empty: someone else may use it
	}
	return errors.Join(errs...)
}

// Sweep removes namespaces and /etc/netns entries left by beds of processes
// that have died (crashed or killed tests); beds of live processes, e.g.
// parallel test binaries, are left alone. New and NewStandalone call it.
func Sweep() (removed []string, err error) {
	var errs []error
	for _, dir := range []string{nsRunDir, etcNetns} {
		ents, rerr := os.ReadDir(dir)
		if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			errs = append(errs, rerr)
		}
		for _, e := range ents {
			if !stale(e.Name()) {
				continue
			}
			if dir == nsRunDir {
				err = deleteNS(e.Name())
			} else {
				err = os.RemoveAll(dir + "/" + e.Name())
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, dir+"/"+e.Name())
		}
	}
	if len(removed) > 0 {
		os.Remove(etcNetns)
	}
	return removed, errors.Join(errs...)
}

func sweepQuiet() {
	if removed, err := Sweep(); len(removed) > 0 || err != nil {
		fmt.Fprintf(os.Stderr, "netns: swept stale %v (errors: %v)\n", removed, err)
	}
}

// stale reports whether name is one of ours whose creating process is gone.
func stale(name string) bool {
	if !strings.HasPrefix(name, prefix) || len(name) < len(prefix)+8 {
		return false
	}
	pid, err := strconv.ParseUint(name[len(prefix):len(prefix)+5], 36, 32)
	if err != nil || pid == 0 {
		return false
	}
	err = syscall.Kill(int(pid), 0)
	return errors.Is(err, syscall.ESRCH)
}
