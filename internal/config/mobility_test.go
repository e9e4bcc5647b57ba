package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The heartbeat section: the example's values (PF after two consecutive
// misses, RFC 7829 §3), and data_interval (kernel SCTP DATA keeping T3-rtx
// running), off unless set.
func TestMobilityHeartbeat(t *testing.T) {
	c := loadExample(t, "roadwarrior.yaml")
	hb := c.Mobility.Heartbeat
	if hb.PFThreshold != 1 || hb.PathMaxRetrans != 2 || hb.DataInterval != 0 {
		t.Fatalf("example heartbeat %+v", hb)
	}
	text, err := os.ReadFile(filepath.Join(examples, "roadwarrior.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	with := strings.Replace(string(text), "    pf_threshold: 1\n", "    pf_threshold: 1\n    data_interval: 20ms\n", 1)
	c, err = Parse("rw.yaml", []byte(with))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mobility.Heartbeat.DataInterval != 20*time.Millisecond {
		t.Fatalf("data_interval %v", c.Mobility.Heartbeat.DataInterval)
	}
}
