package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/roamsec/roamsec/internal/config"
)

// journalFile is a file that $JOURNAL_STREAM names, as systemd sets it
// for a unit whose stderr is the journal.
func journalFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	return f
}

func contents(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sd-daemon(3): a "<N>" prefix gives a stderr line its syslog priority in
// the journal, so `journalctl -p err` shows ERROR records (priority 3),
// WARN at 4, INFO at 6, DEBUG at 7, in both formats.
func TestJournalPrioritiesFollowTheLogLevel(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		f := journalFile(t)
		var lv slog.LevelVar
		log := slog.New(newLogHandler(config.Log{Level: slog.LevelDebug, Format: format}, f, &lv)).With("daemon", "gateway")
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e", "err", "x")
		lines := strings.Split(strings.TrimSpace(contents(t, f)), "\n")
		want := []string{"<7>", "<6>", "<4>", "<3>"}
		if len(lines) != len(want) {
			t.Fatalf("%s: %d lines:\n%s", format, len(lines), strings.Join(lines, "\n"))
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) || strings.Count(l, "<") > 1 && strings.Contains(l[3:], want[i]) {
				t.Errorf("%s: line %d %q: want prefix %s once", format, i, l, want[i])
			}
		}
	}
}

// Not the journal (a terminal, a pipe, a file that JOURNAL_STREAM does not
// name): no prefixes.
func TestNoPrioritiesOutsideTheJournal(t *testing.T) {
	journalFile(t) // JOURNAL_STREAM names another file
	f, err := os.Create(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lv slog.LevelVar
	slog.New(newLogHandler(config.Log{Level: slog.LevelInfo}, f, &lv)).Error("e")
	if c := contents(t, f); strings.HasPrefix(c, "<") || !strings.Contains(c, "level=ERROR") {
		t.Fatalf("got %q", c)
	}
}

// A reload changes the level through the LevelVar: records below it are
// dropped, at or above it kept, for loggers derived before the change.
func TestLogLevelChangesLive(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lv slog.LevelVar
	log := slog.New(newLogHandler(config.Log{Level: slog.LevelWarn}, f, &lv)).With("daemon", "gateway")
	log.Info("before")
	lv.Set(slog.LevelDebug)
	log.Debug("after")
	c := contents(t, f)
	if strings.Contains(c, "before") || !strings.Contains(c, "after") {
		t.Fatalf("got %q", c)
	}
}

// In the journal a refused configuration is one line at priority err,
// every reason on it; elsewhere one reason a line.
func TestConfigErrorIsOneJournalLine(t *testing.T) {
	err := fmt.Errorf("/etc/roamsec/gateway.yaml:3: tun.mtu: out of range\n/etc/roamsec/gateway.yaml:9: ike.id: missing")
	f := journalFile(t)
	reportConfigError(f, "gateway", err)
	c := contents(t, f)
	if strings.Count(c, "\n") != 1 || !strings.HasPrefix(c, "<3>gateway: configuration refused: ") || !strings.Contains(c, "tun.mtu") || !strings.Contains(c, "ike.id") {
		t.Fatalf("journal: %q", c)
	}
	g, _ := os.Create(filepath.Join(t.TempDir(), "tty"))
	defer g.Close()
	reportConfigError(g, "gateway", err)
	if c := contents(t, g); strings.Count(c, "\n") != 3 || strings.HasPrefix(c, "<") {
		t.Fatalf("terminal: %q", c)
	}
}
