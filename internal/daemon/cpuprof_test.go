package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// ProfileEnv: the first toggle starts a CPU profile, the second writes the
// CPU, block and mutex profiles (pprof's gzip-compressed protocol buffers).
func TestProfileToggleWritesCPUBlockAndMutexProfiles(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "gw")
	p := &profiler{prefix: prefix, log: slog.New(slog.DiscardHandler)}
	p.toggle()
	if p.cpu == nil {
		t.Fatal("first toggle did not start a CPU profile")
	}
	if _, err := os.Stat(prefix + ".block"); err == nil {
		t.Error("block profile written before the second toggle")
	}
	p.toggle()
	if p.cpu != nil {
		t.Fatal("second toggle did not stop the CPU profile")
	}
	for _, ext := range []string{".cpu", ".block", ".mutex"} {
		b, err := os.ReadFile(prefix + ext)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			t.Errorf("%s: not a pprof profile (gzip), starts %x", ext, b[:min(len(b), 4)])
		}
	}
	// A third toggle starts again (profiles can be taken repeatedly).
	p.toggle()
	if p.cpu == nil {
		t.Fatal("third toggle did not start a CPU profile")
	}
	p.toggle()
}

func TestProfileToggleReportsAnUnwritablePrefix(t *testing.T) {
	var logBuf bytes.Buffer
	p := &profiler{prefix: filepath.Join(t.TempDir(), "missing", "gw"), log: slog.New(slog.NewTextHandler(&logBuf, nil))}
	p.toggle()
	if p.cpu != nil {
		t.Fatal("profiling started without a file")
	}
	if !bytes.Contains(logBuf.Bytes(), []byte("CPU profile")) {
		t.Errorf("no warning logged: %q", logBuf.String())
	}
}
