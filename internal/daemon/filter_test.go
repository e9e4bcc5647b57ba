package daemon

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/ike"
)

func TestParseFilterRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, id, addr, state string
		limit                 int
		wantErr               string
	}{
		{name: "bad pattern", id: "rw[", wantErr: "bad pattern"},
		{name: "address neither address nor prefix", addr: "100.64.0.0/33", wantErr: "want an address or a prefix"},
		{name: "unknown state", state: "up", wantErr: "want active, idle or expired"},
		{name: "negative limit", limit: -1, wantErr: "want 0"},
		{name: "single address becomes a host prefix", addr: "100.64.0.7"},
		{name: "prefix masked", addr: "100.64.1.9/16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFilter(tc.id, tc.addr, tc.state, tc.limit)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.addr == "100.64.0.7" && f.Addr != netip.MustParsePrefix("100.64.0.7/32") || tc.addr == "100.64.1.9/16" && f.Addr != netip.MustParsePrefix("100.64.0.0/16") {
				t.Errorf("addr %q parsed as %v", tc.addr, f.Addr)
			}
		})
	}
	if _, err := parseFilterWords([]string{"peer=x"}); err == nil {
		t.Error("unknown filter word accepted")
	}
	if _, err := parseFilterWords([]string{"idle"}); err == nil {
		t.Error("word without = accepted")
	}
}

// The control command line carries the filter as words; an identity with
// spaces (a DN) survives the trip.
func TestFilterWordsRoundTrip(t *testing.T) {
	f, err := parseFilter("CN=rw 1*, O=example", "100.64.0.0/10", StateIdle, 20)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseFilterWords(strings.Fields(f.words()))
	if err != nil || back != f {
		t.Fatalf("%q came back as %+v (%v), want %+v", f.words(), back, err, f)
	}
}

func fleetStatus(n int) Status {
	st := Status{Daemon: "gateway", IKE: &IKEStatus{Role: "responder"},
		SAs: []SAStatus{{SPI: "0x00000100", Dir: "out"}}} // a static SA
	for i := range n {
		peer := fmt.Sprintf("rw%d@load.example", i)
		addr := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		state := StateActive
		switch {
		case i%10 == 0:
			state = StateIdle
		case i == 7:
			state = StateExpired
		}
		in, out := fmt.Sprintf("%#08x", 0x10000+2*i), fmt.Sprintf("%#08x", 0x10001+2*i)
		st.Children = append(st.Children, ChildStatus{Name: peer + "#1/net", IKE: peer + "#1", Peer: peer, SPIIn: in, SPIOut: out,
			Remote: addr.String() + "/32", State: state})
		st.SAs = append(st.SAs, SAStatus{SPI: in, Dir: "in"}, SAStatus{SPI: out, Dir: "out"})
		st.IKE.SAs = append(st.IKE.SAs, ike.SAInfo{Name: peer + "#1", PeerID: peer, Remote: netip.AddrPortFrom(addr, 4500)})
	}
	return st
}

// Each filter selects the peers it names; the summary counts them all.
func TestApplyFilterSelectsAndSummaryCountsAll(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name                  string
		id, addr, state       string
		limit                 int
		summary               bool
		wantIKE, wantChildren int
		wantSAs               int
	}{
		{name: "nothing filtered lists every SA, static ones too", wantIKE: n, wantChildren: n, wantSAs: 2*n + 1},
		{name: "identity pattern", id: "rw1?@load.example", wantIKE: 10, wantChildren: 10, wantSAs: 20},
		{name: "one identity", id: "rw123@load.example", wantIKE: 1, wantChildren: 1, wantSAs: 2},
		{name: "inner address prefix", addr: "100.64.0.0/24", wantIKE: 256, wantChildren: 256, wantSAs: 512},
		{name: "one address", addr: "100.64.3.231", wantIKE: 1, wantChildren: 1, wantSAs: 2},
		{name: "state idle", state: StateIdle, wantIKE: 100, wantChildren: 100, wantSAs: 200},
		{name: "state expired", state: StateExpired, wantIKE: 1, wantChildren: 1, wantSAs: 2},
		{name: "filters combine", id: "rw1*", state: StateIdle, wantIKE: 11, wantChildren: 11, wantSAs: 22}, // rw10, rw100, rw110 .. rw190
		{name: "limit caps each list", limit: 20, wantIKE: 20, wantChildren: 20, wantSAs: 20},
		{name: "summary drops the lists", summary: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFilter(tc.id, tc.addr, tc.state, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			st := applyFilter(fleetStatus(n), f, tc.summary)
			if len(st.IKE.SAs) != tc.wantIKE || len(st.Children) != tc.wantChildren || len(st.SAs) != tc.wantSAs {
				t.Errorf("listed %d IKE SAs, %d Child SAs, %d SAs; want %d, %d, %d", len(st.IKE.SAs), len(st.Children), len(st.SAs), tc.wantIKE, tc.wantChildren, tc.wantSAs)
			}
			for _, c := range st.Children {
				if !f.child(c) {
					t.Errorf("listed %s, which the filter does not select", c.Name)
				}
			}
			s := st.Summary
			if s.IKESAs != n || s.ChildSAs != n || s.SAs != 2*n+1 || s.ByState[StateIdle] != 100 || s.ByState[StateExpired] != 1 || s.ByState[StateActive] != n-101 {
				t.Errorf("summary %+v", s)
			}
			if s.ListedIKESAs != tc.wantIKE || s.ListedChildSAs != tc.wantChildren || s.ListedSAs != tc.wantSAs {
				t.Errorf("summary says %d/%d/%d listed", s.ListedIKESAs, s.ListedChildSAs, s.ListedSAs)
			}
		})
	}
}

// Text status: the summary comes first, and says what the lists leave out.
func TestStatusTextSummaryFirst(t *testing.T) {
	f, _ := parseFilter("", "", "", statusTextLimit)
	var b strings.Builder
	PrintStatus(&b, applyFilter(fleetStatus(100), f, false))
	lines := strings.Split(b.String(), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "Summary: 100 IKE SAs, 100 Child SAs (89 active, 10 idle, 1 expired), 201 SAs") ||
		!strings.HasPrefix(lines[2], "Listed: 20 of the IKE SAs, 20 of the Child SAs, 20 of the SAs (-all lists them all") {
		t.Fatalf("status:\n%s", b.String())
	}
	if got := strings.Count(b.String(), "@load.example  SPIs in"); got != 20 {
		t.Errorf("%d Child SA lines, want 20", got)
	}
}

// The filter words come over the control socket from any member of
// control_group: bad input is an error, never a panic, and what parses
// survives the round trip through words.
func FuzzParseFilterWords(f *testing.F) {
	for _, s := range []string{"id=rw1%2A addr=100.64.0.0/10 state=idle limit=20", "id=%ZZ", "addr=::1", "limit=-3", "state=", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		flt, err := parseFilterWords(strings.Fields(line))
		if err != nil {
			return
		}
		back, err := parseFilterWords(strings.Fields(flt.words()))
		if err != nil || back != flt {
			t.Fatalf("%q parsed as %+v, its words %q as %+v (%v)", line, flt, flt.words(), back, err)
		}
		flt.child(ChildStatus{Peer: "rw", Remote: "100.64.0.1,2001:db8::/64, junk"})
	})
}
