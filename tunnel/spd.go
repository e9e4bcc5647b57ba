package tunnel

import (
	"errors"
	"fmt"
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
// entry whose selector matches decides. Readers never lock; writers copy
// the list, which is fine for a table that changes at human speed.
type SPD struct {
	mu      sync.Mutex
	entries atomic.Pointer[[]*Policy]
}

// Insert adds p at position i (clamped to the end), keeping order.
func (d *SPD) Insert(i int, p *Policy) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var cur []*Policy
	if e := d.entries.Load(); e != nil {
		cur = *e
	}
	i = min(max(i, 0), len(cur))
	next := make([]*Policy, 0, len(cur)+1)
	next = append(next, cur[:i]...)
	next = append(next, p)
	next = append(next, cur[i:]...)
	d.entries.Store(&next)
}

// Append adds p at the end.
func (d *SPD) Append(p *Policy) { d.Insert(1<<30, p) }

// Remove deletes p; it reports whether p was there.
func (d *SPD) Remove(p *Policy) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries.Load()
	if e == nil {
		return false
	}
	next := make([]*Policy, 0, len(*e))
	for _, q := range *e {
		if q != p {
			next = append(next, q)
		}
	}
	d.entries.Store(&next)
	return len(next) != len(*e)
}

// Policies returns the entries in order.
func (d *SPD) Policies() []*Policy {
	if e := d.entries.Load(); e != nil {
		return append([]*Policy(nil), (*e)...)
	}
	return nil
}

// LookupOutbound returns the first policy covering a packet leaving through
// the tunnel, or nil: no policy means DISCARD (RFC 4301 §4.4.1).
func (d *SPD) LookupOutbound(f *Flow) *Policy {
	e := d.entries.Load()
	if e == nil {
		return nil
	}
	for _, p := range *e {
		if p.Selector.MatchOutbound(f) {
			return p
		}
	}
	return nil
}
