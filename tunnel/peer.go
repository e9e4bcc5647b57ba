package tunnel

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPathSilence is how much longer than another address of the same
// peer an address must have been silent (no authenticated path evidence)
// before a PeerTracker calls its path dead. A road warrior's path probes
// run about every 100 ms on every path (mobility/probe.go), so 300 ms is
// three missed probes while another path kept answering.
const DefaultPathSilence = 300 * time.Millisecond

// peerSlots bounds the addresses a tracker remembers; a road warrior has a
// few uplinks. When full, the address heard from longest ago is replaced.
const peerSlots = 8

// PeerTracker is what a gateway has learned, from authenticated ESP only,
// about where a peer receives: the outer endpoints (address and UDP port,
// RFC 3948: the port a NAT chose) the peer has sent authenticated ESP from,
// which of our addresses each arrived at, and when each was last heard.
// Inbound SAs write it after the ICV verified (SAConfig.Peer), outbound
// rules read it (OuterRule.FollowPeer); see outer.go for the rules.
//
// Reads and the steady-state writes are atomic loads and compares: the
// per-packet path takes no lock and writes a shared cache line at most
// once per millisecond per address. A mutex orders only the insertion of
// an address not seen before.
type PeerTracker struct {
	// Silence overrides DefaultPathSilence when non-zero; set it before
	// the tracker is shared.
	Silence time.Duration

	slots     [peerSlots]peerSlot
	monitored atomic.Bool // path evidence comes from a monitoring SA
	insert    sync.Mutex
	// sendsTo is, per family (0: IPv4, 1: IPv6), which of our addresses a
	// monitored peer's own traffic (not its probes) arrives at now, and
	// which before it last changed: the path the peer's failure detector
	// chose, and the one it left. The detector hears both directions; we
	// hear only the peer's, so a path that dies one way (ours to the peer)
	// still brings us its probes, and only the peer's move tells us.
	sendsTo [2]pathChoice
}

type pathChoice struct {
	cur, left atomic.Pointer[netip.Addr]
	mu        sync.Mutex // orders a change; reads are atomic
}

// note records that the peer's traffic arrived at local.
func (c *pathChoice) note(local netip.Addr) {
	if cur := c.cur.Load(); cur != nil && *cur == local {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.cur.Load(); cur == nil || *cur != local {
		// A copy made here, not &local: taking the parameter's address
		// would move it to the heap on every call, the fast path's too.
		next := new(netip.Addr)
		*next = local
		c.left.Store(cur)
		c.cur.Store(next)
	}
}

func famIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

type peerSlot struct {
	at    atomic.Pointer[peerEndpoint]
	heard atomic.Int64 // trackerClock of the last path evidence; 0 = none
}

// peerEndpoint is immutable once stored; a change stores a new one.
type peerEndpoint struct {
	peer  netip.AddrPort // the peer's outer source (port 0 on raw ESP)
	local netip.Addr     // our outer address it arrived at
}

var trackerEpoch = time.Now()

// trackerClock is monotonic nanoseconds since the package loaded, never 0.
func trackerClock() int64 { return int64(time.Since(trackerEpoch)) + 1 }

// seen records an authenticated packet from peer to our local address.
// monitor says it came on a host-to-host SA (outer = inner, RFC 3554 §2
// case 1): such a packet travelled the path between exactly these two
// addresses, so it is evidence that the path to peer lives. Once a peer
// has such an SA, only those packets refresh liveness: its other traffic
// may come from one address over another path after a switch.
func (p *PeerTracker) seen(peer netip.AddrPort, local netip.Addr, monitor bool) {
	p.seenAt(peer, local, monitor, trackerClock())
}

func (p *PeerTracker) seenAt(peer netip.AddrPort, local netip.Addr, monitor bool, now int64) {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if monitor && !p.monitored.Load() {
		p.monitored.Store(true)
	}
	evidence := monitor || !p.monitored.Load()
	if !monitor && local.IsValid() {
		p.sendsTo[famIndex(local)].note(local)
	}
	s := p.find(peer.Addr())
	if s == nil {
		s = p.add(peer, local)
	}
	cur := s.at.Load()
	if cur.peer.Addr() != peer.Addr() {
		return // the slot went to another address meanwhile (table full)
	}
	// A NAT rebinding (new port, RFC 3948) is followed on this
	// authenticated packet; our local address only on path evidence.
	if cur.peer.Port() != peer.Port() || evidence && local.IsValid() && cur.local != local {
		l := cur.local
		if evidence && local.IsValid() {
			l = local
		}
		s.at.Store(&peerEndpoint{peer: peer, local: l})
	}
	if evidence && now-s.heard.Load() >= int64(time.Millisecond) {
		s.heard.Store(now)
	}
}

func (p *PeerTracker) find(a netip.Addr) *peerSlot {
	for i := range p.slots {
		if e := p.slots[i].at.Load(); e != nil && e.peer.Addr() == a {
			return &p.slots[i]
		}
	}
	return nil
}

// add inserts a new address, replacing the one heard from longest ago
// when the table is full.
func (p *PeerTracker) add(peer netip.AddrPort, local netip.Addr) *peerSlot {
	p.insert.Lock()
	defer p.insert.Unlock()
	if s := p.find(peer.Addr()); s != nil {
		return s // another worker was first
	}
	victim := &p.slots[0]
	for i := range p.slots {
		s := &p.slots[i]
		if s.at.Load() == nil {
			victim = s
			break
		}
		if s.heard.Load() < victim.heard.Load() {
			victim = s
		}
	}
	victim.heard.Store(0)
	victim.at.Store(&peerEndpoint{peer: peer, local: local})
	return victim
}

func (p *PeerTracker) silence() int64 {
	if p.Silence > 0 {
		return int64(p.Silence)
	}
	return int64(DefaultPathSilence)
}

// live returns the endpoint of address a if the peer has proven it
// receives there (it sent authenticated ESP from a) and that path is not
// dead: no other address of the peer has been heard from more than the
// silence threshold after a was last heard from. The rule compares two
// timestamps and reads no clock: if every path goes quiet, none is
// declared dead for it.
func (p *PeerTracker) live(a netip.Addr) (peerEndpoint, bool) {
	s := p.find(a)
	if s == nil {
		return peerEndpoint{}, false
	}
	e := s.at.Load()
	h := s.heard.Load()
	if h == 0 && !p.monitored.Load() {
		return *e, true // proven; no liveness evidence expected
	}
	lim := p.silence()
	for i := range p.slots {
		o := &p.slots[i]
		if o != s && o.at.Load() != nil && o.heard.Load()-h > lim {
			return peerEndpoint{}, false
		}
	}
	if p.left(e) {
		return peerEndpoint{}, false
	}
	return *e, true
}

// left: a monitored peer moved its own traffic off the path e is on (to
// our address on another path it is monitoring): its detector found the
// path dead, maybe only in our direction, which our probes' evidence
// cannot show. It holds until the peer's traffic comes back to that path.
func (p *PeerTracker) left(e *peerEndpoint) bool {
	if !p.monitored.Load() || !e.local.IsValid() {
		return false
	}
	c := &p.sendsTo[famIndex(e.local)]
	cur, left := c.cur.Load(), c.left.Load()
	return cur != nil && left != nil && *left == e.local && *cur != e.local
}

// chosen is the endpoint on the path a monitored peer sends its own
// traffic over now (family v4), if it has moved off another.
func (p *PeerTracker) chosen(v4 bool) (peerEndpoint, bool) {
	if !p.monitored.Load() {
		return peerEndpoint{}, false
	}
	i := 1
	if v4 {
		i = 0
	}
	cur := p.sendsTo[i].cur.Load()
	if cur == nil || p.sendsTo[i].left.Load() == nil {
		return peerEndpoint{}, false
	}
	e, _, ok := p.freshestOf(func(netip.Addr) bool { return true }, func(e *peerEndpoint) bool { return e.local == *cur })
	return e, ok
}

// freshest returns the endpoint of the family (IPv4 if v4) heard from
// most recently, if any.
func (p *PeerTracker) freshest(v4 bool) (peerEndpoint, bool) {
	e, _, ok := p.freshestOf(func(a netip.Addr) bool { return a.Is4() == v4 }, nil)
	return e, ok
}

// reachable is rules 2 and 3's endpoint for an inner packet of family v4:
// the freshest endpoint of that family, unless the peer has since been
// heard only from the other family for longer than the silence threshold
// (a MOBIKE road warrior that moved its SAs from IPv4 to IPv6 outer
// addresses, as strongSwan does when its IPv4 uplink dies): then the
// freshest of any family. Tunnel mode carries either inner family in
// either outer one (RFC 4301 §5.1.2.1).
func (p *PeerTracker) reachable(v4 bool) (peerEndpoint, bool) {
	e, h, ok := p.freshestOf(func(a netip.Addr) bool { return a.Is4() == v4 }, nil)
	o, oh, ook := p.freshestOf(func(a netip.Addr) bool { return a.Is4() != v4 }, nil)
	if ook && (!ok || oh-h > p.silence()) {
		return o, true
	}
	return e, ok
}

func (p *PeerTracker) freshestOf(match func(netip.Addr) bool, also func(*peerEndpoint) bool) (peerEndpoint, int64, bool) {
	var best *peerEndpoint
	var bestHeard int64 = -1
	for i := range p.slots {
		s := &p.slots[i]
		e := s.at.Load()
		if e == nil || !match(e.peer.Addr()) || also != nil && !also(e) {
			continue
		}
		if h := s.heard.Load(); h > bestHeard {
			best, bestHeard = e, h
		}
	}
	if best == nil {
		return peerEndpoint{}, 0, false
	}
	return *best, bestHeard, true
}

// Addr returns the endpoint address of one family (IPv4 if v4) the peer
// was heard from most recently, or the zero Addr.
func (p *PeerTracker) Addr(v4 bool) netip.Addr {
	e, _ := p.freshest(v4)
	return e.peer.Addr()
}

// Endpoints lists what the tracker knows, for status output: each address
// with its port, our address it arrived at, and how long ago it was last
// heard (-1: never as path evidence).
func (p *PeerTracker) Endpoints() []PeerEndpoint {
	var out []PeerEndpoint
	now := trackerClock()
	for i := range p.slots {
		s := &p.slots[i]
		e := s.at.Load()
		if e == nil {
			continue
		}
		ago := time.Duration(-1)
		if h := s.heard.Load(); h != 0 {
			ago = time.Duration(now - h)
		}
		_, alive := p.live(e.peer.Addr())
		out = append(out, PeerEndpoint{Peer: e.peer, Local: e.local, HeardAgo: ago, Live: alive})
	}
	return out
}

// PeerEndpoint is one address a PeerTracker knows.
type PeerEndpoint struct {
	Peer     netip.AddrPort `json:"peer"`
	Local    netip.Addr     `json:"local"`
	HeardAgo time.Duration  `json:"heard_ago_ns"` // -1: no path evidence yet
	Live     bool           `json:"live"`         // RFC 3554's inner destination may be used (outer.go rule 1)
}

// Endpoint returns the endpoint (address and port) of one family the
// peer's authenticated ESP came from most recently, and when. IKE uses it
// to follow a NAT rebinding it has not seen an IKE message through yet.
func (p *PeerTracker) Endpoint(v4 bool) (netip.AddrPort, time.Time, bool) {
	var best *peerEndpoint
	var bestHeard int64
	for i := range p.slots {
		s := &p.slots[i]
		e := s.at.Load()
		if e == nil || e.peer.Addr().Is4() != v4 {
			continue
		}
		if h := s.heard.Load(); h > bestHeard {
			best, bestHeard = e, h
		}
	}
	if best == nil {
		return netip.AddrPort{}, time.Time{}, false
	}
	return best.peer, trackerEpoch.Add(time.Duration(bestHeard - 1)), true
}
