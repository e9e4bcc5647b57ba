package ike

import (
	"bytes"
	"net/netip"
	"slices"
)

// PeersResult says what SetPeers did to the established IKE SAs.
type PeersResult struct {
	Kept    []string // IKE SAs whose peer policy still covers them (names as in SAInfo)
	Deleted []string // IKE SAs being deleted: policy removed, PSK changed, or a Child SA no longer authorized
}

// SetPeers replaces a responder's peer policies (a configuration reload).
// IKE_AUTH uses the new list from the next message on. Each established
// IKE SA is checked against it:
//   - no policy for its identity any more (or, for a PSK-authenticated
//     SA, none with a PSK): deleted;
//   - PSK-authenticated and the PSK changed: deleted, since the AUTH that
//     set it up would not be accepted now (RFC 7296 §2.15);
//   - a Child SA whose peer-side traffic selectors the new addresses no
//     longer authorize (RFC 3554 §4), or whose virtual address lies
//     outside the new pool (RFC 7296 §2.19): the whole IKE SA is deleted,
//     since its authority is the IKE SA's;
//   - otherwise it stays as it is (same SPIs, keys, Child SAs) and takes
//     the new policy for later exchanges.
//
// A deleted SA gets an INFORMATIONAL DELETE (§1.4.1); its Child SAs leave
// the data path through Config.Remove once that is answered or given up.
// The PSKs of the old list that the new one does not share are zeroed.
// The caller must not modify peers afterwards.
func (e *Endpoint) SetPeers(peers []Peer) PeersResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	var res PeersResult
	peers = slices.Clone(peers)
	for _, s := range e.sas {
		if s.initiator || s.state != stEstablished || s.peer == nil || s.peer.OneTime {
			continue
		}
		np := findPeer(peers, s.peerID, s.pskAuth)
		if s.aaa != nil { // authenticated with EAP (eap.go)
			np = findEAPPeer(peers, s.peerID)
		}
		if np == nil || !s.stillAuthorized(np) {
			e.cfg.Log.Info("IKE: peer policy removed or changed by a reload: deleting the IKE SA", "ike", s.name())
			res.Deleted = append(res.Deleted, s.name())
			s.policyGone = true
			s.deleteIKE(DownPolicyChanged)
			continue
		}
		s.peer, s.authority = np, authorityOf(np, s.certAddrs)
		res.Kept = append(res.Kept, s.name())
	}
	old := e.cfg.Peers
	e.cfg.Peers = peers
	for i := range old {
		if !pskShared(old[i].PSK, peers) {
			clear(old[i].PSK)
		}
	}
	slices.Sort(res.Kept)
	slices.Sort(res.Deleted)
	return res
}

// pskShared reports whether k's memory is one of peers' PSKs.
func pskShared(k []byte, peers []Peer) bool {
	if len(k) == 0 {
		return false
	}
	for _, p := range peers {
		if len(p.PSK) > 0 && &p.PSK[0] == &k[0] {
			return true
		}
	}
	return false
}

// stillAuthorized reports whether the policy np still covers the
// established SA s: the same PSK if it authenticated with one, and every
// live Child SA's peer-side selectors within what np authorizes.
func (s *ikeSA) stillAuthorized(np *Peer) bool {
	if s.pskAuth && !bytes.Equal(np.PSK, s.peer.PSK) {
		return false
	}
	authority := authorityOf(np, s.certAddrs)
	for _, c := range s.children {
		if c.replaced {
			continue
		}
		if len(c.VirtualIP) > 0 {
			// A Framed-IP-Address is the AAA server's to authorize, not
			// the pool's: a reload does not take it back.
			if !inPools(slices.DeleteFunc(slices.Clone(c.VirtualIP), s.aaaAddr), np) {
				return false
			}
			continue
		}
		// The path-monitoring Child SA of a virtual-address peer is
		// authorized by the IKE SA's outer addresses (hostAuthority),
		// which a reload does not change.
		allowed := authority
		if len(s.vip) > 0 && sameHosts(c.remoteTS, s.peerOuterAddrs()) {
			allowed = append(slices.Clone(authority), prefixesOf(s.peerOuterAddrs())...)
		}
		if unauthorized(c.remoteTS, allowed) != nil {
			return false
		}
	}
	return true
}

// inPools reports whether every virtual address is in np's pool of its family.
func inPools(vip []netip.Addr, np *Peer) bool {
	for _, a := range vip {
		pool := np.VirtualPool
		if a.Is6() {
			pool = np.VirtualPool6
		}
		if !pool.IsValid() || !pool.Contains(a) {
			return false
		}
	}
	return true
}
