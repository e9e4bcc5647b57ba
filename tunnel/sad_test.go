package tunnel

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// RFC 3554 §2: "a lookup in the SAD with (Destination Address, SPI,
// Protocol) ... where the Destination Address is any of the negotiated
// peer addresses, MUST return the same SA."
func TestRFC3554_2_SADLookupByAnyAddressOfTheSet(t *testing.T) {
	var sad SAD
	_, in := saPair(t, AESGCM128, func(c *SAConfig) {
		c.LocalAddrs = MustAddrSet("192.0.2.1", "198.51.100.1", "2001:db8:1::/64")
	})
	if err := sad.Add(in); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"192.0.2.1", "198.51.100.1", "2001:db8:1::1", "2001:db8:1::ffff"} {
		if got := sad.Lookup(netip.MustParseAddr(dst), 0x1000, ProtoESP); got != in {
			t.Errorf("lookup via %s: %v", dst, got)
		}
	}
	for _, miss := range []struct {
		dst   string
		spi   uint32
		proto uint8
	}{
		{"203.0.113.1", 0x1000, ProtoESP}, // not one of the SA's addresses
		{"192.0.2.1", 0x1001, ProtoESP},   // other SPI
		{"192.0.2.1", 0x1000, 51},         // AH: not this SA
	} {
		if got := sad.Lookup(netip.MustParseAddr(miss.dst), miss.spi, miss.proto); got != nil {
			t.Errorf("lookup %+v found %v", miss, got)
		}
	}
}

func TestSADAddRemove(t *testing.T) {
	var sad SAD
	_, in := saPair(t, AESGCM128, nil)
	if err := sad.Add(in); err != nil {
		t.Fatal(err)
	}
	_, dup := saPair(t, AESGCM128, nil)
	if err := sad.Add(dup); err == nil {
		t.Fatal("duplicate SPI accepted")
	}
	out, _ := saPair(t, AESGCM128, func(c *SAConfig) { c.SPI = 0x2000 })
	if err := sad.Add(out); err == nil {
		t.Fatal("outbound SA accepted in the inbound SAD")
	}
	if sad.Remove(0x1000) != in || sad.Len() != 0 || in.Alive() {
		t.Fatal("remove")
	}
}

// Decapsulate counts every drop, with or without an SA.
func TestSADDecapsulateCountsDrops(t *testing.T) {
	var sad SAD
	out, in := saPair(t, AESGCM128, func(c *SAConfig) { c.PeerAddrs = MustAddrSet("192.0.2.0/24") })
	if err := sad.Add(in); err != nil {
		t.Fatal(err)
	}
	esp := sealPacket(t, out, ipv4Packet(rwAddr, srvAddr, ProtoUDP, 1, 2, 10))
	if _, _, err := sad.Decapsulate(netip.MustParseAddr("203.0.113.9"), gwAddr, bytes.Clone(esp)); !errors.Is(err, DropNotInPool) {
		t.Fatal(err)
	}
	if _, sa, err := sad.Decapsulate(rwAddr, gwAddr, bytes.Clone(esp)); err != nil || sa != in {
		t.Fatal(err)
	}
	bad := bytes.Clone(esp)
	bad[3] ^= 1
	if _, _, err := sad.Decapsulate(rwAddr, gwAddr, bad); !errors.Is(err, DropUnknownSPI) {
		t.Fatal(err)
	}
	if _, _, err := sad.Decapsulate(rwAddr, gwAddr, esp[:5]); !errors.Is(err, DropMalformed) {
		t.Fatal(err)
	}
	s := sad.Counters.Snapshot()
	if s.Packets != 1 || s.Drops[DropNotInPool] != 1 || s.Drops[DropUnknownSPI] != 1 || s.Drops[DropMalformed] != 1 {
		t.Fatalf("%+v", s)
	}
}

// Readers never block on writers and never see a half-added SA (run with
// -race).
func TestSADConcurrentLookupWhileAddingAndRemoving(t *testing.T) {
	var sad SAD
	key := testKey(AESGCM128, 3)
	mk := func(spi uint32) *SA {
		sa, err := NewSA(SAConfig{SPI: spi, Dir: Inbound, Transform: AESGCM128, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	for spi := uint32(256); spi < 256+1000; spi++ {
		if err := sad.Add(mk(spi)); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var found atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for spi := uint32(256); spi < 256+1000; spi++ {
					if sa := sad.Lookup(gwAddr, spi, ProtoESP); sa != nil {
						if sa.SPI != spi {
							t.Errorf("lookup %d returned %d", spi, sa.SPI)
						}
						found.Add(1)
					}
				}
			}
		}()
	}
	for spi := uint32(256 + 1000); spi < 256+3000; spi++ {
		if err := sad.Add(mk(spi)); err != nil {
			t.Fatal(err)
		}
		sad.Remove(spi - 1000)
	}
	stop.Store(true)
	wg.Wait()
	if sad.Len() != 1000 || found.Load() == 0 {
		t.Fatalf("len %d found %d", sad.Len(), found.Load())
	}
}
