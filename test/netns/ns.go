package netns

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// NS is one named network namespace (as made by `ip netns add`).
type NS struct {
	// Name is the namespace name, usable with `ip netns exec` and `ip -n`.
	Name string

	handle vnetns.NsHandle // open fd of the namespace, for Do
	nl     *netlink.Handle // netlink sockets living inside the namespace
}

// newNS creates the named namespace, brings lo up and sets the sysctls every
// namespace of the bed wants.
func newNS(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	n := &NS{Name: name, handle: -1}
	if err := n.init(); err != nil {
		return nil, errors.Join(err, n.close())
	}
	return n, nil
}

func (n *NS) init() error {
	var err error
	if n.handle, err = vnetns.GetFromName(n.Name); err != nil {
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	if n.nl, err = netlink.NewHandleAt(n.handle, unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("netlink in %s: %w", n.Name, err)
	}
	if err := n.LinkUp("lo"); err != nil {
		return err
	}
	// DAD would leave fresh IPv6 addresses tentative (unusable) for about
	// a second and make early pings flaky; nobody else is on these links.
	// keep_addr_on_down keeps IPv6 addresses across LinkDown/LinkUp like
	// IPv4, so failover tests can bring a path back.
	return n.sysctl(map[string]string{
		"net/ipv6/conf/all/accept_dad":            "0",
		"net/ipv6/conf/default/accept_dad":        "0",
		"net/ipv6/conf/all/keep_addr_on_down":     "1",
		"net/ipv6/conf/default/keep_addr_on_down": "1",
		"net/ipv6/conf/default/accept_ra":         "0",
	})
}

// close releases the handles and deletes the namespace (which destroys the
// interfaces in it, and with them the veth peers elsewhere).
func (n *NS) close() error {
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle >= 0 {
		n.handle.Close()
		n.handle = -1
	}
	return deleteNS(n.Name)
}

func deleteNS(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil && !namespaceGone(name) {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

func namespaceGone(name string) bool {
	_, err := os.Stat(nsRunDir + "/" + name)
	return errors.Is(err, os.ErrNotExist)
}

// sysctl writes /proc/sys values inside the namespace; /proc/sys/net follows
// the network namespace of the writing thread.
func (n *NS) sysctl(kv map[string]string) error {
	return n.Do(func() error {
		for k, v := range kv {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return fmt.Errorf("%s: sysctl %s=%s: %w", n.Name, k, v, err)
			}
		}
		return nil
	})
}

// Do runs fn on an OS thread switched into the namespace and waits for it.
// Sockets and TUN devices created by fn stay in the namespace and may be used
// from any goroutine afterwards.
//
// fn runs on its own goroutine locked to that thread, so it must not call
// t.FailNow (t.Fatal); return an error instead. Goroutines started by fn do
// NOT inherit the namespace: they run on other threads. Only the network
// namespace is switched: the file system, and so /etc/hosts, stays the
// caller's (use Command for /etc/netns/NAME files to apply).
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := vnetns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		err = fn()
		if rerr := vnetns.Set(orig); rerr != nil {
			// Stay locked: the runtime then kills this thread when the
			// goroutine exits instead of reusing it in the wrong namespace.
			errc <- errors.Join(err, fmt.Errorf("leave netns %s: %w", n.Name, rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// Command returns `ip netns exec NAME name args...`, which also bind-mounts
// /etc/netns/NAME/* over /etc (see Bed's hosts entry).
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command in the namespace (see Command) and returns its combined
// output; the error includes the output.
func (n *NS) Run(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("netns: Run needs a command")
	}
	out, err := n.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// LinkUp sets the interface administratively up and, if it has carrier,
// waits until its IPv6 addresses answer neighbour solicitations (see
// waitIPv6).
func (n *NS) LinkUp(ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err == nil {
		err = n.nl.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("%s: link %s up: %w", n.Name, ifname, err)
	}
	if ifname == "lo" {
		return nil
	}
	return n.waitIPv6(ifname)
}

// waitIPv6 waits until IPv6 on ifname (every interface with carrier if
// ifname is "") is usable: operstate up, link-local address present, no
// address tentative and every solicited-node group joined. The kernel does
// this asynchronously after link up, even without DAD, partly behind
// linkwatch's up to one second batching of carrier events. A neighbour
// solicitation arriving earlier is dropped (no ff00::/8 route yet) and the
// sender retries only after RetransTimer (1s): without this wait the first
// IPv6 ping after setup took a second.
func (n *NS) waitIPv6(ifname string) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		missing, err := n.ipv6NotReady(ifname)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			// The addresses changed during the dump (they do, right
			// after link up): the answer is incomplete, ask again.
			missing, err = []string{"dump interrupted"}, nil
		}
		if err != nil || len(missing) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: IPv6 addresses not ready: %v", n.Name, missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (n *NS) ipv6NotReady(ifname string) ([]string, error) {
	links, err := n.nl.LinkList()
	if err != nil {
		return nil, err
	}
	var groups []byte
	// /proc/net is the main thread's namespace; thread-self is Do's thread.
	if err := n.Do(func() (err error) {
		groups, err = os.ReadFile("/proc/thread-self/net/igmp6")
		return err
	}); err != nil {
		return nil, err
	}
	var missing []string
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" || ifname != "" && a.Name != ifname ||
			a.Flags&net.FlagUp == 0 || a.RawFlags&unix.IFF_LOWER_UP == 0 {
			continue // without carrier the kernel has not started yet
		}
		addrs, err := n.nl.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return nil, err
		}
		// addrconf only sets the link up (link-local address, ff00::/8
		// route) once linkwatch reports the carrier and operstate, which it
		// batches for up to a second.
		ll := false
		for _, ad := range addrs {
			ll = ll || ad.IP.IsLinkLocalUnicast()
		}
		if a.OperState != netlink.OperUp || !ll {
			missing = append(missing, a.Name+" "+a.OperState.String()+" without link-local")
		}
		for _, ad := range addrs {
			ip := ad.IP.To16()
			// ff02::1:ffXX:XXXX, as /proc/net/igmp6 prints it.
			sol := fmt.Sprintf("ff0200000000000000000001ff%02x%02x%02x", ip[13], ip[14], ip[15])
			if ad.Flags&unix.IFA_F_TENTATIVE != 0 ||
				!hasGroup(groups, a.Name, sol) {
				missing = append(missing, a.Name+" "+ad.IP.String())
			}
		}
	}
	return missing, nil
}

// hasGroup reports whether igmp6 lists group on ifname.
func hasGroup(igmp6 []byte, ifname, group string) bool {
	for _, line := range strings.Split(string(igmp6), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == ifname && f[2] == group {
			return true
		}
	}
	return false
}

// LinkDown sets the interface administratively down, like unplugging it:
// the peer sees carrier loss and the kernel flushes routes through the link.
// Addresses survive (keep_addr_on_down), so LinkUp restores the connected
// routes but not routes added with AddRoute.
func (n *NS) LinkDown(ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err == nil {
		err = n.nl.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("%s: link %s down: %w", n.Name, ifname, err)
	}
	return nil
}

// BlockIngress installs an nftables netdev ingress chain that silently drops
// every frame (ARP and ND included) arriving on ifname; the link stays up and
// senders get no error. UnblockIngress removes it. See Bed.Blackhole for
// both directions of a path.
func (n *NS) BlockIngress(ifname string) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("netns: BlockIngress needs nft (Debian: apt-get install nftables): %w", err)
	}
	script := fmt.Sprintf("table netdev %s {\n\tchain in {\n\t\ttype filter hook ingress device %q priority -500; policy drop;\n\t}\n}\n",
		dropTable(ifname), ifname)
	cmd := n.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft drop on %s: %w: %s", n.Name, ifname, err, bytes.TrimSpace(out))
	}
	return nil
}

// UnblockIngress removes the drop installed by BlockIngress.
func (n *NS) UnblockIngress(ifname string) error {
	_, err := n.Run("nft", "delete", "table", "netdev", dropTable(ifname))
	return err
}

func dropTable(ifname string) string {
	return "roamsec_drop_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, ifname)
}

// AddRoute adds a static route to dst via the gateway via.
func (n *NS) AddRoute(dst netip.Prefix, via netip.Addr) error {
	if err := n.nl.RouteAdd(route(dst, via)); err != nil {
		return fmt.Errorf("%s: route %s via %s: %w", n.Name, dst, via, err)
	}
	return nil
}

// DelRoute removes a route added by AddRoute.
func (n *NS) DelRoute(dst netip.Prefix, via netip.Addr) error {
	if err := n.nl.RouteDel(route(dst, via)); err != nil {
		return fmt.Errorf("%s: del route %s via %s: %w", n.Name, dst, via, err)
	}
	return nil
}

func route(dst netip.Prefix, via netip.Addr) *netlink.Route {
	return &netlink.Route{Dst: ipNet(dst.Masked()), Gw: via.AsSlice()}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addAddr adds p to ifname. IFA_F_NODAD makes IPv6 addresses usable at once.
func (n *NS) addAddr(ifname string, p netip.Prefix) error {
	l, err := n.nl.LinkByName(ifname)
	if err == nil {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		err = n.nl.AddrAdd(l, a)
	}
	if err != nil {
		return fmt.Errorf("%s: addr %s on %s: %w", n.Name, p, ifname, err)
	}
	return nil
}

// Ping sends ICMP echo requests to dst from inside the namespace, one every
// 100ms, and returns nil at the first matching reply, or an error once
// timeout has passed. It uses a raw socket (root), not the ping binary.
func (n *NS) Ping(dst netip.Addr, timeout time.Duration) error {
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	if err := n.Do(func() (err error) {
		c, err = icmp.ListenPacket(network, laddr)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()

	// A raw socket sees every echo reply in the namespace: match on a
	// random token so concurrent pings don't answer each other.
	var token [16]byte
	rand.Read(token[:])
	id := int(token[0])<<8 | int(token[1])
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	var lastErr error
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: token[:]}}
		b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			lastErr = err // e.g. no route while a link is down
		}
		next := time.Now().Add(100 * time.Millisecond)
		c.SetReadDeadline(next)
		for {
			nr, peer, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:nr])
			if err != nil || m.Type != replyType {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && bytes.Equal(e.Data, token[:]) {
				if ip, ok := netip.AddrFromSlice(peer.(*net.IPAddr).IP); ok && ip.Unmap() == dst {
					return nil
				}
			}
		}
		time.Sleep(time.Until(next))
	}
	if lastErr != nil {
		return fmt.Errorf("%s: ping %s: no reply within %v (last send error: %w)", n.Name, dst, timeout, lastErr)
	}
	return fmt.Errorf("%s: ping %s: no reply within %v", n.Name, dst, timeout)
}
