package sctp

import (
	"encoding/binary"
	"fmt"
)

// ne is the byte order of the kernel's structs (host order). Ports and
// addresses inside sockaddrs are in network order.
var ne = binary.NativeEndian

// Socket level and options (<linux/sctp.h>). Checked against the header by
// the cgo layout test.
const (
	solSCTP = 132 // SOL_SCTP == IPPROTO_SCTP

	optRTOInfo         = 0   // SCTP_RTOINFO
	optAssocInfo       = 1   // SCTP_ASSOCINFO
	optInitMsg         = 2   // SCTP_INITMSG
	optNoDelay         = 3   // SCTP_NODELAY
	optPrimaryAddr     = 6   // SCTP_PRIMARY_ADDR
	optPeerAddrParams  = 9   // SCTP_PEER_ADDR_PARAMS
	optEvents          = 11  // SCTP_EVENTS
	optStatus          = 14  // SCTP_STATUS
	optGetPeerAddrInfo = 15  // SCTP_GET_PEER_ADDR_INFO
	optPeerAddrThlds   = 31  // SCTP_PEER_ADDR_THLDS
	optPeerAddrThldsV2 = 37  // SCTP_PEER_ADDR_THLDS_V2
	optGetPeerAddrs    = 108 // SCTP_GET_PEER_ADDRS
	optGetLocalAddrs   = 109 // SCTP_GET_LOCAL_ADDRS
	optExposePFState   = 131 // SCTP_EXPOSE_POTENTIALLY_FAILED_STATE

	futureAssoc = 0 // SCTP_FUTURE_ASSOC: the socket's defaults for associations to come
)

// Values of SCTP_EXPOSE_POTENTIALLY_FAILED_STATE. They are not in the uapi
// header (include/net/sctp/constants.h has them): UNSET = 0 follows the
// net.sctp.pf_expose sysctl, which by default sends no event for PF.
const (
	pfExposeUnset   = 0
	pfExposeDisable = 1
	pfExposeEnable  = 2
)

// Linux address families as they appear in sockaddr_storage.
const (
	afInet  = 2
	afInet6 = 10
)

// Struct sizes and field offsets (<linux/sctp.h>, Linux 6.1). Most of these
// structs are __attribute__((packed, aligned(4))), so sockaddr_storage sits at
// offset 4 and the fields after it are unaligned; sctp_paddrthlds is not
// packed and its address is at 8.
const (
	sizeofSockaddrStorage = 128
	sizeofSockaddrIn      = 16
	sizeofSockaddrIn6     = 28

	// struct sctp_rtoinfo { assoc_id; initial; max; min } (ms)
	sizeofRTOInfo = 16
	offRTOInitial = 4
	offRTOMax     = 8
	offRTOMin     = 12

	// struct sctp_assocparams
	sizeofAssocParams    = 20
	offAssocParamsMaxRxt = 4 // __u16 sasoc_asocmaxrxt

	// struct sctp_initmsg (four __u16)
	sizeofInitMsg = 8

	// struct sctp_paddrparams (packed)
	sizeofPaddrParams = 156
	offPPAddr         = 4
	offPPHBInterval   = 132
	offPPPathMaxRxt   = 136 // __u16
	offPPPathMTU      = 138
	offPPSackDelay    = 142
	offPPFlags        = 146
	offPPFlowLabel    = 150
	offPPDSCP         = 154 // __u8

	// struct sctp_paddrinfo (packed)
	sizeofPaddrInfo = 152
	offPIAddr       = 4
	offPIState      = 132
	offPICwnd       = 136
	offPISRTT       = 140
	offPIRTO        = 144
	offPIMTU        = 148

	// struct sctp_prim (packed)
	sizeofPrim  = 132
	offPrimAddr = 4

	// struct sctp_paddrthlds and _v2 (not packed)
	sizeofPaddrThlds   = 144
	sizeofPaddrThldsV2 = 144
	offThAddr          = 8
	offThPathMaxRxt    = 136
	offThPFThld        = 138
	offThCPThld        = 140 // v2 only

	// struct sctp_assoc_value { assoc_id; assoc_value }
	sizeofAssocValue = 8

	// struct sctp_getaddrs { assoc_id; addr_num; addrs[] }
	sizeofGetAddrsHdr = 8

	// Notifications. Every one starts with { __u16 type; __u16 flags; __u32 length }.
	sizeofNotificationHeader = 8

	// struct sctp_assoc_change
	sizeofAssocChange = 20
	offACState        = 8
	offACError        = 10
	offACOutStreams   = 12
	offACInStreams    = 14
	offACAssocID      = 16

	// struct sctp_paddr_change (packed)
	sizeofPaddrChange = 148
	offPCAddr         = 8
	offPCState        = 136
	offPCError        = 140
	offPCAssocID      = 144

	// struct sctp_shutdown_event
	sizeofShutdownEvent = 12
	offSEAssocID        = 8
)

// SPPFlags are the spp_flags of SCTP_PEER_ADDR_PARAMS (enum sctp_spp_flags).
type SPPFlags uint32

const (
	SPPHBEnable         SPPFlags = 1 << 0 // SPP_HB_ENABLE
	SPPHBDisable        SPPFlags = 1 << 1 // SPP_HB_DISABLE
	SPPHBDemand         SPPFlags = 1 << 2 // SPP_HB_DEMAND: send a heartbeat now
	SPPPMTUDEnable      SPPFlags = 1 << 3 // SPP_PMTUD_ENABLE
	SPPPMTUDDisable     SPPFlags = 1 << 4 // SPP_PMTUD_DISABLE
	SPPSackDelayEnable  SPPFlags = 1 << 5 // SPP_SACKDELAY_ENABLE
	SPPSackDelayDisable SPPFlags = 1 << 6 // SPP_SACKDELAY_DISABLE
	SPPHBTimeIsZero     SPPFlags = 1 << 7 // SPP_HB_TIME_IS_ZERO
	SPPIPv6FlowLabel    SPPFlags = 1 << 8 // SPP_IPV6_FLOWLABEL
	SPPDSCP             SPPFlags = 1 << 9 // SPP_DSCP
)

// PeerState is a peer transport address's state as SCTP_GET_PEER_ADDR_INFO
// reports it (enum sctp_spinfo_state). The values are Linux's; those of
// github.com/ishidawataru/sctp are not.
type PeerState int32

const (
	PeerInactive    PeerState = 0      // SCTP_INACTIVE: failed (path max retransmissions exceeded)
	PeerPF          PeerState = 1      // SCTP_PF: potentially failed (RFC 7829)
	PeerActive      PeerState = 2      // SCTP_ACTIVE
	PeerUnconfirmed PeerState = 3      // SCTP_UNCONFIRMED: not yet confirmed by a heartbeat
	PeerUnknown     PeerState = 0xffff // SCTP_UNKNOWN
)

func (s PeerState) String() string {
	switch s {
	case PeerInactive:
		return "inactive"
	case PeerPF:
		return "potentially-failed"
	case PeerActive:
		return "active"
	case PeerUnconfirmed:
		return "unconfirmed"
	case PeerUnknown:
		return "unknown"
	}
	return fmt.Sprintf("PeerState(%d)", int32(s))
}

// NotificationType is sn_type (enum sctp_sn_type).
type NotificationType uint16

const (
	NotifyDataIO          NotificationType = 0x8000 // SCTP_DATA_IO_EVENT (SCTP_SN_TYPE_BASE)
	NotifyAssocChange     NotificationType = 0x8001 // SCTP_ASSOC_CHANGE
	NotifyPeerAddrChange  NotificationType = 0x8002 // SCTP_PEER_ADDR_CHANGE
	NotifySendFailed      NotificationType = 0x8003 // SCTP_SEND_FAILED
	NotifyRemoteError     NotificationType = 0x8004 // SCTP_REMOTE_ERROR
	NotifyShutdown        NotificationType = 0x8005 // SCTP_SHUTDOWN_EVENT
	NotifyPartialDelivery NotificationType = 0x8006 // SCTP_PARTIAL_DELIVERY_EVENT
	NotifyAdaptation      NotificationType = 0x8007 // SCTP_ADAPTATION_INDICATION
	NotifyAuthentication  NotificationType = 0x8008 // SCTP_AUTHENTICATION_EVENT
	NotifySenderDry       NotificationType = 0x8009 // SCTP_SENDER_DRY_EVENT
	NotifyStreamReset     NotificationType = 0x800a // SCTP_STREAM_RESET_EVENT
	NotifyAssocReset      NotificationType = 0x800b // SCTP_ASSOC_RESET_EVENT
	NotifyStreamChange    NotificationType = 0x800c // SCTP_STREAM_CHANGE_EVENT
	NotifySendFailedEvent NotificationType = 0x800d // SCTP_SEND_FAILED_EVENT
)

func (t NotificationType) String() string {
	switch t {
	case NotifyDataIO:
		return "SCTP_DATA_IO_EVENT"
	case NotifyAssocChange:
		return "SCTP_ASSOC_CHANGE"
	case NotifyPeerAddrChange:
		return "SCTP_PEER_ADDR_CHANGE"
	case NotifySendFailed:
		return "SCTP_SEND_FAILED"
	case NotifyRemoteError:
		return "SCTP_REMOTE_ERROR"
	case NotifyShutdown:
		return "SCTP_SHUTDOWN_EVENT"
	case NotifyPartialDelivery:
		return "SCTP_PARTIAL_DELIVERY_EVENT"
	case NotifyAdaptation:
		return "SCTP_ADAPTATION_INDICATION"
	case NotifyAuthentication:
		return "SCTP_AUTHENTICATION_EVENT"
	case NotifySenderDry:
		return "SCTP_SENDER_DRY_EVENT"
	case NotifyStreamReset:
		return "SCTP_STREAM_RESET_EVENT"
	case NotifyAssocReset:
		return "SCTP_ASSOC_RESET_EVENT"
	case NotifyStreamChange:
		return "SCTP_STREAM_CHANGE_EVENT"
	case NotifySendFailedEvent:
		return "SCTP_SEND_FAILED_EVENT"
	}
	return fmt.Sprintf("NotificationType(%#x)", uint16(t))
}

// AddrChangeState is spc_state of SCTP_PEER_ADDR_CHANGE (enum sctp_spc_state).
type AddrChangeState int32

const (
	AddrAvailable         AddrChangeState = 0 // SCTP_ADDR_AVAILABLE
	AddrUnreachable       AddrChangeState = 1 // SCTP_ADDR_UNREACHABLE
	AddrRemoved           AddrChangeState = 2 // SCTP_ADDR_REMOVED
	AddrAdded             AddrChangeState = 3 // SCTP_ADDR_ADDED
	AddrMadePrimary       AddrChangeState = 4 // SCTP_ADDR_MADE_PRIM
	AddrConfirmed         AddrChangeState = 5 // SCTP_ADDR_CONFIRMED
	AddrPotentiallyFailed AddrChangeState = 6 // SCTP_ADDR_POTENTIALLY_FAILED (SCTP_ADDR_PF)
)

func (s AddrChangeState) String() string {
	switch s {
	case AddrAvailable:
		return "SCTP_ADDR_AVAILABLE"
	case AddrUnreachable:
		return "SCTP_ADDR_UNREACHABLE"
	case AddrRemoved:
		return "SCTP_ADDR_REMOVED"
	case AddrAdded:
		return "SCTP_ADDR_ADDED"
	case AddrMadePrimary:
		return "SCTP_ADDR_MADE_PRIM"
	case AddrConfirmed:
		return "SCTP_ADDR_CONFIRMED"
	case AddrPotentiallyFailed:
		return "SCTP_ADDR_POTENTIALLY_FAILED"
	}
	return fmt.Sprintf("AddrChangeState(%d)", int32(s))
}

// AssocChangeState is sac_state of SCTP_ASSOC_CHANGE (enum sctp_sac_state).
type AssocChangeState uint16

const (
	CommUp           AssocChangeState = 0 // SCTP_COMM_UP
	CommLost         AssocChangeState = 1 // SCTP_COMM_LOST
	Restart          AssocChangeState = 2 // SCTP_RESTART
	ShutdownComplete AssocChangeState = 3 // SCTP_SHUTDOWN_COMP
	CantStartAssoc   AssocChangeState = 4 // SCTP_CANT_STR_ASSOC
)

func (s AssocChangeState) String() string {
	switch s {
	case CommUp:
		return "SCTP_COMM_UP"
	case CommLost:
		return "SCTP_COMM_LOST"
	case Restart:
		return "SCTP_RESTART"
	case ShutdownComplete:
		return "SCTP_SHUTDOWN_COMP"
	case CantStartAssoc:
		return "SCTP_CANT_STR_ASSOC"
	}
	return fmt.Sprintf("AssocChangeState(%d)", uint16(s))
}

// Values of spc_error and sac_error that the kernel fills in itself (enum
// sctp_sn_error).
const (
	SnFailedThreshold      = 0 // SCTP_FAILED_THRESHOLD
	SnReceivedSack         = 1 // SCTP_RECEIVED_SACK
	SnHeartbeatSuccess     = 2 // SCTP_HEARTBEAT_SUCCESS
	SnResponseToUserReq    = 3 // SCTP_RESPONSE_TO_USER_REQ
	SnInternalError        = 4 // SCTP_INTERNAL_ERROR
	SnShutdownGuardExpires = 5 // SCTP_SHUTDOWN_GUARD_EXPIRES
	SnPeerFaulty           = 6 // SCTP_PEER_FAULTY
)
