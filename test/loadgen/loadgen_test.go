package loadgen

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/roamsec/roamsec/internal/daemon"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// fleet is a bed with the real gateway daemon, an echo server behind it
// and n road warriors in rw, not yet connected.
type fleet struct {
	bed      *netns.Bed
	bin, cfg string
	gw       *rig.Proc
	gen      *Gen
	echo     *Sink
}

func newFleet(t *testing.T, n int, o GatewayOptions) *fleet {
	t.Helper()
	f := &fleet{bed: netns.New(t)}
	addrs, err := f.bed.AddLoadAddrs(n)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg, err = p.WriteGatewayConfig(dir, o); err != nil {
		t.Fatal(err)
	}
	if f.bin, err = BuildGateway(dir); err != nil {
		t.Fatal(err)
	}
	// The configuration -check accepts is the one the daemon runs.
	if out, code, err := rig.Run(context.Background(), f.bed.GW, f.bin, "-check", "-config", f.cfg); err != nil || code != 0 {
		t.Fatalf("gateway -check: exit %d, %v\n%s", code, err, out)
	}
	if f.gw, err = StartGateway(f.bed, f.bin, f.cfg, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.gw.Stop(5 * time.Second); err != nil {
			t.Errorf("gateway stop: %v\n%s", err, f.gw.Log())
		}
	})
	if err := f.bed.Srv.Do(func() (err error) {
		f.echo, err = ListenSink(netip.AddrPortFrom(netns.Srv4, 7), true)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.echo.Close)
	gwID, _ := auth.ParseIdentity(GatewayID)
	cfg := Config{Addrs: addrs, Gateway: netns.GWPrimary4, GatewayID: gwID, RemoteTS: []netip.Prefix{netns.ServerNet4},
		Identity: func(i int) (auth.Identity, *auth.Credential, error) { return p.RoadWarrior(i, addrs[i]) },
		CAs:      []*x509.Certificate{p.CA.Cert}}
	if err := f.bed.RW.Do(func() (err error) {
		f.gen, err = New(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.gen.Close)
	return f
}

func (f *fleet) status(t *testing.T) (ikeSAs, children int, established, rekeys uint64) {
	t.Helper()
	st, err := GatewayStatus(f.bed, f.bin, f.cfg)
	if err != nil || st.IKE == nil {
		t.Fatalf("gateway status: %v (%+v)", err, st.IKE)
	}
	return st.IKE.IKESAs, len(st.Children), st.IKE.Established, st.IKE.ChildRekeys
}

// waitStatus polls the gateway until its IKE SA and Child SA counts are
// as wanted (a DELETE is handled asynchronously).
func (f *fleet) waitStatus(t *testing.T, ikeSAs, children int) {
	t.Helper()
	var gotI, gotC int
	if !rig.WaitFor(10*time.Second, func() bool {
		gotI, gotC, _, _ = f.status(t)
		return gotI == ikeSAs && gotC == children
	}) {
		t.Fatalf("gateway status: %d IKE SAs, %d Child SAs; want %d, %d", gotI, gotC, ikeSAs, children)
	}
}

// cli runs `gateway ARGS -config CFG` in gw and returns its output.
func (f *fleet) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, code, err := rig.Run(context.Background(), f.bed.GW, f.bin, append(args, "-config", f.cfg)...)
	if err != nil || code != 0 {
		t.Fatalf("gateway %v: exit %d, %v\n%s", args, code, err, out)
	}
	return out
}

// saList is `gateway sa list -json ARGS`.
func (f *fleet) saList(t *testing.T, args ...string) []daemon.ChildStatus {
	t.Helper()
	var cs []daemon.ChildStatus
	out := f.cli(t, append([]string{"sa", "list", "-json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("sa list -json %v: %v\n%s", args, err, out)
	}
	return cs
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestFleetConnectsCarriesChurns is make test's small version of make
// bench-scale: 50 road warriors, each a real IKEv2 handshake with its own
// certificate against the gateway daemon's one wildcard peer, all up;
// datagrams echoed back through each one's own Child SAs; then churn (10
// disconnect and reconnect, 10 rekey their Child SAs, 5 their IKE SAs)
// and traffic over every one again; the gateway's status counts match
// the fleet at each step.
func TestFleetConnectsCarriesChurns(t *testing.T) {
	const n = 50
	f := newFleet(t, n, GatewayOptions{})
	ctx := context.Background()
	all := span(0, n)

	if r := f.gen.Up(ctx, nil, 16, 20*time.Second); r.Up != n {
		t.Fatalf("bring-up: %d of %d up, errors %v\ngateway:\n%s", r.Up, n, r.Errors, f.gw.Log())
	}
	f.waitStatus(t, n, n)
	// status and sa list with a fleet: filters pick peers, the summary
	// counts them all.
	if got := f.saList(t, "-state", "idle"); len(got) != n {
		t.Errorf("sa list -state idle before any traffic: %d, want %d", len(got), n)
	}
	if got := f.saList(t, "-id", "rw7@load.roamsec.example"); len(got) != 1 || got[0].Peer != "rw7@load.roamsec.example" || got[0].Remote != "100.64.0.8" {
		t.Errorf("sa list -id rw7@...: %+v", got)
	}
	if got := f.saList(t, "-addr", "100.64.0.0/28"); len(got) != 15 {
		t.Errorf("sa list -addr 100.64.0.0/28: %d Child SAs, want 15 (100.64.0.1 .. 15)", len(got))
	}
	traffic := func(rounds uint64) {
		t.Helper()
		before := make([]uint64, n)
		for i := range before {
			before[i] = f.gen.Received(i)
		}
		f.gen.Blast(ctx, all, netip.AddrPortFrom(netns.Srv4, 7), 64, int(rounds), 1)
		for _, i := range all {
			want := before[i] + rounds
			if !rig.WaitFor(10*time.Second, func() bool { return f.gen.Received(i) >= want }) {
				t.Fatalf("road warrior %d (%v): %d echoes, want %d; generator %+v", i, f.gen.Addr(i), f.gen.Received(i), want, f.gen.Stats())
			}
		}
	}
	traffic(3)
	if got := f.saList(t, "-state", "active"); len(got) != n {
		t.Errorf("sa list -state active after traffic over each: %d, want %d", len(got), n)
	}
	text := f.cli(t, "status")
	if !strings.Contains(text, fmt.Sprintf("Summary: %d IKE SAs, %d Child SAs (%d active, 0 idle, 0 expired)", n, n, n)) ||
		!strings.Contains(text, "Listed: 20 of the IKE SAs, 20 of the Child SAs") {
		t.Errorf("gateway status:\n%s", text)
	}
	var sum daemon.Status
	if err := json.Unmarshal([]byte(f.cli(t, "status", "-summary", "-json")), &sum); err != nil || sum.Summary == nil ||
		sum.Summary.IKESAs != n || sum.Summary.ChildSAs != n || len(sum.Children) != 0 {
		t.Errorf("status -summary -json: %v %+v", err, sum.Summary)
	}

	// Churn. Disconnected road warriors' IKE SAs are gone from the gateway.
	for _, i := range span(0, 10) {
		f.gen.Disconnect(i)
	}
	f.waitStatus(t, n-10, n-10)
	if r := f.gen.Up(ctx, span(0, 10), 10, 20*time.Second); r.Up != 10 {
		t.Fatalf("reconnect: %d of 10, errors %v", r.Up, r.Errors)
	}
	for _, i := range span(10, 20) {
		f.gen.Rekey(i, false)
	}
	for _, i := range span(20, 25) {
		f.gen.Rekey(i, true)
	}
	for _, i := range span(10, 20) {
		if !rig.WaitFor(10*time.Second, func() bool { return f.gen.RekeysOf(i) >= 1 }) {
			t.Fatalf("road warrior %d: Child SA not rekeyed", i)
		}
	}
	f.waitStatus(t, n, n)
	traffic(3)
	_, _, established, rekeys := f.status(t)
	if established != n+10 || rekeys < 10 {
		t.Errorf("gateway counts %d IKE SAs established and %d Child SA rekeys since start; want %d and >= 10", established, rekeys, n+10)
	}
	if s := f.gen.Stats(); s.Up != n || s.ESPBad != 0 || s.IKEDropped != 0 {
		t.Errorf("generator: %+v", s)
	}
}
