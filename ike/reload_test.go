package ike

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// childSPIs is the gateway's installed Child SAs' inbound and outbound SPIs.
func childSPIs(p *plane) [][2]uint32 {
	var out [][2]uint32
	for _, c := range p.snapshot() {
		out = append(out, [2]uint32{c.In.SPI, c.Out.SPI})
	}
	slices.SortFunc(out, func(a, b [2]uint32) int { return int(int64(a[0]) - int64(b[0])) })
	return out
}

// waitEvent waits for a progress event of kind k on the road warrior.
func waitEvent(t *testing.T, p *pair, k EventKind) Progress {
	t.Helper()
	var got Progress
	waitFor(t, k.String(), func() bool {
		select {
		case pr := <-p.prog:
			if pr.Kind == k {
				got = pr
				return true
			}
		default:
		}
		return false
	})
	return got
}

// TestSetPeers checks what a reload of the gateway's peers does to an
// established IKE SA: it stays (same SPIs) while its policy still covers
// it, and is deleted (RFC 7296 §1.4.1) when the policy is removed, its PSK
// changes (§2.15), or its Child SAs' selectors are no longer authorized
// (RFC 3554 §4, RFC 7296 §2.19).
func TestSetPeers(t *testing.T) {
	other := func(t *testing.T) Peer {
		return Peer{ID: mustID(t, "rw2@roamsec.example"), PSK: []byte("the second road warrior's key, 32+ bytes"),
			VirtualPool: netip.MustParsePrefix("100.64.1.0/24")}
	}
	for _, tc := range []struct {
		name   string
		mode   Mode
		edit   func(t *testing.T, old Peer) []Peer
		delete bool
	}{
		{"unchanged peer keeps its SPIs", ModeVirtual, func(t *testing.T, old Peer) []Peer {
			old.PSK = bytes.Clone(old.PSK) // as a fresh config load gives it
			return []Peer{other(t), old}
		}, false},
		{"changed DNS keeps the SA", ModeVirtual, func(t *testing.T, old Peer) []Peer {
			old.PSK = bytes.Clone(old.PSK)
			old.DNS = []netip.Addr{netip.MustParseAddr("203.0.113.53")}
			return []Peer{old}
		}, false},
		{"removed peer's SA deleted", ModeVirtual, func(t *testing.T, old Peer) []Peer {
			return []Peer{other(t)}
		}, true},
		{"changed PSK deletes the old SA", ModeVirtual, func(t *testing.T, old Peer) []Peer {
			old.PSK = []byte("a brand new key for this identity, 32+ bytes")
			return []Peer{old}
		}, true},
		{"virtual pool no longer holding the address deletes the SA", ModeVirtual, func(t *testing.T, old Peer) []Peer {
			old.PSK = bytes.Clone(old.PSK)
			old.VirtualPool = netip.MustParsePrefix("100.64.9.0/24")
			return []Peer{old}
		}, true},
		{"addresses no longer authorizing the selectors delete the SA", ModeRFC3554, func(t *testing.T, old Peer) []Peer {
			old.PSK = bytes.Clone(old.PSK)
			old.Addresses = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // 198.51.100.2 no longer
			return []Peer{old}
		}, true},
		{"addresses still authorizing the selectors keep the SA", ModeRFC3554, func(t *testing.T, old Peer) []Peer {
			old.PSK = bytes.Clone(old.PSK)
			old.Addresses = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/25"), netip.MustParsePrefix("198.51.100.0/25")}
			return []Peer{old}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw, gw := pskConfigs(t, tc.mode)
			gw.Peers[0].PSK = bytes.Clone(gw.Peers[0].PSK) // the gateway's own copy, as from its file
			oldPSK := gw.Peers[0].PSK
			p := newPair(t, rw, gw)
			p.connect(t)
			checkPaired(t, p, 1)
			before := childSPIs(p.gp)
			ikeBefore := p.gw.ikeSPIs()
			next := tc.edit(t, gw.Peers[0])
			res := p.gw.SetPeers(next)
			// Every row gives the gateway fresh key memory, as a reload
			// does: the old key is zeroed, the new ones are not.
			if !slices.Equal(oldPSK, make([]byte, len(oldPSK))) {
				t.Error("the replaced PSK memory was not zeroed")
			}
			for _, np := range next {
				if slices.Equal(np.PSK, make([]byte, len(np.PSK))) {
					t.Errorf("the new PSK of %v was zeroed", np.ID)
				}
			}
			if !tc.delete {
				if len(res.Kept) != 1 || len(res.Deleted) != 0 {
					t.Fatalf("SetPeers = %+v, want the SA kept", res)
				}
				checkPaired(t, p, 1)
				if after := childSPIs(p.gp); !slices.Equal(after, before) {
					t.Fatalf("Child SA SPIs %x, want unchanged %x", after, before)
				}
				if after := p.gw.ikeSPIs(); !slices.Equal(after, ikeBefore) {
					t.Fatalf("IKE SA SPIs %x, want unchanged %x", after, ikeBefore)
				}
				if _, removed := p.gp.counts(); removed != 0 {
					t.Fatalf("%d Child SAs removed from the data path", removed)
				}
				return
			}
			if len(res.Kept) != 0 || len(res.Deleted) != 1 {
				t.Fatalf("SetPeers = %+v, want the SA deleted", res)
			}
			down := waitEvent(t, p, EvDeleted)
			if down.Reason != DownPeerDeleted {
				t.Errorf("road warrior's SA ended with %v, want %v (the gateway's DELETE)", down.Reason, DownPeerDeleted)
			}
			waitFor(t, "the gateway to remove the Child SAs", func() bool { return len(p.gp.snapshot()) == 0 && !p.gw.Established() })
		})
	}
}

// TestSetPeersAddedPeerConnects: an identity the gateway refused is let in
// by the next IKE_AUTH after SetPeers adds it, without a new endpoint.
func TestSetPeersAddedPeerConnects(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	added := gw.Peers[0]
	added.PSK = bytes.Clone(added.PSK)
	gw.Peers = []Peer{{ID: mustID(t, "rw2@roamsec.example"), PSK: []byte("the second road warrior's key, 32+ bytes"),
		VirtualPool: netip.MustParsePrefix("100.64.1.0/24")}}
	p := newPair(t, rw, gw)
	p.connect(t)
	if f := waitEvent(t, p, EvFailed); !errors.Is(f.Err, ErrAuthRefused) {
		t.Fatalf("before the reload: %v, want %v", f.Err, ErrAuthRefused)
	}
	if res := p.gw.SetPeers(append(slices.Clone(gw.Peers), added)); len(res.Kept)+len(res.Deleted) != 0 {
		t.Fatalf("SetPeers = %+v with no established SA", res)
	}
	p.connect(t)
	checkPaired(t, p, 1)
	if c := p.gp.snapshot()[0]; !netip.MustParsePrefix("100.64.0.0/24").Contains(c.VirtualIP[0]) {
		t.Fatalf("virtual address %v not from the added peer's pool", c.VirtualIP)
	}
}

// TestSetPeersDuringIKERekey: a peer removed while its IKE SA's rekey
// (RFC 7296 §2.18) is in flight does not live on in the replacement.
func TestSetPeersDuringIKERekey(t *testing.T) {
	rw, gw := pskConfigs(t, ModeVirtual)
	gw.Peers[0].PSK = bytes.Clone(gw.Peers[0].PSK)
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 1)
	p.w.hold()
	p.gw.Rekey(true) // the request waits on the wire
	res := p.gw.SetPeers([]Peer{{ID: mustID(t, "rw2@roamsec.example"), PSK: []byte("the second road warrior's key, 32+ bytes")}})
	if len(res.Deleted) != 1 {
		t.Fatalf("SetPeers = %+v, want the SA deleted", res)
	}
	p.w.release()
	waitFor(t, "no IKE SA and no Child SA left on the gateway", func() bool {
		return !p.gw.Established() && len(p.gp.snapshot()) == 0
	})
	waitFor(t, "no IKE SA left on the road warrior", func() bool { return !p.rw.Established() })
}
