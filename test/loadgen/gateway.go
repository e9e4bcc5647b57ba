package loadgen

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/pki"
	"github.com/roamsec/roamsec/test/rig"
)

// GatewayID is the gateway's identity in the fleet's PKI.
const GatewayID = "gw.load.roamsec.example"

// PKI is the fleet's throw-away CA: a certificate for the gateway and one
// per road warrior, each certifying the road warrior's own address (SAN
// IP), which is what the gateway's wildcard peer authorizes it to claim
// as its inner address (RFC 3554 §4): one identity cannot claim another's
// address.
type PKI struct {
	CA *pki.CA
}

// NewPKI makes the CA.
func NewPKI() (*PKI, error) {
	ca, err := pki.NewCA("roamsec load CA", pki.ECDSAP256)
	if err != nil {
		return nil, err
	}
	return &PKI{CA: ca}, nil
}

// RoadWarrior issues road warrior i's identity (rw<i>@load.roamsec.example)
// and certificate for addr.
func (p *PKI) RoadWarrior(i int, addr netip.Addr) (auth.Identity, *auth.Credential, error) {
	email := fmt.Sprintf("rw%d@load.roamsec.example", i)
	l, err := p.CA.IssueWith(pki.Options{CN: fmt.Sprintf("rw%d", i), Alg: pki.ECDSAP256, IPs: []netip.Addr{addr}, Emails: []string{email}})
	if err != nil {
		return auth.Identity{}, nil, err
	}
	cred, err := auth.NewCredential(l.Key, []*x509.Certificate{l.Cert})
	if err != nil {
		return auth.Identity{}, nil, err
	}
	id, err := auth.ParseIdentity(email)
	return id, cred, err
}

// GatewayOptions shape the gateway's configuration.
type GatewayOptions struct {
	DPD           time.Duration // 0: 30s
	ChildLifetime time.Duration // 0: none
	LogLevel      string        // "" : warn (a line per handshake costs the gateway CPU)
}

// gatewayYAML: one wildcard peer accepts every identity the CA certified,
// with the addresses its certificate names; the road warriors' space is
// routed into the tunnel.
const gatewayYAML = `role: gateway
log: {level: %[2]s}
control_socket: %[1]s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: %[3]s, src: %[4]s}
transport:
  listen: [%[4]s]
ike:
  id: %[5]s
  cert: %[1]s/gw.crt
  key: %[1]s/gw.key
  cas: [%[1]s/ca.crt]
  local_ts: [%[6]s]
  dpd: %[7]s
%[8]s  peers:
    - {}  # any identity a certificate of ike.cas proves; its inner addresses: those the certificate names
`

// WriteGatewayConfig writes the gateway's certificate, key, CA and
// configuration into dir and returns the configuration's path.
func (p *PKI) WriteGatewayConfig(dir string, o GatewayOptions) (string, error) {
	l, err := p.CA.Issue(GatewayID, pki.ECDSAP256, []string{GatewayID}, nil, nil)
	if err != nil {
		return "", err
	}
	if _, _, err := l.Write(dir, "gw"); err != nil {
		return "", err
	}
	if _, err := p.CA.Write(dir, "ca"); err != nil {
		return "", err
	}
	if o.DPD == 0 {
		o.DPD = 30 * time.Second
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	extra := ""
	if o.ChildLifetime > 0 {
		extra = fmt.Sprintf("  child_lifetime: %s\n", o.ChildLifetime)
	}
	cfg := fmt.Sprintf(gatewayYAML, dir, o.LogLevel, netns.LoadNet4, netns.GWPrimary4, GatewayID,
		netns.ServerNet4, o.DPD, extra)
	return rig.WriteFile(dir, "gw.yaml", cfg)
}

// StartGateway runs the gateway daemon bin in gw with cfg. cpus, if set,
// pins it (taskset -c cpus) and sets GOMAXPROCS to their number. It waits
// until the control socket answers.
func StartGateway(bed *netns.Bed, bin, cfg, cpus string) (*rig.Proc, error) {
	name, args := bin, []string{"-config", cfg}
	if cpus != "" {
		n := len(strings.Split(cpus, ","))
		name, args = "taskset", append([]string{"-c", cpus, "env", "GOMAXPROCS=" + strconv.Itoa(n), bin}, args...)
	}
	p, err := rig.Launch(bed.GW, name, args...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := GatewayStatus(bed, bin, cfg); err == nil {
			return p, nil
		}
		if p.Exited() || time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("gateway did not come up:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// GatewayStatus is `gateway status -json` with the extra flags (-summary:
// the counters without the lists).
func GatewayStatus(bed *netns.Bed, bin, cfg string, extra ...string) (daemon.Status, error) {
	var st daemon.Status
	cmd := bed.GW.Command(bin, append([]string{"status", "-json", "-config", cfg}, extra...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return st, fmt.Errorf("gateway status: %v: %s", err, errb.String())
	}
	return st, json.Unmarshal(out.Bytes(), &st)
}

// BuildGateway compiles cmd/gateway into dir.
func BuildGateway(dir string) (string, error) {
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/gateway")
	cmd.Dir = rig.Root()
	cmd.Env = append(os.Environ(), "PATH=/usr/local/go/bin:"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "gateway"), nil
}

// GatewayCounters is the gateway's data path counters (status -json
// -summary: no lists built).
func GatewayCounters(bed *netns.Bed, bin, cfg string) (daemon.DatapathStatus, error) {
	st, err := GatewayStatus(bed, bin, cfg, "-summary")
	return st.Datapath, err
}
