package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/ikectx"
	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/internal/hactx"
	"github.com/roamsec/roamsec/tunnel"
)

// newHA builds the gateway's HA node from the ha section. The cluster key
// moves into the node (which zeroes it when it stops); the section's copy
// is zeroed here. The node's records are the IKE endpoint's own
// (ExportSA/ImportSA, seed 004's context), streamed on its change events.
func (r *Running) newHA() (*ha.Node, error) {
	s := r.setup
	h := s.HA
	key, err := hactx.FromBytes(h.Key)
	h.Key.Wipe()
	if err != nil {
		return nil, err
	}
	cfg := ha.Config{Listen: h.Listen, Peer: h.Peer, Key: key, Priority: h.Priority, Services: h.Services,
		Heartbeat: h.Heartbeat, DeadAfter: h.DeadAfter, CheckpointPackets: h.CheckpointPackets,
		CheckpointInterval: h.CheckpointInterval, Log: s.Log}
	if st := s.ike; st != nil && st.ep != nil {
		cfg.Context = ikeContext{st.ep}
		cfg.Counters = func() []ha.Checkpoint { return checkpoints(st.outbound(), s.SAD.All()) }
	}
	return ha.New(cfg)
}

// checkpoints is the sequence state of the negotiated SAs: last sent on
// the outbound ones, the replay window's right edge on the inbound ones.
func checkpoints(out, in []*tunnel.SA) []ha.Checkpoint {
	cps := make([]ha.Checkpoint, 0, len(out)+len(in))
	for _, sa := range out {
		cps = append(cps, ha.Checkpoint{SPI: sa.SPI, Outbound: true, Seq: sa.LastSeq()})
	}
	for _, sa := range in {
		cps = append(cps, ha.Checkpoint{SPI: sa.SPI, Seq: sa.LastSeq()})
	}
	return cps
}

// ikeContext is ha.Context over the IKE endpoint: one record per IKE SA,
// keyed by the initiator's SPI (ike.Change.SPI).
type ikeContext struct{ ep *ike.Endpoint }

func (c ikeContext) ExportAll() ([]ha.Record, error) {
	all, err := c.ep.ExportAll()
	out := make([]ha.Record, 0, len(all))
	for _, x := range all {
		out = append(out, ha.Record{SPI: x.SPI, Data: x.Data})
	}
	if errors.Is(err, ike.ErrBusy) {
		err = nil // the busy SA streams on its next change (its exchange's end is one)
	}
	return out, err
}

func (c ikeContext) ExportSA(spi uint64) ([]byte, error) {
	b, err := c.ep.ExportSA(spi)
	if errors.Is(err, ike.ErrNoSuchSA) || errors.Is(err, ike.ErrNotTransferable) {
		// Gone, or never the standby's to hold (a one-time key's tunnel).
		return nil, fmt.Errorf("%w: %w", ha.ErrGone, err)
	}
	return b, err
}

func (c ikeContext) DropAll() int { return c.ep.DropAll() }

// SyncPeers is ha.PeerSyncer: RFC 6311 toward the peers that support it.
func (c ikeContext) SyncPeers(delta uint64) int { return c.ep.SyncPeers(delta) }

// ImportSA raises the record's sequence state to the checkpoints before
// the endpoint installs it: the data path must never carry a packet of
// the SA below them (ImportSA then adds the jump to every outbound one).
func (c ikeContext) ImportSA(data []byte, f *ha.SeqFloors) error {
	rec, err := ikectx.Decode(data)
	clear(data)
	if err != nil {
		return err
	}
	defer rec.Wipe()
	for i := range rec.Children {
		x := &rec.Children[i]
		x.SeqOut = max(x.SeqOut, f.Out[x.SPIOut])
		x.ReplayTop = max(x.ReplayTop, f.In[x.SPIIn])
	}
	b, err := ikectx.Encode(rec)
	if err != nil {
		return err
	}
	return c.ep.ImportSA(b, f.Jump) // zeroes b
}

// handOverOnStop: an active gateway of a pair that stops hands over to
// the standby first and forgets its IKE SAs, so Close sends no DELETE
// that would end them on the standby too. Without a live standby (or a
// pair) Close deletes them as a single gateway does.
func (r *Running) handOverOnStop() {
	if r.ha == nil || r.ha.Status().Role != ha.RoleActive.String() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := r.ha.HandOver(ctx); err != nil {
		r.setup.Log.Warn("ha: stopping without a handover: the IKE SAs are deleted", "err", err)
		return
	}
	r.setup.Log.Info("ha: stopping: handed over to the standby")
}

// runHA runs the node until ctx ends (serve's helper).
func (r *Running) runHA(ctx context.Context) {
	if err := r.ha.Run(ctx); err != nil {
		r.setup.Log.Error("ha stopped: this gateway neither takes over nor syncs", "err", err)
	}
}

// haStatus is the HA part of status; nil without an ha section.
func (r *Running) haStatus() *ha.Status {
	if r.ha == nil {
		return nil
	}
	st := r.ha.Status()
	return &st
}
