// Package metrics is the daemons' optional Prometheus endpoint
// (configuration: metrics.listen). Every scrape takes a fresh Snapshot of
// the daemon, so SAs that a rekey replaced simply stop being reported
// and nothing is kept between scrapes. No key material is ever in a
// Snapshot: SPIs, identities, addresses and counters only.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is what one scrape reports.
type Snapshot struct {
	Role, Version string
	SAs           []SA
	// IKE is false with static keys only: the IKE metrics are left out.
	IKE            bool
	IKESAs         int    // up now
	ChildSAs       int    // up now
	IKEEstablished uint64 // since start
	ChildRekeys    uint64 // since start
	// The bounds on unauthenticated IKE state (gateway): half-open SAs
	// now, cookie mode and its switches, fragment bytes held, and IKE
	// messages dropped by reason (a fixed set: half_open_cap,
	// per_source_cap, fragment_memory, queue_full).
	IKEHalfOpen       int
	IKECookieMode     bool
	IKECookieSwitches uint64
	IKEFragmentBytes  int
	IKEDrops          map[string]uint64
	// OneTime (gateway with one-time keys): keys admitted, and refused by
	// reason (a fixed set, enroll.Reasons), since start.
	OneTime         bool
	OneTimeAdmitted uint64
	OneTimeRefused  map[string]uint64
	Paths           []Path
	Switches        int // path switches (failovers and switch-backs) since start
	// LastSwitch, if any, is when the last switch happened and how long it
	// took from the detector's event to the SAs moved.
	LastSwitch *Switch
	// Datapath counts packets by stage (tun_read, tun_written, esp_sent,
	// esp_received, ...); Drops counts drops outside any SA by reason.
	Datapath map[string]uint64
	Drops    map[string]uint64
}

// SA is one SA's counters.
type SA struct {
	SPI            string // 0x...
	Dir            string // in, out
	Child          string // the Child SA's name, or "static" for a configured SA
	Peer           string // the peer's identity, "" for static SAs
	Packets, Bytes uint64
	Drops          map[string]uint64 // by reason
}

// Path is one mobility path.
type Path struct {
	Name, Local, Peer string
	State             string // one of States
	InUse, Primary    bool
}

// States are the path states (mobility.State's names).
var States = []string{"unconfirmed", "active", "potentially-failed", "inactive"}

// Switch is the last path switch.
type Switch struct {
	At   time.Time
	Took time.Duration
	From string
	To   string
}

const ns = "roamsec"

var (
	saLabels    = []string{"spi", "dir", "child", "peer"}
	pathLabels  = []string{"path", "local", "peer"}
	descInfo    = prometheus.NewDesc(ns+"_info", "The daemon: its role and version (always 1).", []string{"role", "version"}, nil)
	descPackets = prometheus.NewDesc(ns+"_sa_packets_total", "Packets sealed (out) or opened (in) by the SA.", saLabels, nil)
	descBytes   = prometheus.NewDesc(ns+"_sa_bytes_total", "Inner bytes sealed (out) or opened (in) by the SA.", saLabels, nil)
	descSADrops = prometheus.NewDesc(ns+"_sa_drops_total", "Packets the SA dropped, by reason.", append(saLabels[:4:4], "reason"), nil)
	descIKE     = prometheus.NewDesc(ns+"_ike_sas", "IKE SAs established now.", nil, nil)
	descIKEEst  = prometheus.NewDesc(ns+"_ike_sas_established_total", "IKE SAs established since start.", nil, nil)
	descChild   = prometheus.NewDesc(ns+"_child_sas", "Child SAs installed now.", nil, nil)
	descRekeys  = prometheus.NewDesc(ns+"_child_sa_rekeys_total", "Child SAs rekeyed since start.", nil, nil)
	descPath    = prometheus.NewDesc(ns+"_path_state", "1 for the path's current state (RFC 4960/7829), 0 for the others.", append(pathLabels[:3:3], "state"), nil)
	descInUse   = prometheus.NewDesc(ns+"_path_in_use", "1 if the path carries the traffic.", pathLabels, nil)
	descPrimary = prometheus.NewDesc(ns+"_path_primary", "1 if the path is the configured primary.", pathLabels, nil)
	descSwitch  = prometheus.NewDesc(ns+"_path_switches_total", "Path switches (failovers and switch-backs) since start.", nil, nil)
	descTook    = prometheus.NewDesc(ns+"_last_path_switch_duration_seconds", "How long the last path switch took, from the detector's event to the SAs moved.", []string{"from", "to"}, nil)
	descWhen    = prometheus.NewDesc(ns+"_last_path_switch_timestamp_seconds", "When the last path switch happened (Unix time).", nil, nil)
	descHalf    = prometheus.NewDesc(ns+"_ike_half_open_sas", "IKE SAs answered in IKE_SA_INIT and not yet authenticated.", nil, nil)
	descCookie  = prometheus.NewDesc(ns+"_ike_cookie_mode", "1 while IKE_SA_INIT needs a cookie (RFC 7296 §2.6).", nil, nil)
	descCSwitch = prometheus.NewDesc(ns+"_ike_cookie_mode_switches_total", "Times cookie mode switched on or off.", nil, nil)
	descFrag    = prometheus.NewDesc(ns+"_ike_fragment_bytes", "Bytes of RFC 7383 fragments held for reassembly.", nil, nil)
	descIKEDrop = prometheus.NewDesc(ns+"_ike_drops_total", "IKE messages dropped by a bound, by reason.", []string{"reason"}, nil)
	descOTAdm   = prometheus.NewDesc(ns+"_one_time_admitted_total", "One-time keys admitted (seed 002) since start.", nil, nil)
	descOTRef   = prometheus.NewDesc(ns+"_one_time_refused_total", "One-time keys refused since start, by reason.", []string{"reason"}, nil)
	descDP      = prometheus.NewDesc(ns+"_datapath_packets_total", "Packets through the data path, by stage.", []string{"stage"}, nil)
	descDPDrops = prometheus.NewDesc(ns+"_datapath_drops_total", "Packets dropped outside any SA (no policy, unknown SPI, ...), by reason.", []string{"reason"}, nil)
	descNegPkts = prometheus.NewDesc(ns+"_child_sa_packets_total", "Packets sealed (out) or opened (in) by the Child SAs installed now, summed.", []string{"dir"}, nil)
	descNegByte = prometheus.NewDesc(ns+"_child_sa_bytes_total", "Inner bytes sealed (out) or opened (in) by the Child SAs installed now, summed.", []string{"dir"}, nil)
	descNegDrop = prometheus.NewDesc(ns+"_child_sa_drops_total", "Packets the Child SAs installed now dropped, summed, by reason.", []string{"reason"}, nil)
	descOmitted = prometheus.NewDesc(ns+"_sa_series_omitted", "Negotiated SAs whose per-SA series are left out (more than PerSALimit): see the roamsec_child_sa_* sums, or `sa list`.", nil, nil)
)

// PerSALimit bounds the per-SA series of negotiated SAs. Each is labelled
// with its SPI and peer, so a gateway serving a fleet would export
// several series per road warrior, renamed at every rekey: an unbounded
// cardinality Prometheus is not built for. Above the limit only the sums
// (roamsec_child_sa_*, labelled by direction or reason) and the count
// left out are exported; static SAs are always listed (there are few).
const PerSALimit = 64

// Collector turns snapshots into metrics.
type Collector struct {
	Snapshot func() Snapshot
}

// Describe implements prometheus.Collector.
func (c Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descPackets, descBytes, descSADrops, descIKE, descIKEEst, descChild, descRekeys,
		descPath, descInUse, descPrimary, descSwitch, descTook, descWhen, descDP, descDPDrops, descNegPkts, descNegByte, descNegDrop, descOmitted,
		descHalf, descCookie, descCSwitch, descFrag, descIKEDrop, descOTAdm, descOTRef} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.Snapshot()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	m(descInfo, prometheus.GaugeValue, 1, s.Role, s.Version)
	c.collectSAs(s, m)
	if s.IKE {
		m(descIKE, prometheus.GaugeValue, float64(s.IKESAs))
		m(descIKEEst, prometheus.CounterValue, float64(s.IKEEstablished))
		m(descChild, prometheus.GaugeValue, float64(s.ChildSAs))
		m(descRekeys, prometheus.CounterValue, float64(s.ChildRekeys))
		m(descHalf, prometheus.GaugeValue, float64(s.IKEHalfOpen))
		m(descCookie, prometheus.GaugeValue, b2f(s.IKECookieMode))
		m(descCSwitch, prometheus.CounterValue, float64(s.IKECookieSwitches))
		m(descFrag, prometheus.GaugeValue, float64(s.IKEFragmentBytes))
		for r, n := range s.IKEDrops {
			m(descIKEDrop, prometheus.CounterValue, float64(n), r)
		}
	}
	if s.OneTime {
		m(descOTAdm, prometheus.CounterValue, float64(s.OneTimeAdmitted))
		for r, n := range s.OneTimeRefused {
			m(descOTRef, prometheus.CounterValue, float64(n), r)
		}
	}
	for _, p := range s.Paths {
		l := []string{p.Name, p.Local, p.Peer}
		for _, st := range States {
			m(descPath, prometheus.GaugeValue, b2f(p.State == st), append(l[:3:3], st)...)
		}
		m(descInUse, prometheus.GaugeValue, b2f(p.InUse), l...)
		m(descPrimary, prometheus.GaugeValue, b2f(p.Primary), l...)
	}
	if len(s.Paths) > 0 {
		m(descSwitch, prometheus.CounterValue, float64(s.Switches))
	}
	if sw := s.LastSwitch; sw != nil {
		m(descTook, prometheus.GaugeValue, sw.Took.Seconds(), sw.From, sw.To)
		m(descWhen, prometheus.GaugeValue, float64(sw.At.UnixNano())/1e9)
	}
	for k, v := range s.Datapath {
		m(descDP, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range s.Drops {
		m(descDPDrops, prometheus.CounterValue, float64(v), k)
	}
}

// collectSAs reports the SAs: each static one, each negotiated one while
// there are at most PerSALimit, and always the sums of the negotiated ones.
func (c Collector) collectSAs(s Snapshot, m func(*prometheus.Desc, prometheus.ValueType, float64, ...string)) {
	seen := map[[2]string]bool{} // a registry refuses duplicate series
	var negotiated []SA
	pkts, bytes, drops := map[string]uint64{"in": 0, "out": 0}, map[string]uint64{"in": 0, "out": 0}, map[string]uint64{}
	for _, sa := range s.SAs {
		if k := [2]string{sa.SPI, sa.Dir}; seen[k] {
			continue
		} else {
			seen[k] = true
		}
		if sa.Child == "static" {
			perSA(sa, m)
			continue
		}
		negotiated = append(negotiated, sa)
		pkts[sa.Dir] += sa.Packets
		bytes[sa.Dir] += sa.Bytes
		for r, n := range sa.Drops {
			drops[r] += n
		}
	}
	omitted := 0
	if len(negotiated) > PerSALimit {
		omitted = len(negotiated)
	} else {
		for _, sa := range negotiated {
			perSA(sa, m)
		}
	}
	if !s.IKE {
		return
	}
	for _, dir := range []string{"in", "out"} {
		m(descNegPkts, prometheus.CounterValue, float64(pkts[dir]), dir)
		m(descNegByte, prometheus.CounterValue, float64(bytes[dir]), dir)
	}
	for r, n := range drops {
		m(descNegDrop, prometheus.CounterValue, float64(n), r)
	}
	m(descOmitted, prometheus.GaugeValue, float64(omitted))
}

func perSA(sa SA, m func(*prometheus.Desc, prometheus.ValueType, float64, ...string)) {
	l := []string{sa.SPI, sa.Dir, sa.Child, sa.Peer}
	m(descPackets, prometheus.CounterValue, float64(sa.Packets), l...)
	m(descBytes, prometheus.CounterValue, float64(sa.Bytes), l...)
	for r, n := range sa.Drops {
		m(descSADrops, prometheus.CounterValue, float64(n), append(l[:4:4], r)...)
	}
}

// Handler serves the metrics of src (and Go's process metrics) in the
// Prometheus text format.
func Handler(src func() Snapshot, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector{Snapshot: src}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := promhttp.HandlerOpts{}
	if log != nil {
		opts.ErrorLog = slogPrinter{log}
	}
	return promhttp.HandlerFor(reg, opts)
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics", "err", v) }

// Serve answers /metrics on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, src func() Snapshot, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(src, log))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("roamsec: metrics at /metrics\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
