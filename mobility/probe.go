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
	// DataInterval (kernel SCTP only), if positive, sends a one-byte
	// message on the association this often, so that DATA is outstanding
	// on the kernel's primary path and its T3-rtx timer (one RTO) finds a
	// dead path sooner than heartbeats, which Linux sends at most every
	// 200 ms plus up to an RTO (net/sctp/transport.c). Off by default:
	// under heavy jitter (TCG) it also strikes live paths.
	DataInterval time.Duration
}

// DefaultHeartbeat detects a silent path death in well under a second
// without taking one late heartbeat for a death: a path is potentially
// failed after two consecutive unanswered heartbeats (PF threshold 1,
// RFC 7829 §3), each given an RTO of at least 100 ms, and inactive after
// three.
var DefaultHeartbeat = Heartbeat{
	Interval: 100 * time.Millisecond, RTOInitial: 200 * time.Millisecond,
	RTOMin: 100 * time.Millisecond, RTOMax: 400 * time.Millisecond,
	PathMaxRetrans: 2, PFThreshold: 1,
}

// lossWindow is how many recent heartbeats a path's loss is measured
// over (about ten seconds at the default interval).
const lossWindow = 64

// stallGap is how late the prober's own 5 ms tick may be before the
// prober takes it that it, not the path, was stalled (a busy host).
const stallGap = 50 * time.Millisecond

// probeRec is one heartbeat sent on a path.
type probeRec struct {
	seq      uint16
	at       time.Time
	answered bool
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
	deadline     time.Time // when the outstanding heartbeat counts as missed
	activeSince  time.Time // send time of the first answered heartbeat since it was last not active
	measured     bool
	recent       []probeRec // the last lossWindow heartbeats, oldest first
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

// sent records a heartbeat sent at now.
func (p *pathTimer) sent(now time.Time) {
	p.seq++
	p.sentAt, p.outstanding, p.deadline = now, true, now.Add(p.rto)
	p.recent = append(p.recent, probeRec{seq: p.seq, at: now})
	if len(p.recent) > lossWindow {
		p.recent = p.recent[len(p.recent)-lossWindow:]
	}
}

// answered marks heartbeat seq answered at t and reports its send time.
// A late answer (after its heartbeat was counted as missed) still counts:
// like an SCTP HEARTBEAT ACK, which carries its own heartbeat's
// information (RFC 4960 §8.3), it proves the path works, whenever it
// arrives. A duplicate or unknown seq does not.
func (p *pathTimer) answered(seq uint16) (time.Time, bool) {
	for i := len(p.recent) - 1; i >= 0; i-- {
		r := &p.recent[i]
		if r.seq == seq {
			if r.answered {
				return time.Time{}, false
			}
			r.answered = true
			return r.at, true
		}
	}
	return time.Time{}, false
}

// loss is the fraction of the recent heartbeats that were never answered,
// counting only those older than RTOMax (the others may still be) and,
// while the path is active, only those sent since it became active: an
// outage it recovered from is not loss (a path is judged on how it does
// now; one that keeps losing heartbeats shows it again soon). The
// fraction is over at least a full window: until a path has had
// lossWindow heartbeats judged, the ones it has not had count as
// answered. Otherwise one heartbeat lost just after a recovery (the
// neighbour entry still resolving) reads as 20 % loss, and the primary
// stays "worse" than the alternate, and without traffic, until some 60
// good heartbeats have diluted it: about ten seconds (CI saw this).
func (p *pathTimer) loss(now time.Time, hb Heartbeat) float64 {
	n, lost := 0, 0
	for _, r := range p.recent {
		if !r.answered && now.Sub(r.at) < hb.RTOMax {
			continue
		}
		if p.state == Active && r.at.Before(p.activeSince) {
			continue
		}
		n++
		if !r.answered {
			lost++
		}
	}
	return float64(lost) / float64(max(n, lossWindow))
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

// probeConns opens the ICMP sockets the paths' families need.
func probeConns(paths []Path) (c4, c6 *icmp.PacketConn, err error) {
	for _, p := range paths {
		if p.Local.Is4() && c4 == nil {
			if c4, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); err != nil {
				return nil, nil, fmt.Errorf("mobility: probe socket: %w (needs CAP_NET_RAW)", err)
			}
			c4.IPv4PacketConn().SetControlMessage(ipv4.FlagDst, true)
		}
		if p.Local.Is6() && c6 == nil {
			if c6, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); err != nil {
				if c4 != nil {
					c4.Close()
				}
				return nil, nil, fmt.Errorf("mobility: probe socket: %w", err)
			}
		}
	}
	return c4, c6, nil
}

// Run probes until ctx ends, sending a state change of a path as an Event
// (and every answer, with the path's loss and RTT).
func (pr *Prober) Run(ctx context.Context, out chan<- Event) error {
	id := os.Getpid() & 0xffff
	c4, c6, err := probeConns(pr.Paths)
	if err != nil {
		return err
	}
	var readers sync.WaitGroup
	replies := make(chan reply, 64)
	conns := []*icmp.PacketConn{}
	for _, c := range []*icmp.PacketConn{c4, c6} {
		if c != nil {
			conns = append(conns, c)
			readers.Add(1)
			go func() { defer readers.Done(); readReplies(ctx, c, id, replies) }()
		}
	}
	// Closing the sockets ends the readers' blocking reads.
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}()
	pr.start(time.Now())
	send := func(ev Event) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-replies:
			for _, ev := range pr.answer(r) {
				send(ev)
			}
		case now := <-tick.C:
			// Answers already read come first: a reply that waited in the
			// channel while this goroutine was not running is not a miss.
			for drained := false; !drained; {
				select {
				case r := <-replies:
					for _, ev := range pr.answer(r) {
						send(ev)
					}
				default:
					drained = true
				}
			}
			evs, probes := pr.tick(now, now.Sub(last))
			last = now
			for _, p := range probes {
				sendEcho(c4, c6, p.path, id, p.seq)
			}
			for _, ev := range evs {
				send(ev)
			}
		}
	}
}

// SetLocal moves the path on local address old to address new (adopted
// by netlink): it is unconfirmed again, with nothing measured, and is
// probed at once from the new address.
func (pr *Prober) SetLocal(old, new netip.Addr) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, t := range pr.timer {
		if t.path.Local == old {
			*t = pathTimer{path: t.path, state: Unconfirmed, rto: pr.HB.RTOInitial, next: time.Now(), seq: t.seq}
			t.path.Local = new
		}
	}
}

// start sets every path unconfirmed, with its first heartbeat due now.
func (pr *Prober) start(now time.Time) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.timer = nil
	for _, p := range pr.Paths {
		pr.timer = append(pr.timer, &pathTimer{path: p, state: Unconfirmed, rto: pr.HB.RTOInitial, next: now})
	}
}

// answer applies one reply: every answer is reported, because another
// detector (netlink) may have changed the path's state in the Set
// meanwhile, and an answer after an alternate became suspect is what
// confirms this path as a destination.
func (pr *Prober) answer(r reply) []Event {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var evs []Event
	for _, t := range pr.timer {
		if r.from != t.path.Peer {
			continue
		}
		sentAt, ok := t.answered(r.seq)
		if !ok {
			continue
		}
		t.errors = 0 // §8.3: an answer clears the error counter
		t.rttSample(r.at.Sub(sentAt), pr.HB)
		if t.outstanding && r.seq == t.seq {
			t.outstanding = false
			t.next = sentAt.Add(pr.HB.Interval + jitter(t.rto))
		}
		if t.state != Active {
			t.state, t.activeSince = Active, sentAt
		}
		evs = append(evs, Event{Local: t.path.Local, Peer: t.path.Peer, State: Active, Source: "probe", Time: r.at,
			Answer: true, Measured: true, Loss: t.loss(r.at, pr.HB), RTT: t.srtt})
	}
	return evs
}

type probe struct {
	path Path
	seq  uint16
}

// tick counts missed heartbeats and returns the state changes and the
// heartbeats to send now. gap is the time since the last tick: when the
// prober itself was stalled longer than stallGap, the outstanding
// heartbeats get that time back, since their answers may be queued
// unread (the host was busy, not the path dead).
func (pr *Prober) tick(now time.Time, gap time.Duration) ([]Event, []probe) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var evs []Event
	suspect := false
	for _, t := range pr.timer {
		if t.outstanding && gap > stallGap {
			t.deadline = t.deadline.Add(gap)
		}
		if !t.outstanding || now.Before(t.deadline) {
			continue
		}
		ev, changed := pr.miss(t, now)
		if changed {
			evs = append(evs, ev)
			suspect = suspect || ev.State != Active
		}
	}
	var probes []probe
	for _, t := range pr.timer {
		if suspect && !t.outstanding && t.state == Active {
			// A path just became suspect: hear from the alternates at once,
			// so one of them can be confirmed as its replacement.
			t.next = now
		}
		if !t.outstanding && !now.Before(t.next) {
			t.sent(now)
			probes = append(probes, probe{t.path, t.seq})
		}
	}
	return evs, probes
}

// miss counts the outstanding heartbeat of t as unanswered (RFC 4960
// §8.3) and returns the state change it causes.
func (pr *Prober) miss(t *pathTimer, now time.Time) (Event, bool) {
	t.outstanding = false
	t.errors++
	// §6.3.3 backs the RTO off; below the PF threshold it does not, so
	// that consecutive misses are counted one RTO apart and a single late
	// heartbeat costs one RTO of detection time, not a failover.
	if pr.HB.PFThreshold < 0 || t.errors > pr.HB.PFThreshold {
		t.rto = min(2*t.rto, pr.HB.RTOMax)
	}
	t.next = now // RFC 7829 §5.1: probe a suspect path at once, then every RTO
	st := t.state
	switch {
	case t.errors > pr.HB.PathMaxRetrans:
		st = Inactive
	case pr.HB.PFThreshold >= 0 && t.errors > pr.HB.PFThreshold:
		st = PotentiallyFailed
	}
	if st == t.state {
		return Event{}, false
	}
	t.state = st
	return Event{Local: t.path.Local, Peer: t.path.Peer, State: st, Source: "probe", Time: now,
		Measured: true, Loss: t.loss(now, pr.HB), RTT: t.srtt}, true
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
