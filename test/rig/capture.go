package rig

import (
	"os"
	"path/filepath"
	"sync"

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
	closeAll := func() {
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
			}
		})
	}
	var once sync.Once
	return func() string {
		once.Do(closeAll)
		return file
	}, nil
}
