package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

// RFC 6311: a standby that took an IKE SA over cannot know the requests
// the old active sent after its last record (their message IDs), nor
// every ESP packet it received after its last checkpoint. With a peer
// that announced support in IKE_AUTH (§3), it asks in an INFORMATIONAL
// exchange with message ID 0 (§4: outside the window, so it is answered
// whatever the IDs became) for both sides' next request IDs, and for the
// peer to jump its outbound ESP sequence numbers (§4.2), so that the
// standby may raise its replay floors past anything the old active took.

// syncRequest is the sync a gateway started and awaits (§4.1).
type syncRequest struct {
	req   message.MIDSync
	delta uint64 // IPSEC_REPLAY_COUNTER_SYNC's, 0 if not sent
}

// syncAnswer is the last sync a peer answered: a retransmission of the
// same request gets the same bytes (§2.1), a different one below it
// nothing (§5.1).
type syncAnswer struct {
	req  message.MIDSync
	pkts [][]byte
}

// syncAnnouncement is what IKE_AUTH says of RFC 6311 (§3): an initiator
// always (it answers a cluster), a gateway only in an HA pair.
func (e *Endpoint) syncAnnouncement() []message.Payload {
	if !e.cfg.Initiator && !e.cfg.HASync {
		return nil
	}
	return []message.Payload{notify(message.IKEV2_MESSAGE_ID_SYNC_SUPPORTED, nil),
		notify(message.IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED, nil)}
}

// noteSyncSupport records what the peer's IKE_AUTH announced; each sync
// is in use only if both sides announced it (§3).
func (s *ikeSA) noteSyncSupport(ps []message.Payload) {
	if s.e.syncAnnouncement() == nil {
		return
	}
	s.peerMIDSync = len(filterNotify(ps, message.IKEV2_MESSAGE_ID_SYNC_SUPPORTED)) > 0
	s.peerReplaySync = s.peerMIDSync && len(filterNotify(ps, message.IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED)) > 0
}

// SyncPeers starts RFC 6311's synchronisation on every IKE SA imported
// since the last call whose peer supports it, and returns how many.
//
// Except toward a peer that announced message-ID sync alone after we sent
// it a request: strongSwan (5.9 to this day, the one such peer we know)
// derives an AEAD IKE SA's IV from the message ID (iv_gen_seq, ID << 32),
// each ID usable twice and in increasing order, so once it answered our
// request 0 it cannot seal the answer to a sync (message ID 0 a third
// time) and destroys the IKE SA ("encrypting encrypted payload failed,
// no IV or padding"). roamsec's IKE suites are all AEAD. Such a peer is
// left to the import's resync (resyncs), which covers its own requests,
// not the ones the old active sent after its last record. delta
// (the takeover's sequence jump) goes in IPSEC_REPLAY_COUNTER_SYNC to the
// peers that support that too. Call it once the service addresses are up:
// the requests go out at once.
func (e *Endpoint) SyncPeers(delta uint64) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, s := range e.sas {
		if s.state != stEstablished || !s.syncPending {
			continue
		}
		s.syncPending = false
		if !s.peerMIDSync || s.initiator {
			continue
		}
		if !s.peerReplaySync && s.nextID > 0 {
			s.e.cfg.Log.Info("RFC 6311: sync not sent: the peer may not seal an answer with message ID 0 once it answered one of our requests",
				"ike", s.name(), "next_request", s.nextID)
			continue
		}
		s.startMIDSync(delta)
		n++
	}
	return n
}

// startMIDSync sends the sync request with message ID 0 (§4.1). Our next
// request ID is announced resyncSlack past the record's: the old active
// may have sent a few after it, and the peer drops a sync whose value is
// below what it has seen (§5.1). The request in flight, if any, waits
// behind the sync and is sent again with an ID from the answer. Under
// e.mu.
func (s *ikeSA) startMIDSync(delta uint64) {
	if r := s.out; r != nil {
		r.timer.Stop()
		s.out = nil
		if r.imported {
			// The old active's bytes, sealed with an ID the sync moves
			// past: its purpose (liveness, mostly) is served by the sync.
			s.e.cfg.Log.Info("RFC 6311: the imported request in flight is superseded by the sync", "ike", s.name(), "exchange", r.exch)
		} else {
			s.queue = append([]*request{r}, s.queue...)
		}
	}
	nonce := binary.BigEndian.Uint32(randomBytes(4))
	sr := &syncRequest{req: message.MIDSync{Nonce: nonce, Send: s.nextID + resyncSlack, Recv: s.peerNext}}
	ps := []message.Payload{notify(message.IKEV2_MESSAGE_ID_SYNC, sr.req.Encode())}
	if s.peerReplaySync && delta > 0 {
		sr.delta = delta
		ps = append(ps, notify(message.IPSEC_REPLAY_COUNTER_SYNC, message.ReplaySync{Nonce: nonce, Delta: delta}.Encode()))
	}
	r := &request{exch: message.INFORMATIONAL, payloads: ps, msgID: 0,
		onReply: func(_ *message.Message, rps []message.Payload) { s.midSyncAnswered(sr, rps) },
		onFail:  s.failed}
	r.pkts = s.protect(r.exch, 0, false, ps)
	s.out = r
	s.e.cfg.Log.Info("RFC 6311: synchronising message IDs", "ike", s.name(), "send", sr.req.Send, "recv", sr.req.Recv, "replay_delta", sr.delta)
	s.transmit(r)
}

// midSyncAnswered applies the peer's answer (§4.1): our next request ID
// is the larger of what we announced and what the peer expects, the
// peer's next the larger of ours and what it announced. With the replay
// sync answered, every inbound Child SA's replay floor rises by delta
// past its imported edge: the peer now sends past it (§4.2). Under e.mu.
func (s *ikeSA) midSyncAnswered(sr *syncRequest, ps []message.Payload) {
	s.nextID = max(s.nextID, sr.req.Send)
	ns := filterNotify(ps, message.IKEV2_MESSAGE_ID_SYNC)
	var resp message.MIDSync
	var err error
	if len(ns) != 1 {
		err = fmt.Errorf("%d IKEV2_MESSAGE_ID_SYNC notifies in the answer", len(ns))
	} else if resp, err = message.ParseMIDSync(ns[0].Data); err == nil && resp.Nonce != sr.req.Nonce {
		err = fmt.Errorf("nonce %08x, sent %08x", resp.Nonce, sr.req.Nonce)
	}
	if err != nil {
		s.e.Stats.SyncRefused++
		s.e.cfg.Log.Warn("RFC 6311: the peer's sync answer is not one: message IDs left to the import's resync", "ike", s.name(), "err", err)
		s.armDPD()
		return
	}
	s.nextID = max(s.nextID, resp.Recv)
	s.peerNext = max(s.peerNext, resp.Send)
	s.resync = false
	if sr.delta > 0 {
		for _, ch := range s.children {
			ch.In.RaiseReplayFloor(sat(ch.importedTop, sr.delta))
		}
	}
	s.e.Stats.Synced++
	s.e.cfg.Log.Info("RFC 6311: message IDs synchronised", "ike", s.name(), "next_request", s.nextID, "peer_next_request", s.peerNext,
		"replay_delta", sr.delta)
	s.changed(ChangeMessageID)
	s.armDPD()
}

// isMIDSync reports a request made only of RFC 6311's notifications, one
// IKEV2_MESSAGE_ID_SYNC among them (§4: nothing else travels with them).
func isMIDSync(ps []message.Payload) bool {
	found := false
	for _, p := range ps {
		n, ok := p.(*message.Notify)
		if !ok || n.NotifyType != message.IKEV2_MESSAGE_ID_SYNC && n.NotifyType != message.IPSEC_REPLAY_COUNTER_SYNC {
			return false
		}
		found = found || n.NotifyType == message.IKEV2_MESSAGE_ID_SYNC
	}
	return found
}

// answerMIDSync handles a request with message ID 0 that may be a
// cluster's sync (§4.1), before the window check, which it is outside
// of. It reports whether the message was one (handled: answered or
// dropped); anything else goes the ordinary way. Under e.mu.
func (s *ikeSA) answerMIDSync(m *message.Message, remote netip.AddrPort) bool {
	if !s.peerMIDSync || s.state != stEstablished {
		return false
	}
	enc := encryptedOf(m)
	if enc == nil || enc.Fragment {
		return false
	}
	pt, err := s.recvKey.open(m.Raw[:enc.AADLen], enc.Body)
	if err != nil {
		return false
	}
	ps, err := message.ParsePayloads(enc.Next, pt)
	if err != nil || !isMIDSync(ps) {
		return false
	}
	e := s.e
	ns := filterNotify(ps, message.IKEV2_MESSAGE_ID_SYNC)
	req, err := message.ParseMIDSync(ns[0].Data)
	if err != nil || len(ns) != 1 {
		e.logDrop("malformed IKEV2_MESSAGE_ID_SYNC", remote, err)
		return true
	}
	if a := s.lastSync; a != nil && a.req == req {
		for _, p := range a.pkts { // §2.1: a retransmission
			e.cfg.Send(p, s.local, remote, remote.Port() != 500)
		}
		return true
	}
	// §5.1: a sync whose next request ID is below what we have seen from
	// the cluster, previous syncs included, is dropped (a replay).
	if req.Send < s.peerNext || s.lastSync != nil && req.Send <= s.lastSync.req.Send {
		e.logDrop("IKEV2_MESSAGE_ID_SYNC below the message IDs seen (RFC 6311 §5.1)", remote, nil)
		return true
	}
	s.lastHeard = time.Now()
	was := s.peerNext
	s.peerNext = req.Send
	send, resealed := s.syncOurRequests(req.Recv)
	resp := message.MIDSync{Nonce: req.Nonce, Send: send, Recv: s.peerNext}
	pkts := s.protect(message.INFORMATIONAL, 0, true, []message.Payload{notify(message.IKEV2_MESSAGE_ID_SYNC, resp.Encode())})
	s.lastSync = &syncAnswer{req: req, pkts: pkts}
	for _, p := range pkts {
		e.cfg.Send(p, s.local, remote, remote.Port() != 500)
	}
	delta := s.replayDelta(ps, req.Nonce)
	e.Stats.Synced++
	e.cfg.Log.Info("RFC 6311: the peer's cluster synchronised message IDs", "ike", s.name(), "next_request", send,
		"peer_next_request", s.peerNext, "peer_next_was", was, "replay_delta", delta)
	s.changed(ChangeMessageID)
	if resealed {
		s.transmit(s.out) // under its new ID, after the answer
	}
	return true
}

// syncOurRequests moves our request IDs to at least want, the cluster's
// expectation, and returns the ID of the next request it will get from
// us: the one in flight, sealed again under want if the cluster expects
// a later one (it would drop it): resealed says so. Under e.mu.
func (s *ikeSA) syncOurRequests(want uint32) (next uint32, resealed bool) {
	r := s.out
	if r == nil || r.plain {
		s.nextID = max(s.nextID, want)
		return s.nextID, false
	}
	if want <= r.msgID {
		return r.msgID, false
	}
	r.timer.Stop()
	r.msgID, r.tries = want, 0
	r.pkts = s.protect(r.exch, r.msgID, false, r.payloads)
	s.nextID = want + 1
	return want, true
}

// replayDelta applies IPSEC_REPLAY_COUNTER_SYNC (§4.2), if the request
// carries one of this sync's nonce and both sides announced it: every
// outbound Child SA of the IKE SA skips delta sequence numbers, so the
// cluster may take everything below as seen. It returns the delta
// applied. Under e.mu.
func (s *ikeSA) replayDelta(ps []message.Payload, nonce uint32) uint64 {
	if !s.peerReplaySync {
		return 0
	}
	ns := filterNotify(ps, message.IPSEC_REPLAY_COUNTER_SYNC)
	if len(ns) != 1 {
		return 0
	}
	r, err := message.ParseReplaySync(ns[0].Data)
	if err != nil || r.Nonce != nonce {
		s.e.cfg.Log.Warn("RFC 6311: IPSEC_REPLAY_COUNTER_SYNC ignored", "ike", s.name(), "err", err, "nonce_matches", r.Nonce == nonce)
		return 0
	}
	for _, ch := range s.children {
		ch.Out.SkipSeq(sat(ch.Out.LastSeq(), r.Delta))
	}
	return r.Delta
}
