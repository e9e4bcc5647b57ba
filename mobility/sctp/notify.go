package sctp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ErrMalformedNotification is wrapped by every error of ParseNotification.
var ErrMalformedNotification = errors.New("sctp: malformed notification")

// Notification is a decoded SCTP notification: *AssocChange,
// *PeerAddrChange, *ShutdownEvent or, for the types this package does not
// decode, *OtherNotification.
type Notification interface {
	Type() NotificationType
}

// AssocChange is struct sctp_assoc_change (SCTP_ASSOC_CHANGE).
type AssocChange struct {
	Flags           uint16
	State           AssocChangeState
	Error           uint16 // sac_error: an error cause code, 0 if none
	OutboundStreams uint16
	InboundStreams  uint16
	AssocID         int32
	// Info is sac_info: the ABORT chunk for COMM_LOST and CANT_STR_ASSOC,
	// the supported features for COMM_UP and RESTART (a copy).
	Info []byte
}

// PeerAddrChange is struct sctp_paddr_change (SCTP_PEER_ADDR_CHANGE).
type PeerAddrChange struct {
	Flags   uint16
	Addr    netip.AddrPort // the peer's transport address
	State   AddrChangeState
	Error   int32 // spc_error: why, one of the Sn* values
	AssocID int32
}

// ShutdownEvent is struct sctp_shutdown_event (SCTP_SHUTDOWN_EVENT): the
// peer sent SHUTDOWN.
type ShutdownEvent struct {
	Flags   uint16
	AssocID int32
}

// OtherNotification is any notification type this package does not decode.
type OtherNotification struct {
	NType NotificationType
	Flags uint16
	Body  []byte // the bytes after the 8-byte header, up to sn_length (a copy)
}

func (*AssocChange) Type() NotificationType         { return NotifyAssocChange }
func (*PeerAddrChange) Type() NotificationType      { return NotifyPeerAddrChange }
func (*ShutdownEvent) Type() NotificationType       { return NotifyShutdown }
func (n *OtherNotification) Type() NotificationType { return n.NType }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedNotification, fmt.Sprintf(format, args...))
}

// ParseNotification decodes one notification as recvmsg returned it with
// MSG_NOTIFICATION. The header's sn_length must cover the type's struct and
// fit in b; bytes of b after sn_length are ignored. It never panics: short,
// truncated or otherwise malformed input is an error wrapping
// ErrMalformedNotification.
func ParseNotification(b []byte) (Notification, error) {
	if len(b) < sizeofNotificationHeader {
		return nil, malformed("%d bytes, shorter than the 8-byte header", len(b))
	}
	typ := NotificationType(ne.Uint16(b[0:]))
	flags := ne.Uint16(b[2:])
	length := ne.Uint32(b[4:])
	if typ < NotifyDataIO {
		return nil, malformed("type %#x is not a notification type", uint16(typ))
	}
	if length < sizeofNotificationHeader {
		return nil, malformed("%v: length %d shorter than its header", typ, length)
	}
	if uint64(length) > uint64(len(b)) {
		return nil, malformed("%v: length %d but %d bytes received (truncated)", typ, length, len(b))
	}
	b = b[:length]
	need := func(n int) error {
		if len(b) < n {
			return malformed("%v: length %d, want at least %d", typ, len(b), n)
		}
		return nil
	}
	switch typ {
	case NotifyAssocChange:
		if err := need(sizeofAssocChange); err != nil {
			return nil, err
		}
		n := &AssocChange{
			Flags:           flags,
			State:           AssocChangeState(ne.Uint16(b[offACState:])),
			Error:           ne.Uint16(b[offACError:]),
			OutboundStreams: ne.Uint16(b[offACOutStreams:]),
			InboundStreams:  ne.Uint16(b[offACInStreams:]),
			AssocID:         int32(ne.Uint32(b[offACAssocID:])),
		}
		if len(b) > sizeofAssocChange {
			n.Info = append([]byte(nil), b[sizeofAssocChange:]...)
		}
		return n, nil
	case NotifyPeerAddrChange:
		if err := need(sizeofPaddrChange); err != nil {
			return nil, err
		}
		ap, _, err := parseSockaddr(b[offPCAddr : offPCAddr+sizeofSockaddrStorage])
		if err != nil {
			return nil, malformed("%v: address: %v", typ, err)
		}
		return &PeerAddrChange{
			Flags:   flags,
			Addr:    ap,
			State:   AddrChangeState(int32(ne.Uint32(b[offPCState:]))),
			Error:   int32(ne.Uint32(b[offPCError:])),
			AssocID: int32(ne.Uint32(b[offPCAssocID:])),
		}, nil
	case NotifyShutdown:
		if err := need(sizeofShutdownEvent); err != nil {
			return nil, err
		}
		return &ShutdownEvent{Flags: flags, AssocID: int32(ne.Uint32(b[offSEAssocID:]))}, nil
	default:
		return &OtherNotification{NType: typ, Flags: flags, Body: append([]byte(nil), b[sizeofNotificationHeader:]...)}, nil
	}
}

// EventKind says what happened to a path or to the association.
type EventKind int

const (
	EventUnknown EventKind = iota
	// Path events (SCTP_PEER_ADDR_CHANGE); Event.Peer is the peer address.
	EventPathUp      // SCTP_ADDR_AVAILABLE or SCTP_ADDR_CONFIRMED: the path answers again / for the first time
	EventPathDown    // SCTP_ADDR_UNREACHABLE: path max retransmissions exceeded
	EventPathPF      // SCTP_ADDR_POTENTIALLY_FAILED (RFC 7829): more than the PF threshold missed
	EventPathAdded   // SCTP_ADDR_ADDED
	EventPathRemoved // SCTP_ADDR_REMOVED
	EventPathPrimary // SCTP_ADDR_MADE_PRIM: now the primary path
	// Association events (SCTP_ASSOC_CHANGE, SCTP_SHUTDOWN_EVENT).
	EventAssocUp        // SCTP_COMM_UP
	EventAssocLost      // SCTP_COMM_LOST: all paths failed or the peer aborted
	EventAssocRestart   // SCTP_RESTART: the peer restarted
	EventAssocShutdown  // SCTP_SHUTDOWN_COMP: graceful shutdown done
	EventAssocCantStart // SCTP_CANT_STR_ASSOC
	EventPeerShutdown   // SCTP_SHUTDOWN_EVENT: the peer sent SHUTDOWN
)

var eventKindNames = [...]string{
	EventUnknown:        "unknown",
	EventPathUp:         "path-up",
	EventPathDown:       "path-down",
	EventPathPF:         "path-pf",
	EventPathAdded:      "path-added",
	EventPathRemoved:    "path-removed",
	EventPathPrimary:    "path-primary",
	EventAssocUp:        "assoc-up",
	EventAssocLost:      "assoc-lost",
	EventAssocRestart:   "assoc-restart",
	EventAssocShutdown:  "assoc-shutdown",
	EventAssocCantStart: "assoc-cant-start",
	EventPeerShutdown:   "peer-shutdown",
}

func (k EventKind) String() string {
	if k >= 0 && int(k) < len(eventKindNames) {
		return eventKindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// IsPath reports whether the event is about one peer address.
func (k EventKind) IsPath() bool { return k >= EventPathUp && k <= EventPathPrimary }

// Event is what the mobility package consumes.
type Event struct {
	Kind    EventKind
	Peer    netip.Addr // the peer address for path events, invalid otherwise
	Time    time.Time  // when the notification was read
	Err     int        // spc_error or sac_error as the kernel sent it
	AssocID int32
}

func (e Event) String() string {
	if e.Peer.IsValid() {
		return fmt.Sprintf("%v %v (err %d)", e.Kind, e.Peer, e.Err)
	}
	return fmt.Sprintf("%v (err %d)", e.Kind, e.Err)
}

// EventOf turns a notification into an Event. ok is false for the
// notifications that carry no path or association state.
func EventOf(n Notification, now time.Time) (ev Event, ok bool) {
	switch n := n.(type) {
	case *PeerAddrChange:
		var k EventKind
		switch n.State {
		case AddrAvailable, AddrConfirmed:
			k = EventPathUp
		case AddrUnreachable:
			k = EventPathDown
		case AddrPotentiallyFailed:
			k = EventPathPF
		case AddrAdded:
			k = EventPathAdded
		case AddrRemoved:
			k = EventPathRemoved
		case AddrMadePrimary:
			k = EventPathPrimary
		default:
			return Event{}, false
		}
		return Event{Kind: k, Peer: n.Addr.Addr(), Time: now, Err: int(n.Error), AssocID: n.AssocID}, true
	case *AssocChange:
		var k EventKind
		switch n.State {
		case CommUp:
			k = EventAssocUp
		case CommLost:
			k = EventAssocLost
		case Restart:
			k = EventAssocRestart
		case ShutdownComplete:
			k = EventAssocShutdown
		case CantStartAssoc:
			k = EventAssocCantStart
		default:
			return Event{}, false
		}
		return Event{Kind: k, Time: now, Err: int(n.Error), AssocID: n.AssocID}, true
	case *ShutdownEvent:
		return Event{Kind: EventPeerShutdown, Time: now, AssocID: n.AssocID}, true
	}
	return Event{}, false
}
