package ike

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/tunnel"
)

// The gateway's outer rule for an RFC 3554 road warrior (tunnel/outer.go):
// its IKE endpoint until the peer sent ESP; then an address becomes an
// outer destination only once the peer sent authenticated ESP from it, on
// any Child SA of the IKE SA (here the host-to-host monitoring SA), and
// the learning survives a Child SA rekey.
func TestGatewayOuterRuleLearnsFromEveryChildSA_RFC3554_2(t *testing.T) {
	rw, gw := pskConfigs(t, ModeRFC3554)
	rw.HostToHost = true
	p := newPair(t, rw, gw)
	p.connect(t)
	checkPaired(t, p, 2)
	var gwNet, gwHosts, rwHosts *Child
	for _, c := range p.gp.snapshot() {
		if strings.HasSuffix(c.Name, "/hosts") {
			gwHosts = c
		} else {
			gwNet = c
		}
	}
	for _, c := range p.rp.snapshot() {
		if c.HostToHost {
			rwHosts = c
		}
	}
	r := gwNet.Out.Outer()
	if !r.DstFromInner || r.FollowPeer == nil || r.NAT || len(r.Dst) != 1 || r.Dst[0] != rwAddr {
		t.Fatalf("gateway's network rule %+v: want the inner destination, a tracker, the IKE endpoint %v as fallback, no NAT", r, rwAddr)
	}
	if hr := gwHosts.Out.Outer(); hr.FollowPeer != nil || !hr.DstFromInner || !hr.SrcFromInner {
		t.Fatalf("host-to-host rule %+v: want outer = inner (RFC 3554 §2 case 1)", hr)
	}
	srv := netip.MustParseAddr("203.0.113.2")
	dst := func() netip.Addr {
		_, d, err := tunnel.OuterAddrs(gwNet.Out.Outer(), srv, rwAddr2)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// checkPaired opened packets without a source port or local address
	// (Open): the tracker knows the primary only.
	if d := dst(); d == rwAddr2 {
		t.Fatalf("ESP for %v sent there before the peer ever sent from it", rwAddr2)
	}
	// A probe from the secondary on the monitoring SA proves it.
	probe := udpPacket(rwAddr2, gwAddr2)
	buf := make([]byte, tunnel.HeaderLen+len(probe)+tunnel.MaxTrailer)
	copy(buf[tunnel.HeaderLen:], probe)
	esp, err := rwHosts.Out.Seal(buf, len(probe))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gwHosts.In.OpenFrom(netip.AddrPortFrom(rwAddr2, 4500), gwAddr2, esp); err != nil {
		t.Fatal(err)
	}
	if d := dst(); d != rwAddr2 {
		t.Fatalf("after authenticated ESP from %v on the monitoring SA, ESP for it goes to %v", rwAddr2, d)
	}
	// A rekey of the network Child SA keeps what was learned.
	p.rw.Rekey(false)
	waitFor(t, "the rekeyed network Child SA", func() bool {
		for _, c := range p.gp.snapshot() {
			if c.Name == gwNet.Name && c != gwNet {
				gwNet = c
				return true
			}
		}
		return false
	})
	if d := dst(); d != rwAddr2 {
		t.Fatalf("after a Child SA rekey ESP for %v goes to %v", rwAddr2, d)
	}
}
