package mobility

import (
	"net/netip"
	"testing"
)

// What the address tracker makes of address events on the paths' links.
func TestAddressAdoption(t *testing.T) {
	a := netip.MustParseAddr
	type ev struct {
		link  string
		addr  string
		added bool
	}
	cases := []struct {
		name string
		evs  []ev
		// want: the events of the last address change, as
		// "state local" or "adopt link addr state".
		want []string
	}{
		{"the path's own address going away makes it inactive",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.2", false}},
			[]string{"inactive 192.0.2.2"}},
		{"a new address after the old one went is adopted",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.2", false}, {"wlan0", "192.0.2.77", true}},
			[]string{"adopt wlan0 192.0.2.77 unconfirmed"}},
		{"an address already there when the old one goes is adopted at once",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.77", true}, {"wlan0", "192.0.2.2", false}},
			[]string{"inactive 192.0.2.2", "adopt wlan0 192.0.2.77 unconfirmed"}},
		{"a second address while the path's own is there is not adopted",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.77", true}},
			nil},
		{"an address of the other family is not adopted",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.2", false}, {"wlan0", "2001:db8:1::77", true}},
			nil},
		{"an address on another link is not adopted",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.2", false}, {"eth9", "192.0.2.77", true}},
			nil},
		{"another path's address is not adopted",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.2", false}, {"wlan0", "198.51.100.2", true}},
			[]string{"unconfirmed 198.51.100.2"}}, // news for the path that owns it, no adoption
		{"at start, a path adopts nothing before its own address was seen going away",
			[]ev{{"wlan0", "192.0.2.77", true}},
			nil},
		{"the adopted address going away in turn makes the path inactive",
			[]ev{{"wlan0", "192.0.2.2", true}, {"wlan0", "192.0.2.2", false}, {"wlan0", "192.0.2.77", true}, {"wlan0", "192.0.2.77", false}},
			[]string{"inactive 192.0.2.77"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newAddrTracker([]Path{pri, sec}, Unconfirmed)
			var got []Event
			for i, e := range c.evs {
				got = tr.update(e.link, a(e.addr), e.added, at(i))
			}
			var s []string
			for _, ev := range got {
				if ev.Adopt.IsValid() {
					s = append(s, "adopt "+ev.Link+" "+ev.Adopt.String()+" "+ev.State.String())
				} else {
					s = append(s, ev.State.String()+" "+ev.Local.String())
				}
			}
			if len(s) != len(c.want) {
				t.Fatalf("got %v, want %v", s, c.want)
			}
			for i := range s {
				if s[i] != c.want[i] {
					t.Fatalf("got %v, want %v", s, c.want)
				}
			}
		})
	}
}

// The Set takes the adopted address for the path: it keeps name and peer,
// is unconfirmed until heard from, and traffic returns to it only then.
func TestSetAdoptsNewLocalAddress(t *testing.T) {
	s, err := NewSet([]Path{pri, sec}, 0, Policy{LeaveOnPF: true, SwitchBack: 0}, t0)
	if err != nil {
		t.Fatal(err)
	}
	s.Apply(answer(pri, 0, 0))
	s.Apply(answer(sec, 1, 0))
	if o := s.Apply(Event{Local: pri.Local, State: Inactive, Source: "netlink", Time: at(10)}); !o.Switched || o.Switch.To.Name != "lte" {
		t.Fatalf("address gone: %+v", o)
	}
	n := netip.MustParseAddr("192.0.2.77")
	o := s.Apply(Event{Link: "wlan0", Adopt: n, State: Unconfirmed, Source: "netlink", Time: at(20)})
	if len(o.Adopted) != 1 || o.Adopted[0].Old != pri.Local || o.Adopted[0].Path.Local != n || o.Adopted[0].Path.Name != "wifi" || o.Switched {
		t.Fatalf("adoption %+v", o)
	}
	if st := s.Status()[0]; st.Local != n || st.State != Unconfirmed || st.Peer != pri.Peer {
		t.Fatalf("status %+v", st)
	}
	// Heartbeats from the new address confirm it (the prober names the path
	// by its new local address or its peer); back to the primary.
	o = s.Apply(Event{Local: n, Peer: pri.Peer, State: Active, Source: "probe", Time: at(30), Answer: true})
	if !o.Switched || o.Switch.To.Name != "wifi" || o.Switch.To.Local != n {
		t.Fatalf("back to the primary on its new address: %+v", o)
	}
}
