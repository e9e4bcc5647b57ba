package tunnel

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// PortRange is an inclusive range of ports. The zero value means any port.
type PortRange struct{ Lo, Hi uint16 }

// AnyPort covers every port, including OPAQUE (RFC 4301 §4.4.1.1).
var AnyPort = PortRange{0, 65535}

func (r PortRange) isAny() bool { return r.Lo == 0 && (r.Hi == 0 || r.Hi == 65535) }

func (r PortRange) contains(p uint16) bool { return r.isAny() || (r.Lo <= p && p <= r.Hi) }

func (r PortRange) String() string {
	switch {
	case r.isAny():
		return "any"
	case r.Lo == r.Hi:
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Selector is an SPD/SA traffic selector (RFC 4301 §4.4.1.1) whose address
// fields are sets, as RFC 3554 §2 requires for multihomed SCTP endpoints.
// Local and Remote are seen from this host: for a packet leaving through
// the tunnel, Local matches its source. Both SAs of a pair on one host
// carry the same selector; MatchInbound swaps source and destination.
type Selector struct {
	Local, Remote AddrSet
	Proto         uint8 // ProtoAny, ProtoTCP, ProtoUDP, ProtoICMP, ProtoSCTP, ...
	LocalPorts    PortRange
	RemotePorts   PortRange
}

// MatchOutbound reports whether a packet leaving this host through the
// tunnel is covered: source local, destination remote.
func (s *Selector) MatchOutbound(f *Flow) bool {
	return s.matchFlow(f, false)
}

// MatchInbound reports whether a packet arriving from the tunnel is
// covered: source remote, destination local (RFC 4301 §5.2 step 4).
func (s *Selector) MatchInbound(f *Flow) bool {
	return s.matchFlow(f, true)
}

func (s *Selector) matchFlow(f *Flow, inbound bool) bool {
	local, remote, lport, rport := f.Src, f.Dst, f.SrcPort, f.DstPort
	if inbound {
		local, remote, lport, rport = f.Dst, f.Src, f.DstPort, f.SrcPort
	}
	if !s.Local.Contains(local) || !s.Remote.Contains(remote) {
		return false
	}
	if s.Proto != ProtoAny && s.Proto != f.Proto {
		return false
	}
	if s.LocalPorts.isAny() && s.RemotePorts.isAny() {
		return true
	}
	// Specific ports never match a packet whose ports are unknown
	// (non-initial fragment, or a protocol without ports).
	return f.HasPorts && s.LocalPorts.contains(lport) && s.RemotePorts.contains(rport)
}

func (s Selector) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "local %s remote %s", s.Local.String(), s.Remote.String())
	if s.Proto != ProtoAny {
		fmt.Fprintf(&b, " proto %s", protoName(s.Proto))
	}
	if !s.LocalPorts.isAny() {
		fmt.Fprintf(&b, " lport %s", s.LocalPorts)
	}
	if !s.RemotePorts.isAny() {
		fmt.Fprintf(&b, " rport %s", s.RemotePorts)
	}
	return b.String()
}

var protoNames = map[string]uint8{"any": ProtoAny, "icmp": ProtoICMP, "tcp": ProtoTCP, "udp": ProtoUDP, "icmpv6": ProtoICMPv6, "sctp": ProtoSCTP}

func protoName(p uint8) string {
	for n, v := range protoNames {
		if v == p {
			return n
		}
	}
	return strconv.Itoa(int(p))
}

// ParseSelector reads the text form used in configs and logs:
//
//	local 192.0.2.0/24,198.51.100.7 remote 203.0.113.0/24 proto sctp lport 5000 rport 1024-65535
//
// Every keyword is optional and appears at most once; addresses default to
// any. Ports are only allowed with TCP, UDP or SCTP, whose headers carry
// them (SCTP's common header has them where TCP and UDP do).
func ParseSelector(text string) (Selector, error) {
	s := Selector{Local: AnyAddr, Remote: AnyAddr}
	f := strings.Fields(text)
	seen := map[string]bool{}
	for i := 0; i < len(f); i += 2 {
		key := f[i]
		if i+1 >= len(f) {
			return Selector{}, fmt.Errorf("selector: %q needs a value", key)
		}
		val := f[i+1]
		if seen[key] {
			return Selector{}, fmt.Errorf("selector: %q given twice", key)
		}
		seen[key] = true
		var err error
		switch key {
		case "local":
			s.Local, err = ParseAddrSet(val)
		case "remote":
			s.Remote, err = ParseAddrSet(val)
		case "proto":
			s.Proto, err = parseProto(val)
		case "lport":
			s.LocalPorts, err = parsePortRange(val)
		case "rport":
			s.RemotePorts, err = parsePortRange(val)
		default:
			err = errors.New("unknown keyword (want local, remote, proto, lport, rport)")
		}
		if err != nil {
			return Selector{}, fmt.Errorf("selector: %s %q: %w", key, val, err)
		}
	}
	if (!s.LocalPorts.isAny() || !s.RemotePorts.isAny()) && !hasPortsProto(s.Proto) {
		return Selector{}, errors.New("selector: ports need proto tcp, udp or sctp")
	}
	return s, nil
}

func parseProto(v string) (uint8, error) {
	if p, ok := protoNames[strings.ToLower(v)]; ok {
		return p, nil
	}
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil {
		return 0, errors.New("not a protocol name or number 0-255")
	}
	return uint8(n), nil
}

func parsePortRange(v string) (PortRange, error) {
	if v == "any" {
		return AnyPort, nil
	}
	lo, hi, isRange := strings.Cut(v, "-")
	l, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return PortRange{}, errors.New("not a port 0-65535")
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(hi, 10, 16); err != nil {
			return PortRange{}, errors.New("not a port 0-65535")
		}
	}
	if h < l {
		return PortRange{}, errors.New("range ends before it starts")
	}
	return PortRange{uint16(l), uint16(h)}, nil
}

// Action is what the SPD does with a packet (RFC 4301 §4.4.1).
type Action uint8

const (
	Discard Action = iota // the zero value: what happens to traffic no policy names
	Bypass
	Protect
)

func (a Action) String() string {
	return [...]string{"discard", "bypass", "protect"}[a]
}

// Policy is one SPD entry. For PROTECT, SA is the outbound SA currently
// bound to it; it is swapped atomically when the SA is rekeyed.
type Policy struct {
	Name     string
	Selector Selector
	Action   Action
	SA       atomic.Pointer[SA]
}

// SPD is the ordered Security Policy Database (RFC 4301 §4.4.1): the first
// entry of the ordered list whose selector matches decides. (Not a
// decorrelated SPD: entries may overlap, and their order settles it.)
//
// Lookups do not walk the list: an index (spdindex.go) files each policy
// under its destination and source prefixes, so a lookup costs O(address
// length) plus the few policies filed on the packet's path, not O(number
// of policies), and still returns exactly the first match of the list
// (proved against the walk by
// TestRFC4301_4_4_1_IndexIsFirstMatchOfOrderedList).
//
// Readers never lock: they load an immutable snapshot of the index.
// Writers serialize on a mutex and publish a new snapshot that shares all
// but the changed paths with the old one (path copying). Costs per update,
// n the number of policies:
//   - Insert at the front or the end (what IKE does), Remove: a trie path
//     copied per prefix pair of the policy's selector, O(address length),
//     independent of n (IKE installing 100,000 policies one by one:
//     BenchmarkSPDInsert).
//   - Insert in the middle: O(n log n) (the neighbours' order keys are
//     found by sorting), and O(n log n) more to renumber the whole order when
//     about 20 inserts have split one gap.
//
// A policy's Selector must not change while it is in an SPD: the index
// was built from it.
type SPD struct {
	mu   sync.Mutex
	snap atomic.Pointer[spdIndex]
	// The writers' view, under mu: every policy and its place.
	entries    map[*Policy]*spdEntry
	lo, hi     uint64 // lowest and highest order key given out so far
	renumbered int    // times the order keys were spread again (tests look)
}

// Order keys: new policies at the ends step outwards by keyStride from
// the middle of the key space, so front inserts and appends never run out
// (2^43 of each); an insert in the middle takes the midpoint of its
// neighbours' keys.
const (
	keyBase   = 1 << 63
	keyStride = 1 << 20
)

// Insert adds p at position i (clamped to the end), keeping order. A
// policy already in the SPD is moved.
func (d *SPD) Insert(i int, p *Policy) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries == nil {
		d.entries = make(map[*Policy]*spdEntry)
		d.lo, d.hi = keyBase, keyBase
	}
	var idx spdIndex
	if x := d.snap.Load(); x != nil {
		idx = *x
	}
	if old := d.entries[p]; old != nil {
		idx = idx.with(old, false)
		delete(d.entries, p)
	}
	i = min(max(i, 0), len(d.entries))
	key, ok := d.keyAt(i)
	if !ok {
		idx = d.renumber()
		key, _ = d.keyAt(i)
	}
	e := &spdEntry{p: p, key: key}
	d.entries[p] = e
	d.lo, d.hi = min(d.lo, key), max(d.hi, key)
	idx = idx.with(e, true)
	d.snap.Store(&idx)
}

// keyAt is an order key for a new entry at position i of the current
// order, or false if there is no room left there.
func (d *SPD) keyAt(i int) (uint64, bool) {
	n := len(d.entries)
	switch {
	case i == 0:
		return d.lo - keyStride, d.lo >= 2*keyStride
	case i == n:
		return d.hi + keyStride, d.hi <= ^uint64(0)-2*keyStride
	}
	s := d.sorted()
	a, b := s[i-1].key, s[i].key
	return a + (b-a)/2, b-a >= 2
}

// sorted is the entries in SPD order.
func (d *SPD) sorted() []*spdEntry {
	s := make([]*spdEntry, 0, len(d.entries))
	for _, e := range d.entries {
		s = append(s, e)
	}
	slices.SortFunc(s, func(a, b *spdEntry) int { return cmp.Compare(a.key, b.key) })
	return s
}

// renumber spreads the order keys evenly again and rebuilds the index
// from new entries (readers keep using the old snapshot's until the
// caller publishes): O(n log n).
func (d *SPD) renumber() spdIndex {
	d.renumbered++
	var idx spdIndex
	s := d.sorted()
	base := uint64(keyBase) - uint64(len(s)/2)*keyStride
	for j, e := range s {
		ne := &spdEntry{p: e.p, key: base + uint64(j)*keyStride}
		d.entries[e.p] = ne
		idx = idx.with(ne, true)
	}
	d.lo, d.hi = base, base
	if len(s) > 0 {
		d.hi = base + uint64(len(s)-1)*keyStride
	}
	return idx
}

// Append adds p at the end.
func (d *SPD) Append(p *Policy) { d.Insert(1<<30, p) }

// Remove deletes p; it reports whether p was there.
func (d *SPD) Remove(p *Policy) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[p]
	if e == nil {
		return false
	}
	idx := d.snap.Load().with(e, false)
	delete(d.entries, p)
	d.snap.Store(&idx)
	return true
}

// Len is the number of policies.
func (d *SPD) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}

// Policies returns the entries in order.
func (d *SPD) Policies() []*Policy {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*Policy
	for _, e := range d.sorted() {
		out = append(out, e.p)
	}
	return out
}

// LookupOutbound returns the first policy covering a packet leaving through
// the tunnel, or nil: no policy means DISCARD (RFC 4301 §4.4.1). It takes
// no lock and does not allocate.
func (d *SPD) LookupOutbound(f *Flow) *Policy {
	x := d.snap.Load()
	if x == nil {
		return nil
	}
	return x.lookup(f)
}
