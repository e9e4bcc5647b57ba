package tunnel

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Direction of an SA: SAs are one-way (RFC 4301 §4.1).
type Direction uint8

const (
	Inbound Direction = iota + 1
	Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "in"
	case Outbound:
		return "out"
	}
	return "?"
}

// Limit is one lifetime bound; a zero field is no bound.
type Limit struct {
	Time    time.Duration
	Bytes   uint64 // inner bytes
	Packets uint64
}

// Lifetimes are the soft (rekey) and hard (die) bounds of an SA
// (RFC 4301 §4.4.2.1).
type Lifetimes struct{ Soft, Hard Limit }

// LifetimeEvent tells the key manager an SA reached a bound.
type LifetimeEvent struct {
	SA     *SA
	Hard   bool   // false: soft, time to rekey; true: the SA is dead
	Reason string // "time", "bytes", "packets" or "sequence"
}

// SAConfig describes an SA to create. Addresses are sets (RFC 3554 §2).
type SAConfig struct {
	SPI       uint32
	Dir       Direction
	Transform Transform
	Key       []byte // cipher key followed by the 4-byte salt; copied, the caller should zero its copy
	ESN       bool   // extended (64-bit) sequence numbers, RFC 4303 §2.2.1
	// ReplayWindow is the inbound anti-replay window in packets; 0 means
	// DefaultReplayWindow.
	ReplayWindow int

	// LocalAddrs are our outer addresses this SA is reachable on. Inbound,
	// a SAD lookup with any of them finds the SA (RFC 3554 §2). Empty means
	// any.
	LocalAddrs AddrSet
	// PeerAddrs is the peer's outer address pool. Inbound, ESP whose outer
	// source is outside it is dropped (seed 000: the peer may move anywhere
	// inside the pool with the same SA). Empty means any.
	PeerAddrs AddrSet

	// Selector is the traffic this SA carries, from this host's view.
	Selector Selector
	// Outer picks outbound tunnel header addresses (RFC 3554 §2).
	Outer OuterRule
	// UDPEncap carries this SA's ESP in UDP (RFC 3948) to PeerPort
	// (default 4500) instead of raw IP protocol 50.
	UDPEncap bool
	PeerPort uint16
	// Peer, on an inbound SA, learns where the peer sends from: the outer
	// source of every packet that passed the ICV (never an unauthenticated
	// one). An outbound SA whose OuterRule.FollowPeer is the same tracker
	// sends there (see OuterRule.addrs).
	Peer *PeerTracker
	// PeerMonitor: this inbound SA is a host-to-host SA (outer = inner,
	// RFC 3554 §2 case 1) carrying the peer's path monitoring, so each of
	// its packets is evidence that the path it came over lives.
	PeerMonitor bool

	Lifetimes  Lifetimes
	OnLifetime func(LifetimeEvent) // called from a packet path or a timer: must not block
}

// SA is a tunnel-mode ESP Security Association. All methods are safe for
// concurrent use: many goroutines may seal or open on one SA at once.
type SA struct {
	SPI        uint32
	Dir        Direction
	Transform  Transform
	ESN        bool
	UDPEncap   bool
	LocalAddrs AddrSet
	PeerAddrs  AddrSet
	Selector   Selector
	Created    time.Time

	Counters Counters

	keys        atomic.Pointer[saKeys] // nil once the SA is closed
	outer       atomic.Pointer[OuterRule]
	peer        *PeerTracker
	seq         atomic.Uint64 // last sequence number sent
	maxSeq      uint64
	replay      *replayWindow
	lifetimes   Lifetimes
	onLifetime  func(LifetimeEvent)
	softFired   atomic.Bool
	hardFired   atomic.Bool
	timers      *saTimers // nil without a time lifetime (IKE's Child SAs: IKE rekeys them)
	closeOnce   sync.Once
	PeerPort    uint16
	peerMonitor bool
}

// saTimers are an SA's time lifetimes (soft, hard), apart: most SAs (a
// gateway's fleet of negotiated ones) have none, and each SA's size counts.
type saTimers struct {
	mu sync.Mutex // a timer may fire before NewSA has stored it
	t  [2]*time.Timer
}

type saKeys struct {
	aead cipher.AEAD
	salt [saltLen]byte
	raw  []byte // our copy of the keying material, zeroed on Close
}

// NewSA validates cfg and creates the SA, starting its time lifetimes.
func NewSA(cfg SAConfig) (*SA, error) {
	if cfg.Dir != Inbound && cfg.Dir != Outbound {
		return nil, errors.New("sa: direction must be in or out")
	}
	if cfg.SPI < 256 {
		// RFC 4303 §2.1: 1-255 are reserved by IANA, 0 is local-only.
		return nil, fmt.Errorf("sa: SPI %#x is reserved (must be >= 256)", cfg.SPI)
	}
	if !cfg.Outer.SrcFromInner && len(cfg.Outer.Src) == 0 && cfg.Dir == Outbound {
		return nil, errors.New("sa: outbound SA needs an outer source address or the same-as-inner flag")
	}
	if !cfg.Outer.DstFromInner && len(cfg.Outer.Dst) == 0 && cfg.Dir == Outbound {
		return nil, errors.New("sa: outbound SA needs an outer destination address or the same-as-inner flag")
	}
	raw := append([]byte(nil), cfg.Key...)
	aead, err := cfg.Transform.newAEAD(raw)
	if err != nil {
		clear(raw)
		return nil, fmt.Errorf("sa %#x: %w", cfg.SPI, err)
	}
	k := &saKeys{aead: aead, raw: raw}
	copy(k.salt[:], raw[len(raw)-saltLen:])

	sa := &SA{
		SPI: cfg.SPI, Dir: cfg.Dir, Transform: cfg.Transform, ESN: cfg.ESN,
		LocalAddrs: cfg.LocalAddrs, PeerAddrs: cfg.PeerAddrs,
		Selector: cfg.Selector, Created: time.Now(), peer: cfg.Peer, peerMonitor: cfg.PeerMonitor,
		UDPEncap: cfg.UDPEncap, PeerPort: cfg.PeerPort,
		lifetimes: cfg.Lifetimes, onLifetime: cfg.OnLifetime,
		maxSeq: 1<<32 - 1,
	}
	if cfg.ESN {
		sa.maxSeq = 1<<64 - 1
	}
	if sa.UDPEncap && sa.PeerPort == 0 {
		sa.PeerPort = 4500 // RFC 3948 §3
	}
	if cfg.Dir == Inbound {
		if sa.replay, err = newReplayWindow(cfg.ReplayWindow, cfg.ESN); err != nil {
			clear(raw)
			return nil, fmt.Errorf("sa %#x: %w", cfg.SPI, err)
		}
	}
	sa.keys.Store(k)
	sa.SetOuter(cfg.Outer)
	soft, hard := cfg.Lifetimes.Soft.Time, cfg.Lifetimes.Hard.Time
	if soft <= 0 && hard <= 0 {
		return sa, nil
	}
	tm := new(saTimers)
	tm.mu.Lock()
	defer tm.mu.Unlock()
	sa.timers = tm
	if soft > 0 {
		tm.t[0] = time.AfterFunc(soft, func() { sa.fire(false, "time") })
	}
	if hard > 0 {
		tm.t[1] = time.AfterFunc(hard, func() { sa.fire(true, "time") })
	}
	return sa, nil
}

// Outer returns the SA's current outer-address rule.
func (sa *SA) Outer() OuterRule { return *sa.outer.Load() }

// SetOuter replaces the outer-address rule, atomically for packets in
// flight: a path switch moves the tunnel to other addresses while the SA,
// its SPI, sequence numbers and replay window stay.
func (sa *SA) SetOuter(r OuterRule) { sa.outer.Store(&r) }

// Alive reports whether the SA can still carry traffic.
func (sa *SA) Alive() bool { return sa.keys.Load() != nil && !sa.hardFired.Load() }

// Close kills the SA: its timers stop, its copy of the keying material is
// zeroed and dropped, and every later Seal or Open fails with DropExpired.
// A packet already inside Seal or Open may finish with the old state.
// (The AES key schedule inside crypto/cipher cannot be reached to zero; it
// becomes garbage with the AEAD.)
func (sa *SA) Close() {
	sa.closeOnce.Do(func() {
		if tm := sa.timers; tm != nil {
			tm.mu.Lock()
			for _, t := range tm.t {
				if t != nil {
					t.Stop()
				}
			}
			tm.mu.Unlock()
		}
		if k := sa.keys.Swap(nil); k != nil {
			clear(k.raw)
		}
	})
}

// LastSeq is the last sequence number sent (outbound) or the highest
// accepted (inbound).
func (sa *SA) LastSeq() uint64 {
	if sa.Dir == Inbound {
		sa.replay.mu.Lock()
		defer sa.replay.mu.Unlock()
		return sa.replay.top
	}
	return min(sa.seq.Load(), sa.maxSeq)
}

// fire reports a lifetime bound once per kind. A hard bound kills the SA.
func (sa *SA) fire(hard bool, reason string) {
	flag := &sa.softFired
	if hard {
		flag = &sa.hardFired
	}
	if !flag.CompareAndSwap(false, true) {
		return
	}
	if hard {
		sa.Close()
	}
	if sa.onLifetime != nil {
		sa.onLifetime(LifetimeEvent{SA: sa, Hard: hard, Reason: reason})
	}
}

// account adds one packet of n inner bytes and fires the byte and packet
// bounds it reaches. The packet that reaches a hard bound still passes;
// the SA is dead for the next one.
func (sa *SA) account(n int) {
	pk := sa.Counters.Packets.Add(1)
	by := sa.Counters.Bytes.Add(uint64(n))
	l := &sa.lifetimes
	if r := reached(l.Soft, pk, by); r != "" && !sa.softFired.Load() {
		sa.fire(false, r)
	}
	if r := reached(l.Hard, pk, by); r != "" && !sa.hardFired.Load() {
		sa.fire(true, r)
	}
}

func reached(l Limit, packets, bytes uint64) string {
	switch {
	case l.Packets != 0 && packets >= l.Packets:
		return "packets"
	case l.Bytes != 0 && bytes >= l.Bytes:
		return "bytes"
	}
	return ""
}

// String is safe for logs: it never shows key material.
func (sa *SA) String() string {
	return fmt.Sprintf("SA{spi=%#08x %s %s local=%s peer=%s sel=[%s]}", sa.SPI, sa.Dir, sa.Transform, sa.LocalAddrs, sa.PeerAddrs, sa.Selector)
}

// KeyMaterial returns a copy of the SA's keying material (cipher key and
// salt, as SAConfig.Key took it), for moving the SA to another gateway
// (seed 004's context transfer); nil once the SA is closed. The caller
// zeroes the copy when done with it.
func (sa *SA) KeyMaterial() []byte {
	k := sa.keys.Load()
	if k == nil {
		return nil
	}
	return append([]byte(nil), k.raw...)
}

// SkipSeq raises an outbound SA's last-sent sequence number to at least
// last: a gateway taking over an SA from another that may have sent up to
// last must never send a number again (RFC 4303 §3.3.3; under AES-GCM and
// ChaCha20-Poly1305 the sequence number is part of the nonce, so a repeat
// is a nonce reused). It never lowers the number.
func (sa *SA) SkipSeq(last uint64) {
	for {
		cur := sa.seq.Load()
		if cur >= last || sa.seq.CompareAndSwap(cur, last) {
			return
		}
	}
}

// RaiseReplayFloor marks every sequence number up to top as received on
// an inbound SA (RFC 4303 §3.4.3): what another gateway accepted before
// handing the SA over cannot be replayed to this one. Numbers above top
// stay acceptable. No effect if the window is already past top.
func (sa *SA) RaiseReplayFloor(top uint64) {
	if sa.replay != nil {
		sa.replay.raiseFloor(top)
	}
}
