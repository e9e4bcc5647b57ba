package config

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
	"go.yaml.in/yaml/v3"
)

// IKE is the ike section: the IKEv2 connection that negotiates the SAs
// instead of static keys.
type IKE struct {
	ID auth.Identity
	// Road warrior: where the gateway is, who it must be, what to ask for.
	Gateway    string // a name or an address
	GatewayID  auth.Identity
	Mode       ike.Mode
	LocalTS    []netip.Prefix
	RemoteTS   []netip.Prefix
	HostToHost bool
	// Credentials: a PSK (road warrior), or a certificate and key; CAs
	// verify the peer's certificate.
	PSK Secret
	// EAPPassword (road warrior, eap_password_file): authenticate with
	// EAP-MSCHAPv2 as ID, the gateway with its certificate (cas).
	EAPPassword Secret
	CertFile    string
	KeyFile     string
	CAFiles     []string
	// Credential and CAs are CertFile/KeyFile and CAFiles, loaded and
	// checked when the file is parsed, so -check sees what start-up sees.
	Credential *auth.Credential
	CAs        []*x509.Certificate
	// Gateway: the road warriors it accepts.
	Peers []IKEPeer
	// OneTime (gateway): road warriors with one-time keys (seed 002,
	// internal/enroll); nil: none.
	OneTime *OneTime

	IKEProposals []ike.IKEProposal
	ESPProposals []ike.ESPProposal
	PFS          bool

	IKELifetime       time.Duration
	ChildLifetime     time.Duration
	DPD               time.Duration
	RetransmitTimeout time.Duration
	RetransmitTries   int
	FragmentSize      int    // RFC 7383: larger encrypted messages go as fragments; 0: 1280
	Port              uint16 // the IKE port (500)
	Limits            IKELimits
}

// IKELimits bound what unauthenticated peers can make a gateway hold
// (ike.Config's fields of the same names; RFC 7296 §2.6).
type IKELimits struct {
	CookieThreshold     int // half-open SAs before cookies are demanded; -1: always
	HalfOpenMax         int
	HalfOpenPerSource   int
	HalfOpenTimeout     time.Duration
	FragmentMemory      int // bytes, all SAs
	FragmentMemoryPerSA int // bytes, one SA
	Queue               int // IKE messages from UDP 500 and 4500 waiting for the IKE goroutines, per lane (new IKE_SA_INIT; existing IKE SAs, split among the goroutines)
}

// DefaultIKEQueue is ike.queue's default.
const DefaultIKEQueue = 1024

// OneTime is a gateway's ike.one_time: the Host's key database it
// shares with other gateway processes, the accounting log, and what an
// admitted key is authorized for.
type OneTime struct {
	Database     string       // the file Host (gateways on one machine); "" with Etcd
	Etcd         *OneTimeEtcd // the Host in etcd (gateways on several machines)
	Accounting   string       // "": no accounting log
	Name         string       // this gateway in the database and the log
	VirtualPool  netip.Prefix
	VirtualPool6 netip.Prefix
	DNS          []netip.Addr
}

// OneTimeEtcd is ike.one_time.etcd: where the keys are in etcd.
type OneTimeEtcd struct {
	Endpoints                 []string // http:// or https:// URLs
	Prefix                    string
	CAFile, CertFile, KeyFile string // optional TLS
}

// IKEPeer is one gateway peers entry.
type IKEPeer struct {
	ID           auth.Identity // zero: any identity a certificate of our CAs proves
	PSK          Secret
	Addresses    []netip.Prefix // RFC 3554 §4 authority
	VirtualPool  netip.Prefix   // IPv4
	VirtualPool6 netip.Prefix
	DNS          []netip.Addr
	// EAP (auth: eap-radius): EAP relayed to the radius section's
	// servers (RFC 7296 §2.16); EAPOnly (eap_only: true) lets the peer
	// skip our certificate AUTH (RFC 5998).
	EAP     bool
	EAPOnly bool
	// EAPAskIdentity (eap_ask_identity: true): the user name is the
	// peer's EAP identity, asked for, not its IKE identity.
	EAPAskIdentity bool
	authLine       int
}

func (p *parser) ike(top *fields, c *Config) {
	n := top.get("ike")
	if n == nil {
		return
	}
	f := p.fields(n, top.lineOf("ike"), "ike", "id", "gateway", "gateway_id", "mode", "local_ts", "remote_ts", "host_to_host",
		"psk_file", "eap_password_file", "cert", "key", "cas", "peers", "proposals", "esp_proposals", "pfs", "ike_lifetime", "child_lifetime", "dpd",
		"retransmit_timeout", "retransmit_tries", "port", "fragment_size",
		"cookie_threshold", "half_open_max", "half_open_per_source", "half_open_timeout", "fragment_memory", "fragment_memory_per_sa", "queue",
		"one_time")
	k := &IKE{}
	k.ID = p.identity(f, "id", true)
	mode, _ := f.enum("mode", "rfc3554", "rfc3554", "virtual")
	if mode == "virtual" {
		k.Mode = ike.ModeVirtual
	}
	k.LocalTS = p.prefixes(f, "local_ts")
	k.RemoteTS = p.prefixes(f, "remote_ts")
	k.HostToHost = f.boolean("host_to_host", c.Mobility != nil)
	if c.Role == RoleRoadWarrior && c.Mobility != nil && len(c.Mobility.Paths) > 0 && !k.HostToHost {
		// The probes and the SCTP association ride the host-to-host Child
		// SA (outer = inner), in both modes; without it no path is
		// monitored, and failover never happens.
		p.errf(f.lineOf("host_to_host"), "ike.host_to_host", "false leaves every mobility path unmonitored (path monitoring rides the host-to-host Child SA): remove it, or remove mobility")
	}
	p.ikeRole(f, c, k)
	p.ikeCredentials(f, c, k)
	for i, pn := range f.list("peers") {
		k.Peers = append(k.Peers, p.ikePeer(pn, i, k))
	}
	if f.has("one_time") {
		if c.Role != RoleGateway {
			f.forbid("one_time", "a gateway admits one-time keys; a road warrior uses one with connect -one-time")
		} else {
			k.OneTime = p.oneTime(f)
		}
	}
	if c.Role == RoleGateway && len(k.Peers) == 0 && k.OneTime == nil {
		f.missing("peers", ": the road warriors this gateway accepts")
	}
	p.ikeProposals(f, k)
	k.PFS = f.boolean("pfs", true)
	k.IKELifetime, _ = f.duration("ike_lifetime", 4*time.Hour)
	k.ChildLifetime, _ = f.duration("child_lifetime", time.Hour)
	k.DPD, _ = f.duration("dpd", 30*time.Second)
	k.RetransmitTimeout, _ = f.duration("retransmit_timeout", time.Second)
	tries, _ := f.uint("retransmit_tries", 5, 1, 20)
	k.RetransmitTries = int(tries)
	frag, _ := f.uint("fragment_size", 1280, 512, 65535)
	k.FragmentSize = int(frag)
	port, _ := f.uint("port", 500, 1, 65535)
	k.Port = uint16(port)
	k.Limits = p.ikeLimits(f)
	c.IKE = k
}

// ikeCredentials reads our own credentials (PSK, certificate and key,
// CAs, a road warrior's EAP password) and checks a road warrior has one.
func (p *parser) ikeCredentials(f *fields, c *Config, k *IKE) {
	if f.has("psk_file") {
		k.PSK = p.pskFile(f, "psk_file")
	}
	k.CertFile = p.path(f, "cert")
	k.KeyFile = p.path(f, "key")
	if (k.CertFile == "") != (k.KeyFile == "") {
		p.errf(f.line, "ike", "give cert and key together")
	}
	for i, cn := range f.list("cas") {
		if v, ok := p.scalar(cn, f.itemPath("cas", i)); ok {
			k.CAFiles = append(k.CAFiles, p.abs(v))
			cas, err := auth.LoadCAs(p.abs(v))
			if err != nil {
				p.errf(cn.Line, f.itemPath("cas", i), "%s", credMsg(err))
				continue
			}
			k.CAs = append(k.CAs, cas...)
		}
	}
	p.credentials(f, k)
	if f.has("eap_password_file") {
		if c.Role != RoleRoadWarrior {
			f.forbid("eap_password_file", "a gateway relays EAP to RADIUS (peers with auth: eap-radius); this is a road warrior's password")
		} else {
			k.EAPPassword = p.secretFile(f, "eap_password_file", "EAP password", 1)
			if len(k.CAFiles) == 0 {
				p.errf(f.lineOf("eap_password_file"), "ike.eap_password_file", "EAP needs ike.cas: the gateway proves itself with its certificate before the password is used")
			}
		}
	}
	if c.Role == RoleRoadWarrior && k.PSK == nil && k.CertFile == "" && !f.has("eap_password_file") && !p.oneTimeClient {
		p.errf(f.line, "ike", "no credentials: give psk_file, eap_password_file, or cert and key")
	}
}

// identity reads an IKE identity (RFC 7296 §3.5) at ff's name.
func (p *parser) identity(ff *fields, name string, required bool) auth.Identity {
	v, vn, ok := ff.scalar(name)
	if vn == nil {
		if required {
			ff.missing(name, `: e.g. "gw.example", "rw1@example.org", "192.0.2.1" or "CN=rw1,O=example"`)
		}
		return auth.Identity{}
	}
	if !ok {
		return auth.Identity{}
	}
	i, err := auth.ParseIdentity(v)
	if err != nil {
		p.errf(vn.Line, ff.path2(name), "%v", err)
	}
	return i
}

// ikeRole reads what only one role has: a road warrior's gateway and
// selectors; a gateway refuses them.
func (p *parser) ikeRole(f *fields, c *Config, k *IKE) {
	if c.Role == RoleRoadWarrior {
		k.Gateway = f.str("gateway", "")
		if k.Gateway == "" {
			f.missing("gateway", ": the gateway's name or address")
		}
		k.GatewayID = p.identity(f, "gateway_id", false)
		if len(k.RemoteTS) == 0 {
			f.missing("remote_ts", ": the networks behind the gateway, e.g. [203.0.113.0/24]")
		}
		if k.Mode == ike.ModeRFC3554 && len(k.LocalTS) == 0 {
			// RFC 3554 mode: our own uplink addresses are the inner ones.
			for _, a := range c.Transport.Listen {
				k.LocalTS = append(k.LocalTS, netip.PrefixFrom(a, a.BitLen()))
			}
			if len(k.LocalTS) == 0 {
				f.missing("local_ts", ": in rfc3554 mode our own addresses (or transport.listen)")
			}
		}
	} else {
		for _, name := range []string{"gateway", "gateway_id", "mode", "remote_ts", "host_to_host"} {
			f.forbid(name, "a gateway answers; this is for road warriors")
		}
	}
}

// ikePeer reads ike.peers[i]: who a gateway accepts and how it
// authenticates them (k: the gateway's own credentials and CAs).
func (p *parser) ikePeer(pn *yaml.Node, i int, k *IKE) IKEPeer {
	path := elem("ike.peers", i)
	pf := p.fields(pn, pn.Line, path, "id", "psk_file", "addresses", "virtual_pool", "dns", "auth", "eap_only", "eap_ask_identity")
	var peer IKEPeer
	peer.ID = p.identity(pf, "id", false)
	method, _ := pf.enum("auth", "", "psk", "pubkey", "eap-radius")
	peer.EAP, peer.authLine = method == "eap-radius", pf.lineOf("auth")
	peer.EAPOnly = pf.boolean("eap_only", false)
	peer.EAPAskIdentity = pf.boolean("eap_ask_identity", false)
	for _, f := range []string{"eap_only", "eap_ask_identity"} {
		if pf.has(f) && !peer.EAP {
			p.errf(pf.lineOf(f), pf.path2(f), "needs auth: eap-radius")
		}
	}
	if peer.EAP {
		pf.forbid("psk_file", "auth: eap-radius: the RADIUS server authenticates this peer")
		if k.Credential == nil && !peer.EAPOnly {
			p.errf(pf.lineOf("auth"), pf.path2("auth"), "EAP needs the gateway's certificate (ike.cert, ike.key), or eap_only: true")
		}
	} else if pf.has("psk_file") {
		peer.PSK = p.pskFile(pf, "psk_file")
		if len(peer.ID.Data) == 0 {
			pf.missing("id", ": a pre-shared key belongs to one identity")
		}
	} else if len(k.CAFiles) == 0 {
		p.errf(pn.Line, path, "no psk_file, and ike.cas is empty: this peer could never authenticate")
	}
	peer.Addresses = p.prefixes(pf, "addresses")
	// One pool per family: INTERNAL_IP4_ADDRESS and _IP6_ADDRESS.
	for i, vp := range p.prefixes(pf, "virtual_pool") {
		slot := &peer.VirtualPool
		if vp.Addr().Is6() {
			slot = &peer.VirtualPool6
		}
		if slot.IsValid() {
			p.errf(pf.lineOf("virtual_pool"), pf.itemPath("virtual_pool", i), "one pool per address family")
		}
		*slot = vp.Masked()
	}
	peer.DNS, _ = pf.addrs("dns")
	return peer
}

// ikeProposals reads ike.proposals and ike.esp_proposals (strongSwan's
// syntax; nil keeps the defaults).
func (p *parser) ikeProposals(f *fields, k *IKE) {
	for i, pn := range f.list("proposals") {
		if v, ok := p.scalar(pn, f.itemPath("proposals", i)); ok {
			pr, err := ike.ParseIKEProposal(v)
			if err != nil {
				p.errf(pn.Line, f.itemPath("proposals", i), "%v", err)
			}
			k.IKEProposals = append(k.IKEProposals, pr)
		}
	}
	for i, pn := range f.list("esp_proposals") {
		if v, ok := p.scalar(pn, f.itemPath("esp_proposals", i)); ok {
			pr, err := ike.ParseESPProposal(v)
			if err != nil {
				p.errf(pn.Line, f.itemPath("esp_proposals", i), "%v", err)
			}
			k.ESPProposals = append(k.ESPProposals, pr)
		}
	}
}

// ikeLimits reads the bounds on unauthenticated state (RFC 7296 §2.6).
func (p *parser) ikeLimits(f *fields) IKELimits {
	var l IKELimits
	ct, _ := f.uint("cookie_threshold", 64, 0, 1<<20)
	l.CookieThreshold = int(ct)
	if ct == 0 {
		l.CookieThreshold = -1 // always
	}
	n, _ := f.uint("half_open_max", ike.DefaultHalfOpenMax, 1, 1<<22)
	l.HalfOpenMax = int(n)
	n, _ = f.uint("half_open_per_source", ike.DefaultHalfOpenPerSource, 1, 1<<22)
	l.HalfOpenPerSource = int(n)
	if l.HalfOpenPerSource > l.HalfOpenMax {
		p.errf(f.lineOf("half_open_per_source"), f.path2("half_open_per_source"), "%d is more than half_open_max (%d)", l.HalfOpenPerSource, l.HalfOpenMax)
	}
	l.HalfOpenTimeout, _ = f.duration("half_open_timeout", 30*time.Second)
	if l.HalfOpenTimeout < time.Second || l.HalfOpenTimeout > 10*time.Minute {
		p.errf(f.lineOf("half_open_timeout"), f.path2("half_open_timeout"), "want 1s to 10m (an IKE_AUTH must fit in it), got %v", l.HalfOpenTimeout)
	}
	n, _ = f.uint("fragment_memory", ike.DefaultFragmentMemory, 64<<10, 1<<30)
	l.FragmentMemory = int(n)
	n, _ = f.uint("fragment_memory_per_sa", ike.DefaultFragmentMemoryPerSA, 4<<10, 16<<20)
	l.FragmentMemoryPerSA = int(n)
	if l.FragmentMemoryPerSA > l.FragmentMemory {
		p.errf(f.lineOf("fragment_memory_per_sa"), f.path2("fragment_memory_per_sa"), "%d is more than fragment_memory (%d)", l.FragmentMemoryPerSA, l.FragmentMemory)
	}
	n, _ = f.uint("queue", DefaultIKEQueue, 16, 1<<16)
	l.Queue = int(n)
	return l
}

// credentials loads ike.cert with ike.key (ike.cas are loaded as they are
// read), as the
// daemon will use them: a missing, unreadable or garbage file is a
// file:line: field error here, not a run-time failure.
func (p *parser) credentials(f *fields, k *IKE) {
	if k.CertFile != "" && k.KeyFile != "" {
		cred, err := auth.LoadCredential(k.CertFile, k.KeyFile)
		if err != nil {
			field := "cert"
			if ce := (*auth.CredentialFileError)(nil); errors.As(err, &ce) && ce.Part == auth.PartKey {
				field = "key"
			}
			p.errf(f.lineOf(field), f.path2(field), "%s", credMsg(err))
		} else {
			k.Credential = cred
		}
	}
}

// credMsg says what is wrong with a credential file, with the fix for the
// common case (not there yet).
func credMsg(err error) string {
	msg := strings.TrimPrefix(err.Error(), "auth: ")
	if errors.Is(err, fs.ErrNotExist) {
		msg += " (create it, e.g. with init, or fix the path)"
	}
	return msg
}

func (p *parser) abs(v string) string {
	v = strings.TrimSpace(v)
	if v != "" && !filepath.IsAbs(v) {
		v = filepath.Join(p.dir, v)
	}
	return v
}

func (p *parser) path(f *fields, name string) string {
	v, _, ok := f.scalar(name)
	if !ok {
		return ""
	}
	return p.abs(v)
}

func (p *parser) prefixes(f *fields, name string) []netip.Prefix {
	var out []netip.Prefix
	for i, n := range f.list(name) {
		if pf, ok := p.prefix(n, f.itemPath(name, i)); ok {
			out = append(out, pf)
		}
	}
	return out
}

// pskFile reads a pre-shared key file: the secret as text (as strongSwan's
// secrets take it), surrounding whitespace ignored, at least 16 bytes,
// readable by its owner only.
func (p *parser) pskFile(f *fields, name string) Secret {
	v, vn, ok := f.scalar(name)
	if !ok {
		return nil
	}
	path := p.abs(v)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		p.errf(vn.Line, f.path2(name), "PSK file %s does not exist: run `%s` to create one (or: umask 077; openssl rand -base64 32 > %s)", path, initCommand(p.role), path)
		return nil
	}
	if err != nil {
		p.errf(vn.Line, f.path2(name), "cannot read PSK file: %v", err)
		return nil
	}
	s, msg := readSecret(path, st)
	if msg != "" {
		p.errf(vn.Line, f.path2(name), "PSK %s", msg)
		return nil
	}
	if len(s) < 16 {
		s.Wipe()
		p.errf(vn.Line, f.path2(name), "PSK in %s is shorter than 16 bytes: use a long random secret (e.g. openssl rand -base64 32)", path)
		return nil
	}
	return s
}

// readSecret reads a secret from the file at path (st its Stat): readable
// by its owner only, at most maxKeyFile bytes, surrounding whitespace
// ignored. msg says what is wrong ("file ... is too large"), or is empty.
func readSecret(path string, st os.FileInfo) (Secret, string) {
	if msg := checkKeyFileMode(path, st); msg != "" {
		return nil, strings.TrimPrefix(strings.ReplaceAll(msg, "key file", "file"), "PSK ")
	}
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Sprintf("file: cannot read: %v", err)
	}
	defer fh.Close()
	buf := make([]byte, maxKeyFile+1)
	defer clear(buf)
	n, _ := io.ReadFull(fh, buf)
	if n > maxKeyFile {
		return nil, fmt.Sprintf("file %s is too large", path)
	}
	return append(Secret(nil), bytes.TrimSpace(buf[:n])...), ""
}

// clone copies the section with its own copies of the secrets (Build hands
// them to the daemon and then wipes the Config's).
func (k *IKE) clone() *IKE {
	if k == nil {
		return nil
	}
	n := *k
	n.PSK = append(Secret(nil), k.PSK...)
	n.EAPPassword = append(Secret(nil), k.EAPPassword...)
	n.Peers = append([]IKEPeer(nil), k.Peers...)
	for i := range n.Peers {
		n.Peers[i].PSK = append(Secret(nil), k.Peers[i].PSK...)
	}
	return &n
}

// Wipe zeroes the pre-shared keys.
func (k *IKE) Wipe() {
	k.PSK.Wipe()
	k.EAPPassword.Wipe()
	for _, p := range k.Peers {
		p.PSK.Wipe()
	}
}

// initCommand is the packaged command that creates a role's credentials.
func initCommand(r Role) string {
	if r == "" {
		r = RoleGateway
	}
	return "roamsec-" + string(r) + " init"
}

// oneTime reads ike.one_time.
func (p *parser) oneTime(parent *fields) *OneTime {
	f := p.fields(parent.get("one_time"), parent.lineOf("one_time"), "ike.one_time", "database", "etcd", "accounting", "name", "virtual_pool", "dns")
	o := &OneTime{Database: p.path(f, "database"), Accounting: p.path(f, "accounting"), Name: f.str("name", "")}
	if f.has("etcd") {
		o.Etcd = p.oneTimeEtcd(f)
		if f.has("database") {
			f.forbid("database", "give database (gateways on this machine) or etcd (gateways on several), not both")
		}
	} else if o.Database == "" {
		f.missing("database", ": the one-time key database (gateway enroll issue -db writes it), or etcd: {endpoints: [...]}")
	}
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	for i, vp := range p.prefixes(f, "virtual_pool") {
		slot := &o.VirtualPool
		if vp.Addr().Is6() {
			slot = &o.VirtualPool6
		}
		if slot.IsValid() {
			p.errf(f.lineOf("virtual_pool"), f.itemPath("virtual_pool", i), "one pool per address family")
		}
		*slot = vp.Masked()
	}
	if !o.VirtualPool.IsValid() && !o.VirtualPool6.IsValid() {
		f.missing("virtual_pool", ": where admitted road warriors' addresses come from, e.g. [100.64.1.0/24]")
	}
	o.DNS, _ = f.addrs("dns")
	return o
}

// oneTimeEtcd reads ike.one_time.etcd.
func (p *parser) oneTimeEtcd(parent *fields) *OneTimeEtcd {
	f := p.fields(parent.get("etcd"), parent.lineOf("etcd"), "ike.one_time.etcd", "endpoints", "prefix", "ca", "cert", "key")
	e := &OneTimeEtcd{Prefix: f.str("prefix", "/roamsec/onetime/"), CAFile: p.path(f, "ca"), CertFile: p.path(f, "cert"), KeyFile: p.path(f, "key")}
	for i, n := range f.list("endpoints") {
		path := f.itemPath("endpoints", i)
		v, ok := p.scalar(n, path)
		if !ok {
			continue
		}
		u, err := url.Parse(strings.TrimSpace(v))
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https"):
			p.errf(n.Line, path, "want an http:// or https:// URL, e.g. https://192.0.2.10:2379, got %s", show(v))
		case u.Port() == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/"):
			p.errf(n.Line, path, "want scheme://HOST:PORT, e.g. https://192.0.2.10:2379, got %s", show(v))
		default:
			e.Endpoints = append(e.Endpoints, u.Scheme+"://"+u.Host)
		}
	}
	if !f.has("endpoints") {
		f.missing("endpoints", ": etcd's client URLs, e.g. [https://192.0.2.10:2379]")
	}
	// The prefix is part of every key's name: keys of other prefixes
	// (other applications, other gateway fleets) are never read.
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		p.errf(f.lineOf("prefix"), f.path2("prefix"), "want a path that starts and ends with /, e.g. /roamsec/onetime/, got %s", show(e.Prefix))
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		p.errf(f.line, f.path+".cert", "cert and key go together (the client certificate and its key)")
	}
	return e
}
