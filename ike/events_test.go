package ike

import (
	"errors"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

// drain collects the events queued so far, waiting settle for more.
func drain(ch <-chan Progress, settle time.Duration) []Progress {
	var out []Progress
	for {
		select {
		case p := <-ch:
			out = append(out, p)
		case <-time.After(settle):
			return out
		}
	}
}

func terminals(ps []Progress, gen int) []Progress {
	var out []Progress
	for _, p := range ps {
		if p.Gen == gen && p.Kind.Terminal() {
			out = append(out, p)
		}
	}
	return out
}

// RFC 7296 §2.4: a peer that stops answering ends the IKE SA once. The
// endpoint reports that as exactly one terminal event of the line (it used
// to report "failed" and then "deleted", and a caller reconnected twice).
func TestDeadPeerOneTerminalEvent_RFC7296_2_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.DPD, rw.RetransmitTimeout, rw.RetransmitTries = 50*time.Millisecond, 20*time.Millisecond, 2
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	p.w.drop.Store(true)
	waitFor(t, "the road warrior to declare the gateway dead", func() bool { return !p.rw.Alive(gen) })
	evs := drain(p.prog, 300*time.Millisecond)
	term := terminals(evs, gen)
	if len(term) != 1 {
		t.Fatalf("%d terminal events for line %d, want 1: %v", len(term), gen, term)
	}
	if term[0].Kind != EvFailed || !errors.Is(term[0].Err, ErrPeerSilent) || term[0].Reason != DownPeerDead {
		t.Fatalf("terminal event %v (%v, %v), want EvFailed, ErrPeerSilent, peer dead", term[0].Kind, term[0].Err, term[0].Reason)
	}
	for _, e := range evs {
		if e.Gen != gen {
			t.Errorf("event %v of line %d, want %d", e.Kind, e.Gen, gen)
		}
	}
}

// An IKE SA rekey (§2.18) continues its line: the events after it carry
// the same Gen, and the old SA reports no terminal event.
func TestIKERekeyKeepsGeneration_RFC7296_2_18(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	before := p.rw.ikeSPIs()
	p.rw.Rekey(true)
	waitFor(t, "the IKE SA rekey", func() bool {
		after := p.rw.ikeSPIs()
		return len(after) == 1 && len(before) == 1 && after[0] != before[0]
	})
	if !p.rw.Alive(gen) {
		t.Fatalf("line %d not alive after an IKE SA rekey", gen)
	}
	if term := terminals(drain(p.prog, 200*time.Millisecond), gen); len(term) != 0 {
		t.Fatalf("an IKE SA rekey reported terminal events %v", term)
	}
}

// Reset removes every Child SA of the old IKE SA from the data path and
// sends DELETE, so the peer removes its side too (no orphan either way).
func TestResetRemovesEverySA_RFC7296_1_4_1(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 2)
	p.rw.Reset()
	if n := len(p.rp.snapshot()); n != 0 {
		t.Fatalf("%d Child SAs left on the road warrior after Reset", n)
	}
	if p.rw.Alive(gen) {
		t.Fatal("line still alive after Reset")
	}
	waitFor(t, "the gateway to remove its SAs", func() bool { return len(p.gp.snapshot()) == 0 && !p.gw.Established() })
	term := terminals(drain(p.prog, 100*time.Millisecond), gen)
	if len(term) != 1 || term[0].Kind != EvDeleted || term[0].Reason != DownReset {
		t.Fatalf("terminal events %v, want one EvDeleted (reset)", term)
	}
}

// §2.4: INITIAL_CONTACT from the same identity replaces every SA of the
// old IKE SA on the responder: its Child SAs leave the data path too, not
// only the IKE SA. Here the road warrior's DELETE is lost, as after a
// crash.
func TestInitialContactRemovesOldChildSAs_RFC7296_2_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 2)
	old := p.gp.snapshot()
	p.w.drop.Store(true)
	p.rw.Reset() // the DELETE is lost
	p.w.drop.Store(false)
	p.connect(t)
	checkPaired(t, p, 2)
	if n := len(p.gw.SAs()); n != 1 {
		t.Fatalf("gateway has %d IKE SAs, want 1", n)
	}
	now := map[*Child]bool{}
	for _, c := range p.gp.snapshot() {
		now[c] = true
	}
	for _, c := range old {
		if now[c] {
			t.Errorf("gateway still has the old Child SA %s", c.Name)
		}
	}
}

// The indexes that replace walks over every IKE SA (inbound SPIs for
// allocSPI, identities for INITIAL_CONTACT) hold exactly what is alive:
// the installed Child SAs' SPIs and the established IKE SAs, nothing after
// a reconnect or a reset.
func TestIndexesFollowTheLiveSAs(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	p.connect(t)
	p.w.drop.Store(true)
	p.rw.Reset()
	p.w.drop.Store(false)
	p.connect(t)
	checkPaired(t, p, 2)
	for side, e := range map[string]*Endpoint{"road warrior": p.rw, "gateway": p.gw} {
		e.mu.Lock()
		want := map[uint32]struct{}{}
		nIKE := 0
		for _, s := range e.sas {
			if s.state == stEstablished {
				nIKE++
			}
			for _, c := range s.children {
				want[c.In.SPI] = struct{}{}
			}
		}
		indexed := 0
		for _, head := range e.byPeer {
			for o := head; o != nil; o = o.byPeer.next {
				indexed++
			}
		}
		got := maps.Clone(e.spisIn)
		e.mu.Unlock()
		if !maps.Equal(got, want) {
			t.Errorf("%s: inbound SPI index %v, want %v", side, got, want)
		}
		if indexed != nIKE {
			t.Errorf("%s: %d IKE SAs indexed by peer, %d established", side, indexed, nIKE)
		}
	}
	p.gw.Reset()
	p.gw.mu.Lock()
	defer p.gw.mu.Unlock()
	if len(p.gw.spisIn) != 0 || len(p.gw.byPeer) != 0 {
		t.Errorf("after Reset: %d SPIs, %d identities indexed", len(p.gw.spisIn), len(p.gw.byPeer))
	}
}

// Callers choose by the error's type, never its text.
func TestErrorsTyped(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		target error
	}{
		{"NO_PROPOSAL_CHOSEN is ErrNoProposal", &NotifyError{Exchange: message.IKE_SA_INIT, Type: message.NO_PROPOSAL_CHOSEN}, ErrNoProposal},
		{"INTERNAL_ADDRESS_FAILURE is ErrNoVirtualAddress", &NotifyError{Type: message.INTERNAL_ADDRESS_FAILURE}, ErrNoVirtualAddress},
		{"AUTHENTICATION_FAILED is ErrAuthRefused", &NotifyError{Exchange: message.IKE_AUTH, Type: message.AUTHENTICATION_FAILED}, ErrAuthRefused},
		{"an exchange error unwraps", &ExchangeError{Exchange: message.IKE_AUTH, Err: ErrPeerSilent}, ErrPeerSilent},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.target) {
			t.Errorf("%s: errors.Is false for %v", c.name, c.err)
		}
	}
	if errors.Is(&NotifyError{Type: message.TS_UNACCEPTABLE}, ErrNoProposal) {
		t.Error("TS_UNACCEPTABLE matched ErrNoProposal")
	}
}

// RFC 3554 §2 case 1 in virtual-address mode: the path-monitoring Child SA
// (outer = inner, our outer addresses <=> the gateway's) is negotiated too,
// and the gateway authorizes it by the outer addresses of the peer's IKE
// SA, the peer having no addresses of its own in the policy.
func TestVirtualModeHostToHostChild_RFC3554_2(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.HostToHost = true
	gw.Peers[0].Addresses = nil
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 2)
	var hosts *Child
	for _, c := range p.rp.snapshot() {
		if c.HostToHost {
			hosts = c
		}
	}
	if hosts == nil {
		t.Fatal("no host-to-host Child SA in virtual-address mode")
	}
	for _, a := range []netip.Addr{rwAddr, rwAddr2} {
		if !hosts.Selector.Local.Contains(a) {
			t.Errorf("host-to-host selector %v lacks our outer address %v", hosts.Selector, a)
		}
	}
	for _, a := range []netip.Addr{gwAddr, gwAddr2} {
		if !hosts.Selector.Remote.Contains(a) {
			t.Errorf("host-to-host selector %v lacks the gateway's outer address %v", hosts.Selector, a)
		}
	}
	if len(hosts.VirtualIP) != 0 {
		t.Errorf("host-to-host Child SA carries virtual addresses %v", hosts.VirtualIP)
	}
}

// Without a virtual address (RFC 3554 mode) the outer addresses of the
// IKE SA authorize nothing: the policy's addresses do (RFC 3554 §4).
func TestHostToHostNeedsAuthorityInRFC3554Mode_RFC3554_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	gw.Peers[0].Addresses = []netip.Prefix{netip.MustParsePrefix("192.0.2.2/32")}
	rw.LocalTS = []netip.Prefix{netip.MustParsePrefix("192.0.2.2/32")}
	p := newPair(t, rw, gw)
	p.connect(t)
	waitFor(t, "the host-to-host Child SA refused", func() bool {
		select {
		case pr := <-p.prog:
			var ne *NotifyError
			return pr.Kind == EvChildFailed && errors.As(pr.Err, &ne) && ne.Type == message.TS_UNACCEPTABLE
		default:
		}
		return false
	})
	for _, c := range p.gp.snapshot() {
		if c.HostToHost {
			t.Fatalf("gateway installed a host-to-host Child SA for addresses outside the peer's authority: %v", c.Selector)
		}
	}
}

// §2.4 after a freeze: an initiator that did not run for longer than a
// liveness check takes (SIGSTOP, suspend) does not send into SAs the peer
// has most likely deleted: it ends the IKE SA, once. A shorter gap, or
// none, leaves it alone.
func TestFrozenInitiatorEndsItsIKESA_RFC7296_2_4(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	rw.DPD, rw.RetransmitTimeout, rw.RetransmitTries = 100*time.Millisecond, 50*time.Millisecond, 2
	p := newPair(t, rw, gw)
	gen, err := p.rw.Connect(rwAddr, netip.AddrPortFrom(gwAddr, 500))
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, p, 1)
	time.Sleep(3 * freezeTick) // idle and healthy: DPD and the watch keep it
	now := time.Now().Round(0)
	limit := p.rw.freezeLimit()
	p.rw.mu.Lock()
	p.rw.checkFreeze(now.Add(-freezeTick-limit/2), now)
	p.rw.mu.Unlock()
	if !p.rw.Alive(gen) {
		t.Fatal("an IKE SA ended after a gap shorter than a liveness check")
	}
	p.rw.mu.Lock()
	p.rw.checkFreeze(now.Add(-freezeTick-limit-time.Second), now)
	p.rw.mu.Unlock()
	if p.rw.Alive(gen) {
		t.Fatal("the IKE SA outlived a freeze longer than a liveness check")
	}
	term := terminals(drain(p.prog, 100*time.Millisecond), gen)
	if len(term) != 1 || !errors.Is(term[0].Err, ErrSuspended) {
		t.Fatalf("terminal events %v, want one EvFailed with ErrSuspended", term)
	}
}
