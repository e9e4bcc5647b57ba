package mobility

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Heartbeat is RFC 4960's path-management tuning (§8.3, §15), with the
// potentially-failed threshold of RFC 7829.
type Heartbeat struct {
	Interval       time.Duration // HB.interval: between heartbeats on an idle path
	RTOInitial     time.Duration
	RTOMin, RTOMax time.Duration
	PathMaxRetrans int // unanswered heartbeats beyond this make the path inactive
	PFThreshold    int // beyond this it is potentially failed; negative: no PF state
}

// DefaultHeartbeat detects a silent path death in well under a second: with
// PF at the first miss, traffic leaves after one RTO (≥ 100 ms).
var DefaultHeartbeat = Heartbeat{
	Interval: 100 * time.Millisecond, RTOInitial: 200 * time.Millisecond,
	RTOMin: 100 * time.Millisecond, RTOMax: 400 * time.Millisecond,
	PathMaxRetrans: 2, PFThreshold: 0,
}

// pathTimer is the per-destination state of RFC 4960 §6.3 and §8.
type pathTimer struct {
	path         Path
	state        State
	errors       int
	srtt, rttvar time.Duration
	rto          time.Duration
	outstanding  bool
	seq          uint16
	sentAt, next time.Time
	measured     bool
}

// rttSample updates SRTT, RTTVAR and RTO as RFC 4960 §6.3.1 says.
func (p *pathTimer) rttSample(r time.Duration, hb Heartbeat) {
	if !p.measured {
		p.srtt, p.rttvar, p.measured = r, r/2, true
	} else {
		d := p.srtt - r
		if d < 0 {
			d = -d
		}
		p.rttvar = (3*p.rttvar + d) / 4 // RTO.Beta = 1/4
		p.srtt = (7*p.srtt + r) / 8     // RTO.Alpha = 1/8
	}
	p.rto = min(max(p.srtt+4*p.rttvar, hb.RTOMin), hb.RTOMax)
}

// Prober runs RFC 4960 §8 path management on ICMP echo probes where the
// kernel has no SCTP: one heartbeat outstanding per path, sent from the
// path's local address to its peer address. Routed into the tunnel and
// protected by an SA whose outer addresses are the inner ones (RFC 3554
// §2, end hosts), each probe travels the path it tests, and only an
// answer that came back through the SA (authenticated) counts.
type Prober struct {
	Paths []Path
	HB    Heartbeat

	mu    sync.Mutex
	timer []*pathTimer
}

// Run probes until ctx ends, sending a state change of a path as an Event.
func (pr *Prober) Run(ctx context.Context, out chan<- Event) error {
	id := os.Getpid() & 0xffff
	var c4, c6 *icmp.PacketConn
	var err error
	for _, p := range pr.Paths {
		if p.Local.Is4() && c4 == nil {
			if c4, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); err != nil {
				return fmt.Errorf("mobility: probe socket: %w (needs CAP_NET_RAW)", err)
			}
			defer c4.Close()
			c4.IPv4PacketConn().SetControlMessage(ipv4.FlagDst, true)
		}
		if p.Local.Is6() && c6 == nil {
			if c6, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); err != nil {
				return fmt.Errorf("mobility: probe socket: %w", err)
			}
			defer c6.Close()
		}
	}
	pr.mu.Lock()
	pr.timer = nil
	now := time.Now()
	for _, p := range pr.Paths {
		pr.timer = append(pr.timer, &pathTimer{path: p, state: Unconfirmed, rto: pr.HB.RTOInitial, next: now})
	}
	pr.mu.Unlock()

	replies := make(chan reply, 64)
	for _, c := range []*icmp.PacketConn{c4, c6} {
		if c != nil {
			go readReplies(ctx, c, id, replies)
		}
	}
	// Failures are reported when they change the state; every answer is
	// reported, because another detector (netlink) may have changed the
	// path's state in the Set meanwhile, and the Set ignores repeats.
	emit := func(t *pathTimer, st State, at time.Time) {
		if t.state == st && st != Active {
			return
		}
		t.state = st
		select {
		case out <- Event{Local: t.path.Local, Peer: t.path.Peer, State: st, Source: "probe", Time: at}:
		case <-ctx.Done():
		}
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-replies:
			pr.mu.Lock()
			for _, t := range pr.timer {
				if t.outstanding && r.seq == t.seq && r.from == t.path.Peer {
					t.outstanding = false
					t.errors = 0
					t.rttSample(r.at.Sub(t.sentAt), pr.HB)
					t.next = t.sentAt.Add(pr.HB.Interval + jitter(t.rto))
					emit(t, Active, r.at)
				}
			}
			pr.mu.Unlock()
		case now := <-tick.C:
			pr.mu.Lock()
			for _, t := range pr.timer {
				if t.outstanding && now.Sub(t.sentAt) >= t.rto {
					// §8.3: an unanswered heartbeat counts against the
					// path; §6.3.3: the RTO backs off.
					t.outstanding = false
					t.errors++
					t.rto = min(2*t.rto, pr.HB.RTOMax)
					switch {
					case t.errors > pr.HB.PathMaxRetrans:
						emit(t, Inactive, now)
					case pr.HB.PFThreshold >= 0 && t.errors > pr.HB.PFThreshold:
						emit(t, PotentiallyFailed, now)
					}
					t.next = now // RFC 7829 §5.1: probe a suspect path at once, then every RTO
				}
				if !t.outstanding && !now.Before(t.next) {
					t.seq++
					t.sentAt, t.outstanding = now, true
					sendEcho(c4, c6, t.path, id, t.seq)
				}
			}
			pr.mu.Unlock()
		}
	}
}

// jitter spreads heartbeats by ±50% of the RTO, as RFC 4960 §8.3 asks.
func jitter(rto time.Duration) time.Duration {
	return time.Duration(float64(rto) * (0.5 + rand.Float64()))
}

type reply struct {
	from netip.Addr
	seq  uint16
	at   time.Time
}

func sendEcho(c4, c6 *icmp.PacketConn, p Path, id int, seq uint16) {
	typ := icmp.Type(ipv4.ICMPTypeEcho)
	if p.Local.Is6() {
		typ = ipv6.ICMPTypeEchoRequest
	}
	m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: int(seq), Data: []byte("roamsec path probe")}}
	b, err := m.Marshal(nil)
	if err != nil {
		return
	}
	dst := &net.IPAddr{IP: p.Peer.AsSlice()}
	// The source is the path's local address, chosen per packet: the
	// probe is the inner packet and, outer = inner, picks the path too.
	if p.Local.Is4() {
		c4.IPv4PacketConn().WriteTo(b, &ipv4.ControlMessage{Src: p.Local.AsSlice()}, dst)
	} else {
		c6.IPv6PacketConn().WriteTo(b, &ipv6.ControlMessage{Src: p.Local.AsSlice()}, dst)
	}
}

func readReplies(ctx context.Context, c *icmp.PacketConn, id int, out chan<- reply) {
	proto := 1
	if c.IPv6PacketConn() != nil && c.IPv4PacketConn() == nil {
		proto = 58
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		at := time.Now()
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != id || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		ip, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		select {
		case out <- reply{from: ip.Unmap(), seq: uint16(e.Seq), at: at}:
		case <-ctx.Done():
			return
		}
	}
}
