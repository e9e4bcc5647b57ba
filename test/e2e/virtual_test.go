package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// Virtual-address mode: the road warrior's inner address (100.64.0.2 on
// its TUN device) never changes; a path switch moves only the outer
// addresses (gateway-gateway rule, moved by the road warrior's mobility;
// follow_peer on the gateway, which moves only on authenticated ESP).
const virtualRW = `role: roadwarrior
tun:
  name: roamsec0
  addresses: [100.64.0.2/32]
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 100.64.0.2}
    - {dst: 192.0.2.1/32, src: 192.0.2.2}
    - {dst: 198.51.100.1/32, src: 198.51.100.2}
transport:
  listen: [192.0.2.2, 198.51.100.2]
sas:
  - name: gw
    outbound: {spi: 0xd0000001, key: "0x%[1]s"}
    inbound: {spi: 0xd0000002, key: "0x%[2]s"}
    local_addrs: [192.0.2.2, 198.51.100.2]
    peer_addrs: [192.0.2.1, 198.51.100.1]
    outer: {mode: gateway-gateway, local: 192.0.2.2, peer: 192.0.2.1}
    selector: "local 100.64.0.2 remote 203.0.113.0/24"
  - name: gw-hosts
    outbound: {spi: 0xd0000003, key: "0x%[3]s"}
    inbound: {spi: 0xd0000004, key: "0x%[4]s"}
    local_addrs: [192.0.2.2, 198.51.100.2]
    peer_addrs: [192.0.2.1, 198.51.100.1]
    outer: {mode: host}
    selector: "local 192.0.2.2,198.51.100.2 remote 192.0.2.1,198.51.100.1"
mobility:
  paths:
    - {name: primary, local: 192.0.2.2, peer: 192.0.2.1, link: rsb-pri}
    - {name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec}
  switch_back: 1s
`

const virtualGW = `role: gateway
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 100.64.0.2/32}
    - {dst: 192.0.2.2/32, src: 192.0.2.1}
    - {dst: 198.51.100.2/32, src: 198.51.100.1}
transport:
  listen: [192.0.2.1, 198.51.100.1]
sas:
  - name: rw1
    outbound: {spi: 0xd0000002, key: "0x%[2]s"}
    inbound: {spi: 0xd0000001, key: "0x%[1]s"}
    local_addrs: [192.0.2.1, 198.51.100.1]
    peer_addrs: [192.0.2.0/24, 198.51.100.0/24]
    outer: {mode: gateway-gateway, local: 192.0.2.1, peer: 192.0.2.2, follow_peer: true}
    selector: "local 203.0.113.0/24 remote 100.64.0.2"
  - name: rw1-hosts
    outbound: {spi: 0xd0000004, key: "0x%[4]s"}
    inbound: {spi: 0xd0000003, key: "0x%[3]s"}
    local_addrs: [192.0.2.1, 198.51.100.1]
    peer_addrs: [192.0.2.0/24, 198.51.100.0/24]
    outer: {mode: host}
    selector: "local 192.0.2.1,198.51.100.1 remote 192.0.2.2,198.51.100.2"
mobility:
  sctp_listen: [192.0.2.1, 198.51.100.1]
`

// A TCP connection from the virtual address survives both kinds of path
// death: no reset, data keeps flowing, the SPIs stay.
func TestVirtualAddressModeTCPSurvivesFailover(t *testing.T) {
	keys := make([]any, 4)
	for i := range keys {
		k := make([]byte, 36)
		rand.Read(k)
		keys[i] = hex.EncodeToString(k)
	}
	bed := netns.New(t)
	dir := t.TempDir()
	gwCfg, err := rig.WriteFile(dir, "gateway.yaml", fmt.Sprintf(virtualGW, keys...))
	if err != nil {
		t.Fatal(err)
	}
	rwCfg, err := rig.WriteFile(dir, "roadwarrior.yaml", fmt.Sprintf(virtualRW, keys...))
	if err != nil {
		t.Fatal(err)
	}
	gw, rw := up(t, bed, gwCfg, rwCfg)

	// A server counting bytes, and one long TCP connection feeding it a
	// little every 5 ms.
	var ln net.Listener
	if err := bed.Srv.Do(func() (err error) {
		ln, err = net.Listen("tcp", "203.0.113.2:5301")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var got atomic.Int64
	var lastByte atomic.Int64 // unix nanos of the last read
	serverErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			got.Add(int64(n))
			lastByte.Store(time.Now().UnixNano())
			if err != nil {
				if err != io.EOF {
					serverErr <- err
				}
				close(serverErr)
				return
			}
		}
	}()
	var conn net.Conn
	if err := bed.RW.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", "203.0.113.2:5301", 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect through the tunnel: %v\n%s\n%s", err, rw.Log(), netState(bed))
	}
	if la := conn.LocalAddr().String(); !strings.HasPrefix(la, "100.64.0.2:") {
		t.Fatalf("connection from %s, want the virtual address", la)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writeErr := make(chan error, 1)
	wg.Go(func() {
		chunk := make([]byte, 1024)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := conn.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	})
	// Close before waiting: a writer blocked on a dead tunnel returns.
	defer func() { close(stop); conn.Close(); wg.Wait() }()

	time.Sleep(time.Second) // flowing, and the heartbeats confirmed both paths
	deaths := []struct {
		name          string
		kill, restore func() error
	}{
		{"link down", func() error { return bed.RW.LinkDown(netns.IfPrimary) }, func() error { return bed.RW.LinkUp(netns.IfPrimary) }},
		{"silent drop", func() error { return bed.Blackhole(netns.IfPrimary) }, func() error { return bed.Unblackhole(netns.IfPrimary) }},
	}
	for i, d := range deaths {
		if err := d.kill(); err != nil {
			t.Fatal(err)
		}
		dead := time.Now()
		before := got.Load()
		if !rig.WaitFor(10*time.Second, func() bool {
			return got.Load() > before+4096 && time.Unix(0, lastByte.Load()).After(dead)
		}) {
			t.Fatalf("%s: the TCP connection stalled\nrw:\n%s\ngw:\n%s", d.name, rw.Log(), gw.Log())
		}
		t.Logf("%s: data flowing again on the same TCP connection %v after the death", d.name, time.Unix(0, lastByte.Load()).Sub(dead).Round(time.Millisecond))
		if err := d.restore(); err != nil {
			t.Fatal(err)
		}
		// Back on the primary: switch_back is 1s, but the switch waits
		// while the primary measures clearly worse than the secondary
		// (its smoothed RTT lags a burst of load), so wait for it.
		if !rig.WaitFor(15*time.Second, func() bool { return strings.Count(rw.Log(), "path switch") >= 2*(i+1) }) {
			t.Fatalf("%s: not back on the primary 15 s after the restore:\n%s", d.name, rw.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case err := <-writeErr:
		t.Fatalf("TCP write failed: %v", err)
	case err, ok := <-serverErr:
		if ok {
			t.Fatalf("TCP server: %v", err)
		}
		t.Fatal("TCP connection closed")
	default:
	}
	if n := strings.Count(rw.Log(), "path switch"); n < 4 {
		t.Fatalf("%d path switches, want 4 (two away, two back):\n%s", n, rw.Log())
	}
	for _, p := range []*rig.Proc{rw, gw} {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range spiRe.FindAllString(rw.Log()+gw.Log(), -1) {
		if !strings.HasPrefix(x, "spi=0xd000000") {
			t.Fatalf("an SPI other than the configured ones: %s", x)
		}
	}
}
