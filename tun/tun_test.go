package tun

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// Each test gets its own namespace; in it the TUN has a local address and
// the "far" net is routed into it, as a VPN routes the remote side.
var (
	local4 = netip.MustParsePrefix("192.0.2.1/24")
	local6 = netip.MustParsePrefix("2001:db8:1::1/64")
	far4   = netip.MustParsePrefix("198.51.100.0/24")
	far6   = netip.MustParsePrefix("2001:db8:2::/64")
)

var backends = []Backend{Wireguard, Water}

const tunName = "rstun0"

type family struct {
	name       string
	local, far netip.Prefix
}

var families = []family{{"ipv4", local4, far4}, {"ipv6", local6, far6}}

// host returns the k-th address of p.
func host(p netip.Prefix, k int) netip.Addr {
	a := p.Masked().Addr()
	for range k {
		a = a.Next()
	}
	return a
}

type env struct {
	ns *netns.NS
	d  *Device
}

// setup opens a configured TUN with backend b in a fresh namespace.
func setup(t *testing.T, b Backend) *env {
	t.Helper()
	e := &env{ns: netns.NewNS(t)}
	if err := e.ns.Do(func() (err error) {
		e.d, err = Open(Config{Name: tunName, Backend: b})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.d.Close() })
	if err := e.d.Configure([]netip.Prefix{local4, local6}, []Route{
		{Dst: far4, Src: local4.Addr()},
		{Dst: far6, Src: local6.Addr()},
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// packets reads from d until it is closed and delivers copies.
func packets(d *Device) <-chan []byte {
	ch := make(chan []byte, 4096)
	go func() {
		defer close(ch)
		bufs := make([][]byte, d.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, BufferSize)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := d.Read(bufs, sizes, Offset)
			for i := range n {
				ch <- bytes.Clone(bufs[i][Offset : Offset+sizes[i]])
			}
			if err != nil && !errors.Is(err, ErrTooManySegments) {
				return
			}
		}
	}()
	return ch
}

// expect returns the first packet from ch that match accepts, skipping
// others (the kernel sends e.g. MLD reports on its own).
func expect(t *testing.T, ch <-chan []byte, what string, match func(ip) bool) ip {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				t.Fatalf("device closed while waiting for %s", what)
			}
			if p, ok := parse(b); ok && match(p) {
				return p
			}
		case <-timeout:
			t.Fatalf("no %s read from the TUN", what)
		}
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestReadUDP sends a datagram from a socket to an address routed into the
// TUN and reads it from the device.
func TestReadUDP(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			e := setup(t, b)
			ch := packets(e.d)
			for _, f := range families {
				t.Run(f.name, func(t *testing.T) {
					dst := netip.AddrPortFrom(host(f.far, 7), 4500)
					payload := random(300)
					var c *net.UDPConn
					if err := e.ns.Do(func() (err error) {
						c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
						return err
					}); err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					if _, err := c.Write(payload); err != nil {
						t.Fatal(err)
					}
					src := c.LocalAddr().(*net.UDPAddr).AddrPort()

					p := expect(t, ch, "UDP to "+dst.String(), func(p ip) bool {
						_, dp := p.ports()
						return p.proto == protoUDP && p.dst == dst.Addr() && dp == dst.Port()
					})
					sp, _ := p.ports()
					if p.src != f.local.Addr() || p.src != src.Addr().Unmap() || sp != src.Port() {
						t.Errorf("source %v:%d, want the route's Src %v and the socket's %v", p.src, sp, f.local.Addr(), src)
					}
					if got := p.l4[8:]; !bytes.Equal(got, payload) {
						t.Errorf("payload differs: got %d bytes, want %d", len(got), len(payload))
					}
					if ul := int(binary.BigEndian.Uint16(p.l4[4:])); ul != len(p.l4) {
						t.Errorf("UDP length %d, packet has %d", ul, len(p.l4))
					}
					// With offloads the kernel leaves the checksum to us
					// (CHECKSUM_PARTIAL); Read must complete it.
					if !p.l4ChecksumOK() {
						t.Error("bad UDP checksum")
					}
				})
			}
		})
	}
}

// TestWriteUDP writes a datagram from a far address into the TUN and
// receives it on a socket.
func TestWriteUDP(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			e := setup(t, b)
			for _, f := range families {
				t.Run(f.name, func(t *testing.T) {
					var c *net.UDPConn
					if err := e.ns.Do(func() (err error) {
						c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.local.Addr(), 0)))
						return err
					}); err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					to := c.LocalAddr().(*net.UDPAddr).AddrPort()
					from := netip.AddrPortFrom(host(f.far, 7), 4500)
					payload := random(500)

					buf := append(make([]byte, Offset), udpPacket(from, to, payload)...)
					if n, err := e.d.Write([][]byte{buf}, Offset); err != nil || n != 1 {
						t.Fatalf("Write = %d, %v", n, err)
					}
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					got := make([]byte, 2000)
					n, peer, err := c.ReadFromUDPAddrPort(got)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got[:n], payload) {
						t.Errorf("payload differs: got %d bytes, want %d", n, len(payload))
					}
					if netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port()) != from {
						t.Errorf("from %v, want %v", peer, from)
					}
				})
			}
		})
	}
}

// TestWriteEcho writes an ICMP echo request into the TUN and reads the
// kernel's reply back from it.
func TestWriteEcho(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			e := setup(t, b)
			ch := packets(e.d)
			for _, f := range families {
				t.Run(f.name, func(t *testing.T) {
					peer, self := host(f.far, 7), f.local.Addr()
					data := random(56)
					id := binary.BigEndian.Uint16(random(2))
					buf := append(make([]byte, Offset), echoRequest(peer, self, id, 1, data)...)
					if _, err := e.d.Write([][]byte{buf}, Offset); err != nil {
						t.Fatal(err)
					}
					reply := uint8(0)
					if f.local.Addr().Is6() {
						reply = 129
					}
					p := expect(t, ch, "echo reply", func(p ip) bool {
						return (p.proto == protoICMP || p.proto == protoICMPv6) && len(p.l4) >= 8 &&
							p.l4[0] == reply && binary.BigEndian.Uint16(p.l4[4:]) == id
					})
					if p.src != self || p.dst != peer {
						t.Errorf("reply %v -> %v, want %v -> %v", p.src, p.dst, self, peer)
					}
					if !bytes.Equal(p.l4[8:], data) {
						t.Error("echo data differs")
					}
					if !p.l4ChecksumOK() {
						t.Error("bad ICMP checksum")
					}
				})
			}
		})
	}
}

// ipJSON runs `ip -j args...` in ns and decodes the output into v.
func ipJSON(t *testing.T, ns *netns.NS, v any, args ...string) {
	t.Helper()
	out, err := ns.Run(append([]string{"ip", "-j"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("ip -j %v: %v: %q", args, err, out)
	}
}

type linkInfo struct {
	Flags    []string `json:"flags"`
	MTU      int      `json:"mtu"`
	AddrInfo []struct {
		Local     string `json:"local"`
		Prefixlen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func link(t *testing.T, ns *netns.NS) (up bool, addrs map[netip.Prefix]bool, mtu int) {
	t.Helper()
	var ls []linkInfo
	ipJSON(t, ns, &ls, "addr", "show", "dev", tunName)
	if len(ls) != 1 {
		t.Fatalf("ip addr show dev %s: %d links", tunName, len(ls))
	}
	addrs = map[netip.Prefix]bool{}
	for _, a := range ls[0].AddrInfo {
		addrs[netip.PrefixFrom(netip.MustParseAddr(a.Local), a.Prefixlen)] = true
	}
	for _, f := range ls[0].Flags {
		up = up || f == "UP"
	}
	return up, addrs, ls[0].MTU
}

type routeInfo struct {
	Dst      string `json:"dst"`
	Prefsrc  string `json:"prefsrc"`
	Metric   int    `json:"metric"`
	Protocol string `json:"protocol"`
}

// routes lists non-kernel routes on the TUN by destination.
func routes(t *testing.T, ns *netns.NS) map[string]routeInfo {
	t.Helper()
	m := map[string]routeInfo{}
	for _, fam := range []string{"-4", "-6"} {
		var rs []routeInfo
		ipJSON(t, ns, &rs, fam, "route", "show", "dev", tunName)
		for _, r := range rs {
			if r.Protocol != "kernel" {
				m[r.Dst] = r
			}
		}
	}
	return m
}

func TestConfigure(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			ns := netns.NewNS(t)
			var d *Device
			if err := ns.Do(func() (err error) {
				d, err = Open(Config{Name: tunName, Backend: b})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// An address someone else put there must survive Unconfigure,
			// even when it is also in Configure's list.
			foreign := netip.MustParsePrefix("192.0.2.99/32")
			if _, err := ns.Run("ip", "addr", "add", foreign.String(), "dev", tunName); err != nil {
				t.Fatal(err)
			}
			want := []Route{
				{Dst: far4, Src: local4.Addr(), Metric: 10},
				{Dst: far6, Src: local6.Addr(), Metric: 20},
			}
			if err := d.Configure([]netip.Prefix{local4, local6, foreign}, want); err != nil {
				t.Fatal(err)
			}
			up, addrs, _ := link(t, ns)
			if !up || !addrs[local4] || !addrs[local6] || !addrs[foreign] {
				t.Errorf("after Configure: up=%v addrs=%v", up, addrs)
			}
			got := routes(t, ns)
			for _, r := range want {
				g, ok := got[r.Dst.String()]
				if !ok || g.Prefsrc != r.Src.String() || g.Metric != r.Metric {
					t.Errorf("route %v: got %+v (present %v), want src %v metric %d", r.Dst, g, ok, r.Src, r.Metric)
				}
			}
			if err := d.Configure(nil, want[:1]); err == nil {
				t.Error("adding the same route twice: no error")
			}

			// A failing Configure leaves nothing of its own behind.
			extra := netip.MustParsePrefix("192.0.2.50/32")
			bad := Route{Dst: netip.MustParsePrefix("203.0.113.0/24"), Src: netip.MustParseAddr("203.0.113.9")}
			if err := d.Configure([]netip.Prefix{extra}, []Route{bad}); err == nil {
				t.Error("route with non-local Src: no error")
			}
			if _, addrs, _ := link(t, ns); addrs[extra] {
				t.Error("failed Configure left its address")
			}

			if err := d.Unconfigure(); err != nil {
				t.Fatal(err)
			}
			up, addrs, _ = link(t, ns)
			if up || addrs[local4] || addrs[local6] || !addrs[foreign] {
				t.Errorf("after Unconfigure: up=%v addrs=%v, want down with only %v", up, addrs, foreign)
			}
			if rs := routes(t, ns); len(rs) != 0 {
				t.Errorf("routes left after Unconfigure: %v", rs)
			}
			// And again: state is back to the start.
			if err := d.Configure([]netip.Prefix{local4}, want[:1]); err != nil {
				t.Fatal(err)
			}
			if err := d.Unconfigure(); err != nil {
				t.Fatal(err)
			}

			d.Close()
			if _, err := ns.Run("ip", "link", "show", tunName); err == nil {
				t.Error("link still there after Close")
			}
		})
	}
}

func TestMTU(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			ns := netns.NewNS(t)
			var d *Device
			if err := ns.Do(func() (err error) {
				d, err = Open(Config{Name: tunName, MTU: MTUFor(1500, OverheadESPInUDP4), Backend: b})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if _, _, mtu := link(t, ns); mtu != d.MTU() || mtu != MTUFor(1500, OverheadESPInUDP4) {
				t.Errorf("kernel MTU %d, Device.MTU %d, configured %d", mtu, d.MTU(), MTUFor(1500, OverheadESPInUDP4))
			}
			// Someone changes it behind our back.
			newMTU := MTUFor(1500, OverheadESPInUDP6)
			if _, err := ns.Run("ip", "link", "set", "dev", tunName, "mtu", fmt.Sprint(newMTU)); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for d.MTU() != newMTU && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if d.MTU() != newMTU {
				t.Errorf("MTU() = %d after external change to %d", d.MTU(), newMTU)
			}
		})
	}
}

// TestTxQueueLenDefaultsToAnEthernetQueue checks the device's transmit
// queue, where the kernel holds packets for our reader: Ethernet's 1,000 by
// default (the tun driver's own 500 lost bursts of small packets), or what
// the configuration says.
func TestTxQueueLenDefaultsToAnEthernetQueue(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  int
		want string
	}{
		{"default", 0, "qlen 1000"},
		{"configured", 4096, "qlen 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netns.NewNS(t)
			var d *Device
			if err := ns.Do(func() (err error) {
				d, err = Open(Config{Name: tunName, TxQueueLen: tc.cfg})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			out, err := ns.Run("ip", "-o", "link", "show", "dev", tunName)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("ip link: %s; want %q", out, tc.want)
			}
		})
	}
	if _, err := Open(Config{TxQueueLen: MaxTxQueueLen + 1}); err == nil {
		t.Error("a transmit queue above MaxTxQueueLen accepted")
	}
}

func TestClose(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			e := setup(t, b)
			errc := make(chan error, 1)
			go func() {
				bufs := [][]byte{make([]byte, BufferSize)}
				for {
					// Skip whatever the kernel sends on its own.
					if _, err := e.d.Read(bufs, make([]int, 1), Offset); err != nil {
						errc <- err
						return
					}
				}
			}()
			time.Sleep(50 * time.Millisecond) // let Read block
			if err := e.d.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("Read after Close: %v, want os.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Read still blocked after Close")
			}
			if err := e.d.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestArgs(t *testing.T) {
	if _, err := Open(Config{Backend: "nope"}); err == nil {
		t.Error("unknown backend accepted")
	}
	if _, err := Open(Config{MTU: 20}); err == nil {
		t.Error("MTU 20 accepted")
	}
	e := setup(t, Wireguard)
	buf := make([]byte, BufferSize)
	if _, err := e.d.Write([][]byte{buf}, Offset-1); err == nil {
		t.Error("Write with offset < Offset accepted")
	}
	if _, err := e.d.Read([][]byte{buf}, []int{0}, Offset-1); err == nil {
		t.Error("Read with offset < Offset accepted")
	}
	if _, err := e.d.Read([][]byte{buf, buf}, []int{0}, Offset); err == nil {
		t.Error("Read with short sizes accepted")
	}
}

// TestAllocs checks the hot path allocates nothing: an echo request written
// and a packet read back per round.
func TestAllocs(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			e := setup(t, b)
			pkt := echoRequest(host(far4, 7), local4.Addr(), 1, 1, random(56))
			wbufs := [][]byte{append(make([]byte, Offset, BufferSize), pkt...)}
			rbufs := make([][]byte, e.d.BatchSize())
			for i := range rbufs {
				rbufs[i] = make([]byte, BufferSize)
			}
			sizes := make([]int, len(rbufs))
			var err error
			allocs := testing.AllocsPerRun(200, func() {
				if _, werr := e.d.Write(wbufs, Offset); werr != nil {
					err = werr
				}
				if _, rerr := e.d.Read(rbufs, sizes, Offset); rerr != nil {
					err = rerr
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per write+read, want 0", allocs)
			}
		})
	}
}

// A rule left behind by an instance that was killed (SIGKILL cannot be
// caught) is replaced, not refused with "file exists": the next start
// owns it and removes it on exit.
func TestBypassRuleReplacesStaleRule(t *testing.T) {
	ns := netns.NewNS(t)
	for _, fam := range []string{"-4", "-6"} {
		if out, err := ns.Run("ip", fam, "rule", "add", "not", "fwmark", "0x5253", "lookup", "220", "priority", "100"); err != nil {
			t.Fatalf("ip rule add: %v\n%s", err, out)
		}
	}
	var d *Device
	if err := ns.Do(func() (err error) {
		d, err = Open(Config{Name: tunName})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.AddBypassRule(0x5253, 220, 100); err != nil {
		t.Fatalf("AddBypassRule over stale rules: %v", err)
	}
	for _, fam := range []string{"-4", "-6"} {
		out, _ := ns.Run("ip", fam, "rule")
		if n := bytes.Count([]byte(out), []byte("lookup 220")); n != 1 {
			t.Fatalf("ip %s rule: %d rules for table 220, want 1:\n%s", fam, n, out)
		}
	}
	if err := d.Unconfigure(); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out, _ := ns.Run("ip", fam, "rule"); bytes.Contains([]byte(out), []byte("lookup 220")) {
			t.Fatalf("ip %s rule after Unconfigure:\n%s", fam, out)
		}
	}
}
