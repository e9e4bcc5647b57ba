package datapath

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

const (
	testMark  = 0x5253 // "RS"
	testTable = 220
)

// end is one side of a test tunnel, running inside its namespace.
type end struct {
	dp   *Datapath
	udp4 transport.Conn // nil for raw ESP
	sad  *tunnel.SAD
	out  *tunnel.SA
	in   *tunnel.SA
}

type pairOpts struct {
	udp bool
	// wrongKey gives the gateway's inbound SA a different key.
	wrongKey bool
}

// startPair brings up a road warrior and a gateway datapath on the bed in
// RFC 3554 mode: the road warrior's uplink addresses are its inner
// addresses, one SA pair covers both uplinks and both families.
func startPair(t *testing.T, bed *netns.Bed, o pairOpts) (rw, gw *end) {
	t.Helper()
	tr := tunnel.AESGCM256
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	rand.Read(k1)
	rand.Read(k2)
	rwAddrs, _ := tunnel.NewAddrSet(
		netip.PrefixFrom(netns.RWPrimary4, 32), netip.PrefixFrom(netns.RWSecondary4, 32),
		netip.PrefixFrom(netns.RWPrimary6, 128), netip.PrefixFrom(netns.RWSecondary6, 128))
	srvNets, _ := tunnel.NewAddrSet(netns.ServerNet4, netns.ServerNet6)
	gwAddrs, _ := tunnel.NewAddrSet(
		netip.PrefixFrom(netns.GWPrimary4, 32), netip.PrefixFrom(netns.GWSecondary4, 32),
		netip.PrefixFrom(netns.GWPrimary6, 128), netip.PrefixFrom(netns.GWSecondary6, 128))
	mk := func(c tunnel.SAConfig) *tunnel.SA {
		c.Transform, c.ESN, c.UDPEncap = tr, true, o.udp
		sa, err := tunnel.NewSA(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sa.Close)
		return sa
	}
	rwSel := tunnel.Selector{Local: rwAddrs, Remote: srvNets}
	gwSel := tunnel.Selector{Local: srvNets, Remote: rwAddrs}
	gwInKey := k1
	if o.wrongKey {
		gwInKey = make([]byte, tr.KeyLen())
	}
	rw = &end{
		out: mk(tunnel.SAConfig{SPI: 0xa0000001, Dir: tunnel.Outbound, Key: k1, Selector: rwSel,
			Outer: tunnel.RoadWarriorToGateway(netns.GWPrimary4, netns.GWPrimary6)}),
		in: mk(tunnel.SAConfig{SPI: 0xb0000001, Dir: tunnel.Inbound, Key: k2, Selector: rwSel,
			LocalAddrs: rwAddrs, PeerAddrs: gwAddrs}),
	}
	gw = &end{
		out: mk(tunnel.SAConfig{SPI: 0xb0000001, Dir: tunnel.Outbound, Key: k2, Selector: gwSel,
			Outer: tunnel.GatewayToRoadWarrior(netns.GWPrimary4, netns.GWPrimary6)}),
		in: mk(tunnel.SAConfig{SPI: 0xa0000001, Dir: tunnel.Inbound, Key: gwInKey, Selector: gwSel,
			LocalAddrs: gwAddrs, PeerAddrs: rwAddrs}),
	}
	start := func(ns *netns.NS, e *end, routes []tun.Route) {
		e.sad = new(tunnel.SAD)
		if err := e.sad.Add(e.in); err != nil {
			t.Fatal(err)
		}
		spd := new(tunnel.SPD)
		p := &tunnel.Policy{Name: "t", Action: tunnel.Protect, Selector: e.out.Selector}
		p.SA.Store(e.out)
		spd.Append(p)
		var cfg Config
		err := ns.Do(func() error {
			dev, err := tun.Open(tun.Config{Name: "rs0", MTU: tun.MTUFor(1500, tun.OverheadESPInUDP6)})
			if err != nil {
				return err
			}
			if err := dev.Configure(nil, routes); err != nil {
				return err
			}
			if err := dev.AddBypassRule(testMark, testTable, 100); err != nil {
				return err
			}
			cfg.TUN = dev
			if o.udp {
				u4, err := transport.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), 4500))
				if err != nil {
					return err
				}
				u6, err := transport.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), 4500))
				if err != nil {
					return err
				}
				cfg.UDP4, cfg.UDP6 = u4, u6
				e.udp4 = u4
				if err := u4.SetMark(testMark); err != nil {
					return err
				}
				return u6.SetMark(testMark)
			}
			e4, err := transport.ListenRawESP(netip.IPv4Unspecified())
			if err != nil {
				return err
			}
			e6, err := transport.ListenRawESP(netip.IPv6Unspecified())
			if err != nil {
				return err
			}
			cfg.ESP4, cfg.ESP6 = e4, e6
			if err := e4.SetMark(testMark); err != nil {
				return err
			}
			// As the daemon does: IPv4 ESP through the AF_PACKET socket
			// where the next hop is known, its route looked up with the mark.
			if err := e4.EnablePacketSend(); err != nil {
				return err
			}
			return e6.SetMark(testMark)
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg.SPD, cfg.SAD = spd, e.sad
		dp, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		e.dp = dp
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := dp.Run(ctx); err != nil {
				t.Errorf("datapath: %v", err)
			}
		})
		t.Cleanup(func() {
			cancel()
			wg.Wait()
			ns.Do(cfg.TUN.Unconfigure)
		})
	}
	r := func(p netip.Prefix, src netip.Addr) tun.Route { return tun.Route{Dst: p, Src: src, Table: testTable} }
	start(bed.RW, rw, []tun.Route{r(netns.ServerNet4, netns.RWPrimary4), r(netns.ServerNet6, netns.RWPrimary6)})
	start(bed.GW, gw, []tun.Route{
		r(netip.PrefixFrom(netns.RWPrimary4, 32), netip.Addr{}), r(netip.PrefixFrom(netns.RWSecondary4, 32), netip.Addr{}),
		r(netip.PrefixFrom(netns.RWPrimary6, 128), netip.Addr{}), r(netip.PrefixFrom(netns.RWSecondary6, 128), netip.Addr{}),
	})
	return rw, gw
}

// Ping from the road warrior to the server behind the gateway, through
// the tunnel, for each family and each encapsulation.
func TestTunnelCarriesTrafficBothFamilies(t *testing.T) {
	for _, udp := range []bool{false, true} {
		name := "raw-esp"
		if udp {
			name = "udp-4500"
		}
		t.Run(name, func(t *testing.T) {
			bed := netns.New(t)
			rw, gw := startPair(t, bed, pairOpts{udp: udp})
			for _, dst := range []netip.Addr{netns.Srv4, netns.Srv6} {
				if err := bed.RW.Ping(dst, 3*time.Second); err != nil {
					t.Fatalf("ping %v through the tunnel: %v\nrw %+v\ngw %+v\nrw in %+v\ngw in %+v",
						dst, err, rw.dp.Stats(), gw.dp.Stats(), rw.in.Counters.Snapshot(), gw.in.Counters.Snapshot())
				}
			}
			if gw.in.Counters.Packets.Load() < 2 || rw.in.Counters.Packets.Load() < 2 {
				t.Fatalf("SA counters: gw in %d rw in %d", gw.in.Counters.Packets.Load(), rw.in.Counters.Packets.Load())
			}
		})
	}
}

// A wrong key: nothing passes and the ICV failures are counted.
func TestWrongKeyCountsICVFailures(t *testing.T) {
	bed := netns.New(t)
	_, gw := startPair(t, bed, pairOpts{wrongKey: true})
	if err := bed.RW.Ping(netns.Srv4, time.Second); err == nil {
		t.Fatal("ping passed with a wrong key")
	}
	// The ping's packets may still be on their way through a loaded
	// machine's pipeline: wait for the count, with a generous bound.
	for end := time.Now().Add(10 * time.Second); gw.in.Counters.Drops[tunnel.DropICV].Load() == 0 && time.Now().Before(end); {
		bed.RW.Ping(netns.Srv4, 200*time.Millisecond)
	}
	if gw.in.Counters.Drops[tunnel.DropICV].Load() == 0 || gw.in.Counters.Packets.Load() != 0 {
		t.Fatalf("gw in %+v", gw.in.Counters.Snapshot())
	}
}

// udpEcho serves a UDP echo on port 7 in ns until the test ends.
func udpEcho(t *testing.T, ns *netns.NS, addr netip.Addr) {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 7)))
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

// echoFrom sends n datagrams from src to dst:7 inside ns and returns how
// many came back.
func echoFrom(t *testing.T, ns *netns.NS, src, dst netip.Addr, n int) int {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 7)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	for i := range n {
		msg := fmt.Sprintf("roamsec-secret-payload-%d", i)
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if k, err := c.Read(buf); err == nil && string(buf[:k]) == msg {
			got++
		}
	}
	return got
}

// capture records the interfaces' frames (rig.Capture) until stop.
func capture(t *testing.T, ns *netns.NS, ifnames ...string) (stop func() string) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark not installed: run `make deps`")
	}
	stop, err := rig.Capture(ns, t.TempDir(), ifnames...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// wire lists the captured IP packets as "proto|spi|src|dst|udp.dstport"
// (outer header only: tshark cannot decrypt without keys).
func wire(t *testing.T, file string) []string {
	t.Helper()
	out, err := exec.Command("tshark", "-n", "-r", file, "-Y", "ip or ipv6", "-T", "fields", "-E", "separator=|",
		"-e", "ip.proto", "-e", "ipv6.nxt", "-e", "esp.spi", "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "udp.dstport").Output()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// On the wire between road warrior and gateway there is only ESP with the
// configured SPIs: no inner packet in clear (RFC 4303 §3.1.2 tunnel
// mode), for raw ESP and for ESP in UDP (RFC 3948). And the outer
// addresses follow RFC 3554 §2's road-warrior rule: the road warrior's
// outer source is the inner source (here its secondary uplink address,
// though the gateway is reached on the primary network's address), the
// gateway's outer destination is the inner destination.
func TestWireCarriesOnlyESPAndFollowsRFC3554(t *testing.T) {
	for _, udp := range []bool{false, true} {
		name := map[bool]string{false: "raw-esp", true: "udp-4500"}[udp]
		t.Run(name, func(t *testing.T) {
			bed := netns.New(t)
			rw, gw := startPair(t, bed, pairOpts{udp: udp})
			udpEcho(t, bed.Srv, netns.Srv4)
			// The secondary uplink carries packets to the gateway's primary
			// address only if routed so: that is the host's business, the
			// tunnel only obeys the outer = inner source rule.
			if _, err := bed.RW.Run("ip", "route", "add", netns.GWPrimary4.String()+"/32", "dev", netns.IfSecondary, "src", netns.RWSecondary4.String()); err != nil {
				t.Fatal(err)
			}
			if _, err := bed.GW.Run("ip", "route", "add", netns.RWSecondary4.String()+"/32", "dev", netns.IfSecondary); err != nil {
				t.Fatal(err)
			}
			// One echo each way first: the first packets to a next hop
			// without a neighbour entry go through the raw socket, which
			// makes the kernel resolve it; the packet socket takes over
			// once the unresolved entry is looked up again (issue 14).
			echoFrom(t, bed.RW, netns.RWPrimary4, netns.Srv4, 1)
			echoFrom(t, bed.RW, netns.RWSecondary4, netns.Srv4, 1)
			time.Sleep(250 * time.Millisecond)
			var before [2]uint64
			if !udp {
				before = [2]uint64{rw.dp.Stats().ESPPacketSocket, gw.dp.Stats().ESPPacketSocket}
			}
			stop := capture(t, bed.GW, netns.IfPrimary, netns.IfSecondary)
			if got := echoFrom(t, bed.RW, netns.RWPrimary4, netns.Srv4, 5); got != 5 {
				t.Fatalf("primary: %d/5 echoes", got)
			}
			if got := echoFrom(t, bed.RW, netns.RWSecondary4, netns.Srv4, 5); got != 5 {
				t.Fatalf("secondary: %d/5 echoes", got)
			}
			all := wire(t, stop())
			if len(all) < 20 {
				t.Fatalf("captured %d packets: %q", len(all), all)
			}
			wantProto := "50"
			if udp {
				wantProto = "17"
			}
			var fromSecondary, toSecondary int
			for _, l := range all {
				f := strings.Split(l, "|")
				proto, spi, src, dst, port := f[0]+f[1], f[2], f[3]+f[4], f[5]+f[6], f[7]
				if strings.HasPrefix(src, "fe80:") || strings.HasPrefix(dst, "ff02:") {
					continue // the links' own IPv6 housekeeping (MLD, ND), not traffic
				}
				if proto != wantProto || (udp && port != "4500") {
					t.Errorf("not ESP on the wire: %q", l)
					continue
				}
				if spi != "0xa0000001" && spi != "0xb0000001" {
					t.Errorf("unknown SPI on the wire: %q", l)
				}
				if src == netns.RWSecondary4.String() {
					fromSecondary++
					if dst != netns.GWPrimary4.String() {
						t.Errorf("road warrior: outer destination must be the gateway: %q", l)
					}
				}
				if dst == netns.RWSecondary4.String() {
					toSecondary++
					if src != netns.GWPrimary4.String() {
						t.Errorf("gateway: outer source must be its own address: %q", l)
					}
				}
			}
			if fromSecondary != 5 || toSecondary != 5 {
				t.Fatalf("RFC 3554: %d packets from and %d to the secondary address, want 5 and 5:\n%s", fromSecondary, toSecondary, strings.Join(all, "\n"))
			}
			if !udp {
				// The wire above saw what the AF_PACKET socket sent: the
				// next hops were found with the bypass mark (issue 14).
				for i, e := range []*end{rw, gw} {
					if s := e.dp.Stats(); s.ESPPacketSocket == before[i] {
						t.Errorf("%s: none of the captured ESP went through the packet socket (%d of %d in all)", []string{"road warrior", "gateway"}[i], s.ESPPacketSocket, s.ESPSent)
					}
				}
			}
		})
	}
}

// A captured ESP packet sent again onto the wire is rejected by the
// gateway and counted as a replay (RFC 4303 §3.4.3).
func TestReplayedPacketOnTheWireIsCounted(t *testing.T) {
	bed := netns.New(t)
	_, gw := startPair(t, bed, pairOpts{})
	udpEcho(t, bed.Srv, netns.Srv4)
	stop := capture(t, bed.GW, netns.IfPrimary)
	if got := echoFrom(t, bed.RW, netns.RWPrimary4, netns.Srv4, 3); got != 3 {
		t.Fatalf("%d/3 echoes", got)
	}
	file := stop()
	out, err := exec.Command("tshark", "-n", "-r", file, "-Y", "esp.spi == 0xa0000001", "-T", "fields", "-e", "esp").Output()
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	pkt, err := hex.DecodeString(strings.ReplaceAll(first, ":", ""))
	if err != nil || len(pkt) < 36 {
		// tshark prints the ESP layer's raw bytes with -e esp only in
		// some versions; fall back to the frame bytes.
		pkt = espFromFrame(t, file)
	}
	before := gw.in.Counters.Snapshot()
	if err := bed.RW.Do(func() error {
		c, err := net.ListenPacket("ip4:50", netns.RWPrimary4.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo(pkt, &net.IPAddr{IP: netns.GWPrimary4.AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for gw.in.Counters.Drops[tunnel.DropReplay].Load() == before.Drops[tunnel.DropReplay] && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	after := gw.in.Counters.Snapshot()
	if after.Drops[tunnel.DropReplay] != before.Drops[tunnel.DropReplay]+1 || after.Packets != before.Packets {
		t.Fatalf("replay not counted: before %+v after %+v", before, after)
	}
}

// espFromFrame returns the ESP packet (after the 20-byte IPv4 header) of
// the first packet in file whose SPI is the road warrior's.
func espFromFrame(t *testing.T, file string) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("no ESP packet from the road warrior in the capture: %v", err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if esp, ok := p.Layer(layers.LayerTypeIPSecESP).(*layers.IPSecESP); ok && esp.SPI == 0xa0000001 {
			return append([]byte(nil), p.Layer(layers.LayerTypeIPv4).LayerPayload()...)
		}
	}
}

// A TCP transfer of 4 MiB through the tunnel arrives intact.
func TestTCPTransferThroughTunnel(t *testing.T) {
	bed := netns.New(t)
	startPair(t, bed, pairOpts{})
	if _, err := rig.TCPTransfer(bed, 4<<20); err != nil {
		t.Fatal(err)
	}
}

// TestTCPThroughUDPGROCountsEveryPacket: bulk TCP over ESP in UDP reaches
// the gateway's GRO socket as coalesced reads; the stream arrives intact
// (every split packet decrypted and written in order, the TUN's GRO
// appending into the head copies without overwriting the packets after
// them), and the counters count packets, not reads: every ESP packet the
// socket delivered was authenticated by the SA, counted by the datapath
// and written to the TUN.
func TestTCPThroughUDPGROCountsEveryPacket(t *testing.T) {
	bed := netns.New(t)
	_, gw := startPair(t, bed, pairOpts{udp: true})
	if _, err := rig.TCPTransfer(bed, 16<<20); err != nil {
		t.Fatal(err)
	}
	var s transport.Stats
	var in uint64
	var st Stats
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s, in, st = gw.udp4.Stats(), gw.in.Counters.Packets.Load(), gw.dp.Stats()
		if s.Received == in && st.ESPReceived == in && st.TunWritten == in || time.Now().After(end) {
			break
		}
	}
	if s.Coalesced == 0 {
		t.Errorf("no coalesced read at the gateway (UDP GRO off?): %+v", s)
	}
	if s.Received != in || st.ESPReceived != in || st.TunWritten != in || s.GROOverflow != 0 || s.Malformed != 0 {
		t.Errorf("socket delivered %d (%+v), SA accepted %d, datapath received %d and wrote %d",
			s.Received, s, in, st.ESPReceived, st.TunWritten)
	}
}
