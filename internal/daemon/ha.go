package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/ha"
	"github.com/roamsec/roamsec/tunnel"
)

// newHA builds the gateway's HA node from the ha section. The cluster key
// moves into the node (which zeroes it when it stops); the section's copy
// is zeroed here.
func (r *Running) newHA() (*ha.Node, error) {
	s := r.setup
	h := s.HA
	key := new([ha.KeyLen]byte)
	copy(key[:], h.Key)
	h.Key.Wipe()
	cfg := ha.Config{Listen: h.Listen, Peer: h.Peer, Key: key, Priority: h.Priority, Services: h.Services,
		Heartbeat: h.Heartbeat, DeadAfter: h.DeadAfter, CheckpointPackets: h.CheckpointPackets,
		CheckpointInterval: h.CheckpointInterval, Log: s.Log}
	if st := s.ike; st != nil && st.ep != nil {
		cfg.Context = infoContext{st.ep}
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

// infoContext is ha.Context over what the IKE endpoint shows of its IKE
// SAs today (ike.SAInfo: SPIs, peer, addresses, proposal; no keys), one
// record per IKE SA keyed by the initiator's SPI. It replicates the
// pair's view of the fleet until issue 12 part A's ike.Endpoint
// ExportSA/ExportAll/ImportSA replace it (the lead wires those here);
// it cannot import, so a takeover counts every record as failed to import.
type infoContext struct{ ep *ike.Endpoint }

// errNoContextImport: the IKE context import is issue 12 part A's.
var errNoContextImport = errors.New("ha: importing an IKE SA needs ike.Endpoint.ImportSA (issue 12 part A)")

func (c infoContext) ExportAll() ([]ha.Record, error) {
	var out []ha.Record
	for _, sa := range c.ep.SAs() {
		spi, data, err := infoRecord(sa)
		if err != nil {
			return nil, err
		}
		out = append(out, ha.Record{SPI: spi, Data: data})
	}
	return out, nil
}

func (c infoContext) ExportSA(spi uint64) ([]byte, error) {
	for _, sa := range c.ep.SAs() {
		if s, data, err := infoRecord(sa); err == nil && s == spi {
			return data, nil
		}
	}
	return nil, fmt.Errorf("IKE SA %016x: %w", spi, ha.ErrGone)
}

func (infoContext) ImportSA([]byte, uint64) error { return errNoContextImport }

func infoRecord(sa ike.SAInfo) (uint64, []byte, error) {
	spi, err := strconv.ParseUint(sa.SPIi, 16, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("IKE SA %q: %w", sa.SPIi, err)
	}
	sa.PeerEndpoints = nil // changes with every packet: not state to replicate
	data, err := json.Marshal(sa)
	return spi, data, err
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
