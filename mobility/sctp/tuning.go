package sctp

import (
	"fmt"
	"math"
	"net/netip"
	"time"
)

// Tuning is what the mobility package sets on an association. A zero field
// leaves the kernel's default (per network namespace, net.sctp.*), except
// PFThreshold, whose zero is a setting (PF after the first missed heartbeat,
// also the kernel's default). Durations are rounded up to milliseconds.
type Tuning struct {
	// SCTP_RTOINFO (RFC 4960 §6.3.1). Kernel defaults 3 s, 1 s, 60 s.
	RTOInitial, RTOMin, RTOMax time.Duration
	// spp_hbinterval of SCTP_PEER_ADDR_PARAMS: the heartbeat period added
	// to the path's RTO (RFC 4960 §8.3). Heartbeats are always enabled.
	// Kernel default 30 s.
	HeartbeatInterval time.Duration
	// Path.Max.Retrans (RFC 4960 §8.2): a path is INACTIVE, and
	// SCTP_ADDR_UNREACHABLE is sent, once more than this many consecutive
	// heartbeats (or retransmissions) went unanswered. Kernel default 5.
	PathMaxRetrans int
	// PotentiallyFailed.Max.Retrans (RFC 7829): a path is PF once more than
	// this many went unanswered; while PF it is probed every RTO instead of
	// every RTO + HeartbeatInterval. 0 = after the first miss; -1 = off.
	// Linux only enters PF while the count is still below PathMaxRetrans, so
	// PF shows only when PFThreshold <= PathMaxRetrans-2.
	PFThreshold int
	// sinit_max_attempts of SCTP_INITMSG: INIT retransmissions before Dial
	// gives up. Kernel default 8. The INIT timeout is capped at RTOMax.
	MaxInitAttempts int
	// Association.Max.Retrans (SCTP_ASSOCINFO, RFC 4960 §8.1): the
	// association is lost (SCTP_COMM_LOST) after this many consecutive
	// unanswered retransmissions and heartbeats over all paths. Kernel
	// default 10. Set on the socket before the INIT only. Counted over all
	// paths together: below the sum of PathMaxRetrans+1 over the paths, the
	// association can be lost before every path was reported unreachable
	// (RFC 4960 §8.2 advises against more than that sum; the kernel only
	// enforces it when set on a live association).
	AssocMaxRetrans int
}

// DefaultTuning is the configuration whose failover was measured in a VM
// (RTO 200/100/400 ms, heartbeat 200 ms, path max retransmissions 2):
// SCTP_ADDR_UNREACHABLE 0.8 to 1.5 s after link down, data moved to the
// other path in about 0.1 s.
func DefaultTuning() Tuning {
	return Tuning{
		RTOInitial:        200 * time.Millisecond,
		RTOMin:            100 * time.Millisecond,
		RTOMax:            400 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond,
		PathMaxRetrans:    2,
		PFThreshold:       0,
	}
}

// Kernel defaults, for FailureDetectionBound.
const (
	kernelRTOMax         = 60 * time.Second
	kernelHBInterval     = 30 * time.Second
	kernelPathMaxRetrans = 5
)

// FailureDetectionBound is an upper bound on the time from a path's failure
// to SCTP_ADDR_UNREACHABLE: Linux strikes a path when it sends a heartbeat
// while the previous one is unanswered, sends one every RTO+interval
// (jittered by ±RTO/2, RTO ≤ RTOMax), and declares the path down after
// PathMaxRetrans+1 strikes; so at most PathMaxRetrans+2 periods.
func (t Tuning) FailureDetectionBound() time.Duration {
	rtoMax, hb, pmr := t.RTOMax, t.HeartbeatInterval, t.PathMaxRetrans
	if rtoMax == 0 {
		rtoMax = kernelRTOMax
	}
	if hb == 0 {
		hb = kernelHBInterval
	}
	if pmr == 0 {
		pmr = kernelPathMaxRetrans
	}
	return time.Duration(pmr+2) * (hb + rtoMax*3/2)
}

// Validate checks the ranges the kernel's structs can carry.
func (t Tuning) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"RTOInitial", t.RTOInitial}, {"RTOMin", t.RTOMin}, {"RTOMax", t.RTOMax}, {"HeartbeatInterval", t.HeartbeatInterval}} {
		if d.v < 0 || d.v > time.Duration(math.MaxUint32)*time.Millisecond {
			return fmt.Errorf("sctp: tuning: %s %v out of range", d.name, d.v)
		}
	}
	if t.RTOMin != 0 && t.RTOMax != 0 && ms32(t.RTOMin) > ms32(t.RTOMax) {
		return fmt.Errorf("sctp: tuning: RTOMin %v > RTOMax %v", t.RTOMin, t.RTOMax)
	}
	for _, n := range []struct {
		name      string
		v, lo, hi int
	}{
		{"PathMaxRetrans", t.PathMaxRetrans, 0, math.MaxUint16},
		{"PFThreshold", t.PFThreshold, -1, math.MaxUint16 - 1},
		{"MaxInitAttempts", t.MaxInitAttempts, 0, math.MaxUint16},
		{"AssocMaxRetrans", t.AssocMaxRetrans, 0, math.MaxUint16},
	} {
		if n.v < n.lo || n.v > n.hi {
			return fmt.Errorf("sctp: tuning: %s %d out of [%d, %d]", n.name, n.v, n.lo, n.hi)
		}
	}
	return nil
}

// ms32 is d in whole milliseconds, rounded up, saturated to uint32.
func ms32(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	m := (d + time.Millisecond - 1) / time.Millisecond
	if m > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(m)
}

func msDur(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }

// pfThld is spt_pathpfthld for t.PFThreshold: off is 0xffff, a count the
// error counter never exceeds (the kernel does not check it against
// pathmaxrxt for SCTP_PEER_ADDR_THLDS).
func (t Tuning) pfThld() uint16 {
	if t.PFThreshold < 0 {
		return math.MaxUint16
	}
	return uint16(t.PFThreshold)
}

// initMsg returns sinit_max_attempts and sinit_max_init_timeo (ms).
func (t Tuning) initMsg() (attempts, maxInitTimeo uint16) {
	attempts = uint16(t.MaxInitAttempts)
	if m := ms32(t.RTOMax); m > 0 {
		maxInitTimeo = uint16(min(m, math.MaxUint16))
	}
	return
}

// RTOInfo is SCTP_RTOINFO.
type RTOInfo struct {
	Initial, Min, Max time.Duration
}

func encodeRTOInfo(assoc int32, r RTOInfo) []byte {
	b := make([]byte, sizeofRTOInfo)
	ne.PutUint32(b[0:], uint32(assoc))
	ne.PutUint32(b[offRTOInitial:], ms32(r.Initial))
	ne.PutUint32(b[offRTOMax:], ms32(r.Max))
	ne.PutUint32(b[offRTOMin:], ms32(r.Min))
	return b
}

func decodeRTOInfo(b []byte) RTOInfo {
	return RTOInfo{
		Initial: msDur(ne.Uint32(b[offRTOInitial:])),
		Max:     msDur(ne.Uint32(b[offRTOMax:])),
		Min:     msDur(ne.Uint32(b[offRTOMin:])),
	}
}

// PeerAddrParams is SCTP_PEER_ADDR_PARAMS (struct sctp_paddrparams) for one
// peer address, or for the association (or the socket before it connects)
// when Addr is not valid. When setting, zero values leave the kernel's
// unchanged and the interval is only applied with SPPHBEnable.
type PeerAddrParams struct {
	Addr              netip.Addr
	HeartbeatInterval time.Duration
	PathMaxRetrans    int
	PathMTU           uint32
	SackDelay         time.Duration
	Flags             SPPFlags
	IPv6FlowLabel     uint32
	DSCP              uint8
}

func encodePaddrParams(assoc int32, peer netip.AddrPort, p PeerAddrParams) ([]byte, error) {
	b := make([]byte, sizeofPaddrParams)
	ne.PutUint32(b[0:], uint32(assoc))
	if err := putSockaddr(b[offPPAddr:offPPAddr+sizeofSockaddrStorage], peer); err != nil {
		return nil, err
	}
	ne.PutUint32(b[offPPHBInterval:], ms32(p.HeartbeatInterval))
	ne.PutUint16(b[offPPPathMaxRxt:], uint16(p.PathMaxRetrans))
	ne.PutUint32(b[offPPPathMTU:], p.PathMTU)
	ne.PutUint32(b[offPPSackDelay:], ms32(p.SackDelay))
	ne.PutUint32(b[offPPFlags:], uint32(p.Flags))
	ne.PutUint32(b[offPPFlowLabel:], p.IPv6FlowLabel)
	b[offPPDSCP] = p.DSCP
	return b, nil
}

func decodePaddrParams(b []byte) (PeerAddrParams, error) {
	p := PeerAddrParams{
		HeartbeatInterval: msDur(ne.Uint32(b[offPPHBInterval:])),
		PathMaxRetrans:    int(ne.Uint16(b[offPPPathMaxRxt:])),
		PathMTU:           ne.Uint32(b[offPPPathMTU:]),
		SackDelay:         msDur(ne.Uint32(b[offPPSackDelay:])),
		Flags:             SPPFlags(ne.Uint32(b[offPPFlags:])),
		IPv6FlowLabel:     ne.Uint32(b[offPPFlowLabel:]),
		DSCP:              b[offPPDSCP],
	}
	if ne.Uint16(b[offPPAddr:]) != 0 {
		ap, _, err := parseSockaddr(b[offPPAddr : offPPAddr+sizeofSockaddrStorage])
		if err != nil {
			return p, err
		}
		p.Addr = ap.Addr()
	}
	return p, nil
}

// Thresholds is SCTP_PEER_ADDR_THLDS (struct sctp_paddrthlds).
type Thresholds struct {
	PathMaxRetrans int // 0 leaves it unchanged when setting
	PFThreshold    int // -1 (0xffff) = off
}

func encodeThlds(assoc int32, peer netip.AddrPort, pathMaxRxt, pfThld uint16) ([]byte, error) {
	b := make([]byte, sizeofPaddrThlds)
	ne.PutUint32(b[0:], uint32(assoc))
	if err := putSockaddr(b[offThAddr:offThAddr+sizeofSockaddrStorage], peer); err != nil {
		return nil, err
	}
	ne.PutUint16(b[offThPathMaxRxt:], pathMaxRxt)
	ne.PutUint16(b[offThPFThld:], pfThld)
	return b, nil
}

func decodeThlds(b []byte) Thresholds {
	th := Thresholds{PathMaxRetrans: int(ne.Uint16(b[offThPathMaxRxt:])), PFThreshold: int(ne.Uint16(b[offThPFThld:]))}
	if th.PFThreshold == math.MaxUint16 {
		th.PFThreshold = -1
	}
	return th
}

// PeerAddrInfo is SCTP_GET_PEER_ADDR_INFO (struct sctp_paddrinfo).
type PeerAddrInfo struct {
	Addr  netip.Addr
	State PeerState
	Cwnd  uint32 // bytes
	SRTT  time.Duration
	RTO   time.Duration
	MTU   uint32
}

func encodePrim(assoc int32, peer netip.AddrPort) ([]byte, error) {
	b := make([]byte, sizeofPrim)
	ne.PutUint32(b[0:], uint32(assoc))
	return b, putSockaddr(b[offPrimAddr:offPrimAddr+sizeofSockaddrStorage], peer)
}

func encodePaddrInfoReq(assoc int32, peer netip.AddrPort) ([]byte, error) {
	b := make([]byte, sizeofPaddrInfo)
	ne.PutUint32(b[0:], uint32(assoc))
	return b, putSockaddr(b[offPIAddr:offPIAddr+sizeofSockaddrStorage], peer)
}

func decodePaddrInfo(b []byte) (PeerAddrInfo, error) {
	pi := PeerAddrInfo{
		State: PeerState(int32(ne.Uint32(b[offPIState:]))),
		Cwnd:  ne.Uint32(b[offPICwnd:]),
		SRTT:  msDur(ne.Uint32(b[offPISRTT:])),
		RTO:   msDur(ne.Uint32(b[offPIRTO:])),
		MTU:   ne.Uint32(b[offPIMTU:]),
	}
	ap, _, err := parseSockaddr(b[offPIAddr : offPIAddr+sizeofSockaddrStorage])
	if err != nil {
		return pi, err
	}
	pi.Addr = ap.Addr()
	return pi, nil
}

func encodeAssocValue(assoc int32, v uint32) []byte {
	b := make([]byte, sizeofAssocValue)
	ne.PutUint32(b[0:], uint32(assoc))
	ne.PutUint32(b[4:], v)
	return b
}

func encodeAssocMaxRxt(assoc int32, n uint16) []byte {
	b := make([]byte, sizeofAssocParams)
	ne.PutUint32(b[0:], uint32(assoc))
	ne.PutUint16(b[offAssocParamsMaxRxt:], n)
	return b
}
