// Package tun is the TUN device of the data path: IP packets in and out of
// the kernel, in batches.
//
// The default backend is golang.zx2c4.com/wireguard/tun, which opens the
// device with IFF_VNET_HDR and enables TSO/checksum offload: the kernel hands
// over TCP (and, on Linux 6.2+, UDP) super-packets of up to 64 KiB, which
// Read splits into MTU-sized packets, up to BatchSize per call; Write
// coalesces consecutive segments of a flow back into super-packets (GRO) so
// the kernel processes fewer, larger packets. The "water" backend
// (github.com/songgao/water) moves one packet per call and serves as a
// fallback where the offloads misbehave.
//
// The device lives in the network namespace of the thread that called Open,
// and Configure keeps acting there.
package tun

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Backend selects the TUN implementation.
type Backend string

const (
	Wireguard Backend = "wireguard" // batched, offloads; the default
	Water     Backend = "water"     // one packet per call
)

// Offset is the headroom, in bytes, that Read and Write need in front of
// every packet in a buffer: bufs[i][:offset] is scratch space, the packet
// starts at bufs[i][offset]. Callers may pass any offset >= Offset.
//
// The wireguard backend writes the 10-byte virtio_net_hdr into it on Write.
// 16 rather than 10 leaves room for exactly an ESP header (SPI and sequence
// number, 8) plus the 8-byte AES-GCM IV, so the transport can encrypt a read
// packet and hand a decrypted one to Write in place, without copying.
// Both backends enforce it so that code tested with one works with the other.
const Offset = 16

// MaxSegment is the largest packet Read can return (an IPv4/IPv6 total
// length) and the largest super-packet Write builds.
const MaxSegment = 65535

// BufferSize is a good size for each buffer handed to Read and Write. Read
// needs only offset+MTU, but Write coalesces segments only into buffers whose
// capacity can hold the super-packet.
const BufferSize = Offset + MaxSegment

// ErrTooManySegments is returned by Read when a super-packet from the kernel
// had more segments than bufs: the first n packets are valid, the rest were
// dropped. It is not fatal; pass BatchSize buffers to avoid it.
var ErrTooManySegments = wgtun.ErrTooManySegments

// Config configures Open.
type Config struct {
	Name    string  // interface name; "" lets the kernel pick tunN
	MTU     int     // 0 means DefaultMTU
	Backend Backend // "" means Wireguard
	// TxQueueLen is the device's transmit queue: the packets the kernel may
	// hold for our reader before it drops (counted as tx_dropped on the
	// device). 0 means DefaultTxQueueLen.
	TxQueueLen int
}

// DefaultTxQueueLen is an Ethernet device's default queue, twice a TUN
// device's 500. At the 64-byte loss-free rate every lost packet was a
// tx_dropped on the road warrior's TUN device: a burst from the sender
// outran one read batch while the reader was busy sealing the previous one.
// 1,000 packets of 1,500 bytes are 4 ms at 3 Gbit/s, so the extra queueing
// delay it allows under a full load is small.
const DefaultTxQueueLen = 1000

// MaxTxQueueLen bounds the queue at what the kernel's tun driver accepts
// for its rings without a large allocation.
const MaxTxQueueLen = 65536

// DefaultMTU fits ESP in UDP over IPv6 on a 1500-byte path, and so also over
// IPv4.
const DefaultMTU = 1500 - OverheadESPInUDP6

// Device is an open TUN device. Read and Write may be called concurrently
// with each other, each from one goroutine at a time.
type Device struct {
	name    string
	backend Backend
	batch   int
	mtu     atomic.Int32

	wg    wgtun.Device       // wireguard backend
	water io.ReadWriteCloser // water backend: an *os.File in netpoll, so Close unblocks Read

	nl    *netlink.Handle // netlink in the device's namespace
	index int

	cfgMu  sync.Mutex // guards addrs, routes, setUp: what Configure installed
	addrs  []netlink.Addr
	routes []netlink.Route
	rules  []*netlink.Rule
	setUp  bool // Configure brought the link up

	done      chan struct{} // closed by Close; stops watchMTU
	closeOnce sync.Once
	closeErr  error
	log       *slog.Logger
}

// Open creates the TUN device in the calling thread's network namespace (call
// it inside netns.NS.Do for another one). Close destroys it, and with it
// every address and route on it.
func Open(cfg Config) (*Device, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 68 || cfg.MTU > MaxSegment {
		return nil, fmt.Errorf("tun: MTU %d out of range", cfg.MTU)
	}
	if cfg.Backend == "" {
		cfg.Backend = Wireguard
	}
	if cfg.TxQueueLen == 0 {
		cfg.TxQueueLen = DefaultTxQueueLen
	}
	if cfg.TxQueueLen < 1 || cfg.TxQueueLen > MaxTxQueueLen {
		return nil, fmt.Errorf("tun: transmit queue %d out of range 1..%d", cfg.TxQueueLen, MaxTxQueueLen)
	}
	if cfg.Backend != Wireguard && cfg.Backend != Water {
		return nil, fmt.Errorf("tun: unknown backend %q", cfg.Backend)
	}

	// Pin the thread so the device, its netlink handle and sockets and the
	// wireguard backend's listener sockets all land in the thread's
	// namespace. They are all created here, on this thread, rather than
	// with "in namespace X" netlink calls: those call setns(2) even for the
	// current namespace, which a hardened unit (RestrictNamespaces=yes)
	// forbids.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var err error

	d := &Device{backend: cfg.Backend}
	switch cfg.Backend {
	case Wireguard:
		d.wg, err = wgtun.CreateTUN(cfg.Name, cfg.MTU)
		if err != nil {
			return nil, fmt.Errorf("tun: create %q: %w", cfg.Name, err)
		}
		d.name, err = d.wg.Name()
		d.batch = d.wg.BatchSize()
	case Water:
		var ifce *water.Interface
		ifce, err = water.New(water.Config{
			DeviceType:             water.TUN,
			PlatformSpecificParams: water.PlatformSpecificParams{Name: cfg.Name},
		})
		if err != nil {
			return nil, fmt.Errorf("tun: create %q: %w", cfg.Name, err)
		}
		d.name, d.batch, d.water = ifce.Name(), 1, ifce.ReadWriteCloser
	}
	if err == nil {
		d.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE) // route only: a kernel without xfrm_user or nfnetlink must still work
	}
	if err == nil {
		var l netlink.Link
		if l, err = d.nl.LinkByName(d.name); err == nil {
			d.index = l.Attrs().Index
			if d.water != nil {
				err = d.nl.LinkSetMTU(l, cfg.MTU)
			}
			if err == nil && l.Attrs().TxQLen != cfg.TxQueueLen {
				err = d.nl.LinkSetTxQLen(l, cfg.TxQueueLen)
			}
		}
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: open %q: %w", cfg.Name, err)
	}
	d.mtu.Store(int32(cfg.MTU))
	d.log = slog.Default().With("tun", d.name, "backend", string(d.backend))
	if d.wg != nil {
		go d.events()
	}
	if err := d.watchMTU(); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: open %q: %w", cfg.Name, err)
	}
	d.log.Debug("opened", "mtu", cfg.MTU, "batch", d.batch)
	return d, nil
}

// events drains the wireguard backend's event channel, which would otherwise
// block its netlink listener. Its EventMTUUpdate is not used: wgtun's MTU()
// asks by interface name in the calling thread's namespace, which is not
// necessarily the device's; watchMTU asks netlink in the right one.
func (d *Device) events() {
	for ev := range d.wg.Events() {
		if ev&wgtun.EventUp != 0 {
			d.log.Debug("link up")
		}
		if ev&wgtun.EventDown != 0 {
			d.log.Debug("link down")
		}
	}
}

// watchMTU follows MTU changes made outside, via a netlink subscription in
// the device's namespace; it stops when Close closes d.done.
func (d *Device) watchMTU() error {
	d.done = make(chan struct{})
	updates := make(chan netlink.LinkUpdate, 8)
	err := netlink.LinkSubscribeWithOptions(updates, d.done, netlink.LinkSubscribeOptions{})
	if err != nil {
		return err
	}
	go func() {
		for u := range updates {
			if u.Attrs().Index == d.index && int32(u.Attrs().MTU) != d.mtu.Load() && u.Attrs().MTU > 0 {
				d.mtu.Store(int32(u.Attrs().MTU))
				d.log.Info("MTU changed", "mtu", u.Attrs().MTU)
			}
		}
	}()
	return nil
}

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// MTU returns the interface MTU. It follows changes made outside (ip link set
// mtu) shortly after they happen; it does not query the kernel.
func (d *Device) MTU() int { return int(d.mtu.Load()) }

// BatchSize is how many buffers Read may fill and Write should be given per
// call: 128 with the wireguard backend and offloads, else 1.
func (d *Device) BatchSize() int { return d.batch }

// Read reads one or more packets into bufs[i][offset:], setting sizes[i], and
// returns how many. It blocks until at least one packet is available. Pass
// BatchSize buffers of at least offset+MTU bytes (BufferSize is always
// enough), and len(sizes) >= len(bufs). After Close it returns an error
// wrapping os.ErrClosed.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (n int, err error) {
	if offset < Offset || len(bufs) == 0 || len(sizes) < len(bufs) {
		return 0, errBadArgs
	}
	if d.wg != nil {
		return d.wg.Read(bufs, sizes, offset)
	}
	nr, err := d.water.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = nr
	return 1, nil
}

// Write writes the packets bufs[i][offset:], each a whole IP packet, and
// returns len(bufs) on success. The headroom bufs[i][:offset] is overwritten.
// The wireguard backend may coalesce packets, appending to bufs[i] within its
// capacity. A packet the kernel rejects does not stop the others; the errors
// are joined and n is then 0 for the wireguard backend, which does not say
// which packets failed.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if offset < Offset {
		return 0, errBadArgs
	}
	if d.wg != nil {
		if _, err := d.wg.Write(bufs, offset); err != nil {
			return 0, err
		}
		return len(bufs), nil
	}
	var errs error
	n := 0
	for _, b := range bufs {
		if _, err := d.water.Write(b[offset:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return n, err
			}
			errs = errors.Join(errs, err)
			continue
		}
		n++
	}
	return n, errs
}

var errBadArgs = errors.New("tun: offset below tun.Offset, no buffers, or sizes shorter than bufs")

// Close destroys the device; blocked Reads return. It is safe to call more
// than once.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		switch {
		case d.wg != nil:
			d.closeErr = d.wg.Close()
		case d.water != nil:
			d.closeErr = d.water.Close()
		}
		if d.done != nil {
			close(d.done)
		}
		if d.nl != nil {
			d.nl.Close()
		}
		if d.log != nil {
			d.log.Debug("closed")
		}
	})
	return d.closeErr
}
