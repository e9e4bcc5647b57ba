package ike

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
)

// EventKind is what happened to a connection. Callers switch on it; the
// text of errors and of String is for people only.
type EventKind uint8

const (
	// EvIKESAInit: an initiator sent IKE_SA_INIT (Progress.Proposal).
	EvIKESAInit EventKind = iota + 1
	// EvIKEAuth: an initiator sent IKE_AUTH (Progress.ID, Progress.Cert).
	EvIKEAuth
	// EvIKEEstablished: the IKE SA authenticated (Progress.ID is the
	// peer's, Progress.Proposal the chosen one).
	EvIKEEstablished
	// EvChildInstalled: a Child SA is in the data path (Progress.Child).
	EvChildInstalled
	// EvChildFailed: a Child SA negotiation failed; the IKE SA stands.
	EvChildFailed
	// EvFailed: the IKE SA is gone after a failure (Progress.Err): no
	// answer, refused, DPD. Terminal: it is the last event of its Gen.
	EvFailed
	// EvDeleted: the IKE SA is gone without a failure (Progress.Reason):
	// our shutdown, the peer's DELETE, replaced. Terminal.
	EvDeleted
)

var kindNames = [...]string{EvIKESAInit: "IKE_SA_INIT", EvIKEAuth: "IKE_AUTH", EvIKEEstablished: "established",
	EvChildInstalled: "CHILD_SA", EvChildFailed: "failed", EvFailed: "failed", EvDeleted: "deleted"}

// String is the event's name in `connect -json` (stable: scripts read it).
func (k EventKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Terminal reports whether the kind ends its IKE SA: exactly one terminal
// event is reported per IKE SA line (a rekeyed IKE SA continues its line).
func (k EventKind) Terminal() bool { return k == EvFailed || k == EvDeleted }

// DownReason is why an IKE SA went away.
type DownReason uint8

const (
	DownNone            DownReason = iota
	DownShutdown                   // Close: our shutdown, DELETE sent
	DownReset                      // Reset: we start over (a reconnect), DELETE sent
	DownPeerDead                   // a request went unanswered (RFC 7296 §2.4)
	DownPeerDeleted                // the peer sent DELETE
	DownReplaced                   // INITIAL_CONTACT from the same identity (§2.4)
	DownNegotiation                // IKE_SA_INIT, IKE_AUTH or the first Child SA failed
	DownHalfOpenTimeout            // responder: IKE_AUTH never came
	DownRekeyed                    // replaced by its rekey (§2.18): the line goes on
	DownPolicyChanged              // SetPeers: the peer's policy was removed or no longer covers the SA
	DownSessionTimeout             // the AAA server's Session-Timeout ran out (eap.go)
	DownHandedOver                 // DropAll: another gateway of the pair carries it on, no DELETE
)

var downNames = [...]string{DownNone: "", DownShutdown: "shutdown", DownReset: "reset (reconnecting)", DownPeerDead: "peer dead",
	DownPeerDeleted: "deleted by the peer", DownReplaced: "replaced (INITIAL_CONTACT)", DownNegotiation: "negotiation failed",
	DownHalfOpenTimeout: "IKE_AUTH never came", DownRekeyed: "rekeyed",
	DownPolicyChanged: "peer policy removed or changed (reload)", DownSessionTimeout: "session timeout (RADIUS)",
	DownHandedOver: "handed over (HA: the other gateway carries it on)"}

func (r DownReason) String() string {
	if int(r) < len(downNames) {
		return downNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// ChildEvent describes an installed Child SA.
type ChildEvent struct {
	Name          string
	SPIIn, SPIOut uint32
	LocalTS       string
	RemoteTS      string
	HostToHost    bool
	Rekey         bool
}

// Progress is one event of a connection.
type Progress struct {
	Kind EventKind
	// Gen names the IKE SA line the event belongs to: each Connect (or,
	// on a responder, each IKE_SA_INIT) starts one, an IKE SA rekey keeps
	// it. A caller that started a new line ignores older ones' events.
	Gen  int
	Peer netip.AddrPort
	// ID: ours (EvIKEAuth) or the peer's (EvIKEEstablished).
	ID       auth.Identity
	Cert     bool   // EvIKEAuth: certificate, not PSK
	Proposal string // EvIKESAInit: offered; EvIKEEstablished: chosen
	Child    *ChildEvent
	Reason   DownReason
	Err      error
}

// String is a one-line description, for logs.
func (p Progress) String() string {
	switch p.Kind {
	case EvIKESAInit:
		return "proposing " + p.Proposal
	case EvIKEAuth:
		return fmt.Sprintf("as %v, %s", p.ID, map[bool]string{true: "certificate", false: "pre-shared key"}[p.Cert])
	case EvIKEEstablished:
		return fmt.Sprintf("IKE SA with %v (%s)", p.ID, p.Proposal)
	case EvChildInstalled:
		if c := p.Child; c != nil {
			return fmt.Sprintf("%s: SPIs in %#08x out %#08x, %s <=> %s", c.Name, c.SPIIn, c.SPIOut, c.LocalTS, c.RemoteTS)
		}
	case EvChildFailed, EvFailed:
		return fmt.Sprint(p.Err)
	case EvDeleted:
		return p.Reason.String()
	}
	return p.Kind.String()
}

// Errors an initiator's connection ends with. Callers test them with
// errors.Is / errors.As, never by their text.
var (
	// ErrPeerSilent: retransmissions ran out (§2.4: the peer is dead, or
	// unreachable).
	ErrPeerSilent = errors.New("no answer from the peer (retransmissions exhausted)")
	// ErrSuspended: we did not run for longer than a liveness check
	// takes (SIGSTOP, suspend); the peer has most likely deleted the SA.
	ErrSuspended = errors.New("silent for longer than a liveness check takes (suspended?): the peer has most likely deleted the IKE SA")
	// ErrPeerLostSA: the peer answered our request with an
	// unprotected INVALID_IKE_SPI (RFC 7296 §2.21.4): it holds no such IKE
	// SA any more (it restarted, or deleted it while we were away).
	ErrPeerLostSA = errors.New("the peer answered our request with INVALID_IKE_SPI: it no longer holds the IKE SA (restarted, or deleted it)")
	// ErrAuthRefused is the gateway's AUTHENTICATION_FAILED.
	ErrAuthRefused = errors.New("the gateway refused our authentication (AUTHENTICATION_FAILED): check the identity and the PSK or certificate")
	// ErrPeerAuth: the gateway did not prove the identity we expect.
	ErrPeerAuth = errors.New("the gateway failed authentication")
	// ErrNoVirtualAddress: virtual-address mode, and the gateway assigned
	// none.
	ErrNoVirtualAddress = errors.New("gateway assigned no virtual address")
	// ErrNoProposal: the peer chose nothing we offered.
	ErrNoProposal = errors.New("no proposal in common")
)

// NotifyError is an error notify the peer answered with (RFC 7296 §3.10.1).
type NotifyError struct {
	// Exchange the peer refused; 0: a Child SA (in IKE_AUTH or
	// CREATE_CHILD_SA), the IKE SA standing.
	Exchange message.ExchangeType
	Type     message.NotifyType
}

func (e *NotifyError) Error() string {
	if e.Exchange == 0 {
		return fmt.Sprintf("gateway refused the Child SA: %v", e.Type)
	}
	return fmt.Sprintf("gateway refused %v: %v", e.Exchange, e.Type)
}

// Is lets errors.Is(err, ErrNoProposal) match NO_PROPOSAL_CHOSEN.
func (e *NotifyError) Is(target error) bool {
	return target == ErrNoProposal && e.Type == message.NO_PROPOSAL_CHOSEN ||
		target == ErrNoVirtualAddress && e.Type == message.INTERNAL_ADDRESS_FAILURE ||
		target == ErrAuthRefused && e.Type == message.AUTHENTICATION_FAILED
}

// ExchangeError says in which exchange of ours an error happened.
type ExchangeError struct {
	Exchange message.ExchangeType
	Err      error
}

func (e *ExchangeError) Error() string { return fmt.Sprintf("%v: %v", e.Exchange, e.Err) }
func (e *ExchangeError) Unwrap() error { return e.Err }

// ChangeKind is what changed in an established IKE SA, for a standby that
// keeps a copy of it (ExportSA): seed 004's context moves, and a copy is
// only good while it follows every one of these.
type ChangeKind uint8

const (
	// ChangeCreated: an IKE SA is established (IKE_AUTH, an IKE SA rekey's
	// new SA, or ImportSA).
	ChangeCreated ChangeKind = iota + 1
	// ChangeChild: a Child SA of it was installed, rekeyed or deleted.
	ChangeChild
	// ChangeMoved: its peer endpoint or our address changed (MOBIKE, NAT
	// rebinding, a path switch).
	ChangeMoved
	// ChangeMessageID: a message ID advanced, ours or the peer's
	// (RFC 7296 §2.3; RFC 6311 is what a copy that lags this needs).
	ChangeMessageID
	// ChangeDeleted: the IKE SA is gone (for a rekey, the old SA; the new
	// one reports ChangeCreated).
	ChangeDeleted
)

var changeNames = [...]string{ChangeCreated: "created", ChangeChild: "child", ChangeMoved: "moved",
	ChangeMessageID: "message_id", ChangeDeleted: "deleted"}

func (k ChangeKind) String() string {
	if int(k) < len(changeNames) && changeNames[k] != "" {
		return changeNames[k]
	}
	return fmt.Sprintf("change(%d)", uint8(k))
}

// Change reports that an IKE SA changed. SPI is the IKE SA's initiator
// SPI (SPIi), what ExportSA takes.
type Change struct {
	Kind ChangeKind
	SPI  uint64
}

// changed reports a change of an established SA through Config.Changed.
func (s *ikeSA) changed(k ChangeKind) {
	if f := s.e.cfg.Changed; f != nil && (s.state == stEstablished || k == ChangeDeleted) {
		f(Change{Kind: k, SPI: s.spiI})
	}
}
