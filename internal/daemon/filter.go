package daemon

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/control"
)

// Child SA states for `sa list -state` and status's summary: what an
// operator of a gateway with thousands of road warriors looks for.
const (
	StateActive  = "active"  // installed, has carried packets
	StateIdle    = "idle"    // installed, no packet yet in either direction
	StateExpired = "expired" // an SA of the pair hit its hard lifetime: waiting for a rekey or the DELETE
)

// Filter selects the peers `status` and `sa list` show. The zero Filter
// selects everything.
type Filter struct {
	// ID is a shell pattern (path.Match) on the peer's identity, e.g.
	// "rw1*@example.org".
	ID string
	// Addr selects peers with an address in it: an inner address (the
	// Child SA's remote selector, a virtual address) or the IKE SA's
	// outer address.
	Addr netip.Prefix
	// State selects Child SAs by state (StateActive, ...).
	State string
	// Limit, if above 0, caps each list (status's text form: the summary
	// says how many there are).
	Limit int
}

func (f Filter) zero() bool { return f.ID == "" && !f.Addr.IsValid() && f.State == "" }

// words is the filter on the control command line: key=value words, the
// value query-escaped (identities may hold spaces).
func (f Filter) words() string {
	var w []string
	if f.ID != "" {
		w = append(w, "id="+url.QueryEscape(f.ID))
	}
	if f.Addr.IsValid() {
		w = append(w, "addr="+f.Addr.String())
	}
	if f.State != "" {
		w = append(w, "state="+f.State)
	}
	if f.Limit > 0 {
		w = append(w, "limit="+strconv.Itoa(f.Limit))
	}
	return strings.Join(w, " ")
}

// parseFilter reads the words after a command (a daemon's side, or the
// CLI's flags given as strings). Bad input is a clear error.
func parseFilter(id, addr, state string, limit int) (Filter, error) {
	f := Filter{ID: id, State: state, Limit: limit}
	if id != "" {
		if _, err := path.Match(id, ""); err != nil {
			return f, fmt.Errorf("id %q: bad pattern: %v", id, err)
		}
	}
	if addr != "" {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			a, err2 := netip.ParseAddr(addr)
			if err2 != nil {
				return f, fmt.Errorf("addr %q: want an address or a prefix", addr)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		f.Addr = p.Masked()
	}
	switch state {
	case "", StateActive, StateIdle, StateExpired:
	default:
		return f, fmt.Errorf("state %q: want %s, %s or %s", state, StateActive, StateIdle, StateExpired)
	}
	if limit < 0 {
		return f, fmt.Errorf("limit %d: want 0 (none) or more", limit)
	}
	return f, nil
}

// parseFilterWords is parseFilter from a control command's words.
func parseFilterWords(words []string) (Filter, error) {
	var id, addr, state string
	limit := 0
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			return Filter{}, fmt.Errorf("%q: want key=value (id, addr, state, limit)", w)
		}
		var err error
		switch k {
		case "id":
			id, err = url.QueryUnescape(v)
		case "addr":
			addr = v
		case "state":
			state = v
		case "limit":
			limit, err = strconv.Atoi(v)
		default:
			return Filter{}, fmt.Errorf("%q: unknown filter (want id, addr, state, limit)", k)
		}
		if err != nil {
			return Filter{}, fmt.Errorf("%s: %v", k, err)
		}
	}
	return parseFilter(id, addr, state, limit)
}

func (f Filter) idMatch(id string) bool {
	if f.ID == "" {
		return true
	}
	ok, _ := path.Match(f.ID, id)
	return ok
}

// prefixesOverlap: some prefix of the comma-separated list s overlaps p.
func prefixesOverlap(p netip.Prefix, s string) bool {
	for _, x := range strings.Split(s, ",") {
		x = strings.TrimSpace(x)
		if q, err := netip.ParsePrefix(x); err == nil && q.Overlaps(p) {
			return true
		}
		if a, err := netip.ParseAddr(x); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

// child reports whether the filter selects Child SA c.
func (f Filter) child(c ChildStatus) bool {
	if !f.idMatch(c.Peer) || f.State != "" && c.State != f.State {
		return false
	}
	if !f.Addr.IsValid() {
		return true
	}
	if prefixesOverlap(f.Addr, c.Remote) {
		return true
	}
	for _, v := range c.VirtualIP {
		if prefixesOverlap(f.Addr, v) {
			return true
		}
	}
	return false
}

// ikeSA reports whether the filter selects IKE SA sa: its identity and
// outer address, or one of its Child SAs that the filter selects (by
// name: IKE SA "peer#n" owns "peer#n/net").
func (f Filter) ikeSA(sa ike.SAInfo, selectedIKE map[string]bool) bool {
	if selectedIKE[sa.Name] {
		return true
	}
	if f.State != "" || !f.idMatch(sa.PeerID) {
		return false
	}
	return !f.Addr.IsValid() || f.Addr.Contains(sa.Remote.Addr())
}

// childState is a Child SA's state from its counters and lifetimes.
func childState(alive bool, packets uint64) string {
	switch {
	case !alive:
		return StateExpired
	case packets == 0:
		return StateIdle
	}
	return StateActive
}

// filtered answers "status <filter words> [summary]" and "sa list
// <filter words> [stream]".
func (r *Running) filtered(words []string) (any, error) {
	list := words[0] == "sa"
	if list {
		words = words[2:]
	} else {
		words = words[1:]
	}
	flag := ""
	if n := len(words); n > 0 && (words[n-1] == "stream" && list || words[n-1] == "summary" && !list) {
		flag, words = words[n-1], words[:n-1]
	}
	f, err := parseFilterWords(words)
	if err != nil {
		return nil, err
	}
	if !list {
		st := r.Status()
		return applyFilter(st, f, flag == "summary"), nil
	}
	cs := r.setup.ike.childStatus()
	sel := cs[:0]
	for _, c := range cs {
		if f.child(c) {
			sel = append(sel, c)
		}
	}
	if f.Limit > 0 && len(sel) > f.Limit {
		sel = sel[:f.Limit]
	}
	if flag != "stream" {
		return sel, nil
	}
	return control.Stream{Items: func(yield func(any) bool) {
		for _, c := range sel {
			if !yield(c) {
				return
			}
		}
	}}, nil
}

// applyFilter narrows st's lists to what f selects (the SAs: those of the
// selected Child SAs, and the static ones when nothing is filtered), caps
// them at f.Limit, or drops them (summary), and says so in st.Summary.
func applyFilter(st Status, f Filter, summary bool) Status {
	sum := &Summary{ChildSAs: len(st.Children), SAs: len(st.SAs), ByState: map[string]int{}, Filter: f.words()}
	for _, c := range st.Children {
		sum.ByState[c.State]++
	}
	children := st.Children[:0:0]
	spis, ikeNames := map[string]bool{}, map[string]bool{}
	for _, c := range st.Children {
		if f.child(c) {
			children = append(children, c)
			spis[c.SPIIn], spis[c.SPIOut], ikeNames[c.IKE] = true, true, true
		}
	}
	negotiated := map[string]bool{}
	for _, c := range st.Children {
		negotiated[c.SPIIn], negotiated[c.SPIOut] = true, true
	}
	var sas []SAStatus
	for _, sa := range st.SAs {
		if spis[sa.SPI] || f.zero() && !negotiated[sa.SPI] {
			sas = append(sas, sa)
		}
	}
	st.Children, st.SAs = limit(children, f.Limit), limit(sas, f.Limit)
	if k := st.IKE; k != nil {
		sum.IKESAs = len(k.SAs)
		var ikes []ike.SAInfo
		for _, sa := range k.SAs {
			if f.ikeSA(sa, ikeNames) {
				ikes = append(ikes, sa)
			}
		}
		k.SAs = limit(ikes, f.Limit)
	}
	if summary {
		st.Children, st.SAs = nil, nil
		if st.IKE != nil {
			st.IKE.SAs = nil
		}
	}
	sum.ListedChildSAs, sum.ListedSAs = len(st.Children), len(st.SAs)
	if st.IKE != nil {
		sum.ListedIKESAs = len(st.IKE.SAs)
	}
	st.Summary = sum
	return st
}

func limit[T any](s []T, n int) []T {
	if n > 0 && len(s) > n {
		return s[:n]
	}
	return s
}
