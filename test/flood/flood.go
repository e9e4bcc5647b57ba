// Package flood attacks a gateway's IKE side the way issue 11 did, for the
// flood test (test/e2e) and `make bench-flood` (test/floodbench): an
// attacker that answers cookies from its own real addresses and holds
// half-open IKE SAs, optionally sending RFC 7383 fragment sets that never
// complete; IKE on UDP 4500 (non-ESP marker); and IKE_SA_INIT from spoofed
// sources. The IKE messages come from the project's own encoder and SK
// cipher (ike.HalfOpenClient); only the spoofer's IPv4/UDP header is
// written here (a raw socket is the only way to send from addresses the
// host does not have).
package flood

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/test/netns"
	"golang.org/x/sys/unix"
)

// Counts is what an attack did.
type Counts struct {
	Sent      atomic.Uint64 // IKE_SA_INIT requests (first and cookie-carrying)
	Cookies   atomic.Uint64 // COOKIE answers received
	HalfOpen  atomic.Uint64 // IKE_SA_INIT answered with keys: a half-open SA on the gateway
	Fragments atomic.Uint64 // SKF messages sent
	Errors    atomic.Uint64 // send errors (socket buffer full, ...)
}

func (c *Counts) String() string {
	return fmt.Sprintf("%d IKE_SA_INIT sent, %d cookies, %d half-open, %d fragments, %d send errors",
		c.Sent.Load(), c.Cookies.Load(), c.HalfOpen.Load(), c.Fragments.Load(), c.Errors.Load())
}

// CookieAttack answers cookies from real addresses.
type CookieAttack struct {
	Target  netip.Addr
	Port    uint16       // 500, or 4500 (the non-ESP marker is added)
	Sources []netip.Addr // addresses the attacker's namespace has
	Rate    int          // IKE_SA_INIT per second, all sources together
	// Fragments > 1: after each IKE_SA_INIT, fragments 2..Fragments of an
	// IKE_AUTH of that many, FragSize bytes of plaintext each; fragment 1
	// never comes, so the set never completes.
	Fragments, FragSize int
	Counts              Counts
}

// Run attacks from inside ns until ctx ends.
func (a *CookieAttack) Run(ctx context.Context, ns *netns.NS) error {
	conns := make([]*net.UDPConn, len(a.Sources))
	err := ns.Do(func() error {
		for i, s := range a.Sources {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s, 0)))
			if err != nil {
				return err
			}
			c.SetWriteBuffer(4 << 20)
			c.SetReadBuffer(4 << 20)
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return err
	}
	// One key pair and nonce for every request (HalfOpenClient.Again) and
	// one sender pacing them all, round robin over the addresses; a reader
	// per address answers cookies and sends fragments. The attacker's
	// cost is the gateway's to bear, not its own: no key generation and
	// no timer per address.
	tmpl, err := ike.NewHalfOpenClient(nil)
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return err
	}
	srcs := make([]*source, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		srcs[i] = &source{a: a, c: c, dst: net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Target, a.Port)), pending: map[uint64]*ike.HalfOpenClient{}}
		wg.Go(srcs[i].read)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var due float64
	for n := 0; ctx.Err() == nil; {
		select {
		case <-ctx.Done():
		case <-tick.C:
			due += float64(a.Rate) / 100
			for ; due >= 1; due-- {
				sr := srcs[n%len(srcs)]
				n++
				hc := tmpl.Again()
				sr.mu.Lock()
				sr.pending[hc.SPIi] = hc
				sr.mu.Unlock()
				a.Counts.Sent.Add(1)
				sr.send(hc.Request())
			}
		}
	}
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return nil
}

// source is one attacker address: its socket and the requests it waits
// for an answer to.
type source struct {
	a       *CookieAttack
	c       *net.UDPConn
	dst     *net.UDPAddr
	mu      sync.Mutex
	pending map[uint64]*ike.HalfOpenClient
}

func (s *source) send(b []byte) {
	if s.a.Port == 4500 {
		b = append([]byte{0, 0, 0, 0}, b...) // RFC 3948 non-ESP marker
	}
	if _, err := s.c.WriteToUDP(b, s.dst); err != nil {
		s.a.Counts.Errors.Add(1)
	}
}

// read answers cookies and sends fragments until the socket closes.
func (s *source) read() {
	buf := make([]byte, 65536)
	for {
		n, _, err := s.c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		msg := buf[:n]
		if s.a.Port == 4500 && len(msg) >= 4 {
			msg = msg[4:]
		}
		if len(msg) < 8 {
			continue
		}
		s.mu.Lock()
		hc := s.pending[binary.BigEndian.Uint64(msg)]
		s.mu.Unlock()
		if hc != nil {
			s.a.answer(hc, msg, s.send, &s.mu, s.pending)
		}
	}
}

func (a *CookieAttack) answer(hc *ike.HalfOpenClient, msg []byte, send func([]byte), mu *sync.Mutex, pending map[uint64]*ike.HalfOpenClient) {
	err := hc.Response(msg)
	if errors.Is(err, ike.ErrCookie) {
		a.Counts.Cookies.Add(1)
		a.Counts.Sent.Add(1)
		send(hc.Request())
		return
	}
	mu.Lock()
	delete(pending, hc.SPIi)
	mu.Unlock()
	if err != nil {
		return
	}
	a.Counts.HalfOpen.Add(1)
	if a.Fragments > 1 {
		frags, err := hc.Fragments(a.Fragments, 2, a.Fragments, a.FragSize)
		if err != nil {
			return
		}
		for _, f := range frags {
			send(f)
			a.Counts.Fragments.Add(1)
		}
	}
}

// Spoof sends IKE_SA_INIT requests from random addresses of From (which
// the attacker does not have: the answers, cookies, go nowhere) at Rate
// per second.
type Spoof struct {
	Target netip.Addr
	From   netip.Prefix // IPv4
	Rate   int
	Counts Counts
}

// Run spoofs from inside ns until ctx ends.
func (s *Spoof) Run(ctx context.Context, ns *netns.NS) error {
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW) // IP_HDRINCL implied
		if err == nil {
			syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<20)
		}
		return err
	})
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	// Requests are built ahead (distinct SPIs, one key pair): the spoofer
	// spends its time sending, not on Diffie-Hellman.
	reqs := make([][]byte, 512)
	tmpl, err := ike.NewHalfOpenClient(nil)
	if err != nil {
		return err
	}
	for i := range reqs {
		reqs[i] = tmpl.Again().Request()
	}
	// A tick's packets go out in sendmmsg calls of up to spoofBatch, as a
	// real flooder's would: one system call per batch, not per packet.
	dst := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: s.Target.As4()}
	hdrs := make([]unix.Mmsghdr, spoofBatch)
	iovs := make([]unix.Iovec, spoofBatch)
	pkts := make([][]byte, spoofBatch)
	for i := range hdrs {
		pkts[i] = make([]byte, 0, 2048)
		hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&dst))
		hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.Iovlen = 1
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var due float64
	base := s.From.Masked().Addr().As4()
	span := uint32(1) << (32 - s.From.Bits())
	for n := 0; ctx.Err() == nil; {
		select {
		case <-ctx.Done():
		case <-tick.C:
			due += float64(s.Rate) / 100
			for due >= 1 {
				k := 0
				for ; k < spoofBatch && due >= 1; k, due = k+1, due-1 {
					src := binary.BigEndian.Uint32(base[:]) + rand.Uint32N(span)
					pkts[k] = udp4(pkts[k][:0], src, s.Target.As4(), uint16(1024+rand.IntN(60000)), 500, reqs[n%len(reqs)])
					n++
					iovs[k].Base = &pkts[k][0]
					iovs[k].SetLen(len(pkts[k]))
				}
				sent, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(k), 0, 0, 0)
				if e != 0 {
					sent = 0
				}
				s.Counts.Sent.Add(uint64(sent))
				s.Counts.Errors.Add(uint64(k - int(sent)))
			}
		}
	}
	runtime.KeepAlive(&dst)
	return nil
}

// spoofBatch is how many spoofed packets one sendmmsg takes.
const spoofBatch = 64

// udp4 writes an IPv4 header (the kernel fills in the checksum and ID of
// an IP_HDRINCL packet) and a UDP header without checksum (RFC 768:
// zero means none) in front of payload.
func udp4(b []byte, src uint32, dst [4]byte, sport, dport uint16, payload []byte) []byte {
	total := 20 + 8 + len(payload)
	b = append(b, 0x45, 0, byte(total>>8), byte(total), 0, 0, 0x40, 0, 64, syscall.IPPROTO_UDP, 0, 0)
	b = binary.BigEndian.AppendUint32(b, src)
	b = append(b, dst[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = append(b, 0, 0)
	return append(b, payload...)
}

// AddSources gives ns's interface ifname n addresses from p (from .1 on)
// and returns them; route, on the gateway, p back to ns.
func AddSources(ns *netns.NS, ifname string, p netip.Prefix, n int) ([]netip.Addr, error) {
	var out []netip.Addr
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
		if _, err := ns.Run("ip", "addr", "add", netip.PrefixFrom(a, 32).String(), "dev", ifname); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
