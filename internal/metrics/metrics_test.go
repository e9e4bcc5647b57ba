package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func snap() Snapshot {
	return Snapshot{
		Role: "roadwarrior", Version: "test",
		SAs: []SA{
			{SPI: "0xc0de0001", Dir: "out", Child: "gw#1/net", Peer: "gw", Packets: 10, Bytes: 1000},
			{SPI: "0xc0de0002", Dir: "in", Child: "gw#1/net", Peer: "gw", Packets: 9, Bytes: 900, Drops: map[string]uint64{"replay": 2, "auth": 1}},
			{SPI: "0xc0de0002", Dir: "in", Child: "gw#1/net", Peer: "gw", Packets: 9}, // listed twice: reported once
		},
		IKE: true, IKESAs: 1, ChildSAs: 1, IKEEstablished: 3, ChildRekeys: 4,
		IKEHalfOpen: 12, IKECookieMode: true, IKECookieSwitches: 3, IKEFragmentBytes: 4096,
		IKEDrops: map[string]uint64{"half_open_cap": 5, "queue_full": 0},
		OneTime:  true, OneTimeAdmitted: 2, OneTimeRefused: map[string]uint64{"used": 1, "expired": 0},
		Paths: []Path{
			{Name: "wifi", Local: "192.0.2.2", Peer: "192.0.2.1", State: "inactive", Primary: true},
			{Name: "lte", Local: "198.51.100.2", Peer: "198.51.100.1", State: "active", InUse: true},
		},
		Switches:   2,
		LastSwitch: &Switch{At: time.Unix(1700000000, 0), Took: 5 * time.Millisecond, From: "wifi", To: "lte"},
		Datapath:   map[string]uint64{"tun_read": 5},
		Drops:      map[string]uint64{"no_policy": 7},
	}
}

// The pedantic registry checks every metric against its description.
func TestMetricsCollectorIsConsistent(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector{Snapshot: snap})
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector{Snapshot: func() Snapshot { return Snapshot{Role: "gateway"} }})
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("empty snapshot: %v", err)
	}
}

func TestMetricsServeScrape(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, snap, nil) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		`roamsec_info{role="roadwarrior",version="test"} 1`,
		`roamsec_sa_packets_total{child="gw#1/net",dir="out",peer="gw",spi="0xc0de0001"} 10`,
		`roamsec_sa_bytes_total{child="gw#1/net",dir="in",peer="gw",spi="0xc0de0002"} 900`,
		`roamsec_sa_drops_total{child="gw#1/net",dir="in",peer="gw",reason="replay",spi="0xc0de0002"} 2`,
		`roamsec_ike_sas_established_total 3`,
		`roamsec_child_sa_rekeys_total 4`,
		`roamsec_ike_half_open_sas 12`,
		`roamsec_ike_cookie_mode 1`,
		`roamsec_ike_cookie_mode_switches_total 3`,
		`roamsec_ike_fragment_bytes 4096`,
		`roamsec_ike_drops_total{reason="half_open_cap"} 5`,
		`roamsec_ike_drops_total{reason="queue_full"} 0`,
		`roamsec_one_time_admitted_total 2`,
		`roamsec_one_time_refused_total{reason="used"} 1`,
		`roamsec_one_time_refused_total{reason="expired"} 0`,
		`roamsec_path_state{local="192.0.2.2",path="wifi",peer="192.0.2.1",state="inactive"} 1`,
		`roamsec_path_state{local="192.0.2.2",path="wifi",peer="192.0.2.1",state="active"} 0`,
		`roamsec_path_in_use{local="198.51.100.2",path="lte",peer="198.51.100.1"} 1`,
		`roamsec_path_switches_total 2`,
		`roamsec_last_path_switch_duration_seconds{from="wifi",to="lte"} 0.005`,
		`roamsec_datapath_drops_total{reason="no_policy"} 7`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Count(body, "spi=\"0xc0de0002\"} 9\n") != 1 {
		t.Errorf("duplicate SA reported twice:\n%s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// scrape serves src once and returns the body.
func scrape(t *testing.T, src func() Snapshot) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, src, nil) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A gateway with 10,000 road warriors: its negotiated SAs' per-SA series
// (SPI and peer labels) are left out above PerSALimit; the sums carry
// their traffic and drops exactly, the static SAs stay listed, and the
// number of series does not grow with the fleet.
func TestMetricsCardinalityBoundedPastPerSALimit(t *testing.T) {
	fleet := func(n int) Snapshot {
		s := Snapshot{Role: "gateway", Version: "test", IKE: true, IKESAs: n, ChildSAs: n,
			SAs: []SA{{SPI: "0x00000100", Dir: "out", Child: "static", Packets: 1}}}
		for i := range n {
			peer := fmt.Sprintf("rw%d@example", i)
			s.SAs = append(s.SAs,
				SA{SPI: fmt.Sprintf("%#08x", 0x10000+2*i), Dir: "in", Child: peer + "#1/net", Peer: peer, Packets: 2, Bytes: 200, Drops: map[string]uint64{"replay": 1}},
				SA{SPI: fmt.Sprintf("%#08x", 0x10001+2*i), Dir: "out", Child: peer + "#1/net", Peer: peer, Packets: 3, Bytes: 300})
		}
		return s
	}
	lines := map[int]int{}
	for _, n := range []int{PerSALimit/2 + 1, 5000, 10000} {
		body := scrape(t, func() Snapshot { return fleet(n) })
		negotiated := 2 * n
		listed := strings.Count(body, "\nroamsec_sa_packets_total{") - 1 // minus the static one
		if negotiated <= PerSALimit && listed != negotiated || negotiated > PerSALimit && listed != 0 {
			t.Errorf("%d road warriors: %d negotiated SAs listed", n, listed)
		}
		for _, want := range []string{
			`roamsec_sa_packets_total{child="static",dir="out",peer="",spi="0x00000100"} 1`,
			`roamsec_child_sa_packets_total{dir="in"} ` + promFloat(2*n),
			`roamsec_child_sa_bytes_total{dir="out"} ` + promFloat(300*n),
			`roamsec_child_sa_drops_total{reason="replay"} ` + promFloat(n),
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%d road warriors: scrape lacks %q", n, want)
			}
		}
		if negotiated > PerSALimit && !strings.Contains(body, "roamsec_sa_series_omitted "+promFloat(negotiated)) {
			t.Errorf("%d road warriors: omitted count missing", n)
		}
		lines[n] = strings.Count(body, "\nroamsec_")
	}
	if lines[5000] != lines[10000] {
		t.Errorf("roamsec series: %d at 5,000 road warriors, %d at 10,000: grows with the fleet", lines[5000], lines[10000])
	}
}

// promFloat is how the text format writes a value.
func promFloat(n int) string { return strconv.FormatFloat(float64(n), 'g', -1, 64) }
