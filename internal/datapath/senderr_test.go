package datapath

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/tunnel/transport"
)

// failConn refuses every datagram, as a socket with no route does.
type failConn struct{ calls int }

func (c *failConn) ReadBatch([]transport.Datagram) (int, error) { return 0, errors.New("unused") }
func (c *failConn) WriteBatch([]transport.Datagram) (int, error) {
	c.calls++
	return 0, errors.New("network is unreachable")
}
func (c *failConn) BatchSize() int         { return 8 }
func (c *failConn) Close() error           { return nil }
func (c *failConn) Stats() transport.Stats { return transport.Stats{} }

// Failed sends are counted one by one and logged, but at most one line
// per 10 s however many fail.
func TestSendErrorsCountedAndLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	d := &Datapath{log: slog.New(slog.NewTextHandler(&buf, nil))}
	ds := make([]transport.Datagram, 3)
	for i := range ds {
		ds[i] = transport.Datagram{Buf: []byte{1}, Remote: netip.MustParseAddrPort("192.0.2.2:4500")}
	}
	c := new(failConn)
	d.write(c, ds)
	d.write(c, ds)
	if got := d.Stats().SendErrs; got != 6 || c.calls != 6 {
		t.Fatalf("SendErrs %d after %d attempts, want 6", got, c.calls)
	}
	if n := strings.Count(buf.String(), "ESP send failed"); n != 1 || !strings.Contains(buf.String(), "remote=192.0.2.2:4500") {
		t.Fatalf("%d log lines:\n%s", n, buf.String())
	}
}
