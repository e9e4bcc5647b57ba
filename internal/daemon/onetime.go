package daemon

import (
	"bufio"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/enroll"
)

// startOneTime makes a gateway with ike.one_time the Target of seed 002:
// the endpoint asks enroll.Target about one-time keys, and the Child SAs
// of admitted keys are logged to the accounting log as they come and go
// (the counters at removal). The log closes after the endpoint (LIFO), so
// the last tunnel_down lines are written.
func startOneTime(cl *cleanups, s *Setup, icfg *ike.Config, st *ikeState) error {
	o := s.IKE.OneTime
	if o == nil || icfg.Initiator {
		return nil
	}
	h, err := openOneTimeStore(o)
	if err != nil {
		return fmt.Errorf("ike.one_time: %w", err)
	}
	cl.push(func() { h.Close() })
	t := &enroll.Target{Host: h, Gateway: o.Name, VirtualPool: o.VirtualPool,
		VirtualPool6: o.VirtualPool6, DNS: o.DNS, Log: s.Log}
	if o.Accounting != "" {
		a, err := enroll.OpenAccounting(o.Accounting)
		if err != nil {
			return fmt.Errorf("ike.one_time.accounting: %w", err)
		}
		t.Acct = a
		cl.push(func() { a.Close() })
	}
	if _, err := t.Host.List(); err != nil {
		field := "ike.one_time.database"
		if o.Etcd != nil {
			field = "ike.one_time.etcd"
		}
		return fmt.Errorf("%s: %w", field, err)
	}
	icfg.OneTime, st.oneTime = t, t
	install, remove := icfg.Install, icfg.Remove
	icfg.Install = func(c *ike.Child) error {
		if err := install(c); err != nil {
			return err
		}
		t.ChildUp(c)
		return nil
	}
	icfg.Remove = func(c *ike.Child) {
		t.ChildDown(c)
		remove(c)
	}
	return nil
}

// openOneTimeStore is the Host's database ike.one_time names: the file,
// or etcd for gateways on several machines.
func openOneTimeStore(o *config.OneTime) (enroll.Store, error) {
	if e := o.Etcd; e != nil {
		return enroll.OpenEtcdHost(enroll.EtcdConfig{Endpoints: e.Endpoints, Prefix: e.Prefix,
			CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile})
	}
	return enroll.OpenHost(o.Database), nil
}

// oneTimeFlags are connect's -one-time flags.
type oneTimeFlags struct {
	code, remoteTS, socket, tun string
}

func (f *oneTimeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.code, "one-time", "", "connect once with this one-time code (- reads it from standard input, out of the process list); no configuration file")
	fs.StringVar(&f.remoteTS, "remote-ts", InitGatewayInner+"/32", "with -one-time: the networks reached through the tunnel (comma-separated)")
	fs.StringVar(&f.socket, "control-socket", "/run/roamsec/roadwarrior.sock", "with -one-time: the control socket (status, disconnect)")
	fs.StringVar(&f.tun, "tun", "roamsec0", "with -one-time: the TUN device's name")
}

// oneTimeClient is connect -one-time's key: zeroed after IKE_AUTH (and on
// exit), with the gateway secret the profile's PSK shares.
type oneTimeClient struct {
	key    *auth.OneTimeKey
	secret config.Secret // the built profile's copy, which the endpoint uses
	once   sync.Once
}

func (o *oneTimeClient) zero() {
	o.once.Do(func() {
		o.key.Zero()
		o.secret.Wipe()
	})
}

// progress zeroes the key once IKE_AUTH is over, either way: the key is
// used (or refused), and nothing else needs it (rekeys use SK_d).
func (o *oneTimeClient) progress(next func(ike.Progress)) func(ike.Progress) {
	return func(p ike.Progress) {
		if p.Kind == ike.EvIKEEstablished || p.Kind.Terminal() {
			o.zero()
		}
		next(p)
	}
}

const oneTimeTemplate = `role: roadwarrior
log: { level: info, format: text }
control_socket: %s
tun:
  name: %s
  routes:
%s
ike:
  id: "keyid:%s"
  gateway: %q
  mode: virtual
  remote_ts: [%s]
`

// prepare builds connect -one-time's profile in memory from the gateway's
// name and the code.
func (f *oneTimeFlags) prepare(pos []string, stdin io.Reader, stderr io.Writer, quiet bool) (*oneTimeClient, *prepared, int) {
	const role = "roadwarrior"
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s connect: -one-time needs the GATEWAY (a name or address)\n", role)
		return nil, nil, ExitUsage
	}
	code := f.code
	if code == "-" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			fmt.Fprintf(stderr, "%s connect: -one-time -: no code on standard input\n", role)
			return nil, nil, ExitOneTimeCode
		}
		code = line
	}
	key, err := auth.ParseOneTimeCode(code)
	if err != nil {
		fmt.Fprintf(stderr, "%s connect: the one-time code is not valid: %v: check it against the printed code\n", role, strings.TrimPrefix(err.Error(), "auth: one-time code: "))
		return nil, nil, ExitOneTimeCode
	}
	var routes, ts []string
	for _, v := range strings.Split(f.remoteTS, ",") {
		pf, err := netip.ParsePrefix(strings.TrimSpace(v))
		if err != nil {
			key.Zero()
			fmt.Fprintf(stderr, "%s connect: -remote-ts: %v\n", role, err)
			return nil, nil, ExitUsage
		}
		routes = append(routes, fmt.Sprintf("    - { dst: %s }", pf))
		ts = append(ts, pf.String())
	}
	yml := fmt.Sprintf(oneTimeTemplate, f.socket, f.tun, strings.Join(routes, "\n"), hex.EncodeToString(key.Identity().Data),
		pos[0], strings.Join(ts, ", "))
	c, err := config.ParseOneTime("connect -one-time", []byte(yml))
	if err != nil {
		key.Zero()
		reportConfigError(stderr, role, err)
		return nil, nil, ExitConfig
	}
	c.IKE.Credential = key.Credential()
	c.IKE.PSK = key.GatewaySecret()
	p, code2 := prepareLoaded(role, "connect -one-time", c, stderr, quiet, false)
	if p == nil {
		key.Zero()
		return nil, nil, code2
	}
	return &oneTimeClient{key: key, secret: p.setup.IKE.PSK}, p, ExitOK
}
