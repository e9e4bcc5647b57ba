package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A tunnel whose paths never answer says so, once, at ERROR and in
// status; one whose paths answer, or that has not been up long, does not.
func TestConnectorSaysLoudlyWhenNoPathAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		states []string
		upFor  time.Duration
		warn   bool
	}{
		{"silent paths past the grace time", []string{"inactive", "potentially-failed"}, pathsSilentAfter + time.Second, true},
		{"silent paths within the grace time", []string{"inactive", "inactive"}, pathsSilentAfter / 2, false},
		{"one path answers", []string{"inactive", "active"}, pathsSilentAfter + time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			st := &ikeState{}
			c := &connector{log: slog.New(slog.NewTextHandler(&logs, nil)), st: st, tunnelUp: time.Now().Add(-tc.upFor)}
			c.paths = func() *MobilityStatus {
				m := &MobilityStatus{Detector: "probe"}
				for _, s := range tc.states {
					m.Paths = append(m.Paths, PathStatus{State: s})
				}
				return m
			}
			c.checkPaths()
			c.checkPaths()
			errors := strings.Count(logs.String(), "level=ERROR")
			if tc.warn && (errors != 1 || !strings.Contains(st.track.lastErr, "no path has answered")) {
				t.Fatalf("want one ERROR and last_error; log %q, last_error %q", logs.String(), st.track.lastErr)
			}
			if !tc.warn && (errors != 0 || st.track.lastErr != "") {
				t.Fatalf("want no warning; log %q, last_error %q", logs.String(), st.track.lastErr)
			}
		})
	}
}
