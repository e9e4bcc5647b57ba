package mobility

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
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
	byLocal := map[netip.Addr]bool{}
	for _, p := range paths {
		if p.Link != "" {
			byLink[p.Link] = true
		}
		byLocal[p.Local] = true
	}
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
			a = a.Unmap()
			if !byLocal[a] {
				continue
			}
			st := Inactive
			if u.NewAddr {
				st = up
			}
			send(Event{Local: a, State: st, Source: "netlink", Time: time.Now()})
		}
	}
}
