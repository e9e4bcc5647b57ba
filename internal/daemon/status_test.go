package daemon

import (
	"encoding/json"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/tunnel"
)

func ikeStats() ike.Stats {
	st := ike.Stats{Dropped: 5, Retransmitted: 6, Answered: 7, Cookies: 8, HalfOpen: 40, CookieMode: true, CookieSwitches: 3, FragmentBytes: 2048}
	st.Drops[ike.DropPerSourceCap] = 11
	st.Drops[ike.DropFragMemory] = 12
	return st
}

func statusWithDrops() Status {
	var out tunnel.CountersSnapshot
	out.Drops[tunnel.DropPolicy] = 4
	return Status{
		Daemon:   "gateway",
		SAs:      []SAStatus{{SPI: "0xc0de0001", Dir: "in", Drops: map[string]uint64{"replay": 1, "icv": 3}}},
		Datapath: datapathStatus(datapath.Stats{OutDrops: out, SendErrs: 2}),
		IKE:      &IKEStatus{Role: "responder", Counters: ikeCounters(ikeStats(), 9)},
	}
}

// status -json: every drop count is labelled by its reason, for the SAs
// and for the data path; the IKE endpoint's counters are there by name.
func TestStatusJSONDropsAreLabelledByReason(t *testing.T) {
	b, err := json.Marshal(statusWithDrops())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		SAs []struct {
			Drops map[string]uint64 `json:"drops"`
		} `json:"sas"`
		Datapath struct {
			Drops map[string]uint64 `json:"drops"`
		} `json:"datapath"`
		IKE struct {
			Counters struct {
				Dropped, Retransmitted, Cookies uint64
				Answered                        uint64 `json:"answered_from_cache"`
				HalfOpen                        int    `json:"half_open"`
				CookieMode                      bool   `json:"cookie_mode"`
				CookieSwitches                  uint64 `json:"cookie_switches"`
				FragmentBytes                   int    `json:"fragment_bytes"`
				Drops                           map[string]uint64
			} `json:"counters"`
		} `json:"ike"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if got.SAs[0].Drops["icv"] != 3 || got.SAs[0].Drops["replay"] != 1 {
		t.Errorf("SA drops %v", got.SAs[0].Drops)
	}
	if got.Datapath.Drops[tunnel.DropPolicy.String()] != 4 || got.Datapath.Drops["send_error"] != 2 || len(got.Datapath.Drops) != 2 {
		t.Errorf("data path drops %v (JSON %s)", got.Datapath.Drops, b)
	}
	if c := got.IKE.Counters; c.Dropped != 5 || c.Retransmitted != 6 || c.Answered != 7 || c.Cookies != 8 ||
		c.HalfOpen != 40 || !c.CookieMode || c.CookieSwitches != 3 || c.FragmentBytes != 2048 {
		t.Errorf("IKE counters %+v (JSON %s)", c, b)
	}
	// IKE drops by the bound that dropped them, the queue's among them.
	if d := got.IKE.Counters.Drops; len(d) != 3 || d["per_source_cap"] != 11 || d["fragment_memory"] != 12 || d["queue_full"] != 9 {
		t.Errorf("IKE drops %v", d)
	}
	// The client decodes what the daemon sends into the same type.
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.Datapath.Drops["send_error"] != 2 {
		t.Errorf("round trip: %v %+v", err, back.Datapath)
	}
}

// Text status: drops as "reason count" pairs in name order, never Go's
// map syntax; the IKE counters on a line of their own.
func TestStatusTextPrintsDropsReadably(t *testing.T) {
	var b strings.Builder
	PrintStatus(&b, statusWithDrops())
	out := b.String()
	for _, want := range []string{"drops: icv 3, replay 1", "drops outside any SA: " + tunnel.DropPolicy.String() + " 4, send_error 2", "IKE messages: 5 dropped, 6 requests retransmitted, 7 answered from the cache, 8 cookies sent",
		"IKE bounds: 40 half-open, cookies on (3 switches), 2048 bytes of fragments held; dropped: fragment_memory 12, per_source_cap 11, queue_full 9"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "map[") {
		t.Errorf("status prints a Go map:\n%s", out)
	}
}

// The HA line of the text status: role, peer, sync lag, the last
// takeover and its import error, the sync drops by reason.
func TestStatusTextShowsHA(t *testing.T) {
	st := statusWithDrops()
	st.HA = &ha.Status{Role: "active", Epoch: 3, Priority: 200, Peer: "198.51.100.12:4501", PeerRole: "standby", PeerHeardMs: 12,
		Connected: true, SyncLagFrames: 2, SyncLagMs: 4, Records: 5, RecordBytes: 1500, SentBytes: 4096, Takeovers: 1,
		LastTakeover: &ha.TakeoverStatus{SilenceMs: 151, AddrUpMs: 2.1, AnnouncedMs: 4.5, ImportError: "boom"},
		Drops:        map[string]uint64{"auth": 2}}
	var b strings.Builder
	PrintStatus(&b, st)
	for _, want := range []string{"HA: ACTIVE (epoch 3, priority 200), peer 198.51.100.12:4501 standby, heard 12 ms ago",
		"sync lag 2 frames (4 ms), 5 records (1500 bytes)", "last takeover", "active silent 151 ms", "(import: boom)", "sync drops: auth"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
}

// TestOuterStringRFC3554_2_NamesEachCase: the outer rule as status shows
// it, for each of RFC 3554 §2's sources of the outer addresses.
func TestOuterStringRFC3554_2_NamesEachCase(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2")
	for _, c := range []struct {
		r    tunnel.OuterRule
		want string
	}{
		{tunnel.OuterRule{Src: []netip.Addr{a}, Dst: []netip.Addr{b}}, "src=192.0.2.1 dst=2001:db8::2"},
		{tunnel.OuterRule{Src: []netip.Addr{a, b}, DstFromInner: true}, "src=192.0.2.1,2001:db8::2 dst=inner"},
		{tunnel.OuterRule{SrcFromInner: true, DstFromInner: true}, "src=inner dst=inner"},
		{tunnel.OuterRule{Src: []netip.Addr{a}, Dst: []netip.Addr{b}, FollowPeer: new(tunnel.PeerTracker)}, "src=192.0.2.1 dst=2001:db8::2 following=(not yet seen)"},
		{tunnel.OuterRule{}, "src= dst="},
	} {
		if got := outerString(c.r); got != c.want {
			t.Errorf("outerString(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// The data path's own drops (send errors, no transport, IKE dropped) are
// labelled whether or not the outbound SAs dropped anything: their map is
// nil then (tunnel.CountersSnapshot.DropsByName), and a road warrior whose
// ESP send failed once must still answer status, not panic.
func TestDatapathStatusLabelsItsDropsWithoutSADrops(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stats datapath.Stats
		want  map[string]uint64
	}{
		{"nothing dropped", datapath.Stats{}, nil},
		{"send error only", datapath.Stats{SendErrs: 1}, map[string]uint64{"send_error": 1}},
		{"no transport and IKE dropped", datapath.Stats{NoTransport: 2, IKEDropped: 3}, map[string]uint64{"no_transport": 2, "ike_dropped": 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := datapathStatus(tc.stats).Drops; !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("drops %v, want %v", got, tc.want)
			}
		})
	}
}
