package rig

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/roamsec/roamsec/test/netns"
)

// Capture records every frame on the interfaces inside ns until stop is
// called, and returns (from stop) a pcap file in dir for tshark to read.
// It uses AF_PACKET sockets opened before it returns, so the capture is
// live at once (tshark says "Capturing on" before its capture really
// runs).
func Capture(ns *netns.NS, dir string, ifnames ...string) (stop func() string, err error) {
	file := filepath.Join(dir, "wire.pcap")
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	w := pcapgo.NewWriter(f)
	w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var handles []*pcapgo.EthernetHandle
	var frames atomic.Int64
	closeAll := func() {
		drained(&frames, captureQuiet, captureDrainMax)
		for _, h := range handles {
			h.Close()
		}
		wg.Wait()
		f.Close()
	}
	for _, ifname := range ifnames {
		var h *pcapgo.EthernetHandle
		if err := ns.Do(func() (err error) { h, err = pcapgo.NewEthernetHandle(ifname); return err }); err != nil {
			closeAll()
			return nil, err
		}
		handles = append(handles, h)
		wg.Go(func() {
			for {
				data, ci, err := h.ReadPacketData()
				if err != nil {
					return
				}
				mu.Lock()
				w.WritePacket(ci, data)
				mu.Unlock()
				frames.Add(1)
			}
		})
	}
	var once sync.Once
	return func() string {
		once.Do(closeAll)
		return file
	}, nil
}

// Closing an AF_PACKET socket discards the frames still queued on it, and
// on a loaded machine a reader may be that far behind the last packets a
// test sent just before stop (a test that then finds them missing is
// flaky). stop therefore first waits until no frame has been read for
// captureQuiet (at most captureDrainMax).
const (
	captureQuiet    = 300 * time.Millisecond
	captureDrainMax = 3 * time.Second
)

// drained returns once n has not changed for quiet, or after max.
func drained(n *atomic.Int64, quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	last, since := n.Load(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < quiet {
		time.Sleep(quiet / 6)
		if v := n.Load(); v != last {
			last, since = v, time.Now()
		}
	}
}
