package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/tunnel"
)

// roadWarrior is one member of the fleet: its endpoint, its current
// outbound SA (nil while down) and its counters.
type roadWarrior struct {
	g    *Gen
	i    int
	addr netip.Addr
	ep   *ike.Endpoint

	out      atomic.Pointer[tunnel.SA]
	rx       atomic.Uint64
	installs atomic.Uint64
	rekeys   atomic.Uint64
	// note carries the installs and terminal events to connect; never
	// blocks the endpoint (Progress runs under its lock).
	note chan ike.Progress
}

func (g *Gen) newRoadWarrior(i int, a netip.Addr) (*roadWarrior, error) {
	id, cred, err := g.cfg.Identity(i)
	if err != nil {
		return nil, fmt.Errorf("loadgen: identity of road warrior %d: %w", i, err)
	}
	rw := &roadWarrior{g: g, i: i, addr: a, note: make(chan ike.Progress, 8)}
	rw.ep, err = ike.New(ike.Config{
		Initiator: true, LocalID: id, RemoteID: g.cfg.GatewayID, Credential: cred, CAs: g.cfg.CAs, ChainCache: &g.chains, DHCache: &g.dh,
		Mode: ike.ModeRFC3554, LocalTS: []netip.Prefix{netip.PrefixFrom(a, 32)}, RemoteTS: g.cfg.RemoteTS,
		LocalAddrs: []netip.Addr{a}, UDPEncap: true,
		DPD: g.cfg.DPD, ChildLifetime: g.cfg.ChildLifetime, IKELifetime: g.cfg.IKELifetime,
		Send: g.send, Install: rw.install, Remove: rw.remove, Progress: rw.progress,
		Log: g.cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("loadgen: road warrior %d: %w", i, err)
	}
	return rw, nil
}

// install and remove are the endpoint's data path: the generator's SAD
// and this road warrior's outbound pointer (a rekey swaps it between two
// packets, as the daemon's SPD policy does).
func (rw *roadWarrior) install(c *ike.Child) error {
	if err := rw.g.sad.Add(c.In); err != nil {
		return err
	}
	if rw.out.Swap(c.Out) == nil {
		rw.g.up.Add(1)
	} else {
		rw.rekeys.Add(1)
	}
	rw.installs.Add(1)
	return nil
}

func (rw *roadWarrior) remove(c *ike.Child) {
	rw.g.sad.Remove(c.In.SPI)
	next := (*tunnel.SA)(nil)
	if s := c.Sibling(); s != nil {
		next = s.Out // a rekey collision's survivor carries on
	}
	if rw.out.CompareAndSwap(c.Out, next) && next == nil {
		rw.g.up.Add(-1)
	}
}

func (rw *roadWarrior) progress(p ike.Progress) {
	if p.Kind != ike.EvChildInstalled && !p.Kind.Terminal() {
		return
	}
	select {
	case rw.note <- p:
	default: // connect only needs the newest; it also polls IsUp
	}
}

// errTimeout: no Child SA within the bring-up timeout.
var errTimeout = errors.New("no Child SA within the timeout")

// connect starts a new IKE SA line and waits for its first Child SA or its
// end. A line already up is reset first (DELETE), as the road warrior
// daemon's connector does.
func (rw *roadWarrior) connect(ctx context.Context, gw netip.Addr, timeout time.Duration) error {
	rw.ep.Reset()
	for len(rw.note) > 0 {
		<-rw.note
	}
	gen, err := rw.ep.Connect(rw.addr, netip.AddrPortFrom(gw, 500))
	if err != nil {
		return err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			rw.ep.Reset()
			return errTimeout
		case p := <-rw.note:
			if p.Gen != gen {
				continue
			}
			if p.Kind == ike.EvChildInstalled {
				return nil
			}
			if p.Err != nil {
				return p.Err
			}
			return fmt.Errorf("IKE SA ended: %v", p.Reason)
		}
	}
}
