package ike

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/tunnel"
)

// Mode is how a road warrior's inner addresses are chosen.
type Mode uint8

const (
	// ModeRFC3554: the road warrior's own (uplink) addresses are the inner
	// addresses; it offers all of them, and its pools, as TSi, and the
	// gateway checks its authority for each (RFC 3554 §3, §4).
	ModeRFC3554 Mode = iota
	// ModeVirtual: the road warrior asks for an inner address from the
	// gateway's pool with a configuration payload (RFC 7296 §2.19).
	ModeVirtual
)

func (m Mode) String() string {
	if m == ModeVirtual {
		return "virtual-address"
	}
	return "rfc3554"
}

// Peer is a gateway's policy for one road-warrior identity.
type Peer struct {
	// ID the peer must authenticate as; the zero Identity matches any
	// identity that a certificate from our CAs proves.
	ID auth.Identity
	// PSK, if set, is the pre-shared key for this identity.
	PSK []byte
	// Addresses are the addresses and pools this identity may claim as
	// its own inner addresses (RFC 3554 §4), besides those its
	// certificate names.
	Addresses []netip.Prefix
	// VirtualPool hands out inner addresses to peers that ask (CP). An
	// identity gets the same address each time while it is leased.
	VirtualPool  netip.Prefix
	VirtualPool6 netip.Prefix
	DNS          []netip.Addr
	// EAP: the peer authenticates with EAP through Config.EAP (RFC 7296
	// §2.16); EAPOnly lets it ask for EAP-only authentication (RFC 5998).
	EAP     bool
	EAPOnly bool
	// ESPProposals, if set, replace Config.ESPProposals for this peer's
	// Child SAs (a one-time key's objective, seed 002 table 3).
	ESPProposals []ESPProposal
	// OneTime: a policy a OneTimeAuthority made for one IKE SA; a reload
	// (SetPeers) leaves its IKE SA alone.
	OneTime bool
	// EAPAskIdentity: ask the peer for its EAP identity (EAP-Request/
	// Identity) and use that as the user name, instead of its IKE
	// identity (Windows, macOS and iOS clients send an address or a
	// name as IKE identity and the user name in EAP).
	EAPAskIdentity bool
}

// Config configures an Endpoint: one road warrior's connection to its
// gateway (Initiator), or a gateway's answers to its road warriors.
type Config struct {
	Initiator bool
	LocalID   auth.Identity
	// RemoteID, for an initiator, is the identity the gateway must prove;
	// the zero value accepts whatever authenticates (the PSK, or a
	// certificate from our CAs).
	RemoteID auth.Identity
	// PSK is an initiator's pre-shared key; a responder's are in Peers.
	PSK []byte
	// Credential signs our AUTH payload (certificate authentication);
	// nil means PSK.
	Credential *auth.Credential
	// EAPClient, on an initiator, makes the EAP method of one IKE_AUTH:
	// we authenticate with EAP instead of AUTH (RFC 7296 §2.16), after
	// the gateway's AUTH with its certificate (eappeer.go). EAPIdentity
	// is our EAP-Response/Identity; empty: LocalID's text.
	EAPClient   func() EAPMethod
	EAPIdentity string
	// CAs verify peers' certificates; their keys also fill our CERTREQ.
	CAs []*x509.Certificate
	// ChainCache, if set, remembers the peer chains CAs accepted
	// (auth.ChainCache): endpoints that meet the same peer again and
	// again, with the same CAs, may share one.
	ChainCache *auth.ChainCache
	// DHCache, if set, is where an initiator takes its DH values: shared
	// across IKE SAs for a bounded time (RFC 7296 §2.12, DHCache).
	DHCache *DHCache

	Peers []Peer // responder
	// EAP runs the EAP methods of the Peers that use EAP (a RADIUS
	// server); nil: none do.
	EAP EAPBackend
	// OneTime, if set, admits road warriors with one-time keys (IDi
	// ID_KEY_ID, a signature AUTH; onetime.go) that no Peer names.
	OneTime OneTimeAuthority

	IKEProposals []IKEProposal // nil: DefaultIKEProposals
	ESPProposals []ESPProposal // nil: DefaultESPProposals
	// PFS: our Child SA rekeys offer a fresh DH exchange (the ESP
	// proposals' groups; the first IKE proposal's group where they name
	// none), and NONE last: a peer without PFS may decline it (RFC 7296
	// §3.3.3), and then answers without KE.
	PFS bool

	Mode Mode
	// LocalTS are our protected addresses: an initiator offers them as
	// TSi (RFC 3554 mode: its uplink addresses and pools; virtual mode:
	// ignored, the gateway assigns one); a responder narrows TSr to them.
	LocalTS []netip.Prefix
	// RemoteTS, for an initiator, is offered as TSr.
	RemoteTS []netip.Prefix
	// HostToHost: after IKE_AUTH an initiator also negotiates a Child SA
	// between its own outer addresses and the gateway's (RFC 3554 §2 case
	// 1, outer = inner) for the path monitoring (SCTP, probes), in both
	// modes.
	HostToHost bool
	// LocalAddrs are our outer addresses: announced to the peer
	// (ADDITIONAL_IP4/6_ADDRESS, RFC 4555) and accepted as ESP
	// destinations.
	LocalAddrs []netip.Addr

	UDPEncap     bool // ESP in UDP (RFC 3948) even without NAT
	ReplayWindow int

	IKELifetime   time.Duration // rekey the IKE SA after this; 0: never
	ChildLifetime time.Duration // rekey Child SAs after this; 0: never
	DPD           time.Duration // liveness check after this much silence; 0: off
	// NoInvalidSPI: a responder does not answer requests for IKE SAs it
	// does not hold with INVALID_IKE_SPI (§2.21.4): its IKE SAs may come
	// later by import (an HA pair, `context put` after a restart), and
	// the answer would make the road warrior drop an SA about to be
	// carried on.
	NoInvalidSPI bool

	RetransmitTimeout time.Duration // first retransmission; doubles each time (default 1s)
	RetransmitTries   int           // retransmissions before giving up (default 5)
	// CookieThreshold: above this many half-open IKE SAs, IKE_SA_INIT
	// requests must carry a cookie (RFC 7296 §2.6). Default 64.
	CookieThreshold int
	// HalfOpenMax caps the half-open IKE SAs (IKE_SA_INIT answered, not
	// authenticated): at the cap the oldest goes to make room.
	// HalfOpenPerSource caps those from one address: above it IKE_SA_INIT
	// is dropped. Both counted (Stats.Drops). Defaults 10000 and 32.
	HalfOpenMax       int
	HalfOpenPerSource int
	// HalfOpenTimeout: a half-open IKE SA that has not authenticated by
	// then goes. Default 30 × RetransmitTimeout.
	HalfOpenTimeout time.Duration
	// FragmentMemory bounds the RFC 7383 fragments all IKE SAs hold while
	// reassembling, FragmentMemoryPerSA one SA's, in bytes. Defaults 8 MiB
	// and 64 KiB (strongSwan's max_packet is 10,000 bytes).
	FragmentMemory      int
	FragmentMemoryPerSA int
	// FragmentSize: encrypted messages larger than this are sent as
	// RFC 7383 fragments when the peer supports them. Default 1280.
	FragmentSize int

	// Send puts a message on the wire from local to remote. natT means
	// the UDP 4500 socket, where IKE goes behind the non-ESP marker.
	Send func(msg []byte, local netip.Addr, remote netip.AddrPort, natT bool) error
	// Install and Remove hand Child SAs to the data path. Install is
	// called for new and rekeyed Child SAs (the same Name for a rekey);
	// Remove when one is deleted or replaced. Both under the endpoint's
	// lock: they must not call back into it.
	Install func(*Child) error
	Remove  func(*Child)
	// OnLifetime receives the Child SAs' lifetime events.
	OnLifetime func(tunnel.LifetimeEvent)
	// Progress, if set, reports each event (events.go), under the
	// endpoint's lock: it must not block or call back into the endpoint.
	Progress func(Progress)
	// Changed, if set, hears of every change of an established IKE SA
	// (Change): what a hot standby needs to call ExportSA again. Under the
	// endpoint's lock, often (every message): it must only note the SPI,
	// never block or call back into the endpoint. Apart from Progress so
	// that it never crowds a connection's events out.
	Changed func(Change)
	// HASync (a gateway of a hot-standby pair) announces RFC 6311 support
	// in IKE_AUTH (IKEV2_MESSAGE_ID_SYNC_SUPPORTED and
	// IKEV2_REPLAY_COUNTER_SYNC_SUPPORTED), so that after a takeover
	// SyncPeers may resynchronise the peers that announced it too. An
	// initiator always announces it (it answers a cluster's sync, §4).
	HASync bool

	Log *slog.Logger
}

// The defaults of the bounds on unauthenticated state.
const (
	DefaultHalfOpenMax         = 10000
	DefaultHalfOpenPerSource   = 32
	DefaultFragmentMemory      = 8 << 20
	DefaultFragmentMemoryPerSA = 64 << 10
)

func (c *Config) defaults() error {
	if c.IKEProposals == nil {
		c.IKEProposals = DefaultIKEProposals
	}
	if c.ESPProposals == nil {
		c.ESPProposals = DefaultESPProposals
	}
	if c.RetransmitTimeout == 0 {
		c.RetransmitTimeout = time.Second
	}
	if c.RetransmitTries == 0 {
		c.RetransmitTries = 5
	}
	if c.CookieThreshold == 0 {
		c.CookieThreshold = 64
	}
	if c.HalfOpenMax == 0 {
		c.HalfOpenMax = DefaultHalfOpenMax
	}
	if c.HalfOpenPerSource == 0 {
		c.HalfOpenPerSource = DefaultHalfOpenPerSource
	}
	if c.HalfOpenTimeout == 0 {
		c.HalfOpenTimeout = 30 * c.RetransmitTimeout
	}
	if c.FragmentMemory == 0 {
		c.FragmentMemory = DefaultFragmentMemory
	}
	if c.FragmentMemoryPerSA == 0 {
		c.FragmentMemoryPerSA = DefaultFragmentMemoryPerSA
	}
	if c.FragmentSize == 0 {
		c.FragmentSize = 1280
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Send == nil || c.Install == nil || c.Remove == nil {
		return errors.New("ike: Config needs Send, Install and Remove")
	}
	if c.Initiator && c.PSK == nil && c.Credential == nil && c.EAPClient == nil {
		return errors.New("ike: an initiator needs a PSK, a credential or an EAP method")
	}
	if len(c.LocalID.Data) == 0 {
		return errors.New("ike: no local identity")
	}
	return nil
}

// PeerGoneWithin bounds how long an IKE SA with a dead peer lasts: at
// most twice DPD of silence before the liveness check starts (the timer
// runs every DPD), then the check and its retransmissions, each timeout
// double the previous (RFC 7296 §2.4). Zero when DPD is off.
func (c Config) PeerGoneWithin() time.Duration {
	if c.DPD <= 0 {
		return 0
	}
	rt, tries := c.RetransmitTimeout, c.RetransmitTries
	if rt == 0 {
		rt = time.Second
	}
	if tries == 0 {
		tries = 5
	}
	return 2*c.DPD + rt*(1<<(tries+1)-1)
}
