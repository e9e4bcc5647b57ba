//go:build cgo && linux

package sctp

import (
	"sort"
	"testing"
	"unsafe"

	libsctp "github.com/ishidawataru/sctp"

	"github.com/roamsec/roamsec/mobility/sctp/internal/cabi"
)

// TestLayoutMatchesLinuxHeader compares every size, offset and constant this
// package writes by hand with <linux/sctp.h> as gcc compiles it.
func TestLayoutMatchesLinuxHeader(t *testing.T) {
	want := map[string]int64{
		"sizeof(struct sockaddr_storage)": sizeofSockaddrStorage,
		"sizeof(struct sockaddr_in)":      sizeofSockaddrIn,
		"sizeof(struct sockaddr_in6)":     sizeofSockaddrIn6,

		"IPPROTO_SCTP":                         solSCTP,
		"SCTP_RTOINFO":                         optRTOInfo,
		"SCTP_ASSOCINFO":                       optAssocInfo,
		"SCTP_INITMSG":                         optInitMsg,
		"SCTP_NODELAY":                         optNoDelay,
		"SCTP_PRIMARY_ADDR":                    optPrimaryAddr,
		"SCTP_PEER_ADDR_PARAMS":                optPeerAddrParams,
		"SCTP_EVENTS":                          optEvents,
		"SCTP_STATUS":                          optStatus,
		"SCTP_GET_PEER_ADDR_INFO":              optGetPeerAddrInfo,
		"SCTP_PEER_ADDR_THLDS":                 optPeerAddrThlds,
		"SCTP_PEER_ADDR_THLDS_V2":              optPeerAddrThldsV2,
		"SCTP_GET_PEER_ADDRS":                  optGetPeerAddrs,
		"SCTP_GET_LOCAL_ADDRS":                 optGetLocalAddrs,
		"SCTP_EXPOSE_POTENTIALLY_FAILED_STATE": optExposePFState,
		"SCTP_FUTURE_ASSOC":                    futureAssoc,
		"AF_INET":                              afInet,
		"AF_INET6":                             afInet6,
		"MSG_NOTIFICATION":                     libsctp.MSG_NOTIFICATION,

		"sizeof(struct sctp_rtoinfo)":                  sizeofRTOInfo,
		"offsetof(struct sctp_rtoinfo, srto_assoc_id)": 0,
		"offsetof(struct sctp_rtoinfo, srto_initial)":  offRTOInitial,
		"offsetof(struct sctp_rtoinfo, srto_max)":      offRTOMax,
		"offsetof(struct sctp_rtoinfo, srto_min)":      offRTOMin,

		"sizeof(struct sctp_assocparams)":                     sizeofAssocParams,
		"offsetof(struct sctp_assocparams, sasoc_asocmaxrxt)": offAssocParamsMaxRxt,
		"sizeof(struct sctp_initmsg)":                         sizeofInitMsg,

		"sizeof(struct sctp_paddrparams)":                       sizeofPaddrParams,
		"offsetof(struct sctp_paddrparams, spp_assoc_id)":       0,
		"offsetof(struct sctp_paddrparams, spp_address)":        offPPAddr,
		"offsetof(struct sctp_paddrparams, spp_hbinterval)":     offPPHBInterval,
		"offsetof(struct sctp_paddrparams, spp_pathmaxrxt)":     offPPPathMaxRxt,
		"offsetof(struct sctp_paddrparams, spp_pathmtu)":        offPPPathMTU,
		"offsetof(struct sctp_paddrparams, spp_sackdelay)":      offPPSackDelay,
		"offsetof(struct sctp_paddrparams, spp_flags)":          offPPFlags,
		"offsetof(struct sctp_paddrparams, spp_ipv6_flowlabel)": offPPFlowLabel,
		"offsetof(struct sctp_paddrparams, spp_dscp)":           offPPDSCP,
		"SPP_HB_ENABLE":         int64(SPPHBEnable),
		"SPP_HB_DISABLE":        int64(SPPHBDisable),
		"SPP_HB_DEMAND":         int64(SPPHBDemand),
		"SPP_PMTUD_ENABLE":      int64(SPPPMTUDEnable),
		"SPP_PMTUD_DISABLE":     int64(SPPPMTUDDisable),
		"SPP_SACKDELAY_ENABLE":  int64(SPPSackDelayEnable),
		"SPP_SACKDELAY_DISABLE": int64(SPPSackDelayDisable),
		"SPP_HB_TIME_IS_ZERO":   int64(SPPHBTimeIsZero),
		"SPP_IPV6_FLOWLABEL":    int64(SPPIPv6FlowLabel),
		"SPP_DSCP":              int64(SPPDSCP),

		"sizeof(struct sctp_paddrinfo)":                    sizeofPaddrInfo,
		"offsetof(struct sctp_paddrinfo, spinfo_assoc_id)": 0,
		"offsetof(struct sctp_paddrinfo, spinfo_address)":  offPIAddr,
		"offsetof(struct sctp_paddrinfo, spinfo_state)":    offPIState,
		"offsetof(struct sctp_paddrinfo, spinfo_cwnd)":     offPICwnd,
		"offsetof(struct sctp_paddrinfo, spinfo_srtt)":     offPISRTT,
		"offsetof(struct sctp_paddrinfo, spinfo_rto)":      offPIRTO,
		"offsetof(struct sctp_paddrinfo, spinfo_mtu)":      offPIMTU,
		"SCTP_INACTIVE":    int64(PeerInactive),
		"SCTP_PF":          int64(PeerPF),
		"SCTP_ACTIVE":      int64(PeerActive),
		"SCTP_UNCONFIRMED": int64(PeerUnconfirmed),
		"SCTP_UNKNOWN":     int64(PeerUnknown),

		"sizeof(struct sctp_prim)":             sizeofPrim,
		"offsetof(struct sctp_prim, ssp_addr)": offPrimAddr,

		"sizeof(struct sctp_paddrthlds)":                      sizeofPaddrThlds,
		"offsetof(struct sctp_paddrthlds, spt_address)":       offThAddr,
		"offsetof(struct sctp_paddrthlds, spt_pathmaxrxt)":    offThPathMaxRxt,
		"offsetof(struct sctp_paddrthlds, spt_pathpfthld)":    offThPFThld,
		"sizeof(struct sctp_paddrthlds_v2)":                   sizeofPaddrThldsV2,
		"offsetof(struct sctp_paddrthlds_v2, spt_address)":    offThAddr,
		"offsetof(struct sctp_paddrthlds_v2, spt_pathmaxrxt)": offThPathMaxRxt,
		"offsetof(struct sctp_paddrthlds_v2, spt_pathpfthld)": offThPFThld,
		"offsetof(struct sctp_paddrthlds_v2, spt_pathcpthld)": offThCPThld,

		"sizeof(struct sctp_assoc_value)":                          sizeofAssocValue,
		"sizeof(struct sctp_getaddrs)":                             sizeofGetAddrsHdr,
		"offsetof(struct sctp_getaddrs, addr_num)":                 4,
		"offsetof(struct sctp_getaddrs, addrs)":                    sizeofGetAddrsHdr,
		"sizeof(struct sctp_status)":                               int64(unsafe.Sizeof(libsctp.Status{})), // the library's GetStatus
		"SCTP_DATA_IO_EVENT":                                       int64(NotifyDataIO),
		"SCTP_ASSOC_CHANGE":                                        int64(NotifyAssocChange),
		"SCTP_PEER_ADDR_CHANGE":                                    int64(NotifyPeerAddrChange),
		"SCTP_SEND_FAILED":                                         int64(NotifySendFailed),
		"SCTP_REMOTE_ERROR":                                        int64(NotifyRemoteError),
		"SCTP_SHUTDOWN_EVENT":                                      int64(NotifyShutdown),
		"SCTP_PARTIAL_DELIVERY_EVENT":                              int64(NotifyPartialDelivery),
		"SCTP_ADAPTATION_INDICATION":                               int64(NotifyAdaptation),
		"SCTP_AUTHENTICATION_EVENT":                                int64(NotifyAuthentication),
		"SCTP_SENDER_DRY_EVENT":                                    int64(NotifySenderDry),
		"SCTP_STREAM_RESET_EVENT":                                  int64(NotifyStreamReset),
		"SCTP_ASSOC_RESET_EVENT":                                   int64(NotifyAssocReset),
		"SCTP_STREAM_CHANGE_EVENT":                                 int64(NotifyStreamChange),
		"SCTP_SEND_FAILED_EVENT":                                   int64(NotifySendFailedEvent),
		"sizeof(struct sctp_assoc_change)":                         sizeofAssocChange,
		"offsetof(struct sctp_assoc_change, sac_type)":             0,
		"offsetof(struct sctp_assoc_change, sac_flags)":            2,
		"offsetof(struct sctp_assoc_change, sac_length)":           4,
		"offsetof(struct sctp_assoc_change, sac_state)":            offACState,
		"offsetof(struct sctp_assoc_change, sac_error)":            offACError,
		"offsetof(struct sctp_assoc_change, sac_outbound_streams)": offACOutStreams,
		"offsetof(struct sctp_assoc_change, sac_inbound_streams)":  offACInStreams,
		"offsetof(struct sctp_assoc_change, sac_assoc_id)":         offACAssocID,
		"offsetof(struct sctp_assoc_change, sac_info)":             sizeofAssocChange,
		"SCTP_COMM_UP":                                             int64(CommUp),
		"SCTP_COMM_LOST":                                           int64(CommLost),
		"SCTP_RESTART":                                             int64(Restart),
		"SCTP_SHUTDOWN_COMP":                                       int64(ShutdownComplete),
		"SCTP_CANT_STR_ASSOC":                                      int64(CantStartAssoc),

		"sizeof(struct sctp_paddr_change)":                 sizeofPaddrChange,
		"offsetof(struct sctp_paddr_change, spc_type)":     0,
		"offsetof(struct sctp_paddr_change, spc_flags)":    2,
		"offsetof(struct sctp_paddr_change, spc_length)":   4,
		"offsetof(struct sctp_paddr_change, spc_aaddr)":    offPCAddr,
		"offsetof(struct sctp_paddr_change, spc_state)":    offPCState,
		"offsetof(struct sctp_paddr_change, spc_error)":    offPCError,
		"offsetof(struct sctp_paddr_change, spc_assoc_id)": offPCAssocID,
		"SCTP_ADDR_AVAILABLE":                              int64(AddrAvailable),
		"SCTP_ADDR_UNREACHABLE":                            int64(AddrUnreachable),
		"SCTP_ADDR_REMOVED":                                int64(AddrRemoved),
		"SCTP_ADDR_ADDED":                                  int64(AddrAdded),
		"SCTP_ADDR_MADE_PRIM":                              int64(AddrMadePrimary),
		"SCTP_ADDR_CONFIRMED":                              int64(AddrConfirmed),
		"SCTP_ADDR_POTENTIALLY_FAILED":                     int64(AddrPotentiallyFailed),
		"SCTP_ADDR_PF":                                     int64(AddrPotentiallyFailed),

		"sizeof(struct sctp_shutdown_event)":                 sizeofShutdownEvent,
		"offsetof(struct sctp_shutdown_event, sse_assoc_id)": offSEAssocID,

		"SCTP_FAILED_THRESHOLD":       SnFailedThreshold,
		"SCTP_RECEIVED_SACK":          SnReceivedSack,
		"SCTP_HEARTBEAT_SUCCESS":      SnHeartbeatSuccess,
		"SCTP_RESPONSE_TO_USER_REQ":   SnResponseToUserReq,
		"SCTP_INTERNAL_ERROR":         SnInternalError,
		"SCTP_SHUTDOWN_GUARD_EXPIRES": SnShutdownGuardExpires,
		"SCTP_PEER_FAULTY":            SnPeerFaulty,
	}
	got := cabi.Table()
	var names []string
	for name := range got {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		w, ok := want[name]
		switch {
		case !ok:
			t.Errorf("%s = %d in the header, not checked on the Go side", name, got[name])
		case w != got[name]:
			t.Errorf("%s: Go %d, <linux/sctp.h> %d", name, w, got[name])
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s: not read from the header", name)
		}
	}
	if !t.Failed() {
		t.Logf("%d sizes, offsets and constants match <linux/sctp.h>", len(got))
	}
}
