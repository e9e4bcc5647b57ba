package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/control"
	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/internal/enroll"
	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/internal/metrics"
	"github.com/roamsec/roamsec/internal/version"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/radius"
	"github.com/roamsec/roamsec/tunnel"
)

// Status is what `gateway status` and `roadwarrior status` show.
type Status struct {
	Daemon   string          `json:"daemon"`
	Version  string          `json:"version"`
	Started  time.Time       `json:"started"`
	PID      int             `json:"pid"`
	TUN      string          `json:"tun"`
	MTU      int             `json:"mtu"`
	SAs      []SAStatus      `json:"sas"`
	Datapath DatapathStatus  `json:"datapath"`
	Mobility *MobilityStatus `json:"mobility,omitempty"`
	// IKE and Children are there when IKEv2 negotiates the SAs.
	IKE      *IKEStatus    `json:"ike,omitempty"`
	Children []ChildStatus `json:"children,omitempty"`
	// RADIUS is there when a radius section relays EAP (aaa.go).
	RADIUS *RADIUSStatus `json:"radius,omitempty"`
	// Summary is set when the status was asked for with a filter, a limit
	// or as a summary (the CLI always asks so since lists can be long).
	Summary *Summary `json:"summary,omitempty"`
	// HA is a gateway pair member's role, peer, sync lag and last
	// takeover (internal/ha).
	HA *ha.Status `json:"ha,omitempty"`
}

// DatapathStatus is the data path's counters, with its drops that belong
// to no SA labelled by reason (tunnel.DropReason names, plus no_transport,
// send_error and ike_dropped), as the SAs' drops are.
type DatapathStatus struct {
	TunRead     uint64 `json:"tun_read"`
	TunWritten  uint64 `json:"tun_written"`
	ESPSent     uint64 `json:"esp_sent"`
	ESPReceived uint64 `json:"esp_received"`
	// ESPPacketSocket: of ESPSent, the raw ESP packets sent through the
	// AF_PACKET socket rather than the raw IP socket (issue 14).
	ESPPacketSocket uint64            `json:"esp_packet_socket,omitempty"`
	Drops           map[string]uint64 `json:"drops,omitempty"`
}

func datapathStatus(s datapath.Stats) DatapathStatus {
	d := DatapathStatus{TunRead: s.TunRead, TunWritten: s.TunWritten, ESPSent: s.ESPSent, ESPReceived: s.ESPReceived, ESPPacketSocket: s.ESPPacketSocket, Drops: s.OutDrops.DropsByName()}
	for k, v := range map[string]uint64{"no_transport": s.NoTransport, "send_error": s.SendErrs, "ike_dropped": s.IKEDropped} {
		if v != 0 {
			if d.Drops == nil { // DropsByName is nil without drops
				d.Drops = map[string]uint64{}
			}
			d.Drops[k] = v
		}
	}
	return d
}

// IKECounters are the IKE endpoint's own counters (ike.Stats): messages
// it dropped before touching any state, requests it retransmitted,
// retransmitted requests it answered from its response cache (RFC 7296
// §2.1), and IKE_SA_INIT requests it answered with a COOKIE (§2.6).
type IKECounters struct {
	Dropped       uint64 `json:"dropped"`
	Retransmitted uint64 `json:"retransmitted"`
	Answered      uint64 `json:"answered_from_cache"`
	Cookies       uint64 `json:"cookies"`
	// InvalidSPI: requests for IKE SAs we do not hold, answered with
	// INVALID_IKE_SPI (RFC 7296 §2.21.4).
	InvalidSPI uint64 `json:"invalid_ike_spi_answered"`
	// The bounds on unauthenticated state (RFC 7296 §2.6): half-open IKE
	// SAs now, whether cookies are demanded now and how often that
	// switched, the RFC 7383 fragments held, and the IKE messages dropped
	// by each bound (ike.DropReason names).
	HalfOpen       int               `json:"half_open"`
	CookieMode     bool              `json:"cookie_mode"`
	CookieSwitches uint64            `json:"cookie_switches"`
	FragmentBytes  int               `json:"fragment_bytes"`
	Drops          map[string]uint64 `json:"drops,omitempty"`
}

// ikeCounters turns the endpoint's counters, and the IKE queue's drops,
// into status.
func ikeCounters(c ike.Stats, queueDrops uint64) *IKECounters {
	out := &IKECounters{Dropped: c.Dropped, Retransmitted: c.Retransmitted, Answered: c.Answered, Cookies: c.Cookies, InvalidSPI: c.InvalidSPIAnswered,
		HalfOpen: c.HalfOpen, CookieMode: c.CookieMode, CookieSwitches: c.CookieSwitches, FragmentBytes: c.FragmentBytes}
	c.Drops[ike.DropQueueFull] += queueDrops
	for _, r := range ike.DropReasons() {
		if c.Drops[r] != 0 {
			if out.Drops == nil {
				out.Drops = map[string]uint64{}
			}
			out.Drops[r.String()] = c.Drops[r]
		}
	}
	return out
}

// IKEStatus is the IKE side: a road warrior's IKE SA (its state, as the
// endpoint reported it step by step), or a gateway's summary.
type IKEStatus struct {
	Role    string    `json:"role"`  // initiator (road warrior) or responder (gateway)
	State   string    `json:"state"` // initiator: connecting, authenticating, established, failed, down; responder: listening
	Since   time.Time `json:"since"` // of the state
	LocalID string    `json:"local_id"`
	Mode    string    `json:"mode,omitempty"`    // initiator: rfc3554 or virtual-address
	Gateway string    `json:"gateway,omitempty"` // initiator: as configured (name or address)
	// Initiator, once established: the gateway's address (as the SA was
	// set up; mobility moves it, see the paths), identity and the IKE
	// proposal negotiated.
	Peer      string   `json:"peer,omitempty"`
	PeerID    string   `json:"peer_id,omitempty"`
	Proposal  string   `json:"proposal,omitempty"`
	VirtualIP []string `json:"virtual_ip,omitempty"`
	LastError string   `json:"last_error,omitempty"`
	// Counts: IKE SAs up now (those holding Child SAs), IKE SAs
	// established with a Child SA, and Child SAs rekeyed, since start.
	IKESAs      int    `json:"ike_sas"`
	Established uint64 `json:"established_total"`
	ChildRekeys uint64 `json:"child_rekeys_total"`
	// SAs are the established IKE SAs as the endpoint holds them: SPIs,
	// where the peer is now, NAT, MOBIKE, IKE SA rekeys.
	SAs []ike.SAInfo `json:"sas,omitempty"`
	// Counters are the endpoint's own counters.
	Counters *IKECounters `json:"counters,omitempty"`
	// OneTime (gateway with ike.one_time): one-time keys admitted, and
	// refused by reason.
	OneTime *enroll.Counts `json:"one_time,omitempty"`
}

// ChildStatus is one negotiated Child SA pair, as `sa list` shows it.
type ChildStatus struct {
	Name       string            `json:"name"`    // stable across rekeys: IKESA/net or IKESA/hosts
	IKE        string            `json:"ike_sa"`  // the IKE SA it belongs to (peer identity#n)
	Peer       string            `json:"peer_id"` // the peer's identity
	SPIIn      string            `json:"spi_in"`
	SPIOut     string            `json:"spi_out"`
	Local      string            `json:"local_ts"` // this host's side of the selector
	Remote     string            `json:"remote_ts"`
	VirtualIP  []string          `json:"virtual_ip,omitempty"`
	Proposal   string            `json:"proposal"`
	HostToHost bool              `json:"host_to_host,omitempty"`
	Created    time.Time         `json:"created"`
	AgeSeconds float64           `json:"age_seconds"`
	BytesIn    uint64            `json:"bytes_in"`
	BytesOut   uint64            `json:"bytes_out"`
	PacketsIn  uint64            `json:"packets_in"`
	PacketsOut uint64            `json:"packets_out"`
	Drops      map[string]uint64 `json:"drops,omitempty"` // both SAs, by reason
	State      string            `json:"state"`           // StateActive, StateIdle or StateExpired
}

// Summary is status's first part: the counts, whatever the lists hold (a
// filter, a limit, or -summary leaves them shorter or out).
type Summary struct {
	IKESAs   int            `json:"ike_sas"`
	ChildSAs int            `json:"child_sas"`
	ByState  map[string]int `json:"child_sas_by_state"`
	SAs      int            `json:"sas"`
	// Listed: how many entries the lists below hold.
	ListedIKESAs   int    `json:"listed_ike_sas"`
	ListedChildSAs int    `json:"listed_child_sas"`
	ListedSAs      int    `json:"listed_sas"`
	Filter         string `json:"filter,omitempty"`
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
	// The detector's measurements, where it reports them (probes).
	Heard *time.Time `json:"last_heard,omitempty"`
	Loss  *float64   `json:"loss,omitempty"`
	RTTMs *float64   `json:"rtt_ms,omitempty"`
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
			ps := PathStatus{Name: p.Name, Local: p.Local.String(), Peer: p.Peer.String(),
				State: p.State.String(), Since: p.Since, Primary: p.Primary, InUse: p.InUse, Source: p.Source}
			if !p.Heard.IsZero() {
				ps.Heard = &p.Heard
			}
			if p.Measured {
				loss, rtt := p.Loss, float64(p.RTT.Microseconds())/1000
				ps.Loss, ps.RTTMs = &loss, &rtt
			}
			st.Paths = append(st.Paths, ps)
		}
	}
	for _, mv := range m.movers {
		// Switches applied, each logged once as "path switch" (n=...).
		st.Switches += mv.Applied()
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
	// One buffer, one string: a fleet's status has one per outbound SA.
	b := make([]byte, 0, 64)
	part := func(fromInner bool, as []netip.Addr) {
		if fromInner {
			b = append(b, "inner"...)
			return
		}
		for i, a := range as {
			if i > 0 {
				b = append(b, ',')
			}
			b = a.AppendTo(b)
		}
	}
	b = append(b, "src="...)
	part(r.SrcFromInner, r.Src)
	b = append(b, " dst="...)
	part(r.DstFromInner, r.Dst)
	if r.FollowPeer != nil {
		if a := r.FollowPeer.Addr(true); a.IsValid() {
			b = a.AppendTo(append(b, " following="...))
		} else {
			b = append(b, " following=(not yet seen)"...)
		}
	}
	return string(b)
}

// Status is the daemon's status now (what the control socket's status
// command answers).
func (r *Running) Status() Status {
	return r.status(r.setup.Role, r.started, r.mob)
}

func (r *Running) status(role string, started time.Time, mob *mobilityState) Status {
	st := Status{Daemon: role, Version: version.Version, Started: started, PID: os.Getpid(), TUN: r.Device.Name(), MTU: r.Device.MTU(),
		Datapath: datapathStatus(r.Datapath.Stats())}
	out := append(r.setup.Outbound[:len(r.setup.Outbound):len(r.setup.Outbound)], r.setup.ike.outbound()...)
	in := r.setup.SAD.All()
	if n := len(out) + len(in); n > 0 {
		st.SAs = make([]SAStatus, 0, n) // sized once: a fleet's status lists tens of thousands
	}
	for _, sa := range out {
		st.SAs = append(st.SAs, saStatus(sa))
	}
	sort.Slice(in, func(i, j int) bool { return in[i].SPI < in[j].SPI })
	for _, sa := range in {
		st.SAs = append(st.SAs, saStatus(sa))
	}
	if mob != nil {
		st.Mobility = mob.status()
	}
	st.HA = r.haStatus()
	if ik := r.setup.ike; ik != nil {
		st.Children = ik.childStatus()
		st.IKE = ik.track.status(r.setup.IKE, ik.initiator, st.Children)
		if ik.oneTime != nil {
			c := ik.oneTime.Counts()
			st.IKE.OneTime = &c
		}
		if ik.ep != nil {
			st.IKE.SAs = ik.ep.SAs()
			var qd uint64
			if ik.queue != nil {
				qd = ik.queue.Dropped()
			}
			st.IKE.Counters = ikeCounters(ik.ep.Counters(), qd)
		}
		if c := r.setup.aaa; c != nil && ik.ep != nil {
			st.RADIUS = radiusStatus(c, ik.ep.Counters())
		}
	}
	return st
}

// RADIUSStatus is the EAP verdicts and the RADIUS client's counters.
type RADIUSStatus struct {
	EAPAccepted    uint64 `json:"eap_accepted"`
	EAPRejected    uint64 `json:"eap_rejected"`
	Requests       uint64 `json:"requests"`
	Retransmits    uint64 `json:"retransmits"`
	Timeouts       uint64 `json:"timeouts"` // a server silent through every retransmission
	Failovers      uint64 `json:"failovers"`
	BadResponses   uint64 `json:"bad_responses"` // dropped: wrong authenticators or identifier
	AccountingLost uint64 `json:"accounting_lost"`
}

func radiusStatus(c *radius.Client, s ike.Stats) *RADIUSStatus {
	return &RADIUSStatus{EAPAccepted: s.EAPAccepted, EAPRejected: s.EAPRejected, Requests: c.Stats.Requests.Load(),
		Retransmits: c.Stats.Retransmits.Load(), Timeouts: c.Stats.Timeouts.Load(), Failovers: c.Stats.Failovers.Load(),
		BadResponses: c.Stats.BadResponses.Load(), AccountingLost: c.Stats.AccountingLost.Load()}
}

// printHA is status's HA line.
func printHA(w io.Writer, h *ha.Status) {
	fmt.Fprintf(w, "HA: %s (epoch %d, priority %d), peer %s", strings.ToUpper(h.Role), h.Epoch, h.Priority, h.Peer)
	if h.PeerRole != "" {
		fmt.Fprintf(w, " %s, heard %.0f ms ago", h.PeerRole, h.PeerHeardMs)
	}
	if !h.Connected {
		fmt.Fprint(w, ", sync link down")
	}
	if h.Isolated {
		fmt.Fprint(w, ", sync link silent but the active answers on the service network")
	}
	fmt.Fprintf(w, "\n  sync lag %d frames (%.0f ms), %d records (%d bytes), %d checkpoints, sent %s, received %s\n",
		h.SyncLagFrames, h.SyncLagMs, h.Records, h.RecordBytes, h.Checkpoints, humanBytes(h.SentBytes), humanBytes(h.ReceivedBytes))
	if t := h.LastTakeover; t != nil {
		kind := "takeover"
		if t.Planned {
			kind = "switchover"
		}
		fmt.Fprintf(w, "  last %s %s: active silent %.0f ms, addresses up in %.1f ms, announced in %.1f ms, %d SAs imported",
			kind, t.At.Format(time.TimeOnly), t.SilenceMs, t.AddrUpMs, t.AnnouncedMs, t.Imported)
		if t.ImportError != "" {
			fmt.Fprintf(w, " (import: %s)", t.ImportError)
		}
		fmt.Fprintln(w)
	}
	if len(h.Drops) > 0 {
		fmt.Fprintf(w, "  sync drops: %s\n", dropsText(h.Drops))
	}
}

// PrintStatus writes st for people.
func PrintStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "roamsec %s %s, up %s, TUN %s (MTU %d)\n", st.Daemon, st.Version, time.Since(st.Started).Round(time.Second), st.TUN, st.MTU)
	if s := st.Summary; s != nil {
		printSummary(w, st.Daemon, s)
	}
	if h := st.HA; h != nil {
		printHA(w, h)
	}
	if k := st.IKE; k != nil {
		printIKE(w, k, st.Children)
	}
	fmt.Fprintf(w, "SAs:\n")
	for _, sa := range st.SAs {
		fmt.Fprintf(w, "  %s %-3s %s %-8s %10d packets %12d bytes  drops: %s", sa.SPI, sa.Dir, sa.Transform, sa.Encap, sa.Packets, sa.Bytes, dropsText(sa.Drops))
		if sa.Outer != "" {
			fmt.Fprintf(w, "  outer %s", sa.Outer)
		}
		if !sa.Alive {
			fmt.Fprint(w, "  DEAD")
		}
		fmt.Fprintln(w)
	}
	d := st.Datapath
	fmt.Fprintf(w, "Data path: TUN %d read, %d written; ESP %d sent, %d received; drops outside any SA: %s\n", d.TunRead, d.TunWritten, d.ESPSent, d.ESPReceived, dropsText(d.Drops))
	printCounters(w, st)
	if m := st.Mobility; m != nil {
		printMobility(w, m)
	}
}

// printIKE is the IKE side: our IKE SA (road warrior) or the responder's
// count, each IKE SA, the Child SAs.
func printIKE(w io.Writer, k *IKEStatus, children []ChildStatus) {
	if k.Role == "initiator" {
		fmt.Fprintf(w, "IKE SA: %s since %s, as %s to %s", strings.ToUpper(k.State), k.Since.Format(time.TimeOnly), k.LocalID, k.Gateway)
		if k.Peer != "" {
			fmt.Fprintf(w, " (%s)", k.Peer)
		}
		fmt.Fprintf(w, ", mode %s\n", k.Mode)
		if k.State == "established" {
			fmt.Fprintf(w, "  gateway %s, proposal %s", k.PeerID, k.Proposal)
			if len(k.VirtualIP) > 0 {
				fmt.Fprintf(w, ", virtual address %s", strings.Join(k.VirtualIP, ", "))
			}
			fmt.Fprintln(w)
		}
	} else {
		fmt.Fprintf(w, "IKE: responder as %s: %d IKE SAs up, %d established since start\n", k.LocalID, k.IKESAs, k.Established)
	}
	for _, sa := range k.SAs {
		fmt.Fprintf(w, "  IKE SA %s: SPIs %s/%s, %s <-> %s, %s, %d IKE rekeys", sa.Name, sa.SPIi, sa.SPIr, sa.Local, sa.Remote, sa.Proposal, sa.Rekeys)
		if sa.NAT {
			fmt.Fprint(w, ", NAT (ESP in UDP)")
		}
		if sa.MOBIKE {
			fmt.Fprint(w, ", MOBIKE")
		}
		fmt.Fprintln(w)
	}
	if k.LastError != "" {
		fmt.Fprintf(w, "  last error: %s\n", k.LastError)
	}
	fmt.Fprintf(w, "Child SAs (%d rekeys since start):\n", k.ChildRekeys)
	var b strings.Builder
	PrintSAList(&b, children)
	for _, l := range strings.SplitAfter(strings.TrimSuffix(b.String(), "\n"), "\n") {
		fmt.Fprint(w, "  ", l)
	}
	fmt.Fprintln(w)
}

// printCounters: the IKE endpoint's counters and bounds, one-time keys,
// RADIUS.
func printCounters(w io.Writer, st Status) {
	if k := st.IKE; k != nil && k.Counters != nil {
		c := k.Counters
		fmt.Fprintf(w, "IKE messages: %d dropped, %d requests retransmitted, %d answered from the cache, %d cookies sent\n", c.Dropped, c.Retransmitted, c.Answered, c.Cookies)
		mode := "off"
		if c.CookieMode {
			mode = "on"
		}
		fmt.Fprintf(w, "IKE bounds: %d half-open, cookies %s (%d switches), %d bytes of fragments held; dropped: %s\n", c.HalfOpen, mode, c.CookieSwitches, c.FragmentBytes, dropsText(c.Drops))
	}
	if k := st.IKE; k != nil && k.OneTime != nil {
		o := k.OneTime
		fmt.Fprintf(w, "One-time keys: %d admitted; refused: %s\n", o.Admitted, dropsText(o.Refused))
	}
	if r := st.RADIUS; r != nil {
		fmt.Fprintf(w, "RADIUS: EAP %d accepted, %d rejected; %d requests, %d retransmitted, %d server timeouts, %d failovers, %d bad answers dropped, %d accounting requests lost\n",
			r.EAPAccepted, r.EAPRejected, r.Requests, r.Retransmits, r.Timeouts, r.Failovers, r.BadResponses, r.AccountingLost)
	}
}

func printMobility(w io.Writer, m *MobilityStatus) {
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
		if p.Loss != nil && p.RTTMs != nil {
			extra += fmt.Sprintf("  loss %.1f%% rtt %.1f ms", 100**p.Loss, *p.RTTMs)
		}
		fmt.Fprintf(w, "  %s %-10s %s -> %s  %s since %s%s\n", mark, p.Name, p.Local, p.Peer, p.State, p.Since.Format("15:04:05.000"), extra)
	}
	if s := m.LastSwitch; s != nil {
		fmt.Fprintf(w, "Last switch: %s -> %s at %s (%s), applied %.1f ms after that; %d switches in all\n",
			s.From, s.To, s.At.Format(time.TimeOnly), s.Reason, s.TookMs, m.Switches)
	}
}

// dropsText is "none", or "icv 3, replay 1": reasons in name order.
func dropsText(d map[string]uint64) string {
	if len(d) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, d[k])
	}
	return strings.Join(parts, ", ")
}

// ikeTrack follows the IKE SAs for status and metrics: a road warrior's
// from the endpoint's progress reports, both roles' Child SAs from the
// installs.
type ikeTrack struct {
	mu          sync.Mutex
	state       string
	since       time.Time
	peer        netip.AddrPort
	peerID      string
	proposal    string
	lastErr     string
	established uint64
	rekeys      uint64
}

func (t *ikeTrack) progress(p ike.Progress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	set := func(s string) {
		if t.state != s {
			t.state, t.since = s, time.Now()
		}
	}
	switch p.Kind {
	case ike.EvIKESAInit:
		set("connecting")
		t.peer = p.Peer
	case ike.EvIKEAuth:
		set("authenticating")
		t.peer = p.Peer
	case ike.EvIKEEstablished:
		set("established")
		t.peer, t.lastErr = p.Peer, ""
		t.peerID, t.proposal = p.ID.String(), p.Proposal
	case ike.EvChildFailed:
		t.lastErr = fmt.Sprint(p.Err)
	case ike.EvFailed:
		t.lastErr = fmt.Sprint(p.Err)
		if t.state == "established" {
			set("down")
		} else {
			set("failed")
		}
	case ike.EvDeleted:
		set("down")
		t.lastErr = "IKE SA deleted: " + p.Reason.String()
	}
}

// warn records a problem for status (last_error) without changing the
// state.
func (t *ikeTrack) warn(msg string) {
	t.mu.Lock()
	t.lastErr = msg
	t.mu.Unlock()
}

// installed counts a Child SA: a rekey, or the first Child SA of a new
// IKE SA (each IKE_AUTH creates exactly one network Child SA, in both
// roles; an IKE SA rekey keeps its Child SAs' names).
func (t *ikeTrack) installed(c *ike.Child, rekey bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case rekey:
		t.rekeys++
	case !c.HostToHost:
		t.established++
	}
}

func (t *ikeTrack) status(k *config.IKE, initiator bool, children []ChildStatus) *IKEStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := &IKEStatus{Role: "responder", State: "listening", LocalID: k.ID.String(), Established: t.established, ChildRekeys: t.rekeys, LastError: t.lastErr}
	sas := map[string]bool{}
	for _, c := range children {
		sas[c.IKE] = true
	}
	st.IKESAs = len(sas)
	if !initiator {
		return st
	}
	st.Role, st.State, st.Since, st.Mode, st.Gateway = "initiator", t.state, t.since, k.Mode.String(), k.Gateway
	if st.State == "" {
		st.State = "starting"
	}
	if t.peer.IsValid() {
		st.Peer = t.peer.String()
	}
	if t.state == "established" {
		st.PeerID, st.Proposal = t.peerID, t.proposal
		for _, c := range children {
			for _, v := range c.VirtualIP {
				if !containsStr(st.VirtualIP, v) {
					st.VirtualIP = append(st.VirtualIP, v)
				}
			}
		}
	} else {
		st.IKESAs = 0
	}
	return st
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// childStatus lists the negotiated Child SAs, by peer and name.
func (st *ikeState) childStatus() []ChildStatus {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	children := make([]*ike.Child, 0, len(st.children))
	for _, c := range st.children {
		children = append(children, c)
	}
	st.mu.Unlock()
	now := time.Now()
	out := make([]ChildStatus, 0, len(children))
	for _, c := range children {
		in, outc := c.In.Counters.Snapshot(), c.Out.Counters.Snapshot()
		cs := ChildStatus{Name: c.Name, IKE: c.Name, Peer: c.Peer, SPIIn: fmt.Sprintf("%#08x", c.In.SPI), SPIOut: fmt.Sprintf("%#08x", c.Out.SPI),
			Local: c.Selector.Local.String(), Remote: c.Selector.Remote.String(), Proposal: c.Proposal, HostToHost: c.HostToHost,
			Created: c.Created, AgeSeconds: now.Sub(c.Created).Seconds(),
			BytesIn: in.Bytes, BytesOut: outc.Bytes, PacketsIn: in.Packets, PacketsOut: outc.Packets,
			State: childState(c.In.Alive() && c.Out.Alive(), in.Packets+outc.Packets)}
		if i := strings.LastIndexByte(c.Name, '/'); i > 0 {
			cs.IKE = c.Name[:i]
		}
		for _, a := range c.VirtualIP {
			cs.VirtualIP = append(cs.VirtualIP, a.String())
		}
		for _, d := range []map[string]uint64{in.DropsByName(), outc.DropsByName()} {
			for k, v := range d {
				if cs.Drops == nil {
					cs.Drops = map[string]uint64{}
				}
				cs.Drops[k] += v
			}
		}
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Peer != out[j].Peer {
			return out[i].Peer < out[j].Peer
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// DisconnectReply is the answer to disconnect.
type DisconnectReply struct {
	PID int `json:"pid"` // the daemon's, which exits once its IKE SA is deleted
}

// Control commands; disconnect is root's (and the daemon user's) only,
// whatever control_group allows.
const (
	cmdStatus     = "status"
	cmdSAList     = "sa list"
	cmdDisconnect = "disconnect"
	cmdSwitchover = "ha switchover"
)

// SwitchoverReply is the answer to ha switchover.
type SwitchoverReply struct {
	Role  string `json:"role"` // ours, after
	Peer  string `json:"peer"`
	Epoch uint64 `json:"epoch"`
}

// serveControl answers the control socket until ctx ends; disconnect
// ends the run.
func (r *Running) serveControl(ctx context.Context, disconnect func()) error {
	s := r.setup
	o := control.Options{Group: control.NoGroup, Privileged: []string{cmdDisconnect, "context", cmdSwitchover},
		Warn:         func(msg string) { s.Log.Warn("control socket", "problem", msg) },
		Body:         r.contextPut,
		BodyCommands: []string{cmdContextPut}, MaxBody: maxContextBody}
	if s.ControlGroup != nil {
		o.Group = s.ControlGroup.GID
	}
	return control.ServeWith(ctx, s.ControlSocket, o, func(cmd string) (any, error) {
		if what, ok := strings.CutPrefix(cmd, cmdContextGet+" "); ok {
			return r.contextGet(what)
		}
		if words := strings.Fields(cmd); len(words) > 1 && (words[0] == cmdStatus || cmd != cmdSAList && strings.HasPrefix(cmd, cmdSAList+" ")) {
			return r.filtered(words)
		}
		switch cmd {
		case cmdStatus:
			return r.Status(), nil
		case cmdSAList:
			return r.setup.ike.childStatus(), nil
		case cmdSwitchover:
			if r.ha == nil {
				return nil, fmt.Errorf("this gateway has no ha section")
			}
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := r.ha.Switchover(ctx); err != nil {
				return nil, err
			}
			h := r.ha.Status()
			return SwitchoverReply{Role: h.Role, Peer: h.Peer, Epoch: h.Epoch}, nil
		case cmdDisconnect:
			if s.Role != string(config.RoleRoadWarrior) {
				return nil, fmt.Errorf("a gateway does not disconnect: stop the daemon instead (systemctl stop roamsec-gateway)")
			}
			s.Log.Info("disconnect asked for over the control socket: deleting the IKE SA and stopping")
			return control.Then{Data: DisconnectReply{PID: os.Getpid()}, After: disconnect}, nil
		}
		return nil, fmt.Errorf("unknown command %q (want %s, %s, %s or %s)", cmd, cmdStatus, cmdSAList, cmdDisconnect, cmdSwitchover)
	})
}

// serveMetrics answers Prometheus scrapes on ln until ctx ends.
func (r *Running) serveMetrics(ctx context.Context, ln net.Listener) {
	r.setup.Log.Info("metrics endpoint", "url", "http://"+ln.Addr().String()+"/metrics")
	if err := metrics.Serve(ctx, ln, r.metricsSnapshot, r.setup.Log); err != nil {
		r.setup.Log.Warn("metrics endpoint stopped", "err", err)
	}
}

func (r *Running) metricsSnapshot() metrics.Snapshot {
	st := r.Status()
	snap := metrics.Snapshot{Role: st.Daemon, Version: st.Version,
		Datapath: map[string]uint64{"tun_read": st.Datapath.TunRead, "tun_written": st.Datapath.TunWritten,
			"esp_sent": st.Datapath.ESPSent, "esp_received": st.Datapath.ESPReceived},
		Drops: map[string]uint64{}}
	for k, v := range st.Datapath.Drops {
		snap.Drops[k] += v
	}
	for k, v := range r.setup.SAD.Counters.Snapshot().DropsByName() {
		snap.Drops[k] += v
	}
	children := map[string]ChildStatus{}
	for _, c := range st.Children {
		children[c.SPIIn], children[c.SPIOut] = c, c
	}
	for _, sa := range st.SAs {
		m := metrics.SA{SPI: sa.SPI, Dir: sa.Dir, Child: "static", Packets: sa.Packets, Bytes: sa.Bytes, Drops: sa.Drops}
		if c, ok := children[sa.SPI]; ok {
			m.Child, m.Peer = c.Name, c.Peer
		}
		snap.SAs = append(snap.SAs, m)
	}
	if ik := st.IKE; ik != nil {
		snap.IKE, snap.IKESAs, snap.ChildSAs, snap.IKEEstablished, snap.ChildRekeys = true, ik.IKESAs, len(st.Children), ik.Established, ik.ChildRekeys
		if c := ik.Counters; c != nil {
			snap.IKEHalfOpen, snap.IKECookieMode, snap.IKECookieSwitches, snap.IKEFragmentBytes = c.HalfOpen, c.CookieMode, c.CookieSwitches, c.FragmentBytes
			snap.IKEDrops = map[string]uint64{}
			for _, r := range ike.DropReasons() { // every reason, zeros too: a fixed label set
				snap.IKEDrops[r.String()] = c.Drops[r.String()]
			}
		}
		if o := ik.OneTime; o != nil {
			snap.OneTime, snap.OneTimeAdmitted, snap.OneTimeRefused = true, o.Admitted, map[string]uint64{}
			for _, r := range enroll.Reasons() { // zeros too: a fixed label set
				snap.OneTimeRefused[string(r)] = o.Refused[string(r)]
			}
		}
	}
	if m := st.Mobility; m != nil {
		for _, p := range m.Paths {
			snap.Paths = append(snap.Paths, metrics.Path{Name: p.Name, Local: p.Local, Peer: p.Peer, State: p.State, InUse: p.InUse, Primary: p.Primary})
		}
		snap.Switches = m.Switches
		if s := m.LastSwitch; s != nil {
			snap.LastSwitch = &metrics.Switch{At: s.At, Took: time.Duration(s.TookMs * float64(time.Millisecond)), From: s.From, To: s.To}
		}
	}
	return snap
}

// PrintSAList writes one line per Child SA for people.
func PrintSAList(w io.Writer, cs []ChildStatus) {
	if len(cs) == 0 {
		fmt.Fprintln(w, "no Child SAs")
		return
	}
	for _, c := range cs {
		printChild(w, c)
	}
}

// printSummary is status's first lines: the counts, and what the lists
// below leave out.
func printSummary(w io.Writer, role string, s *Summary) {
	fmt.Fprintf(w, "Summary: %d IKE SAs, %d Child SAs (%d active, %d idle, %d expired), %d SAs\n",
		s.IKESAs, s.ChildSAs, s.ByState[StateActive], s.ByState[StateIdle], s.ByState[StateExpired], s.SAs)
	if s.ListedIKESAs < s.IKESAs || s.ListedChildSAs < s.ChildSAs || s.ListedSAs < s.SAs {
		why := "a filter: " + s.Filter
		if strings.HasPrefix(s.Filter, "limit=") {
			why = "-all lists them all"
		}
		fmt.Fprintf(w, "Listed: %d of the IKE SAs, %d of the Child SAs, %d of the SAs (%s; %s sa list -id, -addr, -state picks peers)\n",
			s.ListedIKESAs, s.ListedChildSAs, s.ListedSAs, why, role)
	}
}

// printChild is one Child SA's line of sa list.
func printChild(w io.Writer, c ChildStatus) {
	vip := "-"
	if len(c.VirtualIP) > 0 {
		vip = strings.Join(c.VirtualIP, ",")
	}
	kind := ""
	if c.HostToHost {
		kind = " (path monitoring)"
	}
	fmt.Fprintf(w, "%s  SPIs in %s out %s  %s <=> %s  vip %s  in %s/%d pkts  out %s/%d pkts  age %s%s\n",
		c.Peer, c.SPIIn, c.SPIOut, c.Local, c.Remote, vip, humanBytes(c.BytesIn), c.PacketsIn, humanBytes(c.BytesOut), c.PacketsOut,
		(time.Duration(c.AgeSeconds) * time.Second).String(), kind)
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
