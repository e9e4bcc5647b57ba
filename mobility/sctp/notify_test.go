package sctp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// The builders below write the kernel's bytes at literal offsets (those of
// <linux/sctp.h>, as the facts file and the layout test give them), not
// through the package's constants, so a wrong constant cannot hide here.

var he = binary.NativeEndian

func sockaddrBytes(ap netip.AddrPort, scope uint32) []byte {
	b := make([]byte, 128)
	a := ap.Addr()
	if a.Is4() {
		he.PutUint16(b[0:], 2) // AF_INET
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a4 := a.As4()
		copy(b[4:], a4[:])
		return b
	}
	he.PutUint16(b[0:], 10) // AF_INET6
	binary.BigEndian.PutUint16(b[2:], ap.Port())
	a16 := a.As16()
	copy(b[8:], a16[:])
	he.PutUint32(b[24:], scope)
	return b
}

func paddrChangeBytes(sa []byte, state, errc, assoc int32) []byte {
	b := make([]byte, 148)
	he.PutUint16(b[0:], 0x8002)
	he.PutUint32(b[4:], 148)
	copy(b[8:136], sa)
	he.PutUint32(b[136:], uint32(state))
	he.PutUint32(b[140:], uint32(errc))
	he.PutUint32(b[144:], uint32(assoc))
	return b
}

func assocChangeBytes(state, errc, out, in uint16, assoc int32, info []byte) []byte {
	b := make([]byte, 20, 20+len(info))
	he.PutUint16(b[0:], 0x8001)
	he.PutUint32(b[4:], uint32(20+len(info)))
	he.PutUint16(b[8:], state)
	he.PutUint16(b[10:], errc)
	he.PutUint16(b[12:], out)
	he.PutUint16(b[14:], in)
	he.PutUint32(b[16:], uint32(assoc))
	return append(b, info...)
}

func shutdownEventBytes(assoc int32) []byte {
	b := make([]byte, 12)
	he.PutUint16(b[0:], 0x8005)
	he.PutUint32(b[4:], 12)
	he.PutUint32(b[8:], uint32(assoc))
	return b
}

func withLength(b []byte, l uint32) []byte {
	b = bytes.Clone(b)
	he.PutUint32(b[4:], l)
	return b
}

var (
	v4   = netip.MustParseAddrPort("192.0.2.1:4711")
	v6   = netip.MustParseAddrPort("[2001:db8:1::1]:4711")
	ll6  = netip.MustParseAddrPort("[fe80::1]:4711")
	map4 = netip.MustParseAddrPort("[::ffff:198.51.100.1]:4711")
)

type notifyCase struct {
	name  string
	in    []byte
	want  Notification
	event *Event // nil: EventOf reports !ok
}

func notifyCases() []notifyCase {
	ev := func(k EventKind, peer string, errc int, assoc int32) *Event {
		e := &Event{Kind: k, Err: errc, AssocID: assoc}
		if peer != "" {
			e.Peer = netip.MustParseAddr(peer)
		}
		return e
	}
	sdry := make([]byte, 12)
	he.PutUint16(sdry[0:], 0x8009)
	he.PutUint32(sdry[4:], 12)
	he.PutUint32(sdry[8:], 3)
	return []notifyCase{
		{"paddr v4 unreachable", paddrChangeBytes(sockaddrBytes(v4, 0), 1, 0, 7),
			&PeerAddrChange{Addr: v4, State: AddrUnreachable, Error: SnFailedThreshold, AssocID: 7},
			ev(EventPathDown, "192.0.2.1", 0, 7)},
		{"paddr v4 available", paddrChangeBytes(sockaddrBytes(v4, 0), 0, 2, 7),
			&PeerAddrChange{Addr: v4, State: AddrAvailable, Error: SnHeartbeatSuccess, AssocID: 7},
			ev(EventPathUp, "192.0.2.1", 2, 7)},
		{"paddr v6 confirmed", paddrChangeBytes(sockaddrBytes(v6, 0), 5, 2, 1),
			&PeerAddrChange{Addr: v6, State: AddrConfirmed, Error: 2, AssocID: 1},
			ev(EventPathUp, "2001:db8:1::1", 2, 1)},
		{"paddr v6 link-local scope", paddrChangeBytes(sockaddrBytes(ll6, 3), 6, 0, 1),
			&PeerAddrChange{Addr: netip.AddrPortFrom(ll6.Addr().WithZone("3"), 4711), State: AddrPotentiallyFailed, AssocID: 1},
			ev(EventPathPF, "fe80::1%3", 0, 1)},
		{"paddr v4-mapped", paddrChangeBytes(sockaddrBytes(map4, 0), 4, 3, 2),
			&PeerAddrChange{Addr: netip.MustParseAddrPort("198.51.100.1:4711"), State: AddrMadePrimary, Error: 3, AssocID: 2},
			ev(EventPathPrimary, "198.51.100.1", 3, 2)},
		{"paddr added", paddrChangeBytes(sockaddrBytes(v4, 0), 3, 0, 2),
			&PeerAddrChange{Addr: v4, State: AddrAdded, AssocID: 2}, ev(EventPathAdded, "192.0.2.1", 0, 2)},
		{"paddr removed", paddrChangeBytes(sockaddrBytes(v4, 0), 2, 0, 2),
			&PeerAddrChange{Addr: v4, State: AddrRemoved, AssocID: 2}, ev(EventPathRemoved, "192.0.2.1", 0, 2)},
		{"paddr unknown state", paddrChangeBytes(sockaddrBytes(v4, 0), 42, 0, 2),
			&PeerAddrChange{Addr: v4, State: 42, AssocID: 2}, nil},
		{"paddr trailing bytes ignored", append(paddrChangeBytes(sockaddrBytes(v4, 0), 1, 0, 7), 1, 2, 3, 4),
			&PeerAddrChange{Addr: v4, State: AddrUnreachable, AssocID: 7}, ev(EventPathDown, "192.0.2.1", 0, 7)},
		{"assoc comm up with features", assocChangeBytes(0, 0, 1, 1, 5, []byte{1, 2}),
			&AssocChange{State: CommUp, OutboundStreams: 1, InboundStreams: 1, AssocID: 5, Info: []byte{1, 2}},
			ev(EventAssocUp, "", 0, 5)},
		{"assoc comm lost", assocChangeBytes(1, 0x0c, 0, 0, 5, []byte{6, 0, 0, 4}),
			&AssocChange{State: CommLost, Error: 0x0c, AssocID: 5, Info: []byte{6, 0, 0, 4}},
			ev(EventAssocLost, "", 0x0c, 5)},
		{"assoc restart", assocChangeBytes(2, 0, 1, 1, 5, nil),
			&AssocChange{State: Restart, OutboundStreams: 1, InboundStreams: 1, AssocID: 5}, ev(EventAssocRestart, "", 0, 5)},
		{"assoc shutdown complete", assocChangeBytes(3, 0, 0, 0, 5, nil),
			&AssocChange{State: ShutdownComplete, AssocID: 5}, ev(EventAssocShutdown, "", 0, 5)},
		{"assoc cant start", assocChangeBytes(4, 0, 0, 0, 0, nil),
			&AssocChange{State: CantStartAssoc}, ev(EventAssocCantStart, "", 0, 0)},
		{"assoc unknown state", assocChangeBytes(9, 0, 0, 0, 5, nil), &AssocChange{State: 9, AssocID: 5}, nil},
		{"shutdown event", shutdownEventBytes(5), &ShutdownEvent{AssocID: 5}, ev(EventPeerShutdown, "", 0, 5)},
		{"sender dry is passed through", sdry, &OtherNotification{NType: NotifySenderDry, Body: []byte{3, 0, 0, 0}}, nil},
	}
}

func TestParseNotification(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, c := range notifyCases() {
		t.Run(c.name, func(t *testing.T) {
			n, err := ParseNotification(c.in)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if !reflect.DeepEqual(n, c.want) {
				t.Fatalf("got %#v\nwant %#v", n, c.want)
			}
			if n.Type() != NotificationType(he.Uint16(c.in)) {
				t.Errorf("Type() %v, header %#x", n.Type(), he.Uint16(c.in))
			}
			ev, ok := EventOf(n, now)
			if c.event == nil {
				if ok {
					t.Errorf("event %v, want none", ev)
				}
				return
			}
			want := *c.event
			want.Time = now
			if !ok || ev != want {
				t.Errorf("event %+v ok=%v, want %+v", ev, ok, want)
			}
		})
	}
}

func TestParseNotificationMalformed(t *testing.T) {
	good := paddrChangeBytes(sockaddrBytes(v4, 0), 1, 0, 7)
	badFamily := paddrChangeBytes(make([]byte, 128), 1, 0, 7)
	unixFamily := bytes.Clone(good)
	he.PutUint16(unixFamily[8:], 1) // AF_UNIX
	notType := bytes.Clone(good)
	he.PutUint16(notType[0:], 0x0002)
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"7 bytes", good[:7]},
		{"type below 0x8000", notType},
		{"length below header", withLength(good, 7)},
		{"length zero", withLength(good, 0)},
		{"length beyond buffer", withLength(good, 149)},
		{"length huge", withLength(good, 0xffffffff)},
		{"paddr truncated read", good[:100]},
		{"paddr length short of struct", withLength(good, 147)},
		{"paddr header only", withLength(good[:8], 8)},
		{"paddr family zero", badFamily},
		{"paddr family AF_UNIX", unixFamily},
		{"assoc change 19", withLength(assocChangeBytes(0, 0, 1, 1, 5, nil)[:19], 19)},
		{"assoc change length 12", withLength(assocChangeBytes(0, 0, 1, 1, 5, nil), 12)},
		{"shutdown 11", withLength(shutdownEventBytes(1)[:11], 11)},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := ParseNotification(c.in)
			if err == nil {
				t.Fatalf("no error, got %#v", n)
			}
			if !errors.Is(err, ErrMalformedNotification) {
				t.Errorf("error %v does not wrap ErrMalformedNotification", err)
			}
			if n != nil {
				t.Errorf("notification %#v with the error", n)
			}
		})
	}
}

func FuzzParseNotification(f *testing.F) {
	for _, c := range notifyCases() {
		f.Add(c.in)
	}
	f.Add([]byte{})
	f.Add(withLength(paddrChangeBytes(sockaddrBytes(v6, 9), 6, 0, 1), 140))
	f.Add(withLength(assocChangeBytes(1, 0, 0, 0, 1, nil), 0xffffffff))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		n, err := ParseNotification(b)
		if !bytes.Equal(in, b) {
			t.Fatal("input modified")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedNotification) || n != nil {
				t.Fatalf("n=%v err=%v", n, err)
			}
			return
		}
		if len(b) < 8 || uint64(he.Uint32(b[4:])) > uint64(len(b)) || he.Uint32(b[4:]) < 8 {
			t.Fatalf("accepted a bad header: %x", b[:min(len(b), 8)])
		}
		if uint16(n.Type()) != he.Uint16(b) {
			t.Fatalf("type %v, header %#x", n.Type(), he.Uint16(b))
		}
		EventOf(n, time.Time{})
		switch n := n.(type) {
		case *PeerAddrChange:
			// Re-encoding what was decoded decodes to the same thing.
			a := n.Addr.Addr()
			var scope uint32
			if z := a.Zone(); z != "" {
				s, err := zoneIndex(z)
				if err != nil {
					t.Fatalf("zone %q from the decoder: %v", z, err)
				}
				scope = s
				a = a.WithZone("")
			}
			re := paddrChangeBytes(sockaddrBytes(netip.AddrPortFrom(a, n.Addr.Port()), scope), int32(n.State), n.Error, n.AssocID)
			he.PutUint16(re[2:], n.Flags)
			n2, err := ParseNotification(re)
			if err != nil || !reflect.DeepEqual(n, n2) {
				t.Fatalf("round trip: %#v -> %#v, %v", n, n2, err)
			}
		case *AssocChange:
			if len(n.Info) != int(he.Uint32(b[4:]))-20 {
				t.Fatalf("info %d bytes, length %d", len(n.Info), he.Uint32(b[4:]))
			}
		}
	})
}

// A global IPv6 address keeps no zone even when the kernel reports a
// scope id with it (it does, for the interface the address arrived on);
// a link-local one keeps it.
func TestSockaddrZoneOnlyLinkLocal(t *testing.T) {
	mk := func(a netip.Addr, scope uint32) []byte {
		b := make([]byte, sizeofSockaddrIn6)
		ne.PutUint16(b, afInet6)
		binary.BigEndian.PutUint16(b[2:], 9899)
		a16 := a.As16()
		copy(b[8:24], a16[:])
		ne.PutUint32(b[24:], scope)
		return b
	}
	for _, c := range []struct {
		addr string
		zone string
	}{{"2001:db8:1::2", ""}, {"fe80::1", "2"}} {
		ap, _, err := parseSockaddr(mk(netip.MustParseAddr(c.addr), 2))
		if err != nil || ap.Addr().Zone() != c.zone {
			t.Errorf("%s with scope 2: %v (zone %q), want zone %q", c.addr, ap, ap.Addr().Zone(), c.zone)
		}
	}
}
