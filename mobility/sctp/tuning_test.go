package sctp

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestEncodeRTOInfo(t *testing.T) {
	b := encodeRTOInfo(3, RTOInfo{Initial: 200 * time.Millisecond, Min: 100*time.Millisecond + 1, Max: 400 * time.Millisecond})
	if len(b) != 16 {
		t.Fatalf("%d bytes", len(b))
	}
	// struct sctp_rtoinfo { assoc_id; initial; max; min }: max before min.
	for off, want := range map[int]uint32{0: 3, 4: 200, 8: 400, 12: 101} {
		if got := he.Uint32(b[off:]); got != want {
			t.Errorf("offset %d: %d, want %d", off, got, want)
		}
	}
	if r := decodeRTOInfo(b); r != (RTOInfo{200 * time.Millisecond, 101 * time.Millisecond, 400 * time.Millisecond}) {
		t.Errorf("decode %+v", r)
	}
}

func TestEncodePaddrParams(t *testing.T) {
	peer := netip.MustParseAddrPort("198.51.100.1:4500")
	b, err := encodePaddrParams(9, peer, PeerAddrParams{
		HeartbeatInterval: 200 * time.Millisecond, PathMaxRetrans: 2, PathMTU: 1400,
		SackDelay: 20 * time.Millisecond, Flags: SPPHBEnable | SPPHBDemand, IPv6FlowLabel: 0x12345, DSCP: 0x2e,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 156 {
		t.Fatalf("%d bytes", len(b))
	}
	check := func(off int, got, want uint32) {
		t.Helper()
		if got != want {
			t.Errorf("offset %d: %#x, want %#x", off, got, want)
		}
	}
	check(0, he.Uint32(b[0:]), 9)
	check(4, uint32(he.Uint16(b[4:])), 2) // sockaddr_in at 4
	check(6, uint32(b[6])<<8|uint32(b[7]), 4500)
	if !bytes.Equal(b[8:12], []byte{198, 51, 100, 1}) {
		t.Errorf("address %v", b[8:12])
	}
	check(132, he.Uint32(b[132:]), 200)
	check(136, uint32(he.Uint16(b[136:])), 2)
	check(138, he.Uint32(b[138:]), 1400)
	check(142, he.Uint32(b[142:]), 20)
	check(146, he.Uint32(b[146:]), 0x5)
	check(150, he.Uint32(b[150:]), 0x12345)
	check(154, uint32(b[154]), 0x2e)
	p, err := decodePaddrParams(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr != peer.Addr() || p.HeartbeatInterval != 200*time.Millisecond || p.PathMaxRetrans != 2 ||
		p.Flags != SPPHBEnable|SPPHBDemand || p.PathMTU != 1400 || p.SackDelay != 20*time.Millisecond || p.DSCP != 0x2e {
		t.Errorf("decode %+v", p)
	}
	// No address: sockaddr_storage all zero, which the kernel reads as "any".
	b, _ = encodePaddrParams(0, netip.AddrPort{}, PeerAddrParams{Flags: SPPHBEnable})
	if !bytes.Equal(b[4:132], make([]byte, 128)) {
		t.Error("zero address not all zero")
	}
	if p, _ := decodePaddrParams(b); p.Addr.IsValid() {
		t.Errorf("decoded address %v from zeros", p.Addr)
	}
}

func TestEncodeThldsAndPrimAndInfo(t *testing.T) {
	peer := netip.MustParseAddrPort("[2001:db8:2::1]:4500")
	b, err := encodeThlds(1, peer, 5, 0xffff)
	if err != nil {
		t.Fatal(err)
	}
	// Not packed: the sockaddr_storage is 8-aligned, at 8.
	if len(b) != 144 || he.Uint16(b[8:]) != 10 || he.Uint16(b[136:]) != 5 || he.Uint16(b[138:]) != 0xffff {
		t.Errorf("thlds %d bytes, family %d, pmr %d, pf %#x", len(b), he.Uint16(b[8:]), he.Uint16(b[136:]), he.Uint16(b[138:]))
	}
	if th := decodeThlds(b); th != (Thresholds{PathMaxRetrans: 5, PFThreshold: -1}) {
		t.Errorf("decode %+v", th)
	}
	b, _ = encodePrim(1, peer)
	if len(b) != 132 || he.Uint16(b[4:]) != 10 || !bytes.Equal(b[12:28], peer.Addr().AsSlice()) {
		t.Errorf("prim %x", b[:32])
	}
	b, _ = encodePaddrInfoReq(1, peer)
	if len(b) != 152 {
		t.Fatalf("paddrinfo %d bytes", len(b))
	}
	he.PutUint32(b[132:], 2)
	he.PutUint32(b[136:], 4380)
	he.PutUint32(b[140:], 12)
	he.PutUint32(b[144:], 212)
	he.PutUint32(b[148:], 1500)
	pi, err := decodePaddrInfo(b)
	want := PeerAddrInfo{Addr: peer.Addr(), State: PeerActive, Cwnd: 4380, SRTT: 12 * time.Millisecond, RTO: 212 * time.Millisecond, MTU: 1500}
	if err != nil || pi != want {
		t.Errorf("decode %+v %v, want %+v", pi, err, want)
	}
	if b := encodeAssocMaxRxt(0, 4); len(b) != 20 || he.Uint16(b[4:]) != 4 {
		t.Errorf("assocparams %x", b)
	}
}

func TestSockaddrRoundTrip(t *testing.T) {
	for _, s := range []string{"192.0.2.1:1", "[2001:db8::1]:65535", "[fe80::1%7]:4500", "0.0.0.0:0"} {
		ap := netip.MustParseAddrPort(s)
		b := make([]byte, 128)
		if err := putSockaddr(b, ap); err != nil {
			t.Fatal(err)
		}
		got, n, err := parseSockaddr(b)
		if err != nil || got != ap {
			t.Errorf("%s: %v %v", s, got, err)
		}
		if want := map[bool]int{true: 16, false: 28}[ap.Addr().Is4()]; n != want {
			t.Errorf("%s: length %d, want %d", s, n, want)
		}
	}
	// Mapped addresses go to the kernel as AF_INET, as it keeps IPv4 peers.
	b := make([]byte, 128)
	putSockaddr(b, netip.MustParseAddrPort("[::ffff:192.0.2.9]:5"))
	if he.Uint16(b) != 2 {
		t.Errorf("mapped address written as family %d", he.Uint16(b))
	}
}

func TestParseAddrList(t *testing.T) {
	a := netip.MustParseAddrPort("192.0.2.1:9")
	b := netip.MustParseAddrPort("[2001:db8::2]:9")
	c := netip.MustParseAddrPort("198.51.100.1:9")
	var buf []byte
	for _, ap := range []netip.AddrPort{a, b, c} {
		s := make([]byte, 128)
		putSockaddr(s, ap)
		buf = append(buf, s[:map[bool]int{true: 16, false: 28}[ap.Addr().Is4()]]...)
	}
	got, err := parseAddrList(buf, 3)
	if err != nil || len(got) != 3 || got[0] != a || got[1] != b || got[2] != c {
		t.Errorf("%v %v", got, err)
	}
	if _, err := parseAddrList(buf[:40], 3); err == nil {
		t.Error("short list accepted")
	}
	if _, err := parseAddrList(buf, 4); err == nil {
		t.Error("count beyond the buffer accepted")
	}
}

func TestTuningValidate(t *testing.T) {
	ok := []Tuning{{}, DefaultTuning(), {PFThreshold: -1}, {RTOMin: time.Second, RTOMax: time.Second}}
	for _, tu := range ok {
		if err := tu.Validate(); err != nil {
			t.Errorf("%+v: %v", tu, err)
		}
	}
	bad := map[string]Tuning{
		"RTOMin":            {RTOMin: 2 * time.Second, RTOMax: time.Second},
		"RTOInitial":        {RTOInitial: -1},
		"HeartbeatInterval": {HeartbeatInterval: 50 * 24 * time.Hour}, // > 2^32 ms
		"PathMaxRetrans":    {PathMaxRetrans: 70000},
		"PFThreshold":       {PFThreshold: -2},
		"MaxInitAttempts":   {MaxInitAttempts: -1},
		"AssocMaxRetrans":   {AssocMaxRetrans: 1 << 16},
	}
	for field, tu := range bad {
		if err := tu.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func TestTuningDerived(t *testing.T) {
	d := DefaultTuning()
	// (2+2) * (200 ms + 1.5*400 ms)
	if got := d.FailureDetectionBound(); got != 3200*time.Millisecond {
		t.Errorf("bound %v", got)
	}
	// The measured 0.78–1.48 s must fall under it.
	if d.FailureDetectionBound() < 1480*time.Millisecond {
		t.Error("bound below a measured detection time")
	}
	if got := (Tuning{}).FailureDetectionBound(); got != 7*(30*time.Second+90*time.Second) {
		t.Errorf("kernel-default bound %v", got)
	}
	if d.pfThld() != 0 || (Tuning{PFThreshold: -1}).pfThld() != 0xffff || (Tuning{PFThreshold: 3}).pfThld() != 3 {
		t.Error("pfThld")
	}
	if a, to := (Tuning{MaxInitAttempts: 4, RTOMax: 400 * time.Millisecond}).initMsg(); a != 4 || to != 400 {
		t.Errorf("initMsg %d %d", a, to)
	}
	if _, to := (Tuning{RTOMax: 100 * time.Second}).initMsg(); to != 0xffff {
		t.Errorf("initMsg timeout not capped: %d", to)
	}
	if ms32(time.Microsecond) != 1 || ms32(0) != 0 || ms32(1500*time.Microsecond) != 2 {
		t.Error("ms32 rounding")
	}
}
