package sctp

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	libsctp "github.com/ishidawataru/sctp"
	"golang.org/x/sys/unix"
)

// setsockopt and getsockopt at SOL_SCTP with a byte buffer laid out by hand.

func setsockopt(fd, opt int, b []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), solSCTP, uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, b []byte) (int, error) {
	l := uint32(len(b))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), solSCTP, uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(l), nil
}

// getsockoptFull is getsockopt that insists on the whole struct back.
func getsockoptFull(fd, opt int, b []byte) error {
	n, err := getsockopt(fd, opt, b)
	if err != nil {
		return err
	}
	if n < len(b) {
		return fmt.Errorf("short answer: %d bytes, want %d", n, len(b))
	}
	return nil
}

func optErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sctp: %s: %w", name, err)
}

func setRTOInfo(fd int, assoc int32, r RTOInfo) error {
	return optErr("set SCTP_RTOINFO", setsockopt(fd, optRTOInfo, encodeRTOInfo(assoc, r)))
}

func getRTOInfo(fd int, assoc int32) (RTOInfo, error) {
	b := encodeRTOInfo(assoc, RTOInfo{})
	if err := getsockoptFull(fd, optRTOInfo, b); err != nil {
		return RTOInfo{}, optErr("get SCTP_RTOINFO", err)
	}
	return decodeRTOInfo(b), nil
}

func setPaddrParams(fd int, assoc int32, peer netip.AddrPort, p PeerAddrParams) error {
	b, err := encodePaddrParams(assoc, peer, p)
	if err == nil {
		err = setsockopt(fd, optPeerAddrParams, b)
	}
	return optErr("set SCTP_PEER_ADDR_PARAMS", err)
}

func getPaddrParams(fd int, assoc int32, peer netip.AddrPort) (PeerAddrParams, error) {
	b, err := encodePaddrParams(assoc, peer, PeerAddrParams{})
	if err == nil {
		err = getsockoptFull(fd, optPeerAddrParams, b)
	}
	if err != nil {
		return PeerAddrParams{}, optErr("get SCTP_PEER_ADDR_PARAMS", err)
	}
	p, err := decodePaddrParams(b)
	return p, optErr("get SCTP_PEER_ADDR_PARAMS", err)
}

func setThlds(fd int, assoc int32, peer netip.AddrPort, pathMaxRxt, pfThld uint16) error {
	b, err := encodeThlds(assoc, peer, pathMaxRxt, pfThld)
	if err == nil {
		err = setsockopt(fd, optPeerAddrThlds, b)
	}
	return optErr("set SCTP_PEER_ADDR_THLDS", err)
}

func getThlds(fd int, assoc int32, peer netip.AddrPort) (Thresholds, error) {
	b, err := encodeThlds(assoc, peer, 0, 0)
	if err == nil {
		err = getsockoptFull(fd, optPeerAddrThlds, b)
	}
	if err != nil {
		return Thresholds{}, optErr("get SCTP_PEER_ADDR_THLDS", err)
	}
	return decodeThlds(b), nil
}

func setPrimary(fd int, assoc int32, peer netip.AddrPort) error {
	b, err := encodePrim(assoc, peer)
	if err == nil {
		err = setsockopt(fd, optPrimaryAddr, b)
	}
	return optErr("set SCTP_PRIMARY_ADDR", err)
}

func getPrimary(fd int, assoc int32) (netip.AddrPort, error) {
	b, _ := encodePrim(assoc, netip.AddrPort{})
	if err := getsockoptFull(fd, optPrimaryAddr, b); err != nil {
		return netip.AddrPort{}, optErr("get SCTP_PRIMARY_ADDR", err)
	}
	ap, _, err := parseSockaddr(b[offPrimAddr:])
	return ap, optErr("get SCTP_PRIMARY_ADDR", err)
}

func getPaddrInfo(fd int, assoc int32, peer netip.AddrPort) (PeerAddrInfo, error) {
	b, err := encodePaddrInfoReq(assoc, peer)
	if err == nil {
		err = getsockoptFull(fd, optGetPeerAddrInfo, b)
	}
	if err != nil {
		return PeerAddrInfo{}, optErr("get SCTP_GET_PEER_ADDR_INFO", err)
	}
	pi, err := decodePaddrInfo(b)
	return pi, optErr("get SCTP_GET_PEER_ADDR_INFO", err)
}

// getAddrs is SCTP_GET_PEER_ADDRS or SCTP_GET_LOCAL_ADDRS, decoding mixed
// families (the library assumes every address has the first one's family).
func getAddrs(fd, opt int, assoc int32) ([]netip.AddrPort, error) {
	b := make([]byte, 8192)
	ne.PutUint32(b[0:], uint32(assoc))
	n, err := getsockopt(fd, opt, b)
	if err == nil && n < sizeofGetAddrsHdr {
		err = fmt.Errorf("short answer: %d bytes", n)
	}
	if err != nil {
		return nil, optErr("get SCTP_GET_*_ADDRS", err)
	}
	// The returned length is not usable: SCTP_GET_PEER_ADDRS counts the
	// 8-byte header in it, SCTP_GET_LOCAL_ADDRS does not. addr_num and the
	// families delimit the list; the rest of b is zeros.
	count := int(ne.Uint32(b[4:]))
	addrs, err := parseAddrList(b[sizeofGetAddrsHdr:], count)
	return addrs, optErr("get SCTP_GET_*_ADDRS", err)
}

func setAssocValue(fd, opt int, assoc int32, v uint32) error {
	return setsockopt(fd, opt, encodeAssocValue(assoc, v))
}

// configureSocket runs in the socket's Control hook, before bind and
// before the INIT: it subscribes to the notifications and sets the tuning as
// the socket's defaults, which the association inherits when it is created.
func configureSocket(fd int, t Tuning) error {
	err := libsctp.NewSCTPConn(fd, nil).SubscribeEvents(
		libsctp.SCTP_EVENT_ASSOCIATION | libsctp.SCTP_EVENT_ADDRESS | libsctp.SCTP_EVENT_SHUTDOWN)
	if err != nil {
		return optErr("set SCTP_EVENTS", err)
	}
	// Without this (net.sctp.pf_expose at its default, "unset"), Linux
	// sends no SCTP_ADDR_POTENTIALLY_FAILED event. Kernels before 5.5
	// do not know the option.
	if err := setAssocValue(fd, optExposePFState, futureAssoc, pfExposeEnable); err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
		return optErr("set SCTP_EXPOSE_POTENTIALLY_FAILED_STATE", err)
	}
	// No Nagle: the association carries heartbeats and, with
	// data_interval, one byte at a time whose only purpose is to be
	// outstanding at once (T3-rtx). Held back behind an unacknowledged
	// byte, it would wait for a SACK the peer delays.
	if err := unix.SetsockoptInt(fd, solSCTP, optNoDelay, 1); err != nil {
		return optErr("set SCTP_NODELAY", err)
	}
	if t.AssocMaxRetrans > 0 {
		if err := setsockopt(fd, optAssocInfo, encodeAssocMaxRxt(futureAssoc, uint16(t.AssocMaxRetrans))); err != nil {
			return optErr("set SCTP_ASSOCINFO", err)
		}
	}
	return applyTuning(fd, futureAssoc, t, true)
}

// applyTuning sets t's RTO, heartbeat and threshold values on the socket
// (before connecting) or on its association and all its paths (after).
func applyTuning(fd int, assoc int32, t Tuning, socketLevel bool) error {
	if t.RTOInitial != 0 || t.RTOMin != 0 || t.RTOMax != 0 {
		if err := setRTOInfo(fd, assoc, RTOInfo{Initial: t.RTOInitial, Min: t.RTOMin, Max: t.RTOMax}); err != nil {
			return err
		}
	}
	// SACKs at once (no delayed SACK, RFC 4960 §6.2): a path's RTT, and so
	// its RTO, is then the path's, not the peer's 200 ms SACK delay, and
	// a dead path's T3-rtx expires one short RTO after the death.
	p := PeerAddrParams{Flags: SPPHBEnable | SPPSackDelayDisable, HeartbeatInterval: t.HeartbeatInterval, PathMaxRetrans: t.PathMaxRetrans}
	if err := setPaddrParams(fd, assoc, netip.AddrPort{}, p); err != nil {
		return err
	}
	err := setThlds(fd, assoc, netip.AddrPort{}, uint16(t.PathMaxRetrans), t.pfThld())
	if err != nil && socketLevel && errors.Is(err, unix.ENOENT) {
		// Kernels before 5.8 set thresholds on an association only; the
		// call after the association is up does it.
		err = nil
	}
	return err
}
