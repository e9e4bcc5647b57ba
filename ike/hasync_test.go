package ike

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

// saOf runs f on e's established IKE SA under the lock.
func saOf(t *testing.T, e *Endpoint, f func(s *ikeSA)) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.sas {
		if s.state == stEstablished {
			f(s)
			return
		}
	}
	t.Fatal("no established IKE SA")
}

// requestFrom starts an empty INFORMATIONAL request (a liveness check)
// on e's IKE SA; the channel gets true once answered, false on failure.
func requestFrom(t *testing.T, e *Endpoint) chan bool {
	t.Helper()
	done := make(chan bool, 1)
	saOf(t, e, func(s *ikeSA) {
		s.start(&request{exch: message.INFORMATIONAL,
			onReply: func(*message.Message, []message.Payload) { done <- true },
			onFail:  func(error) { done <- false }})
	})
	return done
}

// TestTakeoverSyncsMessageIDsAndReplayCounters_RFC6311 is the limit the
// import's resync cannot close (ARCHITECTURE.md): the old gateway sent
// requests after its last record, which the road warrior answered, so the
// new gateway's next request carries an ID the road warrior has seen and
// is dropped; and ESP the old gateway accepted after its checkpoint
// could be replayed to the new one. With both sides announcing RFC 6311
// (§3), the sync of §4 (message ID 0) moves both IDs past everything and
// the road warrior's outbound counters by the jump (§4.2): no request is
// dropped and the replay is refused. Without the announcement (a gateway
// outside a pair) nothing is synced and the request is dropped, which is
// what makes the test able to fail.
func TestTakeoverSyncsMessageIDsAndReplayCounters_RFC6311(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ha        bool
		msgIDOnly bool // the peer announced message-ID sync alone (strongSwan)
	}{
		{"both announce: synced, nothing dropped", true, false},
		{"gateway outside a pair announces nothing: dropped", false, false},
		{"peer announcing message-ID sync alone, after our requests: not sent (its IVs), dropped", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw, gw := pskConfigs(t, ModeVirtual)
			gw.HASync = tc.ha
			gw.RetransmitTries = 1
			p := newPair(t, rw, gw)
			p.connect(t)
			checkPaired(t, p, 1)
			saOf(t, p.rw, func(s *ikeSA) {
				if s.peerMIDSync != tc.ha || s.peerReplaySync != tc.ha {
					t.Errorf("road warrior: peer sync support %v/%v, want %v (the gateway announces only in a pair)", s.peerMIDSync, s.peerReplaySync, tc.ha)
				}
			})
			if tc.msgIDOnly {
				saOf(t, p.gw, func(s *ikeSA) { s.peerReplaySync = false })
				if !<-requestFrom(t, p.gw) { // a request before the record
					t.Fatal("the gateway's request went unanswered")
				}
			}
			all, err := p.gw.ExportAll()
			if err != nil || len(all) != 1 {
				t.Fatal(all, err)
			}
			// After the record: two requests of the old gateway, one of
			// the road warrior, and ESP the old gateway accepts.
			for range 2 {
				if !<-requestFrom(t, p.gw) {
					t.Fatal("the old gateway's request went unanswered")
				}
			}
			p.inform(t, rwAddr)
			rc, gc := p.rp.snapshot()[0], p.gp.snapshot()[0]
			replay, _ := sealWith(t, rc.Out)
			if _, err := gc.In.Open(rwAddr, replay); err != nil {
				t.Fatal(err)
			}
			outBefore := rc.Out.LastSeq()

			const jump = 5000
			gw2, pl2 := p.standby(t, gw)
			if err := gw2.ImportSA(all[0].Data, jump); err != nil {
				t.Fatal(err)
			}
			p.takeOver(gw2)
			p.gp = pl2
			dropped := p.rw.Counters().Dropped
			want := 0
			if tc.ha && !tc.msgIDOnly {
				want = 1
			}
			if n := gw2.SyncPeers(jump); n != want {
				t.Fatalf("SyncPeers = %d, want %d", n, want)
			}
			if n := gw2.SyncPeers(jump); n != 0 {
				t.Fatalf("SyncPeers again = %d: an SA is synced once per import", n)
			}
			if want == 0 {
				if <-requestFrom(t, gw2) {
					t.Fatal("the road warrior answered a request with an ID it had seen: the test cannot tell a sync from none")
				}
				if p.rw.Counters().Dropped == dropped {
					t.Error("the road warrior did not count the stale request as dropped")
				}
				return
			}
			waitFor(t, "both sides synced", func() bool { return gw2.Counters().Synced == 1 && p.rw.Counters().Synced == 1 })
			var gwNext, gwPeerNext, rwNext, rwPeerNext uint32
			saOf(t, gw2, func(s *ikeSA) { gwNext, gwPeerNext = s.nextID, s.peerNext })
			saOf(t, p.rw, func(s *ikeSA) { rwNext, rwPeerNext = s.nextID, s.peerNext })
			if gwNext != rwPeerNext || rwNext != gwPeerNext {
				t.Errorf("after the sync the gateway sends %d, the road warrior expects %d; the road warrior sends %d, the gateway expects %d",
					gwNext, rwPeerNext, rwNext, gwPeerNext)
			}
			if !<-requestFrom(t, gw2) {
				t.Error("the new gateway's request was not answered after the sync")
			}
			p.inform(t, rwAddr)
			if d := p.rw.Counters().Dropped; d != dropped {
				t.Errorf("the road warrior dropped %d messages across the takeover", d-dropped)
			}
			if got := rc.Out.LastSeq(); got < outBefore+jump {
				t.Errorf("road warrior's outbound counter %d after the replay sync, want at least %d + %d (§4.2)", got, outBefore, jump)
			}
			checkPaired(t, p, 1) // fresh ESP both ways still opens
			if _, err := pl2.snapshot()[0].In.Open(rwAddr, replay); err == nil {
				t.Error("ESP the old gateway accepted after its checkpoint opened again on the new one after the replay sync")
			}
		})
	}
}

// TestAnswerMIDSyncRules_RFC6311_5_1 drives the road warrior's side with
// sync requests sealed by the gateway's IKE SA: the rules of §4.1 and
// §5.1, each case after the one before on the same SA.
func TestAnswerMIDSyncRules_RFC6311_5_1(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	gw.HASync = true
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	var peerNext, next uint32
	saOf(t, p.rw, func(s *ikeSA) { peerNext, next = s.peerNext, s.nextID })
	// deliver hands the road warrior a sync request with ps from the
	// gateway and returns whether it was answered, and the answer.
	deliver := func(ps ...message.Payload) (message.MIDSync, bool) {
		var pkts [][]byte
		saOf(t, p.gw, func(s *ikeSA) { pkts = s.protect(message.INFORMATIONAL, 0, false, ps) })
		before := len(p.w.log)
		p.w.mu.Lock()
		p.w.owners[gwAddr] = nil // the answer stays in the log
		p.w.mu.Unlock()
		defer func() { p.w.mu.Lock(); p.w.owners[gwAddr] = p.gw; p.w.mu.Unlock() }()
		for _, b := range pkts {
			p.rw.Handle(b, rwAddr, netip.AddrPortFrom(gwAddr, 500), false)
		}
		p.w.mu.Lock()
		log := p.w.log[before:]
		p.w.mu.Unlock()
		if len(log) == 0 {
			return message.MIDSync{}, false
		}
		var ans message.MIDSync
		saOf(t, p.gw, func(s *ikeSA) {
			m, err := message.Parse(log[len(log)-1])
			if err != nil {
				t.Fatal(err)
			}
			enc := encryptedOf(m)
			pt, err := s.recvKey.open(m.Raw[:enc.AADLen], enc.Body)
			if err != nil {
				t.Fatal(err)
			}
			rps, err := message.ParsePayloads(enc.Next, pt)
			if err != nil || m.Header.MsgID != 0 || !m.Header.IsResponse() {
				t.Fatalf("answer: %v, ID %d, response %v", err, m.Header.MsgID, m.Header.IsResponse())
			}
			ns := filterNotify(rps, message.IKEV2_MESSAGE_ID_SYNC)
			if len(ns) != 1 {
				t.Fatalf("answer without IKEV2_MESSAGE_ID_SYNC: %v", rps)
			}
			ans, _ = message.ParseMIDSync(ns[0].Data)
		})
		return ans, true
	}
	sync := func(req message.MIDSync, extra ...message.Payload) []message.Payload {
		return append([]message.Payload{notify(message.IKEV2_MESSAGE_ID_SYNC, req.Encode())}, extra...)
	}
	first := message.MIDSync{Nonce: 1, Send: peerNext + 10, Recv: next + 3}
	for _, tc := range []struct {
		name     string
		ps       []message.Payload
		answered bool
		want     message.MIDSync
	}{
		{"§4.1: the answer returns the nonce, takes the larger IDs of each side", sync(first), true,
			message.MIDSync{Nonce: 1, Send: next + 3, Recv: peerNext + 10}},
		{"§2.1: a retransmitted sync gets the same answer", sync(first), true,
			message.MIDSync{Nonce: 1, Send: next + 3, Recv: peerNext + 10}},
		{"§5.1: a sync not above the last one is dropped", sync(message.MIDSync{Nonce: 2, Send: peerNext + 10, Recv: 0}), false, message.MIDSync{}},
		{"§5.1: a sync below the IDs seen is dropped", sync(message.MIDSync{Nonce: 3, Send: peerNext, Recv: 0}), false, message.MIDSync{}},
		{"§4.1: our IDs never go back for a lower expectation", sync(message.MIDSync{Nonce: 4, Send: peerNext + 20, Recv: 0}), true,
			message.MIDSync{Nonce: 4, Send: next + 3, Recv: peerNext + 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, answered := deliver(tc.ps...)
			if answered != tc.answered || got != tc.want {
				t.Fatalf("answered %v with %+v, want %v with %+v", answered, got, tc.answered, tc.want)
			}
		})
	}
	// A message ID 0 request with anything besides the sync notifies is
	// not a sync (§4): it goes through the window, where ID 0 is stale.
	out := p.rp.snapshot()[0].Out
	seqBefore := out.LastSeq()
	if _, answered := deliver(sync(message.MIDSync{Nonce: 5, Send: peerNext + 30}, notify(message.INITIAL_CONTACT, nil))...); answered {
		t.Error("a message ID 0 request with another payload was answered as a sync")
	}
	// The replay counter sync moves every outbound Child SA (§4.2), only
	// with its own sync's nonce.
	if _, ok := deliver(sync(message.MIDSync{Nonce: 6, Send: peerNext + 40}, notify(message.IPSEC_REPLAY_COUNTER_SYNC, message.ReplaySync{Nonce: 7, Delta: 100}.Encode()))...); !ok {
		t.Fatal("sync with a foreign replay nonce unanswered")
	}
	if out.LastSeq() != seqBefore {
		t.Errorf("a replay sync of another nonce moved the counter %d -> %d", seqBefore, out.LastSeq())
	}
	if _, ok := deliver(sync(message.MIDSync{Nonce: 8, Send: peerNext + 50}, notify(message.IPSEC_REPLAY_COUNTER_SYNC, message.ReplaySync{Nonce: 8, Delta: 100}.Encode()))...); !ok {
		t.Fatal("sync with a replay sync unanswered")
	}
	if out.LastSeq() != seqBefore+100 {
		t.Errorf("outbound counter %d after a replay sync of 100, want %d", out.LastSeq(), seqBefore+100)
	}
}

// TestContextCarriesAAA_Seed004: an EAP peer's RADIUS authorization moves
// with its IKE SA: User-Name, Class, Acct-Session-Id, the
// Framed-IP-Address (outside the policy's pool: leased to the user, which
// the import without it refused as "not in its pool"), and the
// Session-Timeout's deadline, which runs on rather than restarting.
func TestContextCarriesAAA_Seed004(t *testing.T) {
	msk := append(bytes.Repeat([]byte{0x5a}, 32), make([]byte, 32)...)
	framed := netip.MustParseAddr("100.64.1.77")
	back := &toyBackend{msk: msk[:32], authz: Authorization{VirtualIP4: framed, Class: [][]byte{[]byte("gold")},
		SessionID: "acct-0001", SessionTimeout: time.Hour}}
	rw, gw := eapConfigs(t, back, func() *toyMethod { return &toyMethod{msk: msk} })
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	var end time.Time
	saOf(t, p.gw, func(s *ikeSA) { end = s.created.Add(s.sessionEnd) })
	all, err := p.gw.ExportAll()
	if err != nil || len(all) != 1 {
		t.Fatal(all, err)
	}
	time.Sleep(20 * time.Millisecond)
	gw2, pl2 := p.standby(t, gw)
	if err := gw2.ImportSA(all[0].Data, 100); err != nil {
		t.Fatal(err)
	}
	p.takeOver(gw2)
	p.gp = pl2
	checkPaired(t, p, 1)
	a := pl2.snapshot()[0].AAA
	if a == nil || a.User != "rw1@roamsec.example" || a.VirtualIP4 != framed || len(a.Class) != 1 || string(a.Class[0]) != "gold" ||
		a.SessionID != "acct-0001" || a.SessionTimeout != time.Hour {
		t.Fatalf("imported Child SA's authorization %+v", a)
	}
	saOf(t, gw2, func(s *ikeSA) {
		// The deadline is the exporter's (to the millisecond of the
		// record), not an hour from the import.
		if d := s.created.Add(s.sessionEnd).Sub(end); d < -5*time.Millisecond || d > 5*time.Millisecond {
			t.Errorf("Session-Timeout deadline moved by %v in the import", d)
		}
		if who := gw2.leased[framed]; who != "user rw1@roamsec.example" {
			t.Errorf("Framed-IP-Address %v leased to %q on the importer", framed, who)
		}
	})
}
