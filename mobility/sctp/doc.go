// Package sctp is the SCTP layer of roamsec's mobility: one multihomed SCTP
// association between a road warrior and its gateway whose RFC 4960 §8
// heartbeats detect path failure, and whose SCTP_PEER_ADDR_CHANGE and
// SCTP_ASSOC_CHANGE notifications drive the path state of package mobility.
//
// The package is named sctp like the library it builds on,
// github.com/ishidawataru/sctp, which its files import as libsctp.
//
// What it adds to that library:
//   - Typed setters and getters with the Linux layouts (built by hand with
//     encoding/binary at the offsets of <linux/sctp.h>, many of the structs
//     being packed): SCTP_RTOINFO, SCTP_ASSOCINFO, SCTP_PEER_ADDR_PARAMS
//     (association default and per peer address, SPP_HB_DEMAND),
//     SCTP_PEER_ADDR_THLDS (RFC 7829 potentially-failed threshold),
//     SCTP_PRIMARY_ADDR, SCTP_GET_PEER_ADDR_INFO,
//     SCTP_EXPOSE_POTENTIALLY_FAILED_STATE, SCTP_GET_PEER_ADDRS and
//     SCTP_GET_LOCAL_ADDRS for mixed address families.
//   - The Linux peer states (INACTIVE=0, PF=1, ACTIVE=2, UNCONFIRMED=3; the
//     library's PeerState constants are wrong for Linux and are not used).
//   - A decoder for notifications (ParseNotification) that reports
//     malformed input as ErrMalformedNotification and never panics.
//   - Dial (road warrior) and Listen/Accept (gateway): events are subscribed
//     and tuning applied in the socket's Control hook, before the INIT, and
//     again on the association once it is up.
//
// Notifications are read by one goroutine per association through the Go
// runtime's poller (the socket is switched to non-blocking once connected),
// so no thread stays blocked in recvmsg and Close unblocks the reader without
// racing a reuse of the descriptor.
//
// The kernel tests (TestKernel*) need a kernel with SCTP and root; on a
// kernel without SCTP they skip. See kernel_test.go for how to run them.
package sctp
