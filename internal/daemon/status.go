package daemon

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/internal/version"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/tunnel"
)

// Status is what `gateway status` and `roadwarrior status` show.
type Status struct {
	Daemon   string          `json:"daemon"`
	Version  string          `json:"version"`
	Started  time.Time       `json:"started"`
	TUN      string          `json:"tun"`
	MTU      int             `json:"mtu"`
	SAs      []SAStatus      `json:"sas"`
	Datapath datapath.Stats  `json:"datapath"`
	Mobility *MobilityStatus `json:"mobility,omitempty"`
}

// SAStatus is one SA. Keys never appear here.
type SAStatus struct {
	SPI       string            `json:"spi"`
	Dir       string            `json:"dir"`
	Transform string            `json:"transform"`
	Encap     string            `json:"encap"`
	Alive     bool              `json:"alive"`
	Packets   uint64            `json:"packets"`
	Bytes     uint64            `json:"bytes"`
	Drops     map[string]uint64 `json:"drops,omitempty"`
	Outer     string            `json:"outer,omitempty"` // outbound: the current outer-address rule
}

// MobilityStatus is the path set and its detector.
type MobilityStatus struct {
	Detector   string       `json:"detector"`
	KernelSCTP string       `json:"kernel_sctp"` // "yes", "no", or "not used"
	Paths      []PathStatus `json:"paths,omitempty"`
	LastSwitch *SwitchInfo  `json:"last_switch,omitempty"`
	Switches   int          `json:"switches"`
}

type PathStatus struct {
	Name    string    `json:"name"`
	Local   string    `json:"local"`
	Peer    string    `json:"peer"`
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	Primary bool      `json:"primary"`
	InUse   bool      `json:"in_use"`
	Source  string    `json:"source,omitempty"`
}

type SwitchInfo struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// TookMs is from the detector's event to the switch applied.
	TookMs float64 `json:"took_ms"`
}

// mobilityState is shared between runMobility and the status handler.
type mobilityState struct {
	mu         sync.Mutex
	sets       []*mobility.Set // one per address family
	movers     []*mobility.Mover
	detector   string
	kernelSCTP string
}

func (m *mobilityState) setDetector(d, kernelSCTP string) {
	m.mu.Lock()
	m.detector, m.kernelSCTP = d, kernelSCTP
	m.mu.Unlock()
}

func (m *mobilityState) status() *MobilityStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &MobilityStatus{Detector: m.detector, KernelSCTP: m.kernelSCTP}
	for _, set := range m.sets {
		for _, p := range set.Status() {
			st.Paths = append(st.Paths, PathStatus{Name: p.Name, Local: p.Local.String(), Peer: p.Peer.String(),
				State: p.State.String(), Since: p.Since, Primary: p.Primary, InUse: p.InUse, Source: p.Source})
		}
		st.Switches += len(set.History())
	}
	for _, mv := range m.movers {
		if sw, took, ok := mv.Last(); ok && (st.LastSwitch == nil || sw.Time.After(st.LastSwitch.At)) {
			st.LastSwitch = &SwitchInfo{From: sw.From.Name, To: sw.To.Name, Reason: sw.Reason, At: sw.Time, TookMs: float64(took.Microseconds()) / 1000}
		}
	}
	return st
}

func saStatus(sa *tunnel.SA) SAStatus {
	c := sa.Counters.Snapshot()
	st := SAStatus{SPI: fmt.Sprintf("%#08x", sa.SPI), Dir: sa.Dir.String(), Transform: sa.Transform.String(),
		Encap: encapName(sa), Alive: sa.Alive(), Packets: c.Packets, Bytes: c.Bytes, Drops: c.DropsByName()}
	if sa.Dir == tunnel.Outbound {
		st.Outer = outerString(sa.Outer())
	}
	return st
}

func outerString(r tunnel.OuterRule) string {
	part := func(fromInner bool, as []netip.Addr) string {
		if fromInner {
			return "inner"
		}
		s := make([]string, len(as))
		for i, a := range as {
			s[i] = a.String()
		}
		return strings.Join(s, ",")
	}
	out := "src=" + part(r.SrcFromInner, r.Src) + " dst=" + part(r.DstFromInner, r.Dst)
	if r.FollowPeer != nil {
		if a := r.FollowPeer.Addr(true); a.IsValid() {
			out += " following=" + a.String()
		} else {
			out += " following=(not yet seen)"
		}
	}
	return out
}

func (r *Running) status(role string, started time.Time, mob *mobilityState) Status {
	st := Status{Daemon: role, Version: version.Version, Started: started, TUN: r.Device.Name(), MTU: r.Device.MTU(),
		Datapath: r.Datapath.Stats()}
	for _, sa := range append(r.setup.Outbound[:len(r.setup.Outbound):len(r.setup.Outbound)], r.setup.ike.outbound()...) {
		st.SAs = append(st.SAs, saStatus(sa))
	}
	in := r.setup.SAD.All()
	sort.Slice(in, func(i, j int) bool { return in[i].SPI < in[j].SPI })
	for _, sa := range in {
		st.SAs = append(st.SAs, saStatus(sa))
	}
	if mob != nil {
		st.Mobility = mob.status()
	}
	return st
}

// PrintStatus writes st for people.
func PrintStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "roamsec %s %s, up %s, TUN %s (MTU %d)\n", st.Daemon, st.Version, time.Since(st.Started).Round(time.Second), st.TUN, st.MTU)
	fmt.Fprintf(w, "SAs:\n")
	for _, sa := range st.SAs {
		drops := "none"
		if len(sa.Drops) > 0 {
			drops = fmt.Sprint(sa.Drops)
		}
		fmt.Fprintf(w, "  %s %-3s %s %-8s %10d packets %12d bytes  drops: %s", sa.SPI, sa.Dir, sa.Transform, sa.Encap, sa.Packets, sa.Bytes, drops)
		if sa.Outer != "" {
			fmt.Fprintf(w, "  outer %s", sa.Outer)
		}
		if !sa.Alive {
			fmt.Fprint(w, "  DEAD")
		}
		fmt.Fprintln(w)
	}
	if m := st.Mobility; m != nil {
		fmt.Fprintf(w, "Path failure detector: %s (kernel SCTP: %s)\n", m.Detector, m.KernelSCTP)
		for _, p := range m.Paths {
			mark := " "
			if p.InUse {
				mark = "*"
			}
			extra := ""
			if p.Primary {
				extra = " (primary)"
			}
			fmt.Fprintf(w, "  %s %-10s %s -> %s  %s since %s%s\n", mark, p.Name, p.Local, p.Peer, p.State, p.Since.Format(time.TimeOnly), extra)
		}
		if s := m.LastSwitch; s != nil {
			fmt.Fprintf(w, "Last switch: %s -> %s at %s (%s), applied %.1f ms after that; %d switches in all\n",
				s.From, s.To, s.At.Format(time.TimeOnly), s.Reason, s.TookMs, m.Switches)
		}
	}
}
