package ike

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// Endpoint runs IKE SAs: a road warrior's one connection, or every road
// warrior's connection to a gateway. Messages come in through Handle (from
// the UDP 500 and 4500 sockets); timers drive retransmissions, liveness
// checks and rekeying. One lock serialises the state; a responder's
// Diffie-Hellman (IKE_SA_INIT) and public-key work (IKE_AUTH) run outside
// it, so several IKE goroutines use several cores, and the data path never
// waits for any of it (the daemon hands IKE over through a bounded queue).
type Endpoint struct {
	cfg Config

	mu  sync.Mutex
	sas map[uint64]*ikeSA // by our SPI
	// spisIn: the inbound SPIs of the installed Child SAs (allocSPI).
	spisIn map[uint32]struct{}
	// byPeer: the established IKE SAs by peer identity (peerKey), for
	// INITIAL_CONTACT; an SA leaves it when it dies.
	byPeer map[string]*ikeSA // the first of a list through ikeSA.byPeer
	// byInit: the established IKE SAs by initiator SPI (ExportSA, which a
	// standby calls on every Change); the initiator picks it, so two peers
	// may share one (initIndex).
	byInit map[uint64][]*ikeSA
	half   halfOpenTable // responder: IKE SAs not yet authenticated (halfopen.go)
	// fragBytes is the RFC 7383 reassembly memory all SAs hold.
	fragBytes int
	leases    map[string]netip.Addr // virtual addresses by identity
	leased    map[netip.Addr]string
	// lastVIP: an initiator's virtual addresses of its last IKE SA, asked
	// for again when it connects again (RFC 7296 §3.15.1).
	lastVIP []netip.Addr
	secret  [32]byte // cookie secret (RFC 7296 §2.6)
	dhReuse *DHCache // the responder's DH values while cookies are demanded (respondInit), each for dhReuseFor
	closed  bool
	seq     int
	// ctx ends at Close: the EAP relays (eap.go) give up; wg joins them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// freeze notices that this process did not run (see checkFreeze).
	freeze *time.Timer
	// lastInvalidSPI: our last INVALID_IKE_SPI answer (answerUnknownSPI).
	lastInvalidSPI time.Time
	// scr is the lock-free cookie path's state (Screen, screen.go).
	scr screen

	// Stats counts messages dropped before any state was touched.
	Stats Stats
}

// Stats are an endpoint's counters.
type Stats struct {
	Dropped       uint64 // malformed, unknown SPI, out of window, failed integrity
	Retransmitted uint64 // requests we sent again
	Answered      uint64 // retransmitted requests answered from the cache
	// InvalidSPIAnswered: requests for IKE SAs we do not hold answered
	// with INVALID_IKE_SPI (§2.21.4).
	InvalidSPIAnswered uint64
	Cookies            uint64 // IKE_SA_INIT requests answered with a COOKIE
	// CookieMode: cookies are demanded now (CookieThreshold half-open SAs
	// or more); CookieSwitches counts its changes, on and off.
	CookieMode     bool
	CookieSwitches uint64
	// HalfOpen and FragmentBytes are gauges, filled in by Counters.
	HalfOpen      int
	FragmentBytes int
	// EAPAccepted and EAPRejected count the AAA server's verdicts (eap.go).
	EAPAccepted, EAPRejected uint64
	// Synced counts RFC 6311 message-ID syncs completed (a gateway's
	// answered, a peer's answered by us); SyncRefused answers that were
	// not one (hasync.go).
	Synced, SyncRefused uint64
	// Drops counts what the endpoint refused to keep, by reason.
	Drops [numDropReasons]uint64
}

type initKey struct {
	remote netip.AddrPort
	spiI   uint64
}

// New creates an endpoint.
func New(cfg Config) (*Endpoint, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	e := &Endpoint{cfg: cfg, sas: map[uint64]*ikeSA{}, spisIn: map[uint32]struct{}{}, byPeer: map[string]*ikeSA{},
		byInit: map[uint64][]*ikeSA{},
		half:   halfOpenTable{byKey: map[initKey]*ikeSA{}, perSrc: map[netip.Addr]int{}},
		leases: map[string]netip.Addr{}, leased: map[netip.Addr]string{}, dhReuse: &DHCache{Lifetime: dhReuseFor}}
	copy(e.secret[:], randomBytes(32))
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.Stats.CookieMode = cfg.CookieThreshold <= 0 // cookies always
	e.scr.cookieMode.Store(e.Stats.CookieMode)
	if cfg.Initiator {
		e.mu.Lock()
		e.watchFreeze(time.Now().Round(0))
		e.mu.Unlock()
	}
	return e, nil
}

// freezeTick is how often an initiator checks that it has been running.
const freezeTick = time.Second

// watchFreeze runs checkFreeze every freezeTick until Close. Under e.mu.
func (e *Endpoint) watchFreeze(last time.Time) {
	e.freeze = time.AfterFunc(freezeTick, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.closed {
			return
		}
		now := time.Now().Round(0)
		e.checkFreeze(last, now)
		e.watchFreeze(now)
	})
}

// answerUnknownSPI answers a request for an IKE SA we do not hold with
// an unprotected INVALID_IKE_SPI (RFC 7296 §2.21.4: "this may be the
// result of a recent crash of the node"; the response goes where the
// request came from, with its SPIs and Message ID): a road warrior whose
// liveness check gets it connects again at once instead of sending into
// Child SAs we no longer have until its retransmissions run out. Only a
// responder (a gateway) answers, at most one answer per
// invalidSPIInterval (the answer is smaller than the request: no
// amplification, and a flood of requests gets few answers). Under e.mu.
func (e *Endpoint) answerUnknownSPI(h message.Header, local netip.Addr, remote netip.AddrPort, natT bool) {
	if e.cfg.Initiator || e.cfg.NoInvalidSPI || h.IsResponse() || h.SPIr == 0 {
		return
	}
	now := time.Now()
	if now.Sub(e.lastInvalidSPI) < invalidSPIInterval {
		return
	}
	e.lastInvalidSPI = now
	flags := uint8(message.FlagResponse)
	if !h.IsInitiator() {
		flags |= message.FlagInitiator // we were the original initiator of that SA
	}
	r := &message.Message{Header: message.Header{SPIi: h.SPIi, SPIr: h.SPIr, Version: 0x20, Exchange: h.Exchange, Flags: flags, MsgID: h.MsgID},
		Payloads: []message.Payload{notify(message.INVALID_IKE_SPI, nil)}}
	e.Stats.InvalidSPIAnswered++
	e.cfg.Send(r.Encode(), local, remote, natT)
}

// invalidSPIInterval spaces our INVALID_IKE_SPI answers (at most 100/s).
const invalidSPIInterval = 10 * time.Millisecond

// CheckLiveness starts a liveness check (§2.4) now on every established
// IKE SA of an initiator with no request in flight, instead of after DPD
// of silence: the owner has reason to doubt the peer still holds them
// (every path went silent). A peer that answers keeps them; one that
// answers INVALID_IKE_SPI, or not at all, ends them.
func (e *Endpoint) CheckLiveness() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checkLiveness()
}

func (e *Endpoint) checkLiveness() {
	if !e.cfg.Initiator || e.closed {
		return
	}
	for _, s := range e.sas {
		if s.state == stEstablished && s.initiator && s.out == nil {
			s.checkLiveness()
		}
	}
}

// wakeGap: a gap this long in our own running (a short SIGSTOP or
// suspend, shorter than our own liveness limit) starts a liveness check
// at once: the peer's DPD may be shorter than ours.
const wakeGap = 2 * time.Second

// checkFreeze ends an initiator's IKE SAs when the process did not run
// (SIGSTOP, a suspended laptop) between last and now for longer than a
// liveness check takes to give up (DPD plus every retransmission): a peer
// with our settings has deleted them and their Child SAs by now (RFC 7296
// §2.4), and sending ESP into them until our own check fails would only
// blackhole traffic. The owner connects again; the INITIAL_CONTACT of
// that IKE_AUTH removes them on the peer if they are still there. The
// wall clock counts (Round(0)): the monotonic one stops during suspend.
// Under e.mu.
func (e *Endpoint) checkFreeze(last, now time.Time) {
	gap := now.Sub(last) - freezeTick
	if gap <= e.freezeLimit() {
		if gap >= wakeGap {
			e.cfg.Log.Info("IKE: this process did not run for a while (suspended?): checking that the peer still holds the IKE SA",
				"gap", gap.Round(time.Millisecond).String())
			e.checkLiveness()
		}
		return
	}
	for _, s := range e.sas {
		if s.state == stEstablished {
			e.cfg.Log.Warn("IKE: this process did not run for longer than a liveness check takes (suspended?): ending the IKE SA to reconnect",
				"ike", s.name(), "gap", gap.Round(time.Millisecond).String())
			s.fail(DownPeerDead, ErrSuspended)
		}
	}
}

// freezeLimit is how long a liveness check takes to give up: DPD and
// every retransmission.
func (e *Endpoint) freezeLimit() time.Duration {
	return max(e.cfg.DPD, 0) + e.cfg.RetransmitTimeout*time.Duration(1<<(e.cfg.RetransmitTries+1)-1)
}

func (e *Endpoint) logDrop(why string, remote netip.AddrPort, err error) {
	e.Stats.Dropped++
	e.cfg.Log.Debug("IKE message dropped", "from", remote, "why", why, "err", err)
}

// Handle processes one received IKE message (without the non-ESP marker).
// natT says it came in on the UDP 4500 socket. Bad input is counted and
// dropped; nothing a peer sends can panic or block the endpoint.
func (e *Endpoint) Handle(b []byte, local netip.Addr, remote netip.AddrPort, natT bool) {
	h, err := message.ParseHeader(b)
	if err != nil {
		e.mu.Lock()
		e.logDrop("malformed header", remote, err)
		e.mu.Unlock()
		return
	}
	// The received buffer belongs to the socket reader; we keep copies.
	b = bytes.Clone(b[:h.Length])
	if h.Exchange == message.IKE_SA_INIT && !h.IsResponse() {
		e.respondInit(h, b, local, remote, natT) // takes e.mu itself, not around the DH
		return
	}
	// Parsed before the lock (it reads only b): the IKE goroutines
	// parse in parallel.
	m, perr := message.Parse(b)
	if perr == nil {
		e.deferredKeys(h)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	// The I flag says who sent it: our SPI is the other one (§3.1).
	spi := h.SPIi
	if h.IsInitiator() {
		spi = h.SPIr
	}
	s := e.sas[spi]
	if s == nil {
		e.logDrop("unknown IKE SPI", remote, nil)
		e.answerUnknownSPI(h, local, remote, natT)
		return
	}
	if (h.IsInitiator() && s.initiator) || (!h.IsInitiator() && !s.initiator) {
		e.logDrop("I flag does not match the SA's roles", remote, nil)
		return
	}
	if !s.initiator && h.SPIi != s.spiI || s.initiator && s.state > stInitSent && h.SPIr != s.spiR {
		e.logDrop("SPI mismatch", remote, nil)
		return
	}
	if perr != nil {
		e.logDrop("malformed message", remote, perr)
		return
	}
	if h.NextPayload == message.PayloadNotify && s.initiator && s.lostSA(h, m) {
		return
	}
	if h.Exchange == message.IKE_SA_INIT {
		if s.state != stInitSent || s.out == nil || h.MsgID != 0 {
			e.logDrop("unexpected IKE_SA_INIT response", remote, nil)
			return
		}
		s.initResponse(m, local, remote)
		return
	}
	s.handleEncrypted(m, local, remote, natT)
}

// Connect starts an initiator's IKE SA to remote (port 500) from local.
// It returns at once, with the generation (Progress.Gen) of the new IKE SA
// line; Progress and the Install callback tell the rest.
func (e *Endpoint) Connect(local netip.Addr, remote netip.AddrPort) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.cfg.Initiator {
		return 0, errors.New("ike: a responder does not connect")
	}
	if e.closed {
		return 0, errors.New("ike: endpoint closed")
	}
	s := e.newSA(true, local, remote, false)
	if err := s.startInit(); err != nil {
		s.fail(DownNegotiation, err)
		return 0, err
	}
	return s.id, nil
}

// Reset ends every IKE SA, as Close does, but leaves the endpoint open: a
// road warrior starting over (a reconnect) first removes everything of
// the old IKE SA, so no Child SA of it can outlive it (RFC 7296 §2.4: the
// INITIAL_CONTACT of the next IKE_AUTH tells the peer to do the same). An
// established SA gets a DELETE, without waiting for the answer. Each SA
// reports its terminal event (DownReset).
func (e *Endpoint) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.endAll(DownReset)
}

// endAll deletes every IKE SA (DELETE to the established ones, without
// waiting for the answer) for reason; e.mu is held.
func (e *Endpoint) endAll(reason DownReason) {
	for _, s := range e.sas {
		if s.state == stEstablished {
			s.sendDeleteNow()
		}
		s.destroy(reason)
	}
}

// DropAll forgets every IKE SA and removes their Child SAs without a
// word to the peers: a gateway of an HA pair that becomes standby does
// this, the other gateway carries the SAs on with the same SPIs, so a
// DELETE (RFC 7296 §1.4.1) would end them there too. It returns how many
// IKE SAs were dropped.
func (e *Endpoint) DropAll() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, s := range e.sas {
		if s.state == stEstablished {
			n++
		}
		s.destroy(DownHandedOver)
	}
	return n
}

// Alive reports whether an IKE SA of line gen exists (half-open or up).
func (e *Endpoint) Alive(gen int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.sas {
		if s.id == gen && s.state != stDead {
			return true
		}
	}
	return false
}

// Close deletes every IKE SA (sending DELETE, without waiting for the
// answer) and removes their Child SAs; it returns once the EAP relays in
// flight have given up.
func (e *Endpoint) Close() {
	e.mu.Lock()
	e.endAll(DownShutdown)
	e.closed = true
	e.stopReaper()
	if e.freeze != nil {
		e.freeze.Stop()
	}
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}

// Established reports whether some IKE SA is up.
func (e *Endpoint) Established() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.sas {
		if s.state == stEstablished {
			return true
		}
	}
	return false
}

func (e *Endpoint) newSA(initiator bool, local netip.Addr, remote netip.AddrPort, natT bool) *ikeSA {
	e.seq++
	s := &ikeSA{e: e, id: e.seq, initiator: initiator, local: local, remote: remote, natT: natT, created: time.Now(), lastHeard: time.Now()}
	spi := randomSPI64()
	for e.sas[spi] != nil {
		spi = randomSPI64()
	}
	if initiator {
		s.spiI = spi
	} else {
		s.spiR = spi
	}
	e.sas[spi] = s
	return s
}

func (e *Endpoint) progress(p Progress) {
	if e.cfg.Progress != nil {
		e.cfg.Progress(p)
	}
}

// cookie is RFC 7296 §2.6's stateless cookie: a version byte and
// HMAC(secret, Ni | IPi | SPIi).
func (e *Endpoint) cookie(ni []byte, remote netip.AddrPort, spiI uint64) []byte {
	m := hmac.New(sha256.New, e.secret[:])
	m.Write(ni)
	m.Write(remote.Addr().AsSlice())
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], spiI)
	m.Write(b[:])
	return append([]byte{1}, m.Sum(nil)...)
}

// lease hands identity id an address from pool, the same one while the
// lease lasts (RFC 7296 §2.19: a stable inner address). want, if valid,
// is the address the peer asked for (§3.15.1: the one it had before a
// reconnect, e.g. after we restarted): it gets it if it holds no lease
// here and nobody else holds that address, so its established
// connections on that address survive the reconnect.
func (e *Endpoint) lease(id string, pool netip.Prefix, want netip.Addr) (netip.Addr, error) {
	if a, ok := e.leases[id+"|"+pool.String()]; ok {
		return a, nil
	}
	if want.IsValid() && pool.Contains(want) && want != pool.Masked().Addr() && (!want.Is4() || pool.Contains(want.Next())) {
		if _, taken := e.leased[want]; !taken {
			e.leases[id+"|"+pool.String()] = want
			e.leased[want] = id
			return want, nil
		}
	}
	a := pool.Masked().Addr().Next() // skip the network address
	for ; a.IsValid() && pool.Contains(a); a = a.Next() {
		if _, taken := e.leased[a]; taken {
			continue
		}
		if a.Is4() && !pool.Contains(a.Next()) {
			break // the broadcast address
		}
		e.leases[id+"|"+pool.String()] = a
		e.leased[a] = id
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("pool %v exhausted", pool)
}

// Move points our IKE SAs at a new path: local, the source we now use,
// and remote, the peer's address on it (mobility). With a peer that
// supports MOBIKE it sends UPDATE_SA_ADDRESSES (RFC 4555 §3.5).
func (e *Endpoint) Move(local, remote netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.sas {
		if s.state != stEstablished || !s.initiator {
			continue
		}
		if local.Is4() != s.remote.Addr().Is4() {
			continue
		}
		if s.local == local && s.remote.Addr() == remote {
			continue
		}
		s.local, s.remote = local, netip.AddrPortFrom(remote, s.remote.Port())
		s.changed(ChangeMoved)
		s.e.cfg.Log.Info("IKE SA moved", "ike", s.name(), "local", local, "remote", s.remote)
		if s.out != nil {
			// Retransmit the outstanding request on the new path at once.
			s.transmit(s.out)
		}
		if s.peerMOBIKE {
			s.updateAddresses()
		}
	}
}

// Readdress: our address old went away and new took its place on the
// same link (mobility's address adoption, e.g. a DHCP lease changed). Our
// address list follows; a MOBIKE peer learns it (RFC 4555 §3.6: the
// additional addresses of UPDATE_SA_ADDRESSES); and the path-monitoring
// Child SA, whose selectors are our outer addresses (outer = inner), is
// replaced by a new one that names the new address, so the adopted path's
// heartbeats ride an SA again and can confirm it; the old one is deleted
// once the new one is in. The IKE SA moves if it used old.
func (e *Endpoint) Readdress(old, new netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := slices.Index(e.cfg.LocalAddrs, old)
	if i < 0 || slices.Contains(e.cfg.LocalAddrs, new) || e.closed {
		return
	}
	e.cfg.LocalAddrs = slices.Clone(e.cfg.LocalAddrs)
	e.cfg.LocalAddrs[i] = new
	for _, s := range e.sas {
		if s.state != stEstablished || !s.initiator {
			continue
		}
		if s.local == old {
			s.local = new
			s.changed(ChangeMoved)
		}
		if s.peerMOBIKE {
			s.updateAddresses()
		}
		for _, c := range slices.Clone(s.children) {
			if c.HostToHost && !c.replaced {
				o := s.newChildOffer(true)
				// The gateway's side stays what it was: only ours changed.
				o.ltsr, o.readdresses = c.remoteTS, c
				s.createChild(o)
			}
		}
		e.cfg.Log.Info("IKE: our address changed", "ike", s.name(), "old", old, "new", new)
	}
}

// Rekey starts a rekey of every Child SA (child) or IKE SA now; for tests
// and the CLI.
func (e *Endpoint) Rekey(ike bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.sas {
		if s.state != stEstablished {
			continue
		}
		if ike {
			s.rekeyIKE()
			continue
		}
		for _, c := range s.children {
			s.rekeyChild(c)
		}
	}
}

// authorityOf is what a peer may claim as inner addresses (RFC 3554 §4):
// its certificate's addresses and its policy's pools.
func authorityOf(p *Peer, cert []netip.Prefix) []netip.Prefix {
	out := append([]netip.Prefix(nil), cert...)
	if p != nil {
		out = append(out, p.Addresses...)
	}
	return out
}

// findPeer returns the responder's policy for an identity: the entry
// naming it, else (for certificate authentication) a wildcard entry.
func (e *Endpoint) findPeer(id auth.Identity, withPSK bool) *Peer {
	return findPeer(e.cfg.Peers, id, withPSK)
}

// EAP entries are not among them: those authenticate only with EAP
// (findEAPPeer).
func findPeer(peers []Peer, id auth.Identity, withPSK bool) *Peer {
	for i := range peers {
		p := &peers[i]
		if len(p.ID.Data) > 0 && p.ID.Equal(id) && (!withPSK || p.PSK != nil) && !p.EAP {
			return p
		}
	}
	if withPSK {
		return nil
	}
	for i := range peers {
		if p := &peers[i]; len(p.ID.Data) == 0 && !p.EAP {
			return p
		}
	}
	return nil
}

// SAInfo describes one established IKE SA, for status and metrics.
type SAInfo struct {
	Name        string         `json:"name"`
	PeerID      string         `json:"peer_id"`
	Initiator   bool           `json:"initiator"`
	Local       netip.AddrPort `json:"local"`
	Remote      netip.AddrPort `json:"remote"` // where the peer is now (MOBIKE, NAT)
	SPIi        string         `json:"spi_i"`
	SPIr        string         `json:"spi_r"`
	Proposal    string         `json:"proposal"`
	NAT         bool           `json:"nat"`
	MOBIKE      bool           `json:"mobike"`
	Established time.Time      `json:"established"`
	Rekeys      int            `json:"ike_rekeys"`
	Children    int            `json:"child_sas"`
	// PeerEndpoints (gateway): where the peer's authenticated ESP came
	// from, and whether each path lives (tunnel.PeerTracker).
	PeerEndpoints []tunnel.PeerEndpoint `json:"peer_endpoints,omitempty"`
}

// SAs lists the established IKE SAs.
func (e *Endpoint) SAs() []SAInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []SAInfo
	for _, s := range e.sas {
		if s.state != stEstablished {
			continue
		}
		out = append(out, SAInfo{Name: s.name(), PeerID: s.peerID.String(), Initiator: s.initiator,
			Local: netip.AddrPortFrom(s.local, s.localPort()), Remote: s.remote,
			SPIi: fmt.Sprintf("%016x", s.spiI), SPIr: fmt.Sprintf("%016x", s.spiR), Proposal: s.prop.String(),
			NAT: s.natHere || s.natThere, MOBIKE: s.peerMOBIKE, Established: s.authenticated, Rekeys: s.rekeys, Children: len(s.children)})
		if s.peerTrack != nil {
			out[len(out)-1].PeerEndpoints = s.peerTrack.Endpoints()
		}
	}
	return out
}
