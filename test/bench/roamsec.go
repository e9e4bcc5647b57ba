package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// startRoamsec runs the roamsec daemons on the bed, each in its namespace:
//
//	ip netns exec <gw-ns> $BIN/gateway -config <dir>/gateway.yaml
//	ip netns exec <rw-ns> $BIN/roadwarrior -config <dir>/roadwarrior.yaml
//
// with binaries from `go build -o $BIN/ ./cmd/gateway ./cmd/roadwarrior` and
// configs written from the templates below. The road warrior installs the
// route to the server net itself; the path is up once rw reaches srv.
// Any failure (missing binary, daemon exiting, no connectivity) is an error
// that the table prints as "roamsec: not available (<error>)".
// startRoamsec runs the daemons with encap esp (raw IP protocol 50) or
// udp (RFC 3948, where UDP GSO batches the sends as wireguard-go's do).
func startRoamsec(env *pathEnv, encap string) (_ *setup, err error) {
	gwBin := filepath.Join(env.bin, "gateway")
	rwBin := filepath.Join(env.bin, "roadwarrior")
	how := "go build -o $BIN/ ./cmd/gateway ./cmd/roadwarrior"
	if err := checkBinary(gwBin, how); err != nil {
		return nil, err
	}
	if err := checkBinary(rwBin, how); err != nil {
		return nil, err
	}
	var peers []extraPeer
	unlink := func() {}
	if env.peers > 1 {
		peers = newExtraPeers(env.bed, env.peers)
		if unlink, err = linkExtraPeers(env.ctx, env.bed, peers); err != nil {
			return nil, err
		}
	}
	gwConf, rwConf, extraConfs, err := writeRoamsecConfigs(env, encap, peers)
	if err != nil {
		unlink()
		return nil, err
	}
	s := &setup{rwIf: roamsecTunRW, gwIf: roamsecTunGW}
	var ds []*daemon
	s.stop = func() {
		for i := len(ds) - 1; i >= 0; i-- {
			ds[i].stop()
		}
		unlink()
	}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if s.gw, err = startDaemon(env.ctx, env.bed.GW, env.profileEnv("gw"), gwBin, "-config", gwConf); err != nil {
		return nil, err
	}
	ds = append(ds, s.gw)
	if s.rw, err = startDaemon(env.ctx, env.bed.RW, env.profileEnv("rw"), rwBin, "-config", rwConf); err != nil {
		return nil, err
	}
	ds = append(ds, s.rw)
	if err := waitTunnel(env.ctx, env.bed, 10*time.Second, s.gw, s.rw); err != nil {
		return nil, err
	}
	for i, p := range peers {
		d, err := startDaemon(env.ctx, p.ns, nil, rwBin, "-config", extraConfs[i])
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		if err := waitPing(env.ctx, p.ns, d); err != nil {
			return nil, err
		}
	}
	s.peers = peers
	return s, nil
}

// TUN device names in the templates (each namespace has its own).
const (
	roamsecTunRW = "rs0"
	roamsecTunGW = "rs0"
)

// roamsecParams fill the templates. Keys and SPIs are fresh for every run.
type roamsecParams struct {
	RWPrimary, RWSecondary  string // road warrior uplinks (outer = inner, RFC 3554)
	RWPool, RWSecondaryPool string // the uplinks' nets: the gateway's peer pools
	GWPrimary, GWSecondary  string // gateway addresses on those links
	ServerNet               string // behind the gateway
	RWTun, GWTun            string
	SPIOut, SPIIn           string        // as the road warrior sees them, 0x-hex
	KeyOut, KeyIn           string        // aes256gcm16 key + 4-byte salt, hex (RFC 4106)
	RWSocket, GWSocket      string        // control sockets, in the path's scratch directory
	Encap                   string        // esp or udp
	Extra                   []extraParams // road warriors 2… (-peers)
}

// extraParams are road warrior k >= 2's: its address, the gateway's on its
// link, its link's net, its SA pair, its control socket.
type extraParams struct {
	K                   int
	RW, GW, Net         string
	SPIOut, SPIIn       string
	KeyOut, KeyIn       string
	RWSocket, ServerNet string
	RWTun, Encap        string
}

// The templates are packaging/examples/{gateway,roadwarrior}.yaml cut down
// to IPv4 and one SA pair, with fresh keys and SPIs, control sockets in the
// scratch directory and warn-level logs. TestRoamsecConfigs checks that
// internal/config accepts them without warnings; keep them in step with the
// examples when those change.
//
// One manually keyed SA pair, raw ESP, RFC 3554 outer addresses: the road
// warrior sends from its inner source to the gateway's primary address, the
// gateway to the inner destination. On both ends the routes into the TUN
// live in table 220, which a "not fwmark 0x5253" rule consults for
// everything but the daemon's own ESP (path c's WireGuard is set up the
// same way on gw).
const gatewayTemplate = `# roamsec gateway for test/bench (written per run; keys are fresh).
role: gateway
log:
  level: warn
control_socket: {{.GWSocket}}
tun:
  name: {{.GWTun}}
  table: 220
  bypass_rule:
    mark: 0x5253
    priority: 100
  routes:
    - dst: {{.RWPrimary}}/32
    - dst: {{.RWSecondary}}/32
{{- range .Extra}}
    - dst: {{.RW}}/32
{{- end}}
transport:
  raw_esp_send: packet  # raw ESP path (d): the AF_PACKET send; no effect on encap udp
  listen: [{{.GWPrimary}}, {{.GWSecondary}}{{range .Extra}}, {{.GW}}{{end}}]
sas:
  - name: bench-rw
    transform: aes256gcm16
    esn: true
    encap: {{.Encap}}
    inbound:  {spi: {{.SPIOut}}, key: {{.KeyOut}}}
    outbound: {spi: {{.SPIIn}}, key: {{.KeyIn}}}
    local_addrs: [{{.GWPrimary}}, {{.GWSecondary}}]
    peer_addrs: [{{.RWPool}}, {{.RWSecondaryPool}}]
    outer:
      mode: gateway-to-road-warrior
      local: [{{.GWPrimary}}]
    selector: "local {{.ServerNet}} remote {{.RWPrimary}},{{.RWSecondary}}"
{{- range .Extra}}
  - name: bench-rw{{.K}}
    transform: aes256gcm16
    esn: true
    encap: {{.Encap}}
    inbound:  {spi: {{.SPIOut}}, key: {{.KeyOut}}}
    outbound: {spi: {{.SPIIn}}, key: {{.KeyIn}}}
    local_addrs: [{{.GW}}]
    peer_addrs: [{{.Net}}]
    outer:
      mode: gateway-to-road-warrior
      local: [{{.GW}}]
    selector: "local {{.ServerNet}} remote {{.RW}}"
{{- end}}
`

// extraRWTemplate is road warrior k >= 2's: roadwarriorTemplate with one
// uplink.
const extraRWTemplate = `# roamsec road warrior {{.K}} for test/bench (written per run; keys are fresh).
role: roadwarrior
log:
  level: warn
control_socket: {{.RWSocket}}
tun:
  name: {{.RWTun}}
  table: 220
  bypass_rule:
    mark: 0x5253
    priority: 100
  routes:
    - dst: {{.ServerNet}}
      src: {{.RW}}
transport:
  raw_esp_send: packet  # raw ESP path (d): the AF_PACKET send; no effect on encap udp
  listen: [{{.RW}}]
sas:
  - name: bench-gw
    transform: aes256gcm16
    esn: true
    encap: {{.Encap}}
    outbound: {spi: {{.SPIOut}}, key: {{.KeyOut}}}
    inbound:  {spi: {{.SPIIn}}, key: {{.KeyIn}}}
    local_addrs: [{{.RW}}]
    peer_addrs: [{{.GW}}]
    outer:
      mode: road-warrior
      gateway: [{{.GW}}]
    selector: "local {{.RW}} remote {{.ServerNet}}"
`

const roadwarriorTemplate = `# roamsec road warrior for test/bench (written per run; keys are fresh).
role: roadwarrior
log:
  level: warn
control_socket: {{.RWSocket}}
tun:
  name: {{.RWTun}}
  table: 220
  bypass_rule:
    mark: 0x5253
    priority: 100
  routes:
    - dst: {{.ServerNet}}
      src: {{.RWPrimary}}
transport:
  raw_esp_send: packet  # raw ESP path (d): the AF_PACKET send; no effect on encap udp
  listen: [{{.RWPrimary}}, {{.RWSecondary}}]
sas:
  - name: bench-gw
    transform: aes256gcm16
    esn: true
    encap: {{.Encap}}
    outbound: {spi: {{.SPIOut}}, key: {{.KeyOut}}}
    inbound:  {spi: {{.SPIIn}}, key: {{.KeyIn}}}
    local_addrs: [{{.RWPrimary}}, {{.RWSecondary}}]
    peer_addrs: [{{.GWPrimary}}, {{.GWSecondary}}]
    outer:
      mode: road-warrior
      gateway: [{{.GWPrimary}}]
    selector: "local {{.RWPrimary}},{{.RWSecondary}} remote {{.ServerNet}}"
`

func writeRoamsecConfigs(env *pathEnv, encap string, peers []extraPeer) (gw, rw string, extra []string, err error) {
	p := newRoamsecParams(env.dir)
	p.Encap = encap
	addExtraParams(&p, env.dir, peers)
	for _, e := range p.Extra {
		text, err := renderTemplate("roadwarrior.yaml", extraRWTemplate, e)
		if err != nil {
			return "", "", nil, err
		}
		f, err := writeFile(env.dir, fmt.Sprintf("roadwarrior%d.yaml", e.K), text)
		if err != nil {
			return "", "", nil, err
		}
		extra = append(extra, f)
	}
	gwText, rwText, err := renderRoamsecConfigs(p)
	if err != nil {
		return "", "", nil, err
	}
	if gw, err = writeFile(env.dir, "gateway.yaml", gwText); err != nil {
		return "", "", nil, err
	}
	if rw, err = writeFile(env.dir, "roadwarrior.yaml", rwText); err != nil {
		return "", "", nil, err
	}
	return gw, rw, extra, nil
}

func newRoamsecParams(dir string) roamsecParams {
	return roamsecParams{
		RWPrimary: netns.RWPrimary4.String(), RWSecondary: netns.RWSecondary4.String(),
		RWPool: netns.PrimaryNet4.String(), RWSecondaryPool: netns.SecondaryNet4.String(),
		GWPrimary: netns.GWPrimary4.String(), GWSecondary: netns.GWSecondary4.String(),
		ServerNet: netns.ServerNet4.String(),
		RWTun:     roamsecTunRW, GWTun: roamsecTunGW,
		SPIOut: randSPI(), SPIIn: randSPI(),
		KeyOut: randHex(36), KeyIn: randHex(36),
		RWSocket: filepath.Join(dir, "roadwarrior.sock"),
		GWSocket: filepath.Join(dir, "gateway.sock"),
		Encap:    "udp",
	}
}

func addExtraParams(p *roamsecParams, dir string, ps []extraPeer) {
	for _, e := range ps {
		p.Extra = append(p.Extra, extraParams{
			K: e.k, RW: e.rw.String(), GW: e.gw.String(), Net: e.net.String(),
			SPIOut: randSPI(), SPIIn: randSPI(), KeyOut: randHex(36), KeyIn: randHex(36),
			RWSocket:  filepath.Join(dir, fmt.Sprintf("roadwarrior%d.sock", e.k)),
			ServerNet: p.ServerNet, RWTun: p.RWTun, Encap: p.Encap,
		})
	}
}

func renderTemplate(name, tmpl string, data any) (string, error) {
	var b strings.Builder
	t, err := template.New(name).Option("missingkey=error").Parse(tmpl)
	if err == nil {
		err = t.Execute(&b, data)
	}
	if err != nil {
		return "", fmt.Errorf("roamsec config %s: %w", name, err)
	}
	return b.String(), nil
}

func renderRoamsecConfigs(p roamsecParams) (gw, rw string, err error) {
	render := func(name, tmpl string) (string, error) { return renderTemplate(name, tmpl, p) }
	if gw, err = render("gateway.yaml", gatewayTemplate); err != nil {
		return "", "", err
	}
	if rw, err = render("roadwarrior.yaml", roadwarriorTemplate); err != nil {
		return "", "", err
	}
	return gw, rw, nil
}

// randSPI returns a random SPI above the reserved 0-255 (RFC 4303 §2.1).
func randSPI() string {
	b := make([]byte, 4)
	rand.Read(b)
	b[0] |= 0x10
	return "0x" + hex.EncodeToString(b)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
