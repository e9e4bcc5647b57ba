// Command demo shows roamsec's main job with what has landed so far: one
// pair of ESP SAs between a road warrior with two uplinks and a gateway,
// carrying traffic from either uplink (RFC 3554 address sets, seed 000
// pools), with the drops a real tunnel must make. Run it with `make demo`.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"github.com/roamsec/roamsec/tunnel"
)

var (
	primary   = netip.MustParseAddr("192.0.2.2")    // road warrior, Wi-Fi
	secondary = netip.MustParseAddr("198.51.100.2") // road warrior, LTE
	gateway   = netip.MustParseAddr("192.0.2.1")
	server    = netip.MustParseAddr("203.0.113.2")
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	key := make([]byte, tunnel.AESGCM256.KeyLen())
	rand.Read(key)
	rwAddrs := tunnel.MustAddrSet("192.0.2.0/24", "198.51.100.2") // a pool and a single address
	sel := tunnel.Selector{Local: rwAddrs, Remote: tunnel.MustAddrSet("203.0.113.0/24")}

	// Road warrior side: outbound SA, outer source = inner source (RFC 3554 §2).
	out, err := tunnel.NewSA(tunnel.SAConfig{SPI: 0xc0de0001, Dir: tunnel.Outbound, Transform: tunnel.AESGCM256,
		Key: key, ESN: true, Selector: sel, Outer: tunnel.RoadWarriorToGateway(gateway)})
	if err != nil {
		return err
	}
	var spd tunnel.SPD
	pol := &tunnel.Policy{Name: "to-server-net", Action: tunnel.Protect, Selector: sel}
	pol.SA.Store(out)
	spd.Append(pol)

	// Gateway side: the inbound SA, reachable on both gateway addresses,
	// accepting the road warrior from anywhere in its pool.
	in, err := tunnel.NewSA(tunnel.SAConfig{SPI: 0xc0de0001, Dir: tunnel.Inbound, Transform: tunnel.AESGCM256,
		Key: key, ESN: true, LocalAddrs: tunnel.MustAddrSet("192.0.2.1", "198.51.100.1"), PeerAddrs: rwAddrs,
		Selector: tunnel.Selector{Local: sel.Remote, Remote: sel.Local}})
	if err != nil {
		return err
	}
	clear(key)
	var sad tunnel.SAD
	if err := sad.Add(in); err != nil {
		return err
	}
	fmt.Printf("SA pair: %v\n         %v\n\n", out, in)

	buf := make([]byte, 2048)
	send := func(src netip.Addr, label string) ([]byte, error) {
		n := echo(buf[tunnel.HeaderLen:], src, server)
		s, _, err := spd.Encapsulate(buf, n, nil)
		if err != nil {
			return nil, err
		}
		fmt.Printf("%-28s inner %v -> %v  outer %v -> %v  SPI %#08x seq %d  %d bytes ESP\n",
			label, src, server, s.Src, s.Dst, s.SA.SPI, s.SA.LastSeq(), len(s.ESP))
		inner, sa, err := sad.Decapsulate(s.Src, s.Dst, append([]byte(nil), s.ESP...))
		if err != nil {
			return nil, err
		}
		fmt.Printf("%-28s gateway: SA %#08x delivered %d-byte inner packet to %v\n", "", sa.SPI, len(inner), server)
		return s.ESP, nil
	}
	if _, err := send(primary, "primary uplink (Wi-Fi):"); err != nil {
		return err
	}
	last, err := send(secondary, "secondary uplink (LTE):")
	if err != nil {
		return err
	}
	if _, err := send(netip.MustParseAddr("192.0.2.77"), "moved inside the pool:"); err != nil {
		return err
	}

	fmt.Println()
	_, _, err = sad.Decapsulate(secondary, gateway, last)
	fmt.Printf("replayed packet:             %v\n", err)
	n := echo(buf[tunnel.HeaderLen:], secondary, server)
	s, _, _ := spd.Encapsulate(buf, n, nil)
	_, _, err = sad.Decapsulate(netip.MustParseAddr("203.0.113.66"), gateway, s.ESP)
	fmt.Printf("ESP from outside the pool:   %v\n", err)

	c := in.Counters.Snapshot()
	fmt.Printf("\ngateway SA %#08x: %d packets, %d bytes, drops %v\n", in.SPI, c.Packets, c.Bytes, c.DropsByName())
	fmt.Println("one SA, same SPI on both uplinks: done.")
	return nil
}

// echo writes an IPv4 ICMP echo request and returns its length.
func echo(b []byte, src, dst netip.Addr) int {
	const n = 84
	clear(b[:n])
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], n)
	b[8], b[9] = 64, 1
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	b[20] = 8
	return n
}
