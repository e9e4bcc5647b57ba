package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/roamsec/roamsec/internal/config"
)

// Journal priorities. Under systemd, stderr is a stream to journald, which
// takes every line at the unit's SyslogLevel (info, 6) unless the line
// starts with "<N>" (SyslogLevelPrefix=yes, the default; sd-daemon(3)).
// The log handler prefixes each record with its level's syslog priority
// when stderr is that stream, so `journalctl -p err` shows the errors.

// syslogPriority maps a slog level to syslog(3)'s priorities.
func syslogPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // LOG_ERR
	case l >= slog.LevelWarn:
		return 4 // LOG_WARNING
	case l >= slog.LevelInfo:
		return 6 // LOG_INFO
	}
	return 7 // LOG_DEBUG
}

// journalStream reports whether f is the journal stream systemd connected
// ($JOURNAL_STREAM is "device:inode" of it, systemd.exec(5)).
func journalStream(w io.Writer) bool {
	f, ok := w.(*os.File)
	v := os.Getenv("JOURNAL_STREAM")
	if !ok || v == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return v == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// logHandler is the daemons' slog handler: the configured format, a
// level that a reload can change (level), and "<N>" priority prefixes
// when prefix is set.
type logHandler struct {
	inner  slog.Handler
	level  *slog.LevelVar
	out    *prefixWriter
	prefix bool
}

// prefixWriter puts the pending priority in front of the next write (the
// slog handlers write each record in one call).
type prefixWriter struct {
	mu   sync.Mutex
	w    io.Writer
	next string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if p.next == "" {
		return p.w.Write(b)
	}
	n, err := p.w.Write(append([]byte(p.next), b...))
	return max(n-len(p.next), 0), err
}

// newLogHandler builds the handler for lc writing to w; level starts at
// lc.Level.
func newLogHandler(lc config.Log, w io.Writer, level *slog.LevelVar) slog.Handler {
	level.Set(lc.Level)
	out := &prefixWriter{w: w}
	// The inner handler passes everything; Enabled filters by level.
	o := &slog.HandlerOptions{Level: slog.LevelDebug - 4}
	var inner slog.Handler = slog.NewTextHandler(out, o)
	if lc.Format == "json" {
		inner = slog.NewJSONHandler(out, o)
	}
	return &logHandler{inner: inner, level: level, out: out, prefix: journalStream(w)}
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.prefix {
		return h.inner.Handle(ctx, r)
	}
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.next = fmt.Sprintf("<%d>", syslogPriority(r.Level))
	defer func() { h.out.next = "" }()
	return h.inner.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}

// reportConfigError says why a configuration was refused: as before on a
// terminal (one error a line under a heading), and as ONE line at
// priority err in the journal, where a multi-line message becomes several
// entries of which only the first says what happened.
func reportConfigError(stderr io.Writer, role string, err error) {
	if journalStream(stderr) {
		fmt.Fprintf(stderr, "<3>%s: configuration refused: %s\n", role, strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "))
		return
	}
	fmt.Fprintf(stderr, "%s: configuration refused:\n%v\n", role, err)
}
