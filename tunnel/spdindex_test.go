package tunnel

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// spdModel is the reference: the ordered list walked entry by entry, as
// RFC 4301 §4.4.1 describes the SPD (and as SPD.LookupOutbound did before
// the index).
type spdModel []*Policy

func (m spdModel) lookup(f *Flow) *Policy {
	for _, p := range m {
		if p.Selector.MatchOutbound(f) {
			return p
		}
	}
	return nil
}

func (m *spdModel) insert(i int, p *Policy) {
	m.remove(p)
	i = min(max(i, 0), len(*m))
	*m = slices.Insert(*m, i, p)
}

func (m *spdModel) remove(p *Policy) bool {
	i := slices.Index(*m, p)
	if i < 0 {
		return false
	}
	*m = slices.Delete(*m, i, i+1)
	return true
}

// randSPD draws addresses, sets, protocols and ports from small universes
// so that policies overlap often: nested prefixes, the same prefix with
// other ports, sets of several prefixes, both families, any.
type randSPD struct{ r *rand.Rand }

var (
	v4Bases = []netip.Addr{netip.MustParseAddr("192.0.2.0"), netip.MustParseAddr("198.51.100.0"), netip.MustParseAddr("203.0.113.0"), netip.MustParseAddr("100.64.0.0")}
	v6Bases = []netip.Addr{netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("2001:db8:1::"), netip.MustParseAddr("2001:db8:1:2::")}
	v4Lens  = []int{0, 8, 10, 16, 23, 24, 25, 28, 30, 31, 32, 32, 32}
	v6Lens  = []int{0, 16, 32, 48, 64, 120, 126, 127, 128, 128}
	ports   = []uint16{0, 1, 53, 80, 443, 500, 4500, 65535}
	protos  = []uint8{ProtoAny, ProtoAny, ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP, ProtoICMPv6}
)

func (g randSPD) addr(v6 bool) netip.Addr {
	if v6 {
		b := v6Bases[g.r.IntN(len(v6Bases))].As16()
		b[15], b[14] = byte(g.r.IntN(8)), byte(g.r.IntN(2))
		return netip.AddrFrom16(b)
	}
	b := v4Bases[g.r.IntN(len(v4Bases))].As4()
	b[3] = byte(g.r.IntN(8))
	if g.r.IntN(4) == 0 {
		b[2] = 1
	}
	return netip.AddrFrom4(b)
}

func (g randSPD) prefix() netip.Prefix {
	v6 := g.r.IntN(3) == 0
	lens := v4Lens
	if v6 {
		lens = v6Lens
	}
	return netip.PrefixFrom(g.addr(v6), lens[g.r.IntN(len(lens))]).Masked()
}

func (g randSPD) set() AddrSet {
	switch g.r.IntN(12) {
	case 0:
		return AnyAddr
	case 1:
		return AddrSet{} // empty: matches nothing
	}
	ps := make([]netip.Prefix, 1+g.r.IntN(3))
	for i := range ps {
		ps[i] = g.prefix()
	}
	s, err := NewAddrSet(ps...)
	if err != nil {
		panic(err)
	}
	return s
}

func (g randSPD) ports() PortRange {
	if g.r.IntN(2) == 0 {
		return AnyPort
	}
	a, b := ports[g.r.IntN(len(ports))], ports[g.r.IntN(len(ports))]
	return PortRange{min(a, b), max(a, b)}
}

func (g randSPD) policy(name int) *Policy {
	sel := Selector{Local: g.set(), Remote: g.set(), Proto: protos[g.r.IntN(len(protos))]}
	if hasPortsProto(sel.Proto) {
		sel.LocalPorts, sel.RemotePorts = g.ports(), g.ports()
	}
	return &Policy{Name: fmt.Sprint(name), Action: Action(g.r.IntN(3)), Selector: sel}
}

func (g randSPD) flow() Flow {
	v6 := g.r.IntN(3) == 0
	f := Flow{Src: g.addr(v6), Dst: g.addr(v6), Proto: protos[g.r.IntN(len(protos))]}
	if f.Proto == ProtoAny {
		f.Proto = 47 // GRE: a protocol no selector names
	}
	if hasPortsProto(f.Proto) && g.r.IntN(5) != 0 { // else a non-initial fragment
		f.HasPorts = true
		f.SrcPort, f.DstPort = ports[g.r.IntN(len(ports))], ports[g.r.IntN(len(ports))]
	}
	return f
}

// RFC 4301 §4.4.1: the indexed SPD returns exactly the first match of the
// ordered list, for many random SPDs with overlapping prefixes, address
// sets, ports and protocols, IPv4 and IPv6, as policies are inserted and
// removed at any position (bursts at one position force the order keys to
// be renumbered), and its order stays the list's.
func TestRFC4301_4_4_1_IndexIsFirstMatchOfOrderedList(t *testing.T) {
	const spds, ops, flows = 60, 120, 16
	checked, hits, renumbered := 0, 0, 0
	for seed := range uint64(spds) {
		g := randSPD{rand.New(rand.NewPCG(seed, 4301))}
		var spd SPD
		var model spdModel
		next := 0
		for op := range ops {
			switch k := g.r.IntN(10); {
			case k < 5 || len(model) == 0: // insert anywhere, ends included, beyond clamped
				p := g.policy(next)
				next++
				i := g.r.IntN(len(model)+3) - 1
				spd.Insert(i, p)
				model.insert(i, p)
			case k < 7:
				p := model[g.r.IntN(len(model))]
				if spd.Remove(p) != model.remove(p) || spd.Remove(p) {
					t.Fatalf("seed %d op %d: remove", seed, op)
				}
			case k == 7: // re-insert a present policy: it moves
				p, i := model[g.r.IntN(len(model))], g.r.IntN(len(model)+1)
				spd.Insert(i, p)
				model.insert(i, p)
			case k == 8: // a burst at one middle position: gaps run out
				i := g.r.IntN(len(model) + 1)
				for range 22 {
					p := g.policy(next)
					next++
					spd.Insert(i, p)
					model.insert(i, p)
				}
			default:
				p := g.policy(next)
				next++
				spd.Append(p)
				model.insert(len(model), p)
			}
			for range flows {
				f := g.flow()
				want := model.lookup(&f)
				if got := spd.LookupOutbound(&f); got != want {
					t.Fatalf("seed %d op %d: flow %+v: index %v, ordered walk %v", seed, op, f, got, want)
				}
				checked++
				if want != nil {
					hits++
				}
			}
			if got := spd.Policies(); !slices.Equal(got, []*Policy(model)) || spd.Len() != len(model) {
				t.Fatalf("seed %d op %d: order differs from the list's", seed, op)
			}
		}
		renumbered += spd.renumbered
	}
	if renumbered == 0 {
		t.Fatal("no SPD ran out of order keys: renumbering went untested")
	}
	// The comparison is only worth something if lookups both hit and miss.
	if hits < checked/10 || hits > checked*9/10 {
		t.Fatalf("%d of %d lookups matched: random SPDs too sparse or too dense to tell", hits, checked)
	}
}

// A wide address set is filed under its destination prefixes with any
// source (maxIndexPairs); the selector check keeps the answer exact.
func TestSPDIndexWideSetsStayExact(t *testing.T) {
	var local []netip.Prefix
	for i := range 20 {
		local = append(local, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(8 * i)}), 30))
	}
	ls, _ := NewAddrSet(local...)
	wide := &Policy{Name: "wide", Action: Protect, Selector: Selector{Local: ls, Remote: MustAddrSet("203.0.113.0/28", "203.0.113.64/28", "203.0.113.128/28", "203.0.113.192/28")}}
	if n := len(indexPairs(&wide.Selector)); n != 4 {
		t.Fatalf("filed under %d pairs, want 4 (any source)", n)
	}
	catchAll := &Policy{Name: "all", Action: Discard, Selector: Selector{Local: AnyAddr, Remote: AnyAddr}}
	var spd SPD
	spd.Append(wide)
	spd.Append(catchAll)
	cases := []struct {
		name     string
		src, dst string
		want     *Policy
	}{
		{"source in the set", "192.0.2.9", "203.0.113.70", wide},
		{"source between the set's prefixes", "192.0.2.13", "203.0.113.70", catchAll},
		{"destination between the set's prefixes", "192.0.2.9", "203.0.113.20", catchAll},
	}
	for _, c := range cases {
		f := Flow{Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr(c.dst), Proto: ProtoICMP}
		if got := spd.LookupOutbound(&f); got != c.want {
			t.Errorf("%s: %v", c.name, got)
		}
	}
}

// Readers never lock and always see a whole snapshot: a policy that is
// always in the SPD keeps deciding its flow while thousands of others come
// and go in front of and behind it.
func TestSPDLookupDuringUpdates(t *testing.T) {
	var spd SPD
	fixed := &Policy{Name: "fixed", Action: Protect, Selector: Selector{Local: AnyAddr, Remote: MustAddrSet("203.0.113.7")}}
	spd.Append(fixed)
	f := Flow{Src: rwAddr, Dst: netip.MustParseAddr("203.0.113.7"), Proto: ProtoUDP, HasPorts: true, SrcPort: 1, DstPort: 2}
	var stop atomic.Bool
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				if spd.LookupOutbound(&f) != fixed {
					wrong.Add(1)
				}
			}
		})
	}
	g := randSPD{rand.New(rand.NewPCG(1, 2))}
	var added []*Policy
	for i := range 3000 {
		p := g.policy(i)
		// Nothing added covers 203.0.113.7 first: the fixed policy decides.
		p.Selector.Remote = MustAddrSet(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String())
		if i%2 == 0 {
			spd.Insert(0, p)
		} else {
			spd.Append(p)
		}
		added = append(added, p)
		if i%3 == 0 {
			spd.Remove(added[i/2])
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d lookups missed the fixed policy during updates", n)
	}
}

// The per-packet outbound path allocates nothing, with many policies.
func TestSPDEncapsulateDoesNotAllocate(t *testing.T) {
	spd, buf, inner := scaleSPD(t, 1000)
	if a := testing.AllocsPerRun(200, func() {
		copy(buf[HeaderLen:], inner)
		if _, act, err := spd.Encapsulate(buf, len(inner), nil); act != Protect || err != nil {
			t.Fatal(act, err)
		}
	}); a != 0 {
		t.Fatalf("%v allocations per packet", a)
	}
	f := flowOf(t, inner)
	if a := testing.AllocsPerRun(200, func() { spd.LookupOutbound(&f) }); a != 0 {
		t.Fatalf("%v allocations per lookup", a)
	}
}

// The per-packet inbound path allocates nothing either: SPI lookup among
// many SAs, open, the selector check, and the peer tracker learning the
// (known) source, which once moved its argument to the heap on every call.
func TestSADDecapsulateDoesNotAllocate(t *testing.T) {
	var sad SAD
	key := testKey(AESGCM256, 1)
	sel := Selector{Local: MustAddrSet("203.0.113.0/24"), Remote: MustAddrSet("100.64.0.0/10")}
	var in *SA
	for i := range 1000 {
		sa, err := NewSA(SAConfig{SPI: 0x1000 + uint32(i), Dir: Inbound, Transform: AESGCM256, Key: key, Selector: sel, Peer: new(PeerTracker)})
		if err != nil {
			t.Fatal(err)
		}
		if err := sad.Add(sa); err != nil {
			t.Fatal(err)
		}
		in = sa
	}
	out, err := NewSA(SAConfig{SPI: in.SPI, Dir: Outbound, Transform: AESGCM256, Key: key, Outer: HostToHost()})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	const runs = 200
	inner := ipv4Packet(peerVIP(7), scaleServer, ProtoUDP, 1, 2, 1000)
	pkts := make([][]byte, runs+1) // AllocsPerRun calls once more to warm up
	for i := range pkts {
		pkts[i] = sealPacket(t, out, inner)
	}
	i := 0
	src := netip.AddrPortFrom(rwAddr, 4500)
	if a := testing.AllocsPerRun(runs, func() {
		if _, _, err := sad.DecapsulateFrom(src, gwAddr, pkts[i]); err != nil {
			t.Fatal(err)
		}
		i++
	}); a != 0 {
		t.Fatalf("%v allocations per packet", a)
	}
}
