package mobility

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/mobility/sctp"
)

// DefaultSCTPPort is where the gateway listens for the road warriors'
// path-monitoring associations.
const DefaultSCTPPort = 9899

// ErrNoKernelSCTP says the kernel has no SCTP; the caller falls back to
// ESP-level probes (Prober), which run the same RFC 4960 rules.
var ErrNoKernelSCTP = errors.New("mobility: this kernel has no SCTP (socket: protocol not supported)")

// tuning is the kernel's share of hb. The PF threshold is one lower
// (never below 0) because Linux strikes a path only once it is silent for
// a whole RTO on outstanding DATA (T3-rtx) or a whole heartbeat period
// (at least 200 ms): one such strike is already the evidence that the
// prober gathers with two misses one RTO apart.
func tuning(hb Heartbeat) sctp.Tuning {
	pf := hb.PFThreshold
	if pf > 0 {
		pf--
	}
	return sctp.Tuning{
		RTOInitial: hb.RTOInitial, RTOMin: hb.RTOMin, RTOMax: hb.RTOMax,
		HeartbeatInterval: hb.Interval, PathMaxRetrans: hb.PathMaxRetrans, PFThreshold: pf,
	}
}

func noSCTP(err error) bool { return errors.Is(err, syscall.EPROTONOSUPPORT) }

// SCTPDetector holds the road warrior's multihomed SCTP association with
// the gateway: bound to every path's local address, to every path's peer
// address. Its packets go between the two hosts' own addresses, so they
// travel in the host-to-host SA with outer = inner (RFC 3554 §2), and the
// kernel's heartbeats to each peer address test the path to it. The
// association's peer-address notifications become Events.
type SCTPDetector struct {
	Paths []Path
	Port  int
	HB    Heartbeat
	Log   *slog.Logger
}

// sendData sends a byte every interval until stop is closed (nil) or a
// send fails (its error).
func sendData(a *sctp.Assoc, interval time.Duration, stop <-chan struct{}) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
		if err := a.Send([]byte{0}); err != nil {
			select {
			case <-stop:
				return nil // closed under it
			default:
				return err
			}
		}
	}
}

// Run keeps the association up (re-dialling when it is lost) until ctx
// ends. It returns ErrNoKernelSCTP at once if the kernel lacks SCTP.
func (d *SCTPDetector) Run(ctx context.Context, out chan<- Event) error {
	var locals, peers []netip.Addr
	for _, p := range d.Paths {
		locals = appendNew(locals, p.Local)
		peers = appendNew(peers, p.Peer)
	}
	send := func(ev Event) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a, err := sctp.Dial(dctx, locals, peers, d.Port, tuning(d.HB))
		cancel()
		if noSCTP(err) {
			return ErrNoKernelSCTP
		}
		if err != nil {
			if d.Log != nil {
				d.Log.Warn("mobility: SCTP association to the gateway failed; retrying", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if d.Log != nil {
			d.Log.Info("mobility: SCTP association up", "local", fmt.Sprint(locals), "peers", fmt.Sprint(peers), "port", d.Port)
		}
		// The handshake confirmed one peer address; report what the
		// kernel knows of each now, then follow its notifications.
		for _, p := range peers {
			if pi, err := a.PeerAddrInfo(p); err == nil {
				if st, ok := stateOf(pi.State); ok {
					send(Event{Peer: p, State: st, Source: "sctp", Time: time.Now()})
				}
			}
		}
		stopData := make(chan struct{})
		var data sync.WaitGroup
		if d.HB.DataInterval > 0 {
			data.Go(func() {
				if err := sendData(a, d.HB.DataInterval, stopData); err != nil && d.Log != nil {
					d.Log.Warn("mobility: SCTP data_interval: send failed; T3-rtx no longer runs on the path in use", "err", err)
				}
			})
		}
		lost := false
		for !lost {
			select {
			case <-ctx.Done():
				close(stopData)
				a.Close()
				data.Wait()
				return nil
			case ev, ok := <-a.Events():
				if !ok {
					lost = true
					break
				}
				switch ev.Kind {
				case sctp.EventPathUp:
					send(Event{Peer: ev.Peer, State: Active, Source: "sctp", Time: ev.Time})
				case sctp.EventPathPF:
					send(Event{Peer: ev.Peer, State: PotentiallyFailed, Source: "sctp", Time: ev.Time})
				case sctp.EventPathDown, sctp.EventPathRemoved:
					send(Event{Peer: ev.Peer, State: Inactive, Source: "sctp", Time: ev.Time})
				case sctp.EventAssocLost, sctp.EventAssocShutdown, sctp.EventPeerShutdown:
					lost = true
				}
			}
		}
		close(stopData)
		a.Close()
		data.Wait()
		if d.Log != nil {
			d.Log.Warn("mobility: SCTP association lost; re-dialling")
		}
	}
	return nil
}

func stateOf(s sctp.PeerState) (State, bool) {
	switch s {
	case sctp.PeerActive:
		return Active, true
	case sctp.PeerPF:
		return PotentiallyFailed, true
	case sctp.PeerInactive:
		return Inactive, true
	}
	return Unconfirmed, false
}

func appendNew(as []netip.Addr, a netip.Addr) []netip.Addr {
	for _, x := range as {
		if x == a {
			return as
		}
	}
	return append(as, a)
}

// SCTPResponder is the gateway's side: it listens on the gateway's
// addresses and keeps the road warriors' associations open, so their
// heartbeats are answered. (In RFC 3554 mode the gateway needs nothing
// from them: its outer destination is the inner one and follows by
// itself.) It logs path changes it sees.
type SCTPResponder struct {
	Local []netip.Addr
	Port  int
	HB    Heartbeat
	Log   *slog.Logger
}

// Run serves until ctx ends; ErrNoKernelSCTP if the kernel lacks SCTP.
func (r *SCTPResponder) Run(ctx context.Context) error {
	ep, err := sctp.Listen(r.Local, r.Port, tuning(r.HB))
	if noSCTP(err) {
		return ErrNoKernelSCTP
	}
	if err != nil {
		return fmt.Errorf("mobility: SCTP listen: %w", err)
	}
	go func() { <-ctx.Done(); ep.Close() }()
	if r.Log != nil {
		r.Log.Info("mobility: listening for SCTP path monitoring", "addrs", fmt.Sprint(r.Local), "port", r.Port)
	}
	for {
		a, err := ep.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("mobility: SCTP accept: %w", err)
		}
		go func() {
			defer a.Close()
			go func() { <-ctx.Done(); a.Close() }()
			for ev := range a.Events() {
				if r.Log != nil && ev.Kind.IsPath() {
					r.Log.Info("mobility: peer path", "event", ev.String())
				}
				if ev.Kind == sctp.EventAssocLost || ev.Kind == sctp.EventPeerShutdown || ev.Kind == sctp.EventAssocShutdown {
					return
				}
			}
		}()
	}
}
