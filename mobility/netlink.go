package mobility

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchLinks turns netlink link and address events of the paths' uplinks
// into Events on out until ctx ends: a link going down, or a path's local
// address going away, makes the path Inactive at once; a link coming up
// (or the address coming back) reports up, which is Active when netlink
// is the only detector and Unconfirmed when heartbeats must confirm it.
//
// Netlink cannot see a path that stays up but silently drops everything;
// that is what heartbeats are for.
func WatchLinks(ctx context.Context, paths []Path, up State, out chan<- Event) error {
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 2)
	onErr := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ListExisting: true, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("mobility: netlink link subscription: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ListExisting: true, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("mobility: netlink address subscription: %w", err)
	}
	byLink := map[string]bool{}
	for _, p := range paths {
		if p.Link != "" {
			byLink[p.Link] = true
		}
	}
	tr := newAddrTracker(paths, up)
	linkUp := map[string]bool{} // last reported, to report changes only
	send := func(ev Event) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("mobility: netlink: %w", err)
		case u, ok := <-links:
			if !ok {
				return fmt.Errorf("mobility: netlink link subscription closed")
			}
			name := u.Link.Attrs().Name
			if !byLink[name] {
				continue
			}
			isUp := u.Link.Attrs().Flags&net.FlagUp != 0 && u.Link.Attrs().OperState != netlink.OperDown
			if was, seen := linkUp[name]; seen && was == isUp {
				continue
			}
			linkUp[name] = isUp
			st := Inactive
			if isUp {
				st = up
			}
			send(Event{Link: name, State: st, Source: "netlink", Time: time.Now()})
		case u, ok := <-addrs:
			if !ok {
				return fmt.Errorf("mobility: netlink address subscription closed")
			}
			a, _ := netip.AddrFromSlice(u.LinkAddress.IP)
			if u.Flags&unix.IFA_F_TENTATIVE != 0 || !a.Unmap().IsGlobalUnicast() {
				continue // not usable as a source yet (RFC 4862 §5.4), or link-local
			}
			for _, ev := range tr.update(linkName(u.LinkIndex), a.Unmap(), u.NewAddr, time.Now()) {
				send(ev)
			}
		}
	}
}

func linkName(index int) string {
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		return ifi.Name
	}
	return ""
}

// addrTracker follows the addresses on the paths' links and turns their
// changes into Events: a path's own address going away makes it
// Inactive; an address of its family on its link while its own is gone
// is adopted (the DHCP lease or SLAAC prefix changed, the uplink is the
// same): the path takes it and is up, to be confirmed by heartbeats.
type addrTracker struct {
	paths  []Path // with their current local addresses
	gone   []bool // the path's address was seen going away
	up     State
	onLink map[string]map[netip.Addr]bool
}

func newAddrTracker(paths []Path, up State) *addrTracker {
	return &addrTracker{paths: append([]Path(nil), paths...), gone: make([]bool, len(paths)), up: up, onLink: map[string]map[netip.Addr]bool{}}
}

// update applies one address added to (or removed from) link at now.
func (t *addrTracker) update(link string, a netip.Addr, added bool, now time.Time) []Event {
	if t.onLink[link] == nil {
		t.onLink[link] = map[netip.Addr]bool{}
	}
	if added {
		t.onLink[link][a] = true
	} else {
		delete(t.onLink[link], a)
	}
	var evs []Event
	for i := range t.paths {
		p := &t.paths[i]
		if p.Local == a {
			st := Inactive
			if added {
				st = t.up
			}
			t.gone[i] = !added
			evs = append(evs, Event{Local: a, State: st, Source: "netlink", Time: now})
		}
		// Only a path whose address was seen going away adopts another: at
		// start (the initial dump) a path's address may simply be listed
		// after others of the same link.
		if !t.gone[i] || p.Link != link || p.Local.Is4() != a.Is4() {
			continue
		}
		if n, ok := t.candidate(link, p.Local.Is4()); ok {
			evs = append(evs, Event{Link: link, Adopt: n, State: t.up, Source: "netlink", Time: now})
			p.Local, t.gone[i] = n, false
		}
	}
	return evs
}

// candidate is an address of the family on link that no path uses, the
// lowest for determinism.
func (t *addrTracker) candidate(link string, v4 bool) (netip.Addr, bool) {
	var best netip.Addr
	for a := range t.onLink[link] {
		if a.Is4() != v4 || t.used(a) {
			continue
		}
		if !best.IsValid() || a.Less(best) {
			best = a
		}
	}
	return best, best.IsValid()
}

func (t *addrTracker) used(a netip.Addr) bool {
	for _, p := range t.paths {
		if p.Local == a {
			return true
		}
	}
	return false
}
