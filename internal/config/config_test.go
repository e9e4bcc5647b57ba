package config

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/tun"
	"github.com/roamsec/roamsec/tunnel"
)

const examples = "../../packaging/examples"

func loadExample(t *testing.T, name string) *Config {
	t.Helper()
	c, err := Load(filepath.Join(examples, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func buildExample(t *testing.T, name string) *Built {
	t.Helper()
	b, err := loadExample(t, name).Build()
	if err != nil {
		t.Fatalf("%s: build: %v", name, err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestExamplesParseAndBuild(t *testing.T) {
	for _, tc := range []struct {
		file   string
		role   Role
		extra  string
		saName string
		mode   OuterMode
	}{
		{"gateway.yaml", RoleGateway, "no-telnet", "rw1", OuterGatewayToRoadWarrior},
		{"roadwarrior.yaml", RoleRoadWarrior, "no-smb", "gw", OuterRoadWarrior},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c := loadExample(t, tc.file)
			if c.Role != tc.role || c.SAs[0].Outer.Mode != tc.mode {
				t.Fatalf("role %q mode %q", c.Role, c.SAs[0].Outer.Mode)
			}
			var sawExampleWarning bool
			for _, w := range c.Warnings {
				sawExampleWarning = sawExampleWarning || strings.Contains(w, "example key")
			}
			if !sawExampleWarning {
				t.Errorf("no warning about the example keys: %q", c.Warnings)
			}
			keys := []Secret{c.SAs[0].Outbound.Key, c.SAs[0].Inbound.Key}
			b, err := c.Build()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, k := range keys {
				if len(k) != 36 || !bytes.Equal(k, make([]byte, 36)) {
					t.Fatalf("key not zeroed after Build (len %d)", len(k))
				}
			}
			if _, err := c.Build(); err == nil {
				t.Fatal("second Build worked on wiped keys")
			}
			pol := b.SPD.Policies()
			// The extra policy first, then one PROTECT entry per SA pair
			// (the traffic pair and the host-to-host pair), in file order.
			if len(pol) != 3 || pol[0].Name != tc.extra || pol[0].Action != tunnel.Discard ||
				pol[1].Name != tc.saName || pol[1].Action != tunnel.Protect || pol[1].SA.Load() != b.Outbound[0] ||
				pol[2].Action != tunnel.Protect || pol[2].SA.Load() != b.Outbound[1] || b.Outbound[1].Outer().DstFromInner != true {
				t.Fatalf("SPD order: %v", pol)
			}
			if b.SAD.Len() != 2 {
				t.Fatalf("SAD holds %d SAs, want the 2 inbound ones", b.SAD.Len())
			}
			for _, in := range []*tunnel.SA{b.SAs[0].In, b.SAs[1].In} {
				found := false
				for _, sa := range b.SAD.All() {
					found = found || sa == in
				}
				if !found {
					t.Fatalf("SAD lacks inbound SA %#x", in.SPI)
				}
			}
			if b.TUN.Config.MTU != 1500-40-8-37 || b.TUN.Config.Name != "roamsec0" || b.TUN.Config.Backend != "wireguard" {
				t.Fatalf("tun %+v", b.TUN.Config)
			}
			if r := b.TUN.BypassRule; r == nil || r.Mark != 0x5253 || r.Table != 220 || r.Priority != 100 || b.Transport.Mark != 0x5253 {
				t.Fatalf("bypass rule %+v transport %+v", r, b.Transport)
			}
			for _, rt := range b.TUN.Routes {
				if rt.Table != 220 {
					t.Fatalf("route %+v not in table 220", rt)
				}
			}
			if len(b.Transport.Listen) != 4 || b.Transport.UDPPort != 4500 || b.Transport.NATKeepalive.Seconds() != 20 ||
				b.Transport.RawESP || !b.Transport.UDP || b.Transport.PacketSend {
				t.Fatalf("transport %+v", b.Transport)
			}
			if b.Log.Level != slog.LevelInfo || b.Log.Format != "text" {
				t.Fatalf("log %+v", b.Log)
			}
		})
	}
}

// The two examples are a matched pair: what one side's SA seals, the
// other side's SAD opens, for both families, both uplinks and both
// directions, with the outer addresses RFC 3554 prescribes.
func TestExamplesPair(t *testing.T) {
	gw := buildExample(t, "gateway.yaml")
	rw := buildExample(t, "roadwarrior.yaml")
	a := netip.MustParseAddr
	type hop struct{ src, dst netip.Addr }
	for _, tc := range []struct {
		name            string
		from, to        *Built
		inner           hop
		outer           hop // what SPD.Encapsulate must pick
		proto           uint8
		sport, dport    uint16
		wantDiscarded   bool
		wantPassThrough bool
	}{
		{name: "rw->server v4 primary", from: rw, to: gw, inner: hop{a("192.0.2.2"), a("203.0.113.2")}, outer: hop{a("192.0.2.2"), a("192.0.2.1")}, proto: tunnel.ProtoICMP},
		{name: "rw->server v4 secondary", from: rw, to: gw, inner: hop{a("198.51.100.2"), a("203.0.113.2")}, outer: hop{a("198.51.100.2"), a("192.0.2.1")}, proto: tunnel.ProtoUDP, sport: 5000, dport: 53},
		{name: "rw->server v6 primary", from: rw, to: gw, inner: hop{a("2001:db8:1::2"), a("2001:db8:3::2")}, outer: hop{a("2001:db8:1::2"), a("2001:db8:1::1")}, proto: tunnel.ProtoUDP, sport: 5000, dport: 443},
		{name: "rw->server v6 secondary", from: rw, to: gw, inner: hop{a("2001:db8:2::2"), a("2001:db8:3::2")}, outer: hop{a("2001:db8:2::2"), a("2001:db8:1::1")}, proto: tunnel.ProtoSCTP, sport: 5000, dport: 5001},
		{name: "server->rw v4", from: gw, to: rw, inner: hop{a("203.0.113.2"), a("192.0.2.2")}, outer: hop{a("192.0.2.1"), a("192.0.2.2")}, proto: tunnel.ProtoICMP},
		{name: "server->rw v4 secondary", from: gw, to: rw, inner: hop{a("203.0.113.2"), a("198.51.100.2")}, outer: hop{a("192.0.2.1"), a("198.51.100.2")}, proto: tunnel.ProtoTCP, sport: 80, dport: 40000},
		{name: "server->rw v6", from: gw, to: rw, inner: hop{a("2001:db8:3::2"), a("2001:db8:1::2")}, outer: hop{a("2001:db8:1::1"), a("2001:db8:1::2")}, proto: tunnel.ProtoUDP, sport: 53, dport: 5000},
		{name: "rw smb discarded", from: rw, inner: hop{a("192.0.2.2"), a("203.0.113.2")}, proto: tunnel.ProtoTCP, sport: 40000, dport: 445, wantDiscarded: true},
		{name: "gw telnet discarded", from: gw, inner: hop{a("203.0.113.2"), a("192.0.2.2")}, proto: tunnel.ProtoTCP, sport: 23, dport: 40000, wantDiscarded: true},
		{name: "rw outside selector", from: rw, inner: hop{a("192.0.2.2"), a("192.0.2.99")}, proto: tunnel.ProtoICMP, wantDiscarded: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := packet(tc.inner.src, tc.inner.dst, tc.proto, tc.sport, tc.dport, 100)
			buf := make([]byte, tunnel.HeaderLen+len(inner), tunnel.HeaderLen+len(inner)+tunnel.MaxTrailer)
			copy(buf[tunnel.HeaderLen:], inner)
			s, act, err := tc.from.SPD.Encapsulate(buf, len(inner), nil)
			if tc.wantDiscarded {
				if act != tunnel.Discard || err == nil {
					t.Fatalf("action %v err %v, want discard", act, err)
				}
				return
			}
			if err != nil || act != tunnel.Protect {
				t.Fatalf("encapsulate: %v %v", act, err)
			}
			if s.Src != tc.outer.src || s.Dst != tc.outer.dst {
				t.Fatalf("outer %v -> %v, want %v -> %v", s.Src, s.Dst, tc.outer.src, tc.outer.dst)
			}
			got, sa, err := tc.to.SAD.Decapsulate(s.Src, s.Dst, s.ESP)
			if err != nil {
				t.Fatalf("decapsulate on the other side: %v (sa %v)", err, sa)
			}
			if !bytes.Equal(got, inner) {
				t.Fatal("inner packet changed")
			}
		})
	}
}

// packet builds an IPv4 or IPv6 packet with an 8-byte (ICMP, UDP) or
// larger (TCP 20, SCTP 12) transport header.
func packet(src, dst netip.Addr, proto uint8, sport, dport uint16, payload int) []byte {
	l4 := 8
	switch proto {
	case tunnel.ProtoTCP:
		l4 = 20
	case tunnel.ProtoSCTP:
		l4 = 12
	}
	var p []byte
	var off int
	if src.Is4() {
		p = make([]byte, 20+l4+payload)
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
		p[8], p[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(p[12:16], s[:])
		copy(p[16:20], d[:])
		off = 20
	} else {
		if proto == tunnel.ProtoICMP {
			proto = tunnel.ProtoICMPv6
		}
		p = make([]byte, 40+l4+payload)
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:6], uint16(l4+payload))
		p[6], p[7] = proto, 64
		s, d := src.As16(), dst.As16()
		copy(p[8:24], s[:])
		copy(p[24:40], d[:])
		off = 40
	}
	if proto == tunnel.ProtoICMP || proto == tunnel.ProtoICMPv6 {
		p[off] = 8
	} else {
		binary.BigEndian.PutUint16(p[off:], sport)
		binary.BigEndian.PutUint16(p[off+2:], dport)
	}
	for i := off + l4; i < len(p); i++ {
		p[i] = byte(i)
	}
	return p
}

// Keys of the bad-config table; no message may show any part of them.
const (
	k1 = "0x3f1c9a7be24d08c6f5a31b7e9d0c2468ace13579bdf02468ace13579bdf0246813579bdf"
	k2 = "0x9e8d7c6b5a4938271605f4e3d2c1b0a99887766554433221100ffeeddccbbaa001122334"
	k3 = "0x0123456789abcdeffedcba98765432100f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccdd"
)

// base is a valid road-warrior config; the table edits it.
const base = `role: roadwarrior
transport:
  listen: [192.0.2.2]
sas:
  - name: gw
    outbound: {spi: 0x1000, key: "` + k1 + `"}
    inbound: {spi: 0x1001, key: "` + k2 + `"}
    outer: {mode: road-warrior, gateway: 192.0.2.1}
    selector: "local 192.0.2.2 remote 203.0.113.0/24"
    encap: esp
`

func TestBaseIsValid(t *testing.T) {
	c, err := Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.TUNMTU() != 1500-20-37 {
		t.Fatalf("MTU %d for a v4-only raw ESP config", c.TUNMTU())
	}
	c.Wipe()
}

// leaksKey reports whether msg shows 8 or more consecutive hex digits of
// a key (an SPI is at most 8 digits and never taken from a key).
func leaksKey(msg string, keys ...string) bool {
	msg = strings.ToLower(msg)
	for _, k := range keys {
		k = strings.TrimPrefix(strings.ToLower(k), "0x")
		for i := 0; i+9 <= len(k); i++ {
			if strings.Contains(msg, k[i:i+9]) {
				return true
			}
		}
	}
	return false
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test edit does not apply: " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func appendLines(lines string) func(string) string {
	return func(s string) string { return s + lines }
}

// lineOf is the 1-based line of the first line containing marker.
func lineOf(text, marker string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, marker) {
			return i + 1
		}
	}
	panic("marker not found: " + marker)
}

// TestTxQueueLenDefaultPerRole: a gateway's TUN queues 4,096 packets for
// its readers (a fleet's flows, which the kernel cannot coalesce), a road
// warrior's 1,000; tun.tx_queue_len overrides either.
func TestTxQueueLenDefaultPerRole(t *testing.T) {
	for _, tc := range []struct {
		file string
		set  string // "" leaves tx_queue_len out
		want int
	}{
		{"gateway.yaml", "", GatewayTxQueueLen},
		{"roadwarrior.yaml", "", tun.DefaultTxQueueLen},
		{"gateway.yaml", "  tx_queue_len: 300\n", 300},
	} {
		t.Run(tc.file+"/"+strings.TrimSpace(tc.set), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(examples, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			text := regexp.MustCompile(`(?m)^  tx_queue_len: \d+\n`).ReplaceAllString(string(data), tc.set)
			c, err := Parse(tc.file, []byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if c.TUN.TxQueueLen != tc.want {
				t.Errorf("tx_queue_len %d, want %d", c.TUN.TxQueueLen, tc.want)
			}
		})
	}
}

func TestBadConfigs(t *testing.T) {
	gwExample, err := os.ReadFile(filepath.Join(examples, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		from   string // base if ""
		edit   func(string) string
		marker string // the line the error must name
		path   string
		msg    string
	}{
		{"short key", "", replace(k1, k1[:len(k1)-2]), "outbound:", "sas[0].outbound.key",
			"want 72 hex digits (36 bytes: key and salt for aes256gcm16), got 70"},
		{"non-hex key", "", replace(k1, k1[:20]+"zz"+k1[22:]), "outbound:", "sas[0].outbound.key",
			"want 72 hex digits (36 bytes: key and salt for aes256gcm16) after an optional 0x, got a character that is not a hex digit"},
		{"key for the wrong transform", "", appendLines("    transform: aes128gcm16\n"), "inbound:", "sas[0].inbound.key",
			"want 40 hex digits (20 bytes: key and salt for aes128gcm16), got 72"},
		{"unknown transform", "", appendLines("    transform: aes512\n"), "aes512", "sas[0].transform",
			`want aes128gcm16, aes256gcm16 or chacha20poly1305, got "aes512"`},
		{"unknown top-level field", "", appendLines("loglevel: debug\n"), "loglevel", "loglevel", "unknown field"},
		{"misspelt key field", "", replace(`key: "`+k1, `kye: "`+k1), "outbound:", "sas[0].outbound.kye", `unknown field (did you mean "key"?)`},
		{"misspelt key field: key missing", "", replace(`key: "`+k1, `kye: "`+k1), "outbound:", "sas[0].outbound.key", "missing"},
		{"key given twice", "", replace(`key: "`+k1+`"`, `key: "`+k1+`", key: "`+k3+`"`), "outbound:", "sas[0].outbound.key", "given twice (first at line 6)"},
		{"key and key_file", "", replace(`key: "`+k1+`"`, `key: "`+k1+`", key_file: /nonexistent`), "outbound:", "sas[0].outbound.key_file", "give key or key_file, not both"},
		{"reserved SPI", "", replace("spi: 0x1001", "spi: 255"), "inbound:", "sas[0].inbound.spi", "SPI 255 is reserved"},
		{"SPI not a number", "", replace("spi: 0x1001", "spi: 0xzz"), "inbound:", "sas[0].inbound.spi", "want a 32-bit number"},
		{"duplicate inbound SPI", "", appendLines(`  - name: gw2
    outbound: {spi: 0x2000, key: "` + k3 + `"}
    inbound: {spi: 0x1001, key: "` + k3[:len(k3)-1] + `e"}
    outer: {mode: road-warrior, gateway: 192.0.2.1}
    selector: "local 192.0.2.2 remote 198.18.0.0/15"
`), "spi: 0x1001, key: \"" + k3[:10], "sas[1].inbound.spi", "SPI 0x1001 is already used by sas[0].inbound"},
		{"duplicate SA name", "", appendLines(`  - name: gw # second
    outbound: {spi: 0x2000, key: "` + k3 + `"}
    inbound: {spi: 0x2001, key: "` + k3[:len(k3)-1] + `e"}
    outer: {mode: road-warrior, gateway: 192.0.2.1}
    selector: "local 192.0.2.2 remote 198.18.0.0/15"
`), "# second", "sas[1].name", `"gw" is already the name of sas[0]`},
		{"same key both directions", "", replace(`key: "`+k2, `key: "`+k1), "inbound:", "sas[0].inbound.key", "same key as sas[0].outbound.key"},
		{"outer without gateway", "", replace("{mode: road-warrior, gateway: 192.0.2.1}", "{mode: road-warrior}"), "outer:", "sas[0].outer.gateway", "missing"},
		{"unknown outer mode", "", replace("mode: road-warrior", "mode: roadwarrior"), "outer:", "sas[0].outer.mode",
			`want host, gateway-gateway, road-warrior or gateway-to-road-warrior, got "roadwarrior"`},
		{"outer mixed families", "", replace("{mode: road-warrior, gateway: 192.0.2.1}", `{mode: gateway-gateway, local: 192.0.2.2, peer: "2001:db8::1"}`), "outer:", "sas[0].outer.peer",
			"2001:db8::1 is not of the same family as local 192.0.2.2"},
		{"outer lacks the IPv6 gateway", "", replace(`"local 192.0.2.2 remote 203.0.113.0/24"`, `"local 192.0.2.2,2001:db8:1::2 remote 203.0.113.0/24,2001:db8:3::/64"`), "outer:", "sas[0].outer.gateway",
			"the selector carries IPv6 but no IPv6 address is given"},
		{"two gateways of one family", "", replace("gateway: 192.0.2.1}", "gateway: [192.0.2.1, 198.51.100.1]}"), "outer:", "sas[0].outer.gateway[1]", "at most one address per family"},
		{"field of another mode", "", replace("gateway: 192.0.2.1}", "gateway: 192.0.2.1, local: 192.0.2.2}"), "outer:", "sas[0].outer.local", "not used with mode road-warrior"},
		{"outer source not ours", "", replace("{mode: road-warrior, gateway: 192.0.2.1}", "{mode: gateway-gateway, local: 192.0.2.9, peer: 192.0.2.1}"), "outer:", "sas[0].outer.local",
			"192.0.2.9 is not one of transport.listen"},
		{"inner source not ours in road-warrior mode", "", replace(`"local 192.0.2.2 remote`, `"local 10.1.1.1 remote`), "selector:", "sas[0].selector",
			"no address of selector local (10.1.1.1) is in transport.listen"},
		{"local_addrs not ours", "", appendLines("    local_addrs: [10.0.0.1, 10.0.0.2]\n"), "local_addrs", "sas[0].local_addrs", "none of 10.0.0.1,10.0.0.2 is in transport.listen"},
		{"bad address in set", "", appendLines("    peer_addrs: [192.0.2.1, 192.0.2.300]\n"), "peer_addrs", "sas[0].peer_addrs[1]", `address set entry "192.0.2.300"`},
		{"selector does not parse", "", replace(`"local 192.0.2.2 remote 203.0.113.0/24"`, `"local 192.0.2.2 remote"`), "selector:", "sas[0].selector", `"remote" needs a value`},
		{"selector ports without proto", "", replace(`remote 203.0.113.0/24"`, `remote 203.0.113.0/24 rport 53"`), "selector:", "sas[0].selector", "ports need proto tcp, udp or sctp"},
		{"selector missing", "", replace(`    selector: "local 192.0.2.2 remote 203.0.113.0/24"`+"\n", ""), "  - name: gw", "sas[0].selector", "missing"},
		{"bad duration", "", appendLines("    lifetimes: {soft: {time: 5x}}\n"), "lifetimes", "sas[0].lifetimes.soft.time", `want a duration such as 20s, 50m or 1h30m (or 0), got "5x"`},
		{"soft after hard", "", appendLines("    lifetimes:\n      soft: {time: 2h}\n      hard: {time: 1h}\n"), "soft:", "sas[0].lifetimes.soft.time", "soft 2h0m0s must be below hard 1h0m0s"},
		{"replay window too small", "", appendLines("    replay_window: 64\n"), "replay_window", "sas[0].replay_window", "want a whole number from 1024 to 1048576"},
		{"peer_port without udp", "", appendLines("    peer_port: 4500\n"), "peer_port", "sas[0].peer_port", "only used with encap: udp"},
		{"bad esn", "", appendLines("    esn: yes\n"), "esn", "sas[0].esn", `want true or false, got "yes"`},
		{"missing role", "", replace("role: roadwarrior\n", "log: {level: info}\n"), "log:", "role", "missing"},
		{"bad role", "", replace("role: roadwarrior", "role: router"), "role:", "role", `want gateway or roadwarrior, got "router"`},
		{"road warrior without SAs", "role: roadwarrior\nsas: []\n", nil, "sas:", "sas", "a road warrior needs at least one SA"},
		{"road warrior in gateway mode", "", replace("{mode: road-warrior, gateway: 192.0.2.1}", "{mode: gateway-to-road-warrior, local: 192.0.2.2}"), "outer:", "sas[0].outer.mode",
			"a road warrior cannot use mode gateway-to-road-warrior"},
		{"gateway in road-warrior mode", "", replace("role: roadwarrior", "role: gateway"), "outer:", "sas[0].outer.mode", "a gateway cannot use mode road-warrior"},
		{"sas not a list", "role: gateway\nsas: {name: x}\n", nil, "sas:", "sas", "want a list of SAs, got a mapping"},
		{"listen not an address", "", replace("listen: [192.0.2.2]", "listen: [192.0.2.2, eth0]"), "listen:", "transport.listen[1]", `want an IP address, got "eth0"`},
		{"listen twice", "", replace("listen: [192.0.2.2]", "listen: [192.0.2.2, 192.0.2.2]"), "listen:", "transport.listen[1]", "192.0.2.2 is listed twice"},
		{"keepalive too often", "", replace("transport:\n", "transport:\n  nat_keepalive: 100ms\n"), "nat_keepalive", "transport.nat_keepalive", "too often"},
		{"udp port out of range", "", replace("transport:\n", "transport:\n  udp_port: 70000\n"), "udp_port", "transport.udp_port", "want a whole number from 1 to 65535"},
		{"tun name too long", "", appendLines("tun: {name: roamsec-tunnel-zero}\n"), "tun:", "tun.name", "at most 15 characters"},
		{"tun backend", "", appendLines("tun: {backend: tap}\n"), "tun:", "tun.backend", `want wireguard or water, got "tap"`},
		{"raw ESP send neither socket nor packet", "", replace("transport:\n", "transport:\n  raw_esp_send: xdp\n"), "raw_esp_send", "transport.raw_esp_send", `want socket or packet, got "xdp"`},
		{"tun transmit queue zero", "", appendLines("tun: {tx_queue_len: 0}\n"), "tun:", "tun.tx_queue_len", "want a whole number from 1 to 65536"},
		{"bypass rule without table", "", appendLines("tun:\n  bypass_rule: {mark: 1}\n"), "bypass_rule", "tun.bypass_rule", "needs tun.table"},
		{"bypass rule without mark", "", appendLines("tun:\n  table: 220\n  bypass_rule: {priority: 5}\n"), "bypass_rule", "tun.bypass_rule.mark", "missing"},
		{"route src of another family", "", appendLines("tun:\n  routes:\n    - {dst: 203.0.113.0/24, src: \"2001:db8::2\"}\n"), "- {dst: 203.0.113.0/24, src:", "tun.routes[0].src", "different families"},
		{"route without dst", "", appendLines("tun:\n  routes:\n    - {src: 192.0.2.2}\n"), "- {src", "tun.routes[0].dst", "missing"},
		{"MTU too small for IPv6", "gw", replace("  mtu: 0\n", "  mtu: 1200\n"), "  mtu: 1200", "tun.mtu", "below IPv6's minimum of 1280"},
		{"ESP route loop in the main table", "gw", func(s string) string {
			s = replace("  table: 220\n", "")(s)
			return replace("  bypass_rule:\n    mark: 0x5253    # 32-bit, hex or decimal, not 0\n    priority: 100   # 1-32765; default 100\n", "")(s)
		}, "- { dst: 192.0.2.2/32, src: 192.0.2.1 }", "tun.routes[0].dst", "sends its ESP to the inner destination"},
		{"gateway-to-road-warrior source not ours", "gw", replace(`local: [192.0.2.1, "2001:db8:1::1"] }`, `local: [192.0.2.1, "2001:db8:9::1"] }`), "mode: gateway-to-road-warrior", "sas[0].outer.local[1]", "2001:db8:9::1 is not one of transport.listen"},
		{"protect policy without sa", "", appendLines("policies:\n  - {name: p, action: protect, selector: \"remote 203.0.113.5\"}\n"), "name: p", "policies[0].sa", "missing"},
		{"protect policy with unknown sa", "", appendLines("policies:\n  - {name: p, action: protect, sa: gw9, selector: \"remote 203.0.113.5\"}\n"), "name: p", "policies[0].sa", `no sas entry is named "gw9"`},
		{"protect policy wider than its SA", "", appendLines("policies:\n  - {name: p, action: protect, sa: gw, selector: \"local 192.0.2.2 remote 203.0.0.0/16\"}\n"), "name: p", "policies[0].selector", "outside the selector of SA gw (remote)"},
		{"policy named like an SA", "", appendLines("policies:\n  - {name: gw, action: discard, selector: \"remote 203.0.113.5\"}\n"), "name: gw, action", "policies[0].name", `"gw" is already the name of sas[0]`},
		{"policy action", "", appendLines("policies:\n  - {name: p, action: allow, selector: \"remote 203.0.113.5\"}\n"), "name: p", "policies[0].action", `want bypass, discard or protect, got "allow"`},
		{"sa on a discard policy", "", appendLines("policies:\n  - {name: p, action: discard, sa: gw, selector: \"remote 203.0.113.5\"}\n"), "name: p", "policies[0].sa", "only used with action protect"},
		{"log level", "", appendLines("log: {level: verbose}\n"), "log:", "log.level", `want debug, info, warn or error, got "verbose"`},
		{"control socket relative", "", appendLines("control_socket: roamsec.sock\n"), "control_socket", "control_socket", "want an absolute path"},
		{"mapping where a value goes", "", replace("spi: 0x1001", "spi: {x: 1}"), "inbound:", "sas[0].inbound.spi", "want a single value, got a mapping"},
		{"list where a mapping goes", "", appendLines("tun: [a, b]\n"), "tun:", "tun", "want a mapping (field: value, ...), got a list"},
		{"YAML syntax", "", appendLines("tun: {name: [\n"), "tun: {name: [", "", "invalid YAML: did not find expected node content"},
		{"alias", "", appendLines("tun: &t {name: x}\nlog: *t\n"), "log: *t", "", "YAML aliases (*t) are not supported"},
		{"two documents", "", appendLines("---\nrole: gateway\n"), "---", "", "more than one YAML document"},
		{"key pasted into another field", "", replace("spi: 0x1001", "spi: "+k3), "inbound:", "sas[0].inbound.spi", "want a 32-bit number"},
		{"key pasted with colons into a name", "", replace("name: gw", `name: "3f:1c:9a:7b:e2:4d:08:c6:f5"`), "name:", "sas[0].name", "want letters, digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := base
			switch tc.from {
			case "gw":
				text = string(gwExample)
			case "":
			default:
				text = tc.from
			}
			if tc.edit != nil {
				text = tc.edit(text)
			}
			c, err := Parse("/etc/roamsec/test.yaml", []byte(text))
			if err == nil {
				c.Wipe()
				t.Fatalf("parsed:\n%s", text)
			}
			if c != nil {
				t.Fatal("a Config came back with an error")
			}
			// One reported problem must read FILE:LINE: PATH: ...MSG...
			prefix := "/etc/roamsec/test.yaml"
			if tc.marker != "" {
				prefix += fmt.Sprintf(":%d", lineOf(text, tc.marker))
			}
			prefix += ": "
			if tc.path != "" {
				prefix += tc.path + ": "
			}
			found := false
			for _, l := range strings.Split(err.Error(), "\n") {
				found = found || strings.HasPrefix(l, prefix) && strings.Contains(l[len(prefix):], tc.msg)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			if !found {
				t.Fatalf("error\n%v\nhas no line\n%s...%s", err, prefix, tc.msg)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.File != "/etc/roamsec/test.yaml" {
				t.Fatalf("not a *FieldError: %#v", err)
			}
			if leaksKey(err.Error(), k1, k2, k3, "0x3f1c9a7be24d08c6f5") {
				t.Fatalf("error shows key material:\n%v", err)
			}
		})
	}
}

// All problems are reported, each on its own line, sorted by line: those
// of single fields and those across fields.
func TestAllErrorsReported(t *testing.T) {
	text := replace("role: roadwarrior", "role: router")(base)
	text = replace(k2, k2[:10])(text)
	text = replace("listen: [192.0.2.2]", "listen: [192.0.2.2]\n  udp_prot: 4500")(text)
	text = appendLines(`  - name: gw2
    outbound: {spi: 0x2000, key: "` + k3 + `"}
    inbound: {spi: 0x1000, key: "` + k1 + `"}
    outer: {mode: road-warrior, gateway: 192.0.2.1}
    selector: "local 192.0.2.2 remote 198.18.0.0/15"
`)(text)
	_, err := Parse("x.yaml", []byte(text))
	if err == nil {
		t.Fatal("parsed")
	}
	want := []string{
		`x.yaml:1: role: want gateway or roadwarrior, got "router"`,
		`x.yaml:4: transport.udp_prot: unknown field (did you mean "udp_port"?)`,
		`x.yaml:8: sas[0].inbound.key: want 72 hex digits`,
		`x.yaml:14: sas[1].inbound.key: same key as sas[0].outbound.key`,
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok || len(j.Unwrap()) != len(want) {
		t.Fatalf("want %d joined errors, got\n%v", len(want), err)
	}
	lines := strings.Split(err.Error(), "\n")
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want prefix %q", i, lines[i], w)
		}
	}
	if leaksKey(err.Error(), k1, k2, k3) {
		t.Fatalf("key material in %v", err)
	}
}

// A Config prints and logs without its keys.
func TestSecretsDoNotPrint(t *testing.T) {
	c, err := Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Wipe()
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "key", c.SAs[0].Outbound.Key)
	for _, s := range []string{
		fmt.Sprintf("%v %+v %#v %s %x %X %q", c, c, c, c.SAs[0].Outbound.Key, c.SAs[0].Outbound.Key, c.SAs[0].Inbound.Key, c.SAs[0].Inbound.Key),
		fmt.Sprint(c.SAs), logged.String(),
	} {
		if leaksKey(s, k1, k2) {
			t.Fatalf("key material printed: %s", s)
		}
	}
	if !strings.Contains(logged.String(), redacted) {
		t.Fatalf("log: %s", logged.String())
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	raw := make([]byte, 36)
	for i := range raw {
		raw[i] = byte(0xa0 + i)
	}
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	raw2 := make([]byte, 36)
	for i := range raw2 {
		raw2[i] = byte(0x10 + 3*i)
	}
	wrapped := func(k []byte) []byte { // as xxd -p writes it: 30 bytes a line
		return []byte(hex.EncodeToString(k[:30]) + "\n" + hex.EncodeToString(k[30:]) + "\n")
	}
	hexWrapped := wrapped(raw)
	write("raw.key", raw, 0o600)
	write("hex.key", append([]byte("0x"), wrapped(raw2)...), 0o400)
	write("rawhex.key", hexWrapped, 0o600)
	write("open.key", hexWrapped, 0o644)
	write("group.key", raw, 0o640)
	write("short.key", raw[:35], 0o600)
	write("junk.key", append(append([]byte(nil), hexWrapped...), 'g'), 0o600)
	if err := os.Mkdir(filepath.Join(dir, "dir.key"), 0o700); err != nil {
		t.Fatal(err)
	}

	cfg := func(outFile, inFile string) string {
		return strings.NewReplacer(
			`key: "`+k1+`"`, "key_file: "+outFile,
			`key: "`+k2+`"`, "key_file: "+inFile,
		).Replace(base)
	}
	good := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(good, []byte(cfg("raw.key", filepath.Join(dir, "hex.key"))), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("raw and wrapped hex, relative and absolute", func(t *testing.T) {
		c, err := Load(good)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Wipe()
		// Key files keep the config free of keys: no permission warning.
		for _, w := range c.Warnings {
			if strings.Contains(w, "inline") {
				t.Errorf("warning %q", w)
			}
		}
		if !bytes.Equal(c.SAs[0].Outbound.Key, raw) || !bytes.Equal(c.SAs[0].Inbound.Key, raw2) {
			t.Fatal("keys read wrong")
		}
		if c.SAs[0].Outbound.File != filepath.Join(dir, "raw.key") {
			t.Fatalf("relative key_file resolved to %s", c.SAs[0].Outbound.File)
		}
	})
	t.Run("same key in two files", func(t *testing.T) {
		_, err := Parse(good, []byte(cfg("raw.key", "rawhex.key")))
		if err == nil || !strings.Contains(err.Error(), "sas[0].inbound.key_file: same key as sas[0].outbound.key_file") {
			t.Fatalf("%v", err)
		}
	})
	for _, tc := range []struct{ file, msg string }{
		{"open.key", "key file " + filepath.Join(dir, "open.key") + " is accessible by group or others (mode 0644): it must be readable by its owner only (chmod 600 " + filepath.Join(dir, "open.key") + ")"},
		{"group.key", "(mode 0640)"},
		{"short.key", "want 36 raw bytes or 72 hex digits (36 bytes: key and salt for aes256gcm16), got 35 bytes"},
		{"junk.key", "got 75 bytes that are neither"},
		{"dir.key", "is not a regular file"},
		{"missing.key", "no such file or directory"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			text := cfg("raw.key", tc.file)
			_, err := Parse(good, []byte(text))
			want := fmt.Sprintf("%s:%d: sas[0].inbound.key_file: ", good, lineOf(text, "inbound:"))
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v\nwant %s...%s", err, want, tc.msg)
			}
			if leaksKey(err.Error(), hex.EncodeToString(raw), hex.EncodeToString(raw2)) || bytes.Contains([]byte(err.Error()), raw[:8]) {
				t.Fatalf("key material in %v", err)
			}
		})
	}
}

// Inline keys in a file others can read are worth a warning.
func TestInlineKeyPermissionWarning(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o600, false}} {
		p := filepath.Join(dir, fmt.Sprintf("c%o.yaml", tc.mode))
		if err := os.WriteFile(p, []byte(base), tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, tc.mode)
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		c.Wipe()
		got := strings.Contains(strings.Join(c.Warnings, "\n"), "holds inline keys")
		if got != tc.warn {
			t.Errorf("mode %o: warnings %q", tc.mode, c.Warnings)
		}
	}
}

// Build on a config with keys already wiped fails; Wipe zeroes.
func TestWipe(t *testing.T) {
	c, err := Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	k := c.SAs[0].Outbound.Key
	c.Wipe()
	if !bytes.Equal(k, make([]byte, len(k))) {
		t.Fatal("not zeroed")
	}
	if _, err := c.Build(); err == nil {
		t.Fatal("built with wiped keys")
	}
}

// Lifetime events reach Config.OnLifetime.
func TestOnLifetime(t *testing.T) {
	text := appendLines("    lifetimes: {soft: {packets: 1}, hard: {packets: 2}}\n")(base)
	c, err := Parse("base.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var events []tunnel.LifetimeEvent
	c.OnLifetime = func(e tunnel.LifetimeEvent) { events = append(events, e) }
	b, err := c.Build()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	inner := packet(netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("203.0.113.2"), tunnel.ProtoICMP, 0, 0, 10)
	for range 2 {
		buf := make([]byte, tunnel.HeaderLen+len(inner), tunnel.HeaderLen+len(inner)+tunnel.MaxTrailer)
		copy(buf[tunnel.HeaderLen:], inner)
		if _, _, err := b.SPD.Encapsulate(buf, len(inner), nil); err != nil {
			t.Fatal(err)
		}
	}
	if len(events) != 2 || events[0].Hard || !events[1].Hard || events[0].SA != b.Outbound[0] {
		t.Fatalf("events %+v", events)
	}
}

// The MTU follows the encapsulation and the outer families.
func TestMTU(t *testing.T) {
	for _, tc := range []struct {
		edit func(string) string
		want int
	}{
		{nil, 1500 - 20 - 37},
		{replace("    encap: esp\n", "    encap: udp\n"), 1500 - 20 - 8 - 37},
		{replace("    encap: esp\n", ""), 1500 - 20 - 8 - 37}, // udp is the default
		{appendLines("tun: {path_mtu: 9000}\n"), 9000 - 20 - 37},
		{appendLines("tun: {mtu: 1400}\n"), 1400},
		{replace(`"local 192.0.2.2 remote 203.0.113.0/24"`, `"local 192.0.2.2,2001:db8:1::2 remote 203.0.113.0/24,2001:db8:3::/64"`), 0},
	} {
		text := base
		if tc.edit != nil {
			text = tc.edit(text)
		}
		if tc.want == 0 { // v6 inner needs a v6 gateway, and then outer v6 is possible
			text = replace("gateway: 192.0.2.1}", `gateway: [192.0.2.1, "2001:db8:1::1"]}`)(text)
			text = replace("listen: [192.0.2.2]", `listen: [192.0.2.2, "2001:db8:1::2"]`)(text)
			tc.want = 1500 - 40 - 37
		}
		c, err := Parse("mtu.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		c.Wipe()
		if got := c.TUNMTU(); got != tc.want {
			t.Errorf("%s: MTU %d, want %d", text, got, tc.want)
		}
	}
}
