package ha

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"maps"
	"slices"
	"time"
)

// apply is one frame from the peer (serveIn's goroutine).
func (n *Node) apply(f Frame) {
	switch f.Type {
	case FrameHeartbeat:
		n.post(wake{kind: wakeHeartbeat, at: time.Now(), role: f.Role, prio: f.Priority, epoch: f.Epoch})
		return
	case FrameHandover:
		n.post(wake{kind: wakeHandover, at: time.Now(), epoch: f.Epoch})
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m.Role() == RoleActive {
		return // an active keeps its own context; the other one yields on our heartbeat
	}
	switch f.Type {
	case FramePut:
		into := n.records
		if n.resyncing {
			into = n.pending
		}
		if old := into[f.SPI]; old != nil {
			clear(old)
		}
		into[f.SPI] = bytes.Clone(f.Data)
	case FrameDelete:
		for _, m := range []map[uint64][]byte{n.records, n.pending} {
			if old := m[f.SPI]; old != nil {
				clear(old) // records hold keys
				delete(m, f.SPI)
			}
		}
	case FrameCheckpoint:
		now := time.Now()
		for _, c := range f.Checkpoints {
			k := cpKey{c.SPI, c.Outbound}
			if at, ok := n.cpSeen[k]; ok && c.Seq > n.cps[k] {
				if dt := now.Sub(at).Seconds(); dt > 0 {
					n.peakRate = max(n.peakRate, float64(c.Seq-n.cps[k])/dt)
				}
			}
			n.cps[k], n.cpSeen[k] = max(n.cps[k], c.Seq), now
		}
	case FrameResyncBegin:
		n.resyncing, n.pending = true, map[uint64][]byte{}
	case FrameResyncEnd:
		if !n.resyncing {
			return
		}
		for _, d := range n.records {
			clear(d) // every Put stored its own copy: the old ones hold keys no one needs
		}
		n.records, n.pending, n.resyncing = n.pending, nil, false
	}
}

// resync sends the whole context to the peer: every record between
// ResyncBegin and ResyncEnd, then every SA's checkpoint.
func (n *Node) resync() {
	if n.cfg.Context == nil {
		n.out.send(&Frame{Type: FrameResyncBegin})
		n.out.send(&Frame{Type: FrameResyncEnd})
		return
	}
	recs, err := n.cfg.Context.ExportAll()
	if err != nil {
		n.log.Error("ha: exporting the context for the standby", "err", err)
		return
	}
	if err := n.out.send(&Frame{Type: FrameResyncBegin}); err != nil {
		return
	}
	n.streamed = map[uint64][32]byte{}
	for _, r := range recs {
		n.out.send(&Frame{Type: FramePut, SPI: r.SPI, Data: r.Data})
		n.streamed[r.SPI] = sha256.Sum256(r.Data)
		clear(r.Data)
	}
	n.out.send(&Frame{Type: FrameResyncEnd})
	n.mu.Lock()
	n.sentCPs = map[cpKey]uint64{}
	n.mu.Unlock()
	n.checkpoint(true)
}

// stream sends one IKE SA's new record, or its deletion.
func (n *Node) stream(spi uint64) {
	if n.cfg.Context == nil {
		return
	}
	data, err := n.cfg.Context.ExportSA(spi)
	switch {
	case errors.Is(err, ErrGone):
		n.out.send(&Frame{Type: FrameDelete, SPI: spi})
		delete(n.streamed, spi)
	case err != nil:
		n.log.Error("ha: exporting an IKE SA for the standby", "spi", spi, "err", err)
	default:
		n.out.send(&Frame{Type: FramePut, SPI: spi, Data: data})
		n.noteStreamed(spi, data)
		clear(data)
	}
}

func (n *Node) noteStreamed(spi uint64, data []byte) {
	if n.streamed == nil {
		n.streamed = map[uint64][32]byte{}
	}
	n.streamed[spi] = sha256.Sum256(data)
}

// refresh streams the records that differ from what was last sent, and
// deletes those that are gone.
func (n *Node) refresh() {
	if n.cfg.Context == nil {
		return
	}
	recs, err := n.cfg.Context.ExportAll()
	if err != nil {
		n.log.Error("ha: exporting the context for the standby", "err", err)
		return
	}
	seen := make(map[uint64]bool, len(recs))
	for _, r := range recs {
		seen[r.SPI] = true
		if h, ok := n.streamed[r.SPI]; !ok || h != sha256.Sum256(r.Data) {
			n.out.send(&Frame{Type: FramePut, SPI: r.SPI, Data: r.Data})
			n.noteStreamed(r.SPI, r.Data)
		}
		clear(r.Data)
	}
	for spi := range n.streamed {
		if !seen[spi] {
			n.out.send(&Frame{Type: FrameDelete, SPI: spi})
			delete(n.streamed, spi)
		}
	}
}

// checkpoint sends the SAs' sequence state that has moved: at once for
// an SA CheckpointPackets past its last checkpoint, otherwise every
// CheckpointInterval; force sends all that moved now.
func (n *Node) checkpoint(force bool) {
	if n.cfg.Counters == nil || n.role() != RoleActive {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	var moved []Checkpoint
	due := force || now.Sub(n.lastCPAt) >= n.cfg.CheckpointInterval
	for _, c := range n.cfg.Counters() {
		last, ok := n.sentCPs[cpKey{c.SPI, c.Outbound}]
		if ok && last == c.Seq {
			continue
		}
		moved = append(moved, c)
		due = due || c.Seq-last >= n.cfg.CheckpointPackets
	}
	if !due || len(moved) == 0 {
		return
	}
	for part := range slices.Chunk(moved, maxCheckpoints) {
		if n.out.send(&Frame{Type: FrameCheckpoint, Checkpoints: part}) != nil {
			return // a new connection resyncs everything
		}
	}
	for _, c := range moved {
		n.sentCPs[cpKey{c.SPI, c.Outbound}] = c.Seq
	}
	n.lastCPAt = now
}

// takeOver imports every record with its sequence numbers jumped past the
// checkpoints, then adds the service addresses and announces them.
func (n *Node) takeOver(planned bool) {
	start := time.Now()
	n.mu.Lock()
	heard, ever := n.m.PeerHeard()
	n.mu.Unlock()
	var to takeover
	to.at, to.planned = start, planned
	if ever {
		to.silence = start.Sub(heard)
	}
	n.mu.Lock()
	recs, cps, rate := n.records, n.cps, n.peakRate
	n.records, n.cps, n.cpSeen, n.pending, n.resyncing = map[uint64][]byte{}, map[cpKey]uint64{}, map[cpKey]time.Time{}, nil, false
	n.mu.Unlock()
	floors := &SeqFloors{Out: map[uint32]uint64{}, In: map[uint32]uint64{}, Jump: n.cfg.SeqJump(rate, to.silence)}
	for k, v := range cps {
		if k.out {
			floors.Out[k.spi] = v
		} else {
			floors.In[k.spi] = v
		}
	}
	imported, failed := 0, 0
	var lastErr error
	for _, spi := range slices.Sorted(maps.Keys(recs)) {
		if n.cfg.Context != nil {
			if err := n.cfg.Context.ImportSA(recs[spi], floors); err != nil {
				failed++
				lastErr = err
			} else {
				imported++
			}
		}
		clear(recs[spi])
	}
	// The SAs first, the addresses after: nothing reaches us for an SA
	// not yet installed (a packet the GARP draws in before the import
	// would be lost).
	if err := n.cfg.Net.Add(n.cfg.Services); err != nil {
		n.log.Error("ha: adding the service addresses", "err", err)
	}
	to.addrUp = time.Since(start)
	if err := n.cfg.Net.Announce(n.cfg.Services); err != nil {
		n.log.Error("ha: announcing the service addresses", "err", err)
	}
	to.announced = time.Since(start)
	synced := 0
	if ps, ok := n.cfg.Context.(PeerSyncer); ok {
		synced = ps.SyncPeers(floors.Jump)
	}
	// RFC 5227 §2.3: ANNOUNCE_NUM = 2 announcements, ANNOUNCE_INTERVAL = 2 s
	// apart: one lost GARP/NA must not leave a neighbour on the old MAC.
	n.announceAgain = start.Add(announceInterval)
	jump := floors.Jump
	n.mu.Lock()
	n.lastTO, n.imported = to, imported
	n.importErr = ""
	if lastErr != nil {
		n.importErr = lastErr.Error()
	}
	epoch := n.m.Epoch()
	n.mu.Unlock()
	n.log.Info("ha: took over", "planned", planned, "epoch", epoch, "silence_ms", ms(to.silence), "addr_up_ms", ms(to.addrUp),
		"announced_ms", ms(to.announced), "announced_at", start.Add(to.announced).Format(time.RFC3339Nano),
		"records", len(recs), "imported", imported, "import_failed", failed, "rfc6311_syncs", synced, "checkpoints", len(cps), "seq_jump", jump, "import_err", lastErr)
	n.resync()
}

const announceInterval = 2 * time.Second

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// switchover is the planned handover on the active: flush a final
// checkpoint, tell the standby, which takes over without probing, and
// keep the addresses and SAs until it says it is active (finishHandover):
// what is on its way to us meanwhile still goes through, and what we
// send is far below its jump. Nothing is lost.
func (n *Node) switchover() error {
	n.mu.Lock()
	_, err := n.m.Switchover(time.Now())
	epoch := n.m.Epoch()
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.forceCheckpoint()
	if err := n.out.send(&Frame{Type: FrameHandover, Epoch: epoch}); err != nil {
		n.finishHandover("the sync link failed")
		return err
	}
	n.handingOver = time.Now()
	n.log.Info("ha: switchover: handed over to the peer", "epoch", epoch)
	return nil
}

// finishHandover releases the addresses and drops the SAs a switchover
// kept: the peer is active, or it did not say so in time (the addresses'
// lifetime would end them anyway).
func (n *Node) finishHandover(why string) {
	n.handingOver = time.Time{}
	if err := n.cfg.Net.Remove(n.cfg.Services); err != nil {
		n.log.Error("ha: releasing the service addresses", "err", err)
	}
	n.dropAll()
	n.released.Add(1)
	n.log.Info("ha: switchover done: addresses released", "why", why)
}

// forceCheckpoint flushes every moved SA's state regardless of role (the
// switchover has already made us standby).
func (n *Node) forceCheckpoint() {
	if n.cfg.Counters == nil {
		return
	}
	n.mu.Lock()
	var moved []Checkpoint
	for _, c := range n.cfg.Counters() {
		if last, ok := n.sentCPs[cpKey{c.SPI, c.Outbound}]; !ok || last != c.Seq {
			moved = append(moved, c)
		}
	}
	n.mu.Unlock()
	for part := range slices.Chunk(moved, maxCheckpoints) {
		n.out.send(&Frame{Type: FrameCheckpoint, Checkpoints: part})
	}
}

// Status is the node's state for `gateway status`.
type Status struct {
	Role          string            `json:"role"`
	Epoch         uint64            `json:"epoch"`
	Priority      uint8             `json:"priority"`
	Peer          string            `json:"peer"`
	PeerRole      string            `json:"peer_role,omitempty"`
	PeerHeardMs   float64           `json:"peer_heard_ms_ago,omitempty"` // -1: never
	Connected     bool              `json:"connected"`
	Isolated      bool              `json:"isolated,omitempty"` // sync link silent, active seen on the service network
	SyncLagFrames uint64            `json:"sync_lag_frames"`
	SyncLagMs     float64           `json:"sync_lag_ms"` // since the last ack, while frames wait for one
	SentBytes     uint64            `json:"sync_bytes_sent"`
	ReceivedBytes uint64            `json:"sync_bytes_received"`
	Records       int               `json:"records"`
	RecordBytes   int               `json:"record_bytes"`
	Checkpoints   int               `json:"checkpoints"`
	Takeovers     int               `json:"takeovers"`
	LastTakeover  *TakeoverStatus   `json:"last_takeover,omitempty"`
	Drops         map[string]uint64 `json:"drops,omitempty"`
}

// TakeoverStatus is the last takeover.
type TakeoverStatus struct {
	At          time.Time `json:"at"`
	Planned     bool      `json:"planned"`
	SilenceMs   float64   `json:"silence_ms"` // the active last heard this long before
	AddrUpMs    float64   `json:"addr_up_ms"`
	AnnouncedMs float64   `json:"announced_ms"`
	Imported    int       `json:"imported"`
	ImportError string    `json:"import_error,omitempty"`
}

// Status reports the node now.
func (n *Node) Status() Status {
	lag := n.out.lag()
	n.out.mu.Lock()
	connected := n.out.conn != nil
	n.out.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{Peer: n.cfg.Peer.String(), Priority: n.cfg.Priority, Connected: connected, SyncLagFrames: lag,
		SentBytes: n.sent.Load(), ReceivedBytes: n.received.Load(), Records: len(n.records), Checkpoints: len(n.cps),
		Drops: maps.Clone(n.drops), PeerHeardMs: -1}
	if n.m == nil {
		st.Role = "starting"
		return st
	}
	st.Role, st.Epoch, st.Isolated = n.m.Role().String(), n.m.Epoch(), n.m.Isolated()
	if pr, _, _ := n.m.Peer(); pr != 0 {
		st.PeerRole = pr.String()
	}
	if at, ok := n.m.PeerHeard(); ok {
		st.PeerHeardMs = ms(time.Since(at))
	}
	if lag > 0 {
		if at := n.ackedAt.Load(); at != 0 {
			st.SyncLagMs = ms(time.Since(time.Unix(0, at)))
		}
	}
	for _, d := range n.records {
		st.RecordBytes += len(d)
	}
	st.Takeovers, _ = n.m.Takeovers()
	if to := n.lastTO; !to.at.IsZero() {
		st.LastTakeover = &TakeoverStatus{At: to.at, Planned: to.planned, SilenceMs: ms(to.silence), AddrUpMs: ms(to.addrUp),
			AnnouncedMs: ms(to.announced), Imported: n.imported, ImportError: n.importErr}
	}
	return st
}
