//go:build cgo && linux

package cabi

/*
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sctp.h>

struct cabi_kv { const char *name; long long value; };

#define SZ(s)     { "sizeof(struct " #s ")", (long long)sizeof(struct s) }
#define OFF(s, f) { "offsetof(struct " #s ", " #f ")", (long long)offsetof(struct s, f) }
#define VAL(c)    { #c, (long long)(c) }

static const struct cabi_kv cabi_table[] = {
	SZ(sockaddr_storage), SZ(sockaddr_in), SZ(sockaddr_in6),

	// SOL_SCTP is not in the uapi headers (lksctp's netinet/sctp.h has it); it is IPPROTO_SCTP.
	VAL(IPPROTO_SCTP),
	VAL(SCTP_RTOINFO), VAL(SCTP_ASSOCINFO), VAL(SCTP_INITMSG), VAL(SCTP_NODELAY), VAL(SCTP_PRIMARY_ADDR),
	VAL(SCTP_PEER_ADDR_PARAMS), VAL(SCTP_EVENTS), VAL(SCTP_STATUS), VAL(SCTP_GET_PEER_ADDR_INFO),
	VAL(SCTP_PEER_ADDR_THLDS), VAL(SCTP_PEER_ADDR_THLDS_V2), VAL(SCTP_GET_PEER_ADDRS),
	VAL(SCTP_GET_LOCAL_ADDRS), VAL(SCTP_EXPOSE_POTENTIALLY_FAILED_STATE), VAL(SCTP_FUTURE_ASSOC),
	VAL(AF_INET), VAL(AF_INET6), VAL(MSG_NOTIFICATION),

	SZ(sctp_rtoinfo), OFF(sctp_rtoinfo, srto_assoc_id), OFF(sctp_rtoinfo, srto_initial),
	OFF(sctp_rtoinfo, srto_max), OFF(sctp_rtoinfo, srto_min),

	SZ(sctp_assocparams), OFF(sctp_assocparams, sasoc_asocmaxrxt),
	SZ(sctp_initmsg),

	SZ(sctp_paddrparams), OFF(sctp_paddrparams, spp_assoc_id), OFF(sctp_paddrparams, spp_address),
	OFF(sctp_paddrparams, spp_hbinterval), OFF(sctp_paddrparams, spp_pathmaxrxt),
	OFF(sctp_paddrparams, spp_pathmtu), OFF(sctp_paddrparams, spp_sackdelay),
	OFF(sctp_paddrparams, spp_flags), OFF(sctp_paddrparams, spp_ipv6_flowlabel),
	OFF(sctp_paddrparams, spp_dscp),
	VAL(SPP_HB_ENABLE), VAL(SPP_HB_DISABLE), VAL(SPP_HB_DEMAND), VAL(SPP_PMTUD_ENABLE),
	VAL(SPP_PMTUD_DISABLE), VAL(SPP_SACKDELAY_ENABLE), VAL(SPP_SACKDELAY_DISABLE),
	VAL(SPP_HB_TIME_IS_ZERO), VAL(SPP_IPV6_FLOWLABEL), VAL(SPP_DSCP),

	SZ(sctp_paddrinfo), OFF(sctp_paddrinfo, spinfo_assoc_id), OFF(sctp_paddrinfo, spinfo_address),
	OFF(sctp_paddrinfo, spinfo_state), OFF(sctp_paddrinfo, spinfo_cwnd),
	OFF(sctp_paddrinfo, spinfo_srtt), OFF(sctp_paddrinfo, spinfo_rto), OFF(sctp_paddrinfo, spinfo_mtu),
	VAL(SCTP_INACTIVE), VAL(SCTP_PF), VAL(SCTP_ACTIVE), VAL(SCTP_UNCONFIRMED), VAL(SCTP_UNKNOWN),

	SZ(sctp_prim), OFF(sctp_prim, ssp_addr),

	SZ(sctp_paddrthlds), OFF(sctp_paddrthlds, spt_address), OFF(sctp_paddrthlds, spt_pathmaxrxt),
	OFF(sctp_paddrthlds, spt_pathpfthld),
	SZ(sctp_paddrthlds_v2), OFF(sctp_paddrthlds_v2, spt_address), OFF(sctp_paddrthlds_v2, spt_pathmaxrxt),
	OFF(sctp_paddrthlds_v2, spt_pathpfthld), OFF(sctp_paddrthlds_v2, spt_pathcpthld),

	SZ(sctp_assoc_value), SZ(sctp_getaddrs), OFF(sctp_getaddrs, addr_num), OFF(sctp_getaddrs, addrs),
	SZ(sctp_status),

	VAL(SCTP_DATA_IO_EVENT), VAL(SCTP_ASSOC_CHANGE), VAL(SCTP_PEER_ADDR_CHANGE), VAL(SCTP_SEND_FAILED),
	VAL(SCTP_REMOTE_ERROR), VAL(SCTP_SHUTDOWN_EVENT), VAL(SCTP_PARTIAL_DELIVERY_EVENT),
	VAL(SCTP_ADAPTATION_INDICATION), VAL(SCTP_AUTHENTICATION_EVENT), VAL(SCTP_SENDER_DRY_EVENT),
	VAL(SCTP_STREAM_RESET_EVENT), VAL(SCTP_ASSOC_RESET_EVENT), VAL(SCTP_STREAM_CHANGE_EVENT),
	VAL(SCTP_SEND_FAILED_EVENT),

	SZ(sctp_assoc_change), OFF(sctp_assoc_change, sac_type), OFF(sctp_assoc_change, sac_flags),
	OFF(sctp_assoc_change, sac_length), OFF(sctp_assoc_change, sac_state),
	OFF(sctp_assoc_change, sac_error), OFF(sctp_assoc_change, sac_outbound_streams),
	OFF(sctp_assoc_change, sac_inbound_streams), OFF(sctp_assoc_change, sac_assoc_id),
	OFF(sctp_assoc_change, sac_info),
	VAL(SCTP_COMM_UP), VAL(SCTP_COMM_LOST), VAL(SCTP_RESTART), VAL(SCTP_SHUTDOWN_COMP),
	VAL(SCTP_CANT_STR_ASSOC),

	SZ(sctp_paddr_change), OFF(sctp_paddr_change, spc_type), OFF(sctp_paddr_change, spc_flags),
	OFF(sctp_paddr_change, spc_length), OFF(sctp_paddr_change, spc_aaddr),
	OFF(sctp_paddr_change, spc_state), OFF(sctp_paddr_change, spc_error),
	OFF(sctp_paddr_change, spc_assoc_id),
	VAL(SCTP_ADDR_AVAILABLE), VAL(SCTP_ADDR_UNREACHABLE), VAL(SCTP_ADDR_REMOVED), VAL(SCTP_ADDR_ADDED),
	VAL(SCTP_ADDR_MADE_PRIM), VAL(SCTP_ADDR_CONFIRMED), VAL(SCTP_ADDR_POTENTIALLY_FAILED),
	VAL(SCTP_ADDR_PF),

	SZ(sctp_shutdown_event), OFF(sctp_shutdown_event, sse_assoc_id),

	VAL(SCTP_FAILED_THRESHOLD), VAL(SCTP_RECEIVED_SACK), VAL(SCTP_HEARTBEAT_SUCCESS),
	VAL(SCTP_RESPONSE_TO_USER_REQ), VAL(SCTP_INTERNAL_ERROR), VAL(SCTP_SHUTDOWN_GUARD_EXPIRES),
	VAL(SCTP_PEER_FAULTY),
};

static int cabi_len(void) { return (int)(sizeof(cabi_table) / sizeof(cabi_table[0])); }
static const char *cabi_name(int i) { return cabi_table[i].name; }
static long long cabi_value(int i) { return cabi_table[i].value; }
*/
import "C"

// Table maps "sizeof(struct X)", "offsetof(struct X, f)" and constant
// names to their values in <linux/sctp.h> as the C compiler sees them.
func Table() map[string]int64 {
	n := int(C.cabi_len())
	m := make(map[string]int64, n)
	for i := 0; i < n; i++ {
		m[C.GoString(C.cabi_name(C.int(i)))] = int64(C.cabi_value(C.int(i)))
	}
	return m
}
