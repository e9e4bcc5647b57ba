package daemon

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/internal/datapath"
	"github.com/roamsec/roamsec/tunnel"
)

func statusWithDrops() Status {
	var out tunnel.CountersSnapshot
	out.Drops[tunnel.DropPolicy] = 4
	return Status{
		Daemon:   "gateway",
		SAs:      []SAStatus{{SPI: "0xc0de0001", Dir: "in", Drops: map[string]uint64{"replay": 1, "icv": 3}}},
		Datapath: datapathStatus(datapath.Stats{OutDrops: out, SendErrs: 2}),
		IKE:      &IKEStatus{Role: "responder", Counters: &IKECounters{Dropped: 5, Retransmitted: 6, Answered: 7, Cookies: 8}},
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
			Counters map[string]uint64 `json:"counters"`
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
	if c := got.IKE.Counters; c["dropped"] != 5 || c["retransmitted"] != 6 || c["answered_from_cache"] != 7 || c["cookies"] != 8 {
		t.Errorf("IKE counters %v", c)
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
	for _, want := range []string{"drops: icv 3, replay 1", "drops outside any SA: " + tunnel.DropPolicy.String() + " 4, send_error 2", "IKE messages: 5 dropped, 6 requests retransmitted, 7 answered from the cache, 8 cookies sent"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "map[") {
		t.Errorf("status prints a Go map:\n%s", out)
	}
}
