// Package ikectx is the wire form of an IKE SA's security context (seed
// 004 §III): everything another gateway needs to carry on an established
// IKE SA and its Child SAs with the same SPIs and keys and no new
// negotiation. It only encodes and checks; ike builds and installs the
// state (ike/export.go), internal/hactx seals it with the cluster key.
//
// The form is versioned JSON (byte strings in base64, durations in
// nanoseconds), every field named, then the keys in a binary block of
// their own: encoding/json keeps its buffers in a pool that nobody zeroes,
// so no key ever goes through it. A record: the JSON's length (4 bytes,
// big-endian), the JSON, then each key as a length byte and its bytes
// (SK_d, SK_ei, SK_er, SK_pi, SK_pr, then each Child SA's inbound and
// outbound key).
// Decode refuses anything it cannot vouch for (an unknown version or
// field, a size or count out of bounds) with an error, never a panic.
package ikectx

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

// Version is the version this package writes and the only one it reads.
const Version = 1

// Bounds on what Decode accepts.
const (
	MaxSize     = 1 << 20 // one IKE SA's record, bytes
	MaxChildren = 64      // Child SAs of one IKE SA
	MaxKeyLen   = 64      // any one key (SK_* up to SHA-512's 64 bytes)
	MaxList     = 64      // addresses, prefixes, selectors, cached packets
	MaxPacket   = 65535   // one cached response packet
)

// SA is one established IKE SA (RFC 7296) and its Child SAs.
type SA struct {
	Version    int       `json:"v"`
	ExportedAt time.Time `json:"exported_at"`

	Initiator bool           `json:"initiator"` // we are the original initiator (§2.2)
	SPIi      uint64         `json:"spi_i"`
	SPIr      uint64         `json:"spi_r"`
	Local     netip.Addr     `json:"local"`
	Remote    netip.AddrPort `json:"remote"` // the peer's current endpoint (MOBIKE, NAT)
	NATT      bool           `json:"nat_t"`  // on UDP 4500
	NATHere   bool           `json:"nat_here"`
	NATThere  bool           `json:"nat_there"`

	// The negotiated IKE suite (IANA transform IDs) and the keys of
	// RFC 7296 §2.14 (SK_a* are empty: AEAD only).
	Encr     uint16 `json:"encr"`
	EncrBits int    `json:"encr_bits"`
	PRF      uint16 `json:"prf"`
	DH       uint16 `json:"dh"`
	SKd      []byte `json:"-"` // in the key block
	SKei     []byte `json:"-"` // in the key block
	SKer     []byte `json:"-"` // in the key block
	SKpi     []byte `json:"-"` // in the key block
	SKpr     []byte `json:"-"` // in the key block
	// SendIV is the last IV (a counter, RFC 5282 §3.1) we sealed an SK
	// payload with; the importer goes past it.
	SendIV uint64 `json:"send_iv"`

	// The peer: identity, how it authenticated, what it may claim.
	PeerIDType uint8          `json:"peer_id_type"`
	PeerID     []byte         `json:"peer_id"`
	PSKAuth    bool           `json:"psk_auth"`
	Authority  []netip.Prefix `json:"authority,omitempty"`
	CertAddrs  []netip.Prefix `json:"cert_addrs,omitempty"`
	PeerFrag   bool           `json:"peer_frag"` // RFC 7383
	PeerHashes []uint16       `json:"peer_hashes,omitempty"`
	// MOBIKE (RFC 4555): support, the peer's additional addresses, the
	// endpoints it proved it receives at and the one ESP goes to.
	PeerMOBIKE bool `json:"peer_mobike"`
	// RFC 6311 §3: both sides announced message-ID / replay counter sync.
	PeerMIDSync    bool             `json:"peer_mid_sync,omitempty"`
	PeerReplaySync bool             `json:"peer_replay_sync,omitempty"`
	PeerAddrs      []netip.Addr     `json:"peer_addrs,omitempty"`
	Proven         []netip.AddrPort `json:"proven,omitempty"`
	ESPPeer        netip.AddrPort   `json:"esp_peer"`
	// VIP: the virtual addresses leased to the peer (responder) or to us.
	VIP []netip.Addr `json:"vip,omitempty"`
	DNS []netip.Addr `json:"dns,omitempty"`

	// AAA: what the AAA server authorized an EAP peer (RADIUS), if it did.
	AAA *AAA `json:"aaa,omitempty"`

	// Message IDs both ways (§2.3) and the last response, for a
	// retransmitted request (§2.1).
	NextID     uint32   `json:"next_id"`
	PeerNext   uint32   `json:"peer_next"`
	HaveCached bool     `json:"have_cached"`
	CachedID   uint32   `json:"cached_id"`
	Cached     [][]byte `json:"cached,omitempty"`
	// Outstanding: the packets of our request in flight (message ID
	// NextID, exchange OutExchange), sent again as they are.
	Outstanding [][]byte `json:"outstanding,omitempty"`
	OutExchange uint8    `json:"out_exchange,omitempty"`

	Rekeys        int           `json:"rekeys"`
	Authenticated time.Time     `json:"authenticated"`
	IKERekeyIn    time.Duration `json:"ike_rekey_in"` // 0: no rekey timer
	SilentFor     time.Duration `json:"silent_for"`   // since we last heard the peer

	Children []Child `json:"children"`
}

// Child is one Child SA: its two ESP SAs and what it covers.
type Child struct {
	Name       string    `json:"name"`
	HostToHost bool      `json:"host_to_host"` // RFC 3554 §2 case 1
	Created    time.Time `json:"created"`
	Ours       bool      `json:"ours"`      // created by an exchange we started
	NonceMin   []byte    `json:"nonce_min"` // §2.8.1 collisions
	// The ESP suite: IANA encryption ID and key size, ESN, PFS group.
	Encr     uint16                    `json:"encr"`
	EncrBits int                       `json:"encr_bits"`
	ESN      bool                      `json:"esn"`
	DH       uint16                    `json:"dh"`
	LocalTS  []message.TrafficSelector `json:"local_ts"`
	RemoteTS []message.TrafficSelector `json:"remote_ts"`
	VIP      []netip.Addr              `json:"vip,omitempty"`
	SPIIn    uint32                    `json:"spi_in"`
	SPIOut   uint32                    `json:"spi_out"`
	KeyIn    []byte                    `json:"-"` // key || salt; in the key block
	KeyOut   []byte                    `json:"-"`
	// SeqOut is the last outbound sequence number sent, ReplayTop the
	// highest inbound one accepted (RFC 4303 §3.3.3, §3.4.3).
	SeqOut    uint64        `json:"seq_out"`
	ReplayTop uint64        `json:"replay_top"`
	UDPEncap  bool          `json:"udp_encap"` // RFC 3948
	PeerPort  uint16        `json:"peer_port"`
	RekeyIn   time.Duration `json:"rekey_in"` // 0: no rekey timer
}

// AAA is the AAA server's authorization of an EAP peer (RADIUS: User-Name,
// Framed-IP-Address, Class, Acct-Session-Id) and the time left to its
// Session-Timeout (RFC 2865 §5.27; zero: none), so the importer keeps the
// address, the accounting identity and the deadline, not a fresh one.
type AAA struct {
	User        string         `json:"user"`
	VirtualIP4  netip.Addr     `json:"vip4,omitzero"`
	Class       [][]byte       `json:"class,omitempty"`
	SessionID   string         `json:"session_id,omitempty"`
	Peer        netip.AddrPort `json:"peer"`
	Local       netip.Addr     `json:"local"`
	Timeout     time.Duration  `json:"timeout,omitempty"`
	SessionLeft time.Duration  `json:"session_left,omitempty"`
}

// Encode writes sa in the current version. The result holds keys: the
// caller zeroes it.
func Encode(sa *SA) ([]byte, error) {
	sa.Version = Version
	if err := sa.Check(); err != nil {
		return nil, err
	}
	j, err := json.Marshal(sa)
	if err != nil {
		return nil, err
	}
	keys := sa.keys()
	n := 4 + len(j)
	for _, k := range keys {
		n += 1 + len(k)
	}
	out := make([]byte, 0, n)
	out = binary.BigEndian.AppendUint32(out, uint32(len(j)))
	out = append(out, j...)
	for _, k := range keys {
		out = append(append(out, byte(len(k))), k...)
	}
	return out, nil
}

// keys are the key fields in their order in the key block.
func (sa *SA) keys() [][]byte {
	ks := [][]byte{sa.SKd, sa.SKei, sa.SKer, sa.SKpi, sa.SKpr}
	for i := range sa.Children {
		ks = append(ks, sa.Children[i].KeyIn, sa.Children[i].KeyOut)
	}
	return ks
}

// Decode reads one record and checks it (Check). The keys are copies:
// the caller zeroes b.
func Decode(b []byte) (*SA, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("ikectx: record of %d bytes, more than %d", len(b), MaxSize)
	}
	if len(b) < 4 || uint64(binary.BigEndian.Uint32(b)) > uint64(len(b)-4) {
		return nil, errors.New("ikectx: truncated record")
	}
	j, kb := b[4:4+binary.BigEndian.Uint32(b)], b[4+binary.BigEndian.Uint32(b):]
	var v struct {
		Version int `json:"v"`
	}
	if err := json.Unmarshal(j, &v); err != nil {
		return nil, fmt.Errorf("ikectx: %w", err)
	}
	if v.Version != Version {
		return nil, fmt.Errorf("ikectx: version %d, this build reads %d", v.Version, Version)
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	sa := new(SA)
	if err := d.Decode(sa); err != nil {
		return nil, fmt.Errorf("ikectx: %w", err)
	}
	if d.More() {
		return nil, errors.New("ikectx: data after the record")
	}
	if len(sa.Children) > MaxChildren {
		return nil, fmt.Errorf("ikectx: %d Child SAs, more than %d", len(sa.Children), MaxChildren)
	}
	if err := sa.readKeys(kb); err != nil {
		sa.Wipe()
		return nil, err
	}
	if err := sa.Check(); err != nil {
		sa.Wipe()
		return nil, err
	}
	return sa, nil
}

// readKeys fills the key fields from the key block, in keys' order.
func (sa *SA) readKeys(kb []byte) error {
	dst := []*[]byte{&sa.SKd, &sa.SKei, &sa.SKer, &sa.SKpi, &sa.SKpr}
	for i := range sa.Children {
		dst = append(dst, &sa.Children[i].KeyIn, &sa.Children[i].KeyOut)
	}
	for _, p := range dst {
		if len(kb) < 1 || int(kb[0]) > len(kb)-1 {
			return errors.New("ikectx: truncated key block")
		}
		*p = bytes.Clone(kb[1 : 1+kb[0]])
		kb = kb[1+kb[0]:]
	}
	if len(kb) > 0 {
		return errors.New("ikectx: data after the key block")
	}
	return nil
}

// Check reports the first thing in sa that no established IKE SA has.
func (sa *SA) Check() error {
	switch {
	case sa.SPIi == 0 || sa.SPIr == 0:
		return errors.New("ikectx: an established IKE SA has both SPIs (RFC 7296 §3.1)")
	case !sa.Local.IsValid() || !sa.Remote.IsValid():
		return errors.New("ikectx: no local address or remote endpoint")
	case len(sa.SKd) == 0 || len(sa.SKei) == 0 || len(sa.SKer) == 0:
		return errors.New("ikectx: missing SK_d, SK_ei or SK_er")
	case len(sa.PeerID) == 0:
		return errors.New("ikectx: no peer identity")
	case len(sa.Children) > MaxChildren:
		return fmt.Errorf("ikectx: %d Child SAs, more than %d", len(sa.Children), MaxChildren)
	case sa.Rekeys < 0 || sa.IKERekeyIn < 0 || sa.SilentFor < 0:
		return errors.New("ikectx: negative count or duration")
	case sa.AAA != nil && (sa.AAA.Timeout < 0 || sa.AAA.SessionLeft < 0 || sa.AAA.SessionLeft > sa.AAA.Timeout):
		return errors.New("ikectx: AAA session time left negative or beyond its Session-Timeout")
	case sa.AAA != nil && (len(sa.AAA.Class) > MaxList || len(sa.AAA.User) > 1024 || len(sa.AAA.SessionID) > 1024):
		return errors.New("ikectx: AAA attributes beyond the bounds")
	}
	for _, k := range [][]byte{sa.SKd, sa.SKei, sa.SKer, sa.SKpi, sa.SKpr} {
		if len(k) > MaxKeyLen {
			return fmt.Errorf("ikectx: a key of %d bytes", len(k))
		}
	}
	if len(sa.PeerID) > 1024 {
		return errors.New("ikectx: an identity longer than 1024 bytes")
	}
	for _, n := range []int{len(sa.Authority), len(sa.CertAddrs), len(sa.PeerHashes), len(sa.PeerAddrs), len(sa.Proven), len(sa.VIP), len(sa.DNS), len(sa.Cached), len(sa.Outstanding)} {
		if n > MaxList {
			return fmt.Errorf("ikectx: a list of %d entries, more than %d", n, MaxList)
		}
	}
	for _, p := range append(append([][]byte(nil), sa.Cached...), sa.Outstanding...) {
		if len(p) > MaxPacket {
			return errors.New("ikectx: a cached response larger than a datagram")
		}
	}
	spis := map[uint32]bool{}
	for i := range sa.Children {
		if err := sa.Children[i].check(); err != nil {
			return fmt.Errorf("ikectx: Child SA %d: %w", i, err)
		}
		if spis[sa.Children[i].SPIIn] {
			return fmt.Errorf("ikectx: Child SA %d: inbound SPI %#08x twice", i, sa.Children[i].SPIIn)
		}
		spis[sa.Children[i].SPIIn] = true
	}
	return nil
}

func (c *Child) check() error {
	switch {
	case c.Name == "" || len(c.Name) > 1024:
		return errors.New("no name, or one too long")
	case c.SPIIn < 256 || c.SPIOut < 256:
		// RFC 4303 §2.1: 1-255 are reserved.
		return fmt.Errorf("SPI %#x / %#x in the reserved range", c.SPIIn, c.SPIOut)
	case len(c.KeyIn) == 0 || len(c.KeyOut) == 0 || len(c.KeyIn) > MaxKeyLen || len(c.KeyOut) > MaxKeyLen:
		return errors.New("missing or oversized ESP key")
	case len(c.LocalTS) == 0 || len(c.RemoteTS) == 0:
		return errors.New("no traffic selectors")
	case len(c.LocalTS) > MaxList || len(c.RemoteTS) > MaxList || len(c.VIP) > MaxList || len(c.NonceMin) > 256:
		return errors.New("a list too long")
	case c.RekeyIn < 0:
		return errors.New("negative rekey time")
	case !c.ESN && (c.SeqOut > 1<<32-1 || c.ReplayTop > 1<<32-1):
		return errors.New("sequence number past 2^32-1 without ESN")
	}
	for _, ts := range append(append([]message.TrafficSelector(nil), c.LocalTS...), c.RemoteTS...) {
		if !ts.Start.IsValid() || !ts.End.IsValid() || ts.Start.Is4() != ts.End.Is4() || ts.End.Less(ts.Start) || ts.EndPort < ts.StartPort {
			return errors.New("a malformed traffic selector")
		}
	}
	return nil
}

// Wipe zeroes every key of sa.
func (sa *SA) Wipe() {
	for _, k := range [][]byte{sa.SKd, sa.SKei, sa.SKer, sa.SKpi, sa.SKpr} {
		clear(k)
	}
	for i := range sa.Children {
		clear(sa.Children[i].KeyIn)
		clear(sa.Children[i].KeyOut)
	}
}
