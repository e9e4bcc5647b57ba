package mobility

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/roamsec/roamsec/tunnel"
)

// MoveRule returns the outer rule an outbound SA uses on path p, and
// whether it differs from r. Only the addresses of p's family change:
//   - host-to-host (outer = inner on both sides, RFC 3554 §2 case 1):
//     unchanged; such traffic, SCTP heartbeats among it, tests its own path;
//   - a rule whose destination follows the inner packet (the gateway's
//     side): unchanged, it follows by itself;
//   - otherwise (road warrior): the outer destination becomes p's peer
//     address; and where the source is configured rather than taken from
//     the inner packet (virtual-address mode), the source becomes p's
//     local address.
func MoveRule(r tunnel.OuterRule, p Path) (tunnel.OuterRule, bool) {
	if r.DstFromInner {
		return r, false
	}
	out := r
	out.Dst = replaceFamily(r.Dst, p.Peer)
	if !r.SrcFromInner {
		out.Src = replaceFamily(r.Src, p.Local)
	}
	return out, !equalAddrs(out.Dst, r.Dst) || !equalAddrs(out.Src, r.Src)
}

func replaceFamily(as []netip.Addr, a netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(as)+1)
	done := false
	for _, x := range as {
		if x.Is4() == a.Is4() {
			if !done {
				out = append(out, a)
				done = true
			}
			continue
		}
		out = append(out, x)
	}
	if !done {
		out = append(out, a)
	}
	return out
}

func equalAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// RouteSourcer is the TUN device's SetRouteSource.
type RouteSourcer interface {
	SetRouteSource(src netip.Addr, keep func(dst netip.Prefix) bool) error
}

// Mover applies switches on the road warrior: it moves the outbound SAs'
// outer addresses and, in RFC 3554 mode (inner source = an uplink
// address), the preferred source of the routes into the TUN, so new flows
// start from the live uplink. The SAs, SPIs and sequence numbers stay.
type Mover struct {
	SAs []*tunnel.SA // outbound SAs to the peer
	// Current, if set, returns further outbound SAs at the time of a
	// switch (those IKE negotiated and rekeys replace).
	Current func() []*tunnel.SA
	Routes  RouteSourcer // nil in virtual-address mode
	Paths   []Path       // host routes to their peer addresses keep their sources
	Log     *slog.Logger

	mu      sync.Mutex
	last    *Switch
	took    time.Duration
	applied int
}

// Apply moves to sw.To and logs how long the whole switch took, from the
// detector's event.
func (m *Mover) Apply(sw Switch) error {
	err := m.move(sw.To)
	done := time.Now()
	if m.Log != nil {
		// One record per switch the Set counted (n numbers them), with
		// when it was decided and when its cause happened.
		m.Log.Info("path switch", "n", sw.N, "from", sw.From.String(), "to", sw.To.String(), "reason", sw.Reason,
			"at", sw.Time.Format(time.RFC3339Nano), "detected", sw.Detected.Format(time.RFC3339Nano),
			"since_event", done.Sub(sw.Detected).Round(time.Millisecond).String())
	}
	// Counted after it is logged: a status read never counts a switch the
	// log does not show yet.
	m.mu.Lock()
	m.last, m.took = &sw, done.Sub(sw.Detected)
	m.applied++
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("mobility: switch to %s: %w", sw.To.Name, err)
	}
	return nil
}

// move points the outbound SAs at path to and, in RFC 3554 mode, the
// TUN routes' preferred source at its local address.
func (m *Mover) move(to Path) error {
	rfc3554 := false
	sas := m.SAs
	if m.Current != nil {
		sas = append(sas[:len(sas):len(sas)], m.Current()...)
	}
	for _, sa := range sas {
		r := sa.Outer()
		if r.SrcFromInner && !r.DstFromInner {
			rfc3554 = true
		}
		if nr, changed := MoveRule(r, to); changed {
			sa.SetOuter(nr)
		}
	}
	if !rfc3554 || m.Routes == nil {
		return nil
	}
	m.mu.Lock()
	paths := append([]Path(nil), m.Paths...)
	m.mu.Unlock()
	keep := func(dst netip.Prefix) bool {
		for _, p := range paths {
			if dst.IsSingleIP() && dst.Addr() == p.Peer {
				return true
			}
		}
		return false
	}
	return m.Routes.SetRouteSource(to.Local, keep)
}

// Readdress follows a path to its adopted local address: the host route
// to the path's peer takes the new source, and if the path carries
// traffic (inUse) the SAs and routes move to it as in a switch. It is not
// a switch: traffic stays on the same path.
func (m *Mover) Readdress(a Adoption, inUse bool) error {
	m.mu.Lock()
	for i := range m.Paths {
		if m.Paths[i].Name == a.Path.Name {
			m.Paths[i].Local = a.Path.Local
		}
	}
	m.mu.Unlock()
	var errs []error
	if m.Routes != nil {
		peerOnly := func(dst netip.Prefix) bool { return !(dst.IsSingleIP() && dst.Addr() == a.Path.Peer) }
		errs = append(errs, m.Routes.SetRouteSource(a.Path.Local, peerOnly))
	}
	if inUse {
		errs = append(errs, m.move(a.Path))
	}
	if m.Log != nil {
		m.Log.Info("path address", "path", a.Path.Name, "old", a.Old.String(), "new", a.Path.Local.String(),
			"in_use", inUse, "at", a.Time.Format(time.RFC3339Nano))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mobility: path %s to %v: %w", a.Path.Name, a.Path.Local, err)
	}
	return nil
}

// Applied is how many switches Apply has applied (and logged).
func (m *Mover) Applied() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

// Last is the last switch applied and how long it took from the event
// that caused it.
func (m *Mover) Last() (Switch, time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		return Switch{}, 0, false
	}
	return *m.last, m.took, true
}
