// Package e2e runs the real gateway and road-warrior binaries, built from
// this tree, in the namespaces of the test bed, with the example configs.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

var bin string

func TestMain(m *testing.M) {
	if code, ok := inPrivateRun(); ok {
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "roamsec-e2e-")
	if err != nil {
		panic(err)
	}
	if os.Geteuid() == 0 {
		if err := rig.Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// up starts the gateway and the road warrior with the example configs.
func up(t *testing.T, bed *netns.Bed, gwCfg, rwCfg string) (gw, rw *rig.Proc) {
	t.Helper()
	var err error
	gw, err = rig.Start(bed.GW, filepath.Join(bin, "gateway"), 15*time.Second, "-config", gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	rw, err = rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 15*time.Second, "-config", rwCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Stop(5 * time.Second) })
	return gw, rw
}

// The daemons with the shipped example configs carry ping (IPv4 and
// IPv6) and a TCP transfer from the road warrior to the server behind the
// gateway; on SIGTERM they exit 0 and leave no TUN device and no routing
// rule behind.
func TestDaemonsCarryTrafficAndCleanUp(t *testing.T) {
	bed := netns.New(t)
	gw, rw := up(t, bed, rig.ExampleConfig("gateway.yaml"), rig.ExampleConfig("roadwarrior.yaml"))
	for _, dst := range []string{netns.Srv4.String(), netns.Srv6.String()} {
		if out, err := bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", dst); err != nil {
			state := netState(bed)
			rw.Stop(5 * time.Second)
			gw.Stop(5 * time.Second)
			t.Fatalf("ping %s through the tunnel: %v\n%s\ngw:\n%s\nrw:\n%s\n%s", dst, err, out, gw.Log(), rw.Log(), state)
		}
	}
	if _, err := rig.TCPTransfer(bed, 8<<20); err != nil {
		t.Fatal(err)
	}

	for _, p := range []*rig.Proc{rw, gw} {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", p.Name, err, p.Log())
		}
		if !strings.Contains(p.Log(), "stopped cleanly") || !strings.Contains(p.Log(), "spi=0xc0de000") {
			t.Fatalf("%s log:\n%s", p.Name, p.Log())
		}
	}
	for _, ns := range []*netns.NS{bed.RW, bed.GW} {
		links, _ := ns.Run("ip", "-br", "link")
		rules4, _ := ns.Run("ip", "-4", "rule")
		rules6, _ := ns.Run("ip", "-6", "rule")
		if strings.Contains(links, "roamsec0") || strings.Contains(rules4+rules6, "fwmark") {
			t.Fatalf("%s: left behind:\n%s\n%s\n%s", ns.Name, links, rules4, rules6)
		}
	}
	// The gateway's inbound SA counted the packets it delivered.
	if !strings.Contains(gw.Log(), "SA counters") {
		t.Fatalf("gateway log has no SA counters:\n%s", gw.Log())
	}
}

// A bad config is refused with the file, the line, the field and the
// reason, exit code 3, and never echoes key material.
func TestBadConfigIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (binaries are built by TestMain as root)")
	}
	good, err := os.ReadFile(rig.ExampleConfig("gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, from, to, want string
	}{
		{"short key", `key: "0x4558414d504c45206b65792072772d3e67772c204e4f5420534543524554212121212121"`, `key: "0x4558414d504c45206b65792072772d3e67772c204e4f542053454352455421212121"`, "inbound.key"},
		{"unknown transform", "transform: aes256gcm16", "transform: aes512gcm16", "transform"},
		{"typo in a field", "replay_window:", "replay_windw:", "replay_windw"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(string(good), c.from) {
				t.Fatalf("example config no longer contains %q", c.from)
			}
			path, err := rig.WriteFile(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml", strings.Replace(string(good), c.from, c.to, 1))
			if err != nil {
				t.Fatal(err)
			}
			out, code, err := rig.Run(context.Background(), nil, filepath.Join(bin, "gateway"), "-config", path, "-check")
			if err != nil || code != 3 {
				t.Fatalf("exit %d (%v), want 3:\n%s", code, err, out)
			}
			if !strings.Contains(out, path+":") || !strings.Contains(out, c.want) {
				t.Fatalf("error does not name file:line and %q:\n%s", c.want, out)
			}
			if strings.Contains(out, "4558414d504c45") {
				t.Fatalf("error shows key material:\n%s", out)
			}
		})
	}
}

// netState is the routing state of both ends, for failure messages.
func netState(bed *netns.Bed) string {
	var b strings.Builder
	for _, ns := range []*netns.NS{bed.RW, bed.GW} {
		for _, args := range [][]string{{"ip", "rule"}, {"ip", "route", "show", "table", "all"}, {"ip", "-s", "-br", "link"}} {
			out, _ := ns.Run(args...)
			fmt.Fprintf(&b, "%s$ %s\n%s\n", ns.Name, strings.Join(args, " "), out)
		}
	}
	return b.String()
}

// The other two switches a config offers, together: the water TUN backend
// and raw ESP, IP protocol 50 (RFC 4303), sent through the packet socket
// (transport.raw_esp_send: packet). Ping both families and move data.
func TestDaemonsWaterBackendAndRawESP(t *testing.T) {
	bed := netns.New(t)
	dir := t.TempDir()
	var paths []string
	for _, name := range []string{"gateway.yaml", "roadwarrior.yaml"} {
		data, err := os.ReadFile(rig.ExampleConfig(name))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		for from, to := range map[string]string{"backend: wireguard": "backend: water", "encap: udp": "encap: esp", "raw_esp_send: socket": "raw_esp_send: packet"} {
			if !strings.Contains(s, from) {
				t.Fatalf("%s no longer contains %q", name, from)
			}
			s = strings.Replace(s, from, to, 1)
		}
		p, err := rig.WriteFile(dir, name, s)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	gw, rw := up(t, bed, paths[0], paths[1])
	for _, p := range []*rig.Proc{gw, rw} {
		if !strings.Contains(p.Log(), "encap=esp") || !strings.Contains(p.Log(), "backend=water") {
			t.Fatalf("%s did not take the config:\n%s", p.Name, p.Log())
		}
	}
	for _, dst := range []string{netns.Srv4.String(), netns.Srv6.String()} {
		if out, err := bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", dst); err != nil {
			t.Fatalf("ping %s: %v\n%s\n%s", dst, err, out, netState(bed))
		}
	}
	if _, err := rig.TCPTransfer(bed, 2<<20); err != nil {
		t.Fatal(err)
	}
	// raw_esp_send: packet: IPv4 ESP left through the AF_PACKET socket on
	// both ends once their next hops were resolved.
	for i, role := range []string{"gateway", "roadwarrior"} {
		if d := status(t, role, paths[i]).Datapath; d.ESPPacketSocket == 0 || d.ESPPacketSocket > d.ESPSent {
			t.Errorf("%s: %d of %d ESP packets through the packet socket; want some", role, d.ESPPacketSocket, d.ESPSent)
		}
	}
}

// -check is as strict as start-up, on the host the daemon runs on (here a
// namespace of the bed): what -check refuses there, start-up refuses with
// the same file:line: field and exit code 3 (not a run-time failure, exit
// 4); what -check accepts starts and carries traffic.
func TestCheckIsAsStrictAsStartUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bed := netns.New(t)
	dir := t.TempDir()
	read := func(name string) string {
		data, err := os.ReadFile(rig.ExampleConfig(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	gwStatic, rwStatic := read("gateway.yaml"), read("roadwarrior.yaml")
	ikeGWPath, ikeRWPath := ikeConfigs(t, "192.0.2.2/32, 198.51.100.2/32", "1h")
	ikeGWText, _ := os.ReadFile(ikeGWPath)
	ikeRWText, _ := os.ReadFile(ikeRWPath)
	cases := []struct {
		name, role, text, from, to, want string
	}{
		{"route src not on the host", "gateway", gwStatic, "{ dst: 192.0.2.2/32, src: 192.0.2.1 }", "{ dst: 192.0.2.2/32, src: 192.0.2.9 }", "tun.routes[0].src: 192.0.2.9 is not an address of this host"},
		{"link naming no interface", "roadwarrior", rwStatic, "link: rsb-sec", "link: wwan9", `mobility.paths[1].link: no network interface is named "wwan9"`},
		{"ike port not 500", "gateway", string(ikeGWText), "  dpd: 2s\n", "  dpd: 2s\n  port: 5000\n", "ike.port: 5000"},
		{"missing certificate", "roadwarrior", string(ikeRWText), "  psk_file: psk\n", "  cert: rw.pem\n  key: rw.key\n", "ike.cert: "},
		{"missing PSK file", "gateway", string(ikeGWText), "psk_file: psk,", "psk_file: nowhere.psk,", "ike.peers[0].psk_file: PSK file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(c.text, c.from) {
				t.Fatalf("config no longer contains %q", c.from)
			}
			path, err := rig.WriteFile(filepath.Dir(ikeGWPath), strings.ReplaceAll(c.name, " ", "-")+".yaml", strings.Replace(c.text, c.from, c.to, 1))
			if err != nil {
				t.Fatal(err)
			}
			ns := bed.GW
			if c.role == "roadwarrior" {
				ns = bed.RW
			}
			for _, args := range [][]string{{"-check"}, {}} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				out, code, err := rig.Run(ctx, ns, filepath.Join(bin, c.role), append([]string{"-config", path}, args...)...)
				cancel()
				if err != nil || code != 3 || !strings.Contains(out, path+":") || !strings.Contains(out, c.want) {
					t.Fatalf("%s %v: exit %d (%v), want 3 and %q:\n%s", c.role, args, code, err, c.want, out)
				}
			}
		})
	}

	// The files -check accepts in the bed start and carry traffic.
	var paths []string
	for _, f := range []struct{ role, text string }{{"gateway", gwStatic}, {"roadwarrior", rwStatic}} {
		path, err := rig.WriteFile(dir, f.role+".yaml", f.text)
		if err != nil {
			t.Fatal(err)
		}
		ns := bed.GW
		if f.role == "roadwarrior" {
			ns = bed.RW
		}
		out, code, err := rig.Run(context.Background(), ns, filepath.Join(bin, f.role), "-config", path, "-check")
		if err != nil || code != 0 || !strings.Contains(out, "configuration OK") {
			t.Fatalf("%s -check: exit %d (%v):\n%s", f.role, code, err, out)
		}
		paths = append(paths, path)
	}
	up(t, bed, paths[0], paths[1])
	if out, err := bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", netns.Srv4.String()); err != nil {
		t.Fatalf("ping through what -check accepted: %v\n%s", err, out)
	}
}
