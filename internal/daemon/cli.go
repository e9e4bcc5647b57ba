package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/control"
	"github.com/roamsec/roamsec/internal/version"
	"github.com/roamsec/roamsec/mobility"
	"github.com/roamsec/roamsec/tunnel"
)

// Exit codes shared by both daemons and their commands, so scripts and
// systemd can tell a bad config from a failure at run time, and a person
// can tell which failure it was. Documented in the usage text and the man
// pages (packaging/man).
const (
	ExitOK          = 0
	ExitUsage       = 2
	ExitConfig      = 3  // the configuration is refused (file:line: field: reason)
	ExitRuntime     = 4  // any other failure at run time
	ExitUnreachable = 5  // the gateway does not answer IKE (UDP 500/4500)
	ExitNameUnknown = 6  // the gateway's name does not resolve
	ExitAuthRefused = 7  // authentication failed, either way
	ExitPermission  = 8  // not root / no CAP_NET_ADMIN, or the control socket is not ours to open
	ExitTSRefused   = 9  // the gateway refused our addresses (TS_UNACCEPTABLE, no virtual address)
	ExitNoProposal  = 10 // no IKE or ESP proposal in common (NO_PROPOSAL_CHOSEN)
	// ExitOneTimeRefused: the gateway refused a one-time code (used,
	// revoked, expired, tampered, or not issued for it).
	ExitOneTimeRefused = 11
	// ExitOneTimeCode: the one-time code is mistyped (checksum) or no code.
	ExitOneTimeCode = 12
)

const exitCodesHelp = `Exit codes:
  0   OK: clean shutdown, disconnected, command done
  2   usage error
  3   configuration refused (printed as file:line: field: reason)
  4   other failure at run time (e.g. no daemon running for status)
  5   gateway unreachable: no answer to IKE on UDP 500/4500
  6   the gateway's name does not resolve
  7   authentication refused (identity, pre-shared key or certificate)
  8   permission denied: not root / no CAP_NET_ADMIN, or the control
      socket is not ours to open
  9   the gateway refused the addresses we asked for (TS_UNACCEPTABLE,
      or no virtual address for us)
  10  no proposal in common with the gateway (NO_PROPOSAL_CHOSEN)
  11  the gateway refused the one-time code (used, revoked, expired,
      tampered, or not issued for this gateway)
  12  the one-time code is mistyped (checksum) or not a code
`

func usage(role string, w io.Writer) {
	if role == string(config.RoleRoadWarrior) {
		fmt.Fprintf(w, `Usage: roadwarrior [-config FILE] [-check] [-version]
       roadwarrior connect [GATEWAY] [-config FILE] [-json] [-v]
       roadwarrior connect GATEWAY -one-time CODE|- [-remote-ts PREFIX,...] [-json] [-v]
       roadwarrior status [-config FILE] [-json]
       roadwarrior sa list [-config FILE] [-json]
       roadwarrior disconnect [-config FILE]
       roadwarrior init -gateway HOST [-psk-file FILE|-] [-dir DIR] [-force]
       roadwarrior version

roamsec %s road warrior. Without a command it runs as the daemon (as the
systemd unit does): it creates the TUN device, installs its addresses,
routes and routing rule, connects (IKEv2, or static keys), keeps the
connection up, and removes everything again on SIGTERM or SIGINT.

Commands:
  connect     connect in the foreground, showing each step (name resolution,
              IKE_SA_INIT, IKE_AUTH, the tunnel, each path); Ctrl-C or
              SIGTERM disconnects (DELETE sent, TUN and routes removed).
              GATEWAY (a name or address) overrides ike.gateway. -json
              prints one JSON object per step, then the final status. -v
              shows the daemon's log (log.level, log.format) on stderr;
              without it, warnings and errors only.
  status      the running daemon's IKE SA, Child SAs and SPIs, counters,
              paths and failure detector, last failover (over the control
              socket named in the configuration)
  sa list     one line per Child SA: peer, SPIs, selectors, virtual address,
              bytes, packets, age
  disconnect  ask the running road warrior (daemon or connect) to delete its
              IKE SA and exit cleanly; waits until it has
  init        write roadwarrior.yaml (IKEv2, virtual address, the gateway
              HOST) and the pre-shared key roadwarrior.psk (mode 0600) into
              /etc/roamsec (-dir): the key the gateway's init printed
              (-psk-file, - for standard input), or a new one it prints

Needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE.
Configuration: /etc/roamsec/roadwarrior.yaml unless -config.

%s
Flags (daemon):
`, version.Version, exitCodesHelp)
		return
	}
	fmt.Fprintf(w, `Usage: gateway [-config FILE] [-check] [-version]
       gateway status [-config FILE] [-json] [-summary] [-all] [-id PATTERN] [-addr PREFIX] [-state STATE]
       gateway sa list [-config FILE] [-json] [-id PATTERN] [-addr PREFIX] [-state STATE]
       gateway init [-address HOST] [-dir DIR] [-force]
       gateway enroll issue|revoke|list ... (one-time keys; gateway enroll -help)
       gateway context get [-config FILE] NAME|-all > FILE
       gateway context put [-config FILE] [-seq-jump N] FILE
       gateway ha keygen FILE
       gateway ha switchover [-config FILE]
       gateway version

roamsec %s gateway. Without a command it runs as the daemon: it creates the
TUN device, installs its addresses, routes and routing rule, answers road
warriors (IKEv2, or static keys), and removes everything again on SIGTERM
or SIGINT.

Commands:
  status      a summary (IKE SAs, Child SAs by state), then the IKE and
              Child SAs with SPIs, counters, detector (over the control socket
              named in the configuration); text lists the first 20 (-all: every
              one); -summary: the counts only
  sa list     one line per Child SA: peer identity, SPIs in/out, selectors,
              virtual address, bytes, packets, age, as the daemon streams them
              (-json: one array, written as it arrives)
  Filters (status, sa list): -id PATTERN (shell pattern on the identity),
              -addr ADDR|PREFIX (inner or outer address), -state active|idle|
              expired (Child SAs that carried packets, none yet, or past their
              hard lifetime)
  ha switchover  (the active of a hot-standby pair, ha section) release the
              service addresses, send a final checkpoint and hand over to the
              standby, which takes over at once; this gateway becomes standby
  init        write a fresh pre-shared key, roadwarrior.psk (mode 0600), into
              /etc/roamsec (-dir), which the shipped gateway.yaml uses, and
              print the road warrior's init command line with it
  context get the security context of one IKE SA (name, peer identity or
              SPIi) or of every one (-all) with their Child SAs, sealed with
              ha.cluster_key, on standard output (seed 004)
  context put carry on the IKE SAs of such a file here (same SPIs, no new
              negotiation; a gateway with the same service addresses):
              outbound ESP sequence numbers jump by -seq-jump (default 2^24)
  ha keygen   write a new cluster key (32 random bytes in hex, mode 0600)

Needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE.
Configuration: /etc/roamsec/gateway.yaml unless -config.

%s
Flags (daemon):
`, version.Version, exitCodesHelp)
}

// Main is the whole of cmd/gateway and cmd/roadwarrior: role is
// "gateway" or "roadwarrior".
func Main(role string, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			args = []string{"-version"}
		case "help":
			args = []string{"-help"}
		default:
			if code, ok := subcommand(role, args, stdout, stderr); ok {
				return code
			}
		}
	}
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/roamsec/"+role+".yaml", "configuration file (YAML)")
	check := fs.Bool("check", false, "check the configuration and exit")
	offline := fs.Bool("offline", false, "with -check: check the file alone, not against this host's addresses and interfaces")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		usage(role, stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "%s %s %s\n", version.Product, role, version.Version)
		return ExitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (see -help)\n", role, fs.Arg(0))
		return ExitUsage
	}

	p, code := prepareOn(role, *cfgPath, stderr, false, *offline && *check)
	if p == nil {
		return code
	}
	defer p.close()
	if *check {
		fmt.Fprintf(stdout, "%s: configuration OK: %d SA pairs\n", *cfgPath, len(p.built.SAs))
		return ExitOK
	}

	return runDaemon(role, *cfgPath, p, stderr)
}

// subcommand runs args[0] when it names a command (status, init, sa list,
// context, ha, disconnect, enroll, connect); ok is false when it names
// none (the daemon's flags follow).
func subcommand(role string, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	switch args[0] {
	case "status":
		return statusCmd(role, args[1:], stdout, stderr), true
	case "init":
		return initCmd(role, args[1:], os.Stdin, stdout, stderr), true
	case "sa":
		if len(args) < 2 || args[1] != "list" {
			fmt.Fprintf(stderr, "%s sa: want \"sa list\" (see %s -help)\n", role, role)
			return ExitUsage, true
		}
		return saListCmd(role, args[2:], stdout, stderr), true
	case "context":
		return contextCmd(role, args[1:], stdout, stderr), true
	case "ha":
		switch {
		case len(args) >= 2 && args[1] == "keygen":
			return haKeygenCmd(role, args[2:], stdout, stderr), true
		case len(args) >= 2 && args[1] == "switchover" && role == string(config.RoleGateway):
			return switchoverCmd(role, args[2:], stdout, stderr), true
		}
		fmt.Fprintf(stderr, "%s ha: want \"ha keygen FILE\" or \"gateway ha switchover\" (see %s -help)\n", role, role)
		return ExitUsage, true
	case "disconnect":
		if role != string(config.RoleRoadWarrior) {
			fmt.Fprintf(stderr, "gateway: disconnect is a road-warrior command; stop the gateway with systemctl stop roamsec-gateway\n")
			return ExitUsage, true
		}
		return disconnectCmd(role, args[1:], stdout, stderr), true
	case "enroll":
		if role != string(config.RoleGateway) {
			fmt.Fprintf(stderr, "roadwarrior: enroll is a gateway command (the Host issues one-time keys)\n")
			return ExitUsage, true
		}
		return enrollCmd(args[1:], stdout, stderr), true
	case "connect":
		if role != string(config.RoleRoadWarrior) {
			fmt.Fprintf(stderr, "gateway: connect is a road-warrior command\n")
			return ExitUsage, true
		}
		return connectCmd(args[1:], stdout, stderr), true
	}
	return 0, false
}

// prepared is a loaded, built configuration turned into a Setup.
type prepared struct {
	cfg   *config.Config
	built *config.Built
	setup Setup
	log   *slog.Logger
	level *slog.LevelVar
}

func (p *prepared) close() {
	p.cfg.Wipe()
	p.built.Close()
}

// prepare loads and builds the configuration; on failure it says why on
// stderr and returns the exit code. quiet raises the log level to
// warnings (connect without -v).
func prepare(role, cfgPath string, stderr io.Writer, quiet bool) (*prepared, int) {
	return prepareOn(role, cfgPath, stderr, quiet, false)
}

// prepareOn is prepare; offline skips the checks against this host
// (config.CheckHost): -check -offline of a file meant for another machine.
func prepareOn(role, cfgPath string, stderr io.Writer, quiet, offline bool) (*prepared, int) {
	c, err := config.Load(cfgPath)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			fmt.Fprintf(stderr, "%s: cannot read %s: permission denied: the configuration holds keys and is root's only: run as root (sudo)\n", role, cfgPath)
			return nil, ExitPermission
		}
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "%s: configuration refused: %s does not exist: %s\n", role, cfgPath, firstRunHint(role))
			return nil, ExitConfig
		}
		reportConfigError(stderr, role, err)
		return nil, ExitConfig
	}
	return prepareLoaded(role, cfgPath, c, stderr, quiet, offline)
}

// prepareLoaded is prepareOn after the file is parsed (connect -one-time
// builds its configuration in memory).
func prepareLoaded(role, cfgPath string, c *config.Config, stderr io.Writer, quiet, offline bool) (*prepared, int) {
	if string(c.Role) != role {
		c.Wipe()
		fmt.Fprintf(stderr, "%s: %s: role is %q, but this is the %s daemon\n", role, cfgPath, c.Role, role)
		return nil, ExitConfig
	}
	if !offline {
		if code := checkHost(role, c, stderr); code != ExitOK {
			return nil, code
		}
	}
	lc := c.Log
	if quiet && lc.Level < slog.LevelWarn {
		lc.Level = slog.LevelWarn
	}
	level := new(slog.LevelVar) // a reload may change it
	log := slog.New(newLogHandler(lc, stderr, level)).With("daemon", role)
	// With static keys nobody can rekey: a soft bound is a warning to the
	// operator, a hard bound ends that SA's traffic.
	c.OnLifetime = func(e tunnel.LifetimeEvent) {
		lvl := slog.LevelWarn
		if e.Hard {
			lvl = slog.LevelError
		}
		log.Log(context.Background(), lvl, "SA lifetime reached", "spi", fmt.Sprintf("%#08x", e.SA.SPI), "dir", e.SA.Dir.String(), "hard", e.Hard, "reason", e.Reason)
	}
	b, err := c.Build()
	c.Wipe() // the SAs hold their own copies now
	if err != nil {
		reportConfigError(stderr, role, err)
		return nil, ExitConfig
	}
	for _, w := range b.Warnings {
		log.Warn("config", "warning", w)
	}
	s := Setup{
		TUN: b.TUN.Config, Addrs: b.TUN.Addresses, Routes: b.TUN.Routes,
		UDPPort: b.Transport.UDPPort, KeepAlive: b.Transport.NATKeepalive, PacketSend: b.Transport.PacketSend,
		SPD: b.SPD, SAD: b.SAD, Outbound: b.Outbound, Log: log,
		Mobility: b.Mobility, ControlSocket: b.ControlSocket, Role: role,
		IKE: b.IKE, RADIUS: b.RADIUS, Listen: b.Transport.Listen, ControlGroup: c.ControlGroup, HA: b.HA,
	}
	if c.Metrics != nil {
		s.Metrics = c.Metrics.Listen
	}
	if c.HA != nil {
		s.ClusterKey = c.HA.KeyFile
	}
	if r := b.TUN.BypassRule; r != nil {
		s.Rule = &Rule{Mark: r.Mark, Table: r.Table, Priority: r.Priority}
	}
	return &prepared{cfg: c, built: b, setup: s, log: log, level: level}, ExitOK
}

// checkHost runs config.CheckHost on this host: what start-up would
// refuse, -check refuses too.
func checkHost(role string, c *config.Config, stderr io.Writer) int {
	h, err := config.LocalHost()
	if err == nil {
		err = c.CheckHost(h)
	}
	if err != nil {
		c.Wipe()
		fmt.Fprintf(stderr, "%s: configuration refused on this host:\n%v\n", role, err)
		return ExitConfig
	}
	return ExitOK
}

// parseArgs parses flags anywhere among the arguments (flag stops at the
// first non-flag) and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// controlSocket reads just enough of the configuration to find the
// control socket.
func controlSocket(role, cmd, cfgPath string, stderr io.Writer) (string, int) {
	// Only role and control_socket: no key file is read, so a member of
	// control_group needs no more than read access to the file.
	sock, err := config.ControlSocketOf(cfgPath)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			fmt.Fprintf(stderr, "%s %s: cannot read %s: permission denied: run as root (sudo)\n", role, cmd, cfgPath)
			return "", ExitPermission
		}
		fmt.Fprintf(stderr, "%s %s: configuration refused:\n%v\n", role, cmd, err)
		return "", ExitConfig
	}
	return sock, ExitOK
}

// query asks the daemon and maps the failure to an exit code.
func query(role, cmd, cfgPath string, out any, stderr io.Writer) int {
	sock, code := controlSocket(role, cmd, cfgPath, stderr)
	if code != ExitOK {
		return code
	}
	if err := control.Query(sock, cmd, out); err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", role, cmd, err)
		if errors.Is(err, os.ErrPermission) {
			return ExitPermission
		}
		return ExitRuntime
	}
	return ExitOK
}

func cmdFlags(role, name string, stderr io.Writer, withJSON bool) (*flag.FlagSet, *string, *bool) {
	fs := flag.NewFlagSet(role+" "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/roamsec/"+role+".yaml", "configuration file (for the control socket's path)")
	var asJSON *bool
	if withJSON {
		asJSON = fs.Bool("json", false, "print JSON")
	}
	return fs, cfgPath, asJSON
}

func usageCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	return ExitUsage
}

// statusTextLimit: the text status lists this many IKE SAs, Child SAs
// and SAs after the summary (a gateway's fleet would print thousands);
// -all, -json or a filter lifts it.
const statusTextLimit = 20

// filterFlags are status's and sa list's filters (Filter).
func filterFlags(fs *flag.FlagSet) (id, addr, state *string) {
	id = fs.String("id", "", "only peers whose identity matches this shell pattern (e.g. 'rw1*@example.org')")
	addr = fs.String("addr", "", "only peers with an inner or outer address in this address or prefix")
	state = fs.String("state", "", "only Child SAs in this state: active, idle (no packet yet) or expired")
	return id, addr, state
}

// statusCmd asks the running daemon for its status over the control
// socket named in the config.
func statusCmd(role string, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath, asJSON := cmdFlags(role, "status", stderr, true)
	id, addr, state := filterFlags(fs)
	summary := fs.Bool("summary", false, "the counts only, no lists")
	all := fs.Bool("all", false, fmt.Sprintf("list every SA (text: the first %d by default)", statusTextLimit))
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		if err == nil {
			fmt.Fprintf(stderr, "%s status: unexpected argument %q\n", role, pos[0])
		}
		return usageCode(err)
	}
	f, err := parseFilter(*id, *addr, *state, 0)
	if err != nil {
		fmt.Fprintf(stderr, "%s status: %v\n", role, err)
		return ExitUsage
	}
	if !*asJSON && !*all && f.zero() {
		f.Limit = statusTextLimit
	}
	cmd := strings.TrimSpace(cmdStatus + " " + f.words())
	if *summary {
		cmd += " summary"
	}
	var st Status
	if code := query(role, cmd, *cfgPath, &st, stderr); code != ExitOK {
		return code
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return ExitOK
	}
	PrintStatus(stdout, st)
	return ExitOK
}

// saListCmd lists the Child SAs as the daemon streams them: a gateway's
// thousands are printed as they arrive, never held whole.
func saListCmd(role string, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath, asJSON := cmdFlags(role, "sa list", stderr, true)
	id, addr, state := filterFlags(fs)
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		if err == nil {
			fmt.Fprintf(stderr, "%s sa list: unexpected argument %q\n", role, pos[0])
		}
		return usageCode(err)
	}
	f, err := parseFilter(*id, *addr, *state, 0)
	if err != nil {
		fmt.Fprintf(stderr, "%s sa list: %v\n", role, err)
		return ExitUsage
	}
	sock, code := controlSocket(role, cmdSAList, *cfgPath, stderr)
	if code != ExitOK {
		return code
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	n := 0
	err = control.QueryStream(sock, strings.TrimSpace(cmdSAList+" "+f.words())+" stream", func(b json.RawMessage) error {
		var c ChildStatus
		if err := json.Unmarshal(b, &c); err != nil {
			return err
		}
		if *asJSON {
			// The same document as one indented array, written item by item.
			sep := ",\n  "
			if n == 0 {
				sep = "[\n  "
			}
			item, _ := json.MarshalIndent(c, "  ", "  ")
			w.WriteString(sep)
			w.Write(item)
		} else {
			printChild(w, c)
		}
		n++
		return nil
	})
	if err != nil {
		w.Flush()
		fmt.Fprintf(stderr, "%s sa list: %v\n", role, err)
		if errors.Is(err, os.ErrPermission) {
			return ExitPermission
		}
		return ExitRuntime
	}
	switch {
	case *asJSON && n == 0:
		w.WriteString("[]\n")
	case *asJSON:
		w.WriteString("\n]\n")
	case n == 0:
		fmt.Fprintln(w, "no Child SAs")
	}
	return ExitOK
}

// disconnectCmd asks the running road warrior to delete its IKE SA and
// exit, and waits until it has.
func disconnectCmd(role string, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath, _ := cmdFlags(role, "disconnect", stderr, false)
	timeout := fs.Duration("timeout", 20*time.Second, "how long to wait for the daemon to exit")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		if err == nil {
			fmt.Fprintf(stderr, "%s disconnect: unexpected argument %q\n", role, pos[0])
		}
		return usageCode(err)
	}
	var r DisconnectReply
	if code := query(role, cmdDisconnect, *cfgPath, &r, stderr); code != ExitOK {
		return code
	}
	deadline := time.Now().Add(*timeout)
	for processAlive(r.PID) {
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "%s disconnect: asked, but process %d is still running after %v: see its log\n", role, r.PID, *timeout)
			return ExitRuntime
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "disconnected: process %d deleted its IKE SA and exited\n", r.PID)
	return ExitOK
}

// switchoverCmd asks the active gateway of a pair to hand over.
func switchoverCmd(role string, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath, _ := cmdFlags(role, "ha switchover", stderr, false)
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		if err == nil {
			fmt.Fprintf(stderr, "%s ha switchover: unexpected argument %q\n", role, pos[0])
		}
		return usageCode(err)
	}
	var r SwitchoverReply
	if code := query(role, cmdSwitchover, *cfgPath, &r, stderr); code != ExitOK {
		return code
	}
	fmt.Fprintf(stdout, "handed over to %s (epoch %d): this gateway is now %s\n", r.Peer, r.Epoch, r.Role)
	return ExitOK
}

// processAlive: pid exists and is not a zombie.
func processAlive(pid int) bool {
	if pid <= 0 || pid == os.Getpid() {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// failureContext is what a failure message names.
type failureContext struct {
	role, cfgPath string
	ike           *config.IKE
	gwName        string // as the user gave it
	gwAddr        string // where IKE_SA_INIT went (address:port)
	oneTime       bool   // connect -one-time
}

type failure struct {
	code int
	msg  string
}

// classify turns an error into an exit code and a message that says what
// to do.
func classify(err error, fc failureContext) failure {
	gw := fc.gwName
	if fc.gwAddr != "" {
		host := fc.gwAddr
		if i := strings.LastIndexByte(host, ':'); i > 0 {
			host = strings.Trim(host[:i], "[]")
		}
		if gw == "" || gw == host {
			gw = host
		} else {
			gw = fmt.Sprintf("%s (%s)", gw, host)
		}
	}
	if gw == "" {
		gw = "the gateway"
	}
	port := uint16(500)
	id, lts, rts := "", "", ""
	if k := fc.ike; k != nil {
		port, id = k.Port, k.ID.String()
		lts, rts = prefixList(k.LocalTS), prefixList(k.RemoteTS)
		if k.Mode == ike.ModeVirtual {
			lts = "a virtual address"
		}
	}
	switch {
	case errors.Is(err, ErrNameNotFound):
		why := "no address"
		var de *net.DNSError
		if errors.As(err, &de) {
			why = "no such host"
			if !de.IsNotFound {
				why = de.Err
				if de.Server != "" {
					why += " (DNS server " + de.Server + ")"
				}
			}
		}
		return failure{ExitNameUnknown, fmt.Sprintf("cannot resolve the gateway's name %s: %s: check the name (ike.gateway in %s, or the GATEWAY argument) and that DNS works here", fc.gwName, why, fc.cfgPath)}
	case errors.Is(err, fs.ErrPermission): // EPERM, EACCES
		what := fmt.Sprintf("no permission (%v)", err)
		if te := (*TUNError)(nil); errors.As(err, &te) {
			what = "no permission to create the TUN device (/dev/net/tun: operation not permitted)"
		}
		return failure{ExitPermission, fmt.Sprintf("%s: run as root (sudo %s), or give the binary CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE", what, fc.role)}
	case errors.Is(err, ike.ErrPeerSilent) && inExchange(err, message.IKE_AUTH):
		return failure{ExitUnreachable, fmt.Sprintf("%s answered on UDP %d but not on UDP 4500: is UDP 4500 open (firewall, NAT) on the way?", gw, port)}
	case errors.Is(err, ike.ErrPeerSilent):
		return failure{ExitUnreachable, fmt.Sprintf("no answer from %s on UDP %d: is the gateway up, and is UDP %d/4500 open?", gw, port, port)}
	case errors.Is(err, ike.ErrAuthRefused) && fc.oneTime:
		return failure{ExitOneTimeRefused, fmt.Sprintf("%s refused the one-time code: it was used already, revoked, expired, altered, or not issued for this gateway (the gateway's log and accounting say which): ask for a new code", gw)}
	case errors.Is(err, ike.ErrPeerAuth) && fc.oneTime:
		return failure{ExitOneTimeRefused, fmt.Sprintf("%s did not prove it holds this code's gateway secret (%v): it is not the gateway the code was issued for", gw, err)}
	case errors.Is(err, ike.ErrAuthRefused):
		return failure{ExitAuthRefused, fmt.Sprintf("%s refused our authentication as %s: check ike.id and the pre-shared key (ike.psk_file) or certificate in %s, and that the gateway accepts this identity", gw, id, fc.cfgPath)}
	case errors.Is(err, ike.ErrPeerAuth):
		return failure{ExitAuthRefused, fmt.Sprintf("%s did not prove its identity (%v): check ike.gateway_id, and the pre-shared key or ike.cas in %s", gw, err, fc.cfgPath)}
	case refusedWith(err, message.TS_UNACCEPTABLE):
		return failure{ExitTSRefused, fmt.Sprintf("the gateway refused the addresses we asked for (TS_UNACCEPTABLE: %s <=> %s): ask its administrator to allow them for %s, or ask for less (ike.local_ts, ike.remote_ts in %s)", lts, rts, id, fc.cfgPath)}
	case errors.Is(err, ike.ErrNoVirtualAddress):
		return failure{ExitTSRefused, fmt.Sprintf("the gateway has no virtual address for us (%v): ask its administrator to give %s a pool (virtual_pool)", err, id)}
	case errors.Is(err, ike.ErrNoProposal):
		return failure{ExitNoProposal, fmt.Sprintf("the gateway accepts none of our proposals (%v): set ike.proposals and ike.esp_proposals in %s to what it offers", err, fc.cfgPath)}
	}
	return failure{ExitRuntime, err.Error()}
}

// inExchange: err happened in exchange x of ours (ike.ExchangeError).
func inExchange(err error, x message.ExchangeType) bool {
	var xe *ike.ExchangeError
	return errors.As(err, &xe) && xe.Exchange == x
}

// refusedWith: the gateway answered with error notify t (ike.NotifyError).
func refusedWith(err error, t message.NotifyType) bool {
	var ne *ike.NotifyError
	return errors.As(err, &ne) && ne.Type == t
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "(none)"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Event is one line of `connect -json`: every step, then the outcome.
type Event struct {
	Time    time.Time    `json:"time"`
	Event   string       `json:"event"`   // resolved, paths, tun, IKE_SA_INIT, IKE_AUTH, established, tunnel_up, CHILD_SA, path, connected, switch, failed, deleted, disconnected, error
	Message string       `json:"message"` // the line a person sees
	Gateway string       `json:"gateway,omitempty"`
	Addr    string       `json:"addr,omitempty"`
	Peer    string       `json:"peer,omitempty"`
	Info    string       `json:"info,omitempty"`
	Error   string       `json:"error,omitempty"`
	Child   *ChildStatus `json:"child,omitempty"`
	Path    *PathStatus  `json:"path,omitempty"`
	Status  *Status      `json:"status,omitempty"` // with connected, disconnected and error: the daemon's status then
	Exit    *int         `json:"exit_code,omitempty"`
}

// connectCmd runs the road warrior in the foreground and tells, step by
// step, how the connection comes up.
// connectUsage is connect's -help (%s: the exit codes).
const connectUsage = `Usage: roadwarrior connect [GATEWAY] [-config FILE] [-json] [-v]
       roadwarrior connect GATEWAY -one-time CODE|- [-remote-ts PREFIX,...] [-json] [-v]

Connects with the profile's ike section and shows each step: the gateway's
name resolved, IKE_SA_INIT, IKE_AUTH, the tunnel (addresses, SPIs, traffic
selectors), each mobility path and whether it answers. It runs the daemon
in the foreground: Ctrl-C, SIGTERM or "roadwarrior disconnect" deletes the
IKE SA, removes the TUN device and routes, and exits 0. GATEWAY (a name or
an address) overrides ike.gateway.

With -one-time (a code from "gateway enroll issue"; - reads it from
standard input, which keeps it out of the process list) no configuration
file is read or written: the profile is
built in memory (virtual address, the networks of -remote-ts through the
tunnel), the code's key pair authenticates once (RFC 7427 Ed25519 over an
RFC 7670 raw public key), and the key is zeroed after IKE_AUTH.

%s
Flags:
`

// resolve finds the gateway's address (GATEWAY, else ike.gateway), tells
// the user, and points the profile (s.IKE, a copy) at it.
func (ui *connectUI) resolve(ctx context.Context, s *Setup, pos []string, fc *failureContext) error {
	name := s.IKE.Gateway
	if len(pos) == 1 {
		name = pos[0]
	}
	fc.gwName = name
	addr, err := resolveGateway(ctx, name, true)
	if err != nil {
		return err
	}
	ui.gwName, ui.gwAddr = name, addr
	msg := fmt.Sprintf("gateway %s", addr)
	if name != addr.String() {
		msg = fmt.Sprintf("resolving %s → %s", name, addr)
	}
	ui.emit(Event{Event: "resolved", Gateway: name, Addr: addr.String(), Message: msg})
	k := *s.IKE
	k.Gateway = addr.String()
	s.IKE = &k
	if m := s.Mobility; m != nil && len(m.Paths) > 0 {
		pr := m.Paths[m.Primary]
		msg := fmt.Sprintf("mobility: %d paths; connecting over the primary, %s (%s → %s)", len(m.Paths), pr.Name, pr.Local, pr.Peer)
		if pr.Peer != addr {
			msg += fmt.Sprintf("; the paths name the gateway's addresses, not %s", addr)
		}
		ui.emit(Event{Event: "paths", Message: msg})
	}
	return nil
}

// endOnSignals ends ctx (stop) on every signal a terminal session can send
// and records its name in how; the returned function stops listening.
// SIGHUP (the terminal closed) and SIGPIPE (whoever read our output left:
// `connect | head -3`) end it like Ctrl-C. Notify for SIGPIPE also turns
// the runtime's default (die on a write to a broken stdout, leaving the
// rules and the peer's IKE SA behind) into EPIPE.
func endOnSignals(ctx context.Context, stop func(), how *atomic.Value) func() {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, exitSignals...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case sig := <-sigc:
			how.Store(signalName(sig))
			stop()
		case <-ctx.Done():
		}
	}()
	return func() {
		signal.Stop(sigc)
		stop()
		<-done
	}
}

func connectCmd(args []string, stdout, stderr io.Writer) int {
	const role = "roadwarrior"
	fs := flag.NewFlagSet(role+" connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/roamsec/"+role+".yaml", "the profile (configuration file, YAML)")
	asJSON := fs.Bool("json", false, "print one JSON object per step, then the final status")
	verbose := fs.Bool("v", false, "show the daemon's log on stderr (else warnings and errors only)")
	var ot oneTimeFlags
	ot.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, connectUsage, exitCodesHelp)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageCode(err)
	}
	if len(pos) > 1 {
		fmt.Fprintf(stderr, "%s connect: one GATEWAY at most, got %q\n", role, pos)
		return ExitUsage
	}
	ui := &connectUI{out: stdout, json: *asJSON, cfgPath: *cfgPath}
	var p *prepared
	var code int
	var otk *oneTimeClient
	if ot.code != "" {
		otk, p, code = ot.prepare(pos, os.Stdin, stderr, !*verbose)
		if otk != nil {
			defer otk.zero()
			ui.cfgPath = "-one-time"
		}
	} else {
		p, code = prepare(role, *cfgPath, stderr, !*verbose)
	}
	if p == nil {
		ui.finish(code, "", nil)
		return code
	}
	defer p.close()
	s := &p.setup
	if s.IKE == nil {
		msg := fmt.Sprintf("%s has no ike section: connect negotiates with IKEv2 (with static keys run %s -config %s)", *cfgPath, role, *cfgPath)
		ui.finish(ExitConfig, msg, nil)
		fmt.Fprintf(stderr, "%s connect: %s\n", role, msg)
		return ExitConfig
	}
	ui.k, ui.mob = s.IKE, s.Mobility
	return ui.run(s, pos, otk, stderr)
}

// run connects with the prepared profile s until a signal, disconnect or
// a failure before the tunnel is up; it returns the exit code.
func (ui *connectUI) run(s *Setup, pos []string, otk *oneTimeClient, stderr io.Writer) int {
	const role = "roadwarrior"
	fc := failureContext{role: role + " connect", cfgPath: ui.cfgPath, ike: s.IKE, oneTime: otk != nil}
	fail := func(f failure) int {
		if !ui.json {
			fmt.Fprintf(stderr, "%s connect: %s\n", role, f.msg)
		}
		ui.finish(f.code, f.msg, nil)
		return f.code
	}
	if s.ControlSocket != "" {
		var st Status
		if err := control.Query(s.ControlSocket, cmdStatus, &st); err == nil {
			return fail(failure{ExitRuntime, fmt.Sprintf("a road warrior is already running (process %d, control socket %s): see roadwarrior status, or roadwarrior disconnect first", st.PID, s.ControlSocket)})
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var how atomic.Value // what ended it
	how.Store("roadwarrior disconnect")
	defer endOnSignals(ctx, stop, &how)()

	// The name first, so a typo fails before anything is set up.
	if err := ui.resolve(ctx, s, pos, &fc); err != nil {
		return fail(classify(err, fc))
	}

	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	ui.cancel = cancelRun
	ui.start()
	s.Progress = ui.progress
	if otk != nil {
		s.Progress = otk.progress(ui.progress)
	}
	s.Ready = ui.ready
	s.FailFast = true
	runErr := Run(runCtx, *s)
	ui.stop()

	fc.gwAddr = ui.lastPeer()
	final := ui.lastStatus()
	switch first := ui.failure(); {
	case first != nil:
		return failWithStatus(ui, stderr, classify(first, fc), final)
	case runErr != nil:
		return failWithStatus(ui, stderr, classify(runErr, fc), final)
	}
	msg := fmt.Sprintf("disconnected (%s): IKE SA deleted, TUN device and routes removed", how.Load())
	if !ui.wasConnected() {
		msg = fmt.Sprintf("stopped (%s) before the connection was up; TUN device and routes removed", how.Load())
	}
	ui.finish(ExitOK, msg, final)
	return ExitOK
}

func failWithStatus(ui *connectUI, stderr io.Writer, f failure, st *Status) int {
	if !ui.json {
		fmt.Fprintf(stderr, "roadwarrior connect: %s\n", f.msg)
	}
	ui.finish(f.code, f.msg, st)
	return f.code
}

// connectUI tells a person (or a script, with -json) what connect is
// doing. The endpoint reports steps under its lock, so progress only
// queues them; one goroutine prints, and polls the status for the paths.
type connectUI struct {
	out     io.Writer
	json    bool
	cfgPath string
	k       *config.IKE
	mob     *config.Mobility
	gwName  string
	gwAddr  netip.Addr
	cancel  context.CancelCauseFunc

	mu        sync.Mutex
	queue     []ike.Progress
	wake      chan struct{}
	quit      chan struct{}
	done      chan struct{}
	running   *Running
	first     error // the failure that ended connecting
	connected bool
	peer      netip.AddrPort
	final     *Status
	outMu     sync.Mutex
}

func (u *connectUI) emit(e Event) {
	u.outMu.Lock()
	defer u.outMu.Unlock()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if u.json {
		b, _ := json.Marshal(e)
		u.out.Write(append(b, '\n'))
		return
	}
	fmt.Fprintln(u.out, e.Message)
}

func (u *connectUI) finish(code int, msg string, st *Status) {
	if !u.json {
		if code == ExitOK && msg != "" {
			u.emit(Event{Message: msg})
		}
		return
	}
	if msg == "" {
		msg = map[int]string{ExitConfig: "configuration refused (the reasons are on stderr)", ExitPermission: "permission denied (see stderr)"}[code]
	}
	ev := "disconnected"
	if code != ExitOK {
		ev = "error"
	}
	u.emit(Event{Event: ev, Message: msg, Exit: &code, Status: st})
}

func (u *connectUI) progress(p ike.Progress) {
	u.mu.Lock()
	u.queue = append(u.queue, p)
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *connectUI) ready(r *Running) {
	u.mu.Lock()
	u.running = r
	u.mu.Unlock()
	u.emit(Event{Event: "tun", Message: fmt.Sprintf("TUN %s up (MTU %d)", r.Device.Name(), r.Device.MTU())})
}

func (u *connectUI) failure() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.first
}

func (u *connectUI) wasConnected() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.connected
}

func (u *connectUI) lastPeer() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.peer.IsValid() {
		return u.peer.String()
	}
	if u.gwAddr.IsValid() && u.k != nil {
		return netip.AddrPortFrom(u.gwAddr, u.k.Port).String()
	}
	return ""
}

func (u *connectUI) lastStatus() *Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.final
}

// setFinal keeps st as the status the last event carries, unless st has
// no SAs and the one kept has: a snapshot taken while the connection ends
// (after DELETE, before Run returns) shows nothing up; the last one with
// the SAs tells what was.
func (u *connectUI) setFinal(st *Status) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(st.Children) == 0 && u.final != nil && len(u.final.Children) > 0 {
		return
	}
	u.final = st
}

func (u *connectUI) status() (Status, bool) {
	u.mu.Lock()
	r := u.running
	u.mu.Unlock()
	if r == nil {
		return Status{}, false
	}
	return r.Status(), true
}

func (u *connectUI) start() {
	u.wake, u.quit, u.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go u.loop()
}

// stop ends the printer once Run has returned.
func (u *connectUI) stop() {
	close(u.quit)
	<-u.done
}

// connect phases.
const (
	phaseIKE   = iota // until the network Child SA is installed
	phaseHosts        // waiting for the path-monitoring Child SA
	phasePaths        // waiting for the paths to answer (or not)
	phaseConnected
)

// printer is the state of connect's output while it runs: the phase, the
// paths and Child SAs already shown. Only loop's goroutine uses it.
type printer struct {
	u          *connectUI
	phase      int
	pathsUntil time.Time
	shown      map[string]string // path name -> state and use shown
	seen       map[string]bool   // Child SA names installed
	lastSwitch time.Time
	wantHosts  bool
}

func (u *connectUI) loop() {
	defer close(u.done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	pr := &printer{u: u, phase: phaseIKE, shown: map[string]string{}, seen: map[string]bool{}, wantHosts: u.k.HostToHost}
	for {
		select {
		case <-u.quit:
			return
		case <-u.wake:
			u.mu.Lock()
			q := u.queue
			u.queue = nil
			u.mu.Unlock()
			for _, p := range q {
				select {
				case <-u.quit:
					return
				default:
				}
				pr.handle(p)
			}
		case <-tick.C:
			if pr.phase >= phasePaths {
				pr.paths()
			} else if pr.phase > phaseIKE {
				pr.snapshot()
			}
		}
	}
}

func (pr *printer) snapshot() {
	if st, ok := pr.u.status(); ok {
		pr.u.setFinal(&st)
	}
}

func (pr *printer) connected() {
	u := pr.u
	pr.phase = phaseConnected
	u.mu.Lock()
	u.connected = true
	u.mu.Unlock()
	ev := Event{Event: "connected", Message: "connected — Ctrl-C to disconnect"}
	if st, ok := u.status(); ok {
		ev.Status = &st
	}
	u.emit(ev)
}

// afterChild moves connect on once a new Child SA is up: to the
// path-monitoring SA, to the paths, or connected.
func (pr *printer) afterChild() {
	switch {
	case pr.phase == phaseIKE && pr.wantHosts:
		pr.phase = phaseHosts
	case pr.phase <= phaseHosts && pr.u.mob != nil && len(pr.u.mob.Paths) > 0:
		pr.phase = phasePaths
		wait := 3*time.Second + 10*pr.u.mob.Heartbeat.Interval
		pr.pathsUntil = time.Now().Add(min(wait, 10*time.Second))
	case pr.phase <= phaseHosts:
		pr.connected()
	}
}

// paths shows each path whose state changed and the last switch; while
// waiting for the paths, connected once they settled (or the wait ended).
func (pr *printer) paths() {
	u := pr.u
	st, ok := u.status()
	if !ok || st.Mobility == nil {
		return
	}
	u.setFinal(&st)
	m := st.Mobility
	settled := true
	for _, p := range m.Paths {
		if p.State == mobility.Unconfirmed.String() && pr.phase == phasePaths {
			settled = false
			continue
		}
		key := fmt.Sprint(p.State, p.InUse)
		if pr.shown[p.Name] == key {
			continue
		}
		pr.shown[p.Name] = key
		pp := p
		u.emit(Event{Event: "path", Path: &pp, Message: pathLine(p, pr.phase == phaseConnected)})
	}
	if s := m.LastSwitch; s != nil && s.At.After(pr.lastSwitch) {
		u.emit(Event{Event: "switch", Message: fmt.Sprintf("switched from %s to %s (%s), applied %.1f ms after the detector's event", s.From, s.To, s.Reason, s.TookMs)})
		pr.lastSwitch = s.At
	}
	if pr.phase == phasePaths && (settled || time.Now().After(pr.pathsUntil)) {
		for _, p := range m.Paths {
			if _, ok := pr.shown[p.Name]; !ok {
				pr.shown[p.Name] = fmt.Sprint(p.State, p.InUse)
				pp := p
				u.emit(Event{Event: "path", Path: &pp, Message: pathLine(p, false)})
			}
		}
		pr.connected()
	}
}

// handle shows one IKE event; it switches on the event's kind, never on
// its text.
func (pr *printer) handle(p ike.Progress) {
	u := pr.u
	ev := Event{Event: p.Kind.String(), Peer: p.Peer.String(), Info: p.String()}
	switch p.Kind {
	case ike.EvIKESAInit:
		u.mu.Lock()
		u.peer = p.Peer
		u.mu.Unlock()
		ev.Message = fmt.Sprintf("IKE_SA_INIT to %s: proposing %s", p.Peer, p.Proposal)
	case ike.EvIKEAuth:
		how := map[bool]string{true: "certificate", false: "pre-shared key"}[p.Cert]
		if u.cfgPath == "-one-time" {
			how = "one-time key, RFC 7427 Ed25519 over an RFC 7670 raw public key"
		}
		ev.Message = fmt.Sprintf("IKE_AUTH as %v (%s) to %s", p.ID, how, p.Peer)
	case ike.EvIKEEstablished:
		ev.Message = fmt.Sprintf("IKE SA established with %v at %s: %s", p.ID, p.Peer, p.Proposal)
	case ike.EvChildInstalled:
		u.childInstalled(ev, p.Child, pr.seen, pr.phase == phaseHosts, pr.afterChild)
		return
	case ike.EvChildFailed, ike.EvFailed:
		pr.failed(ev, p)
		return
	case ike.EvDeleted:
		switch {
		case p.Reason == ike.DownShutdown: // our own: Ctrl-C, SIGTERM or disconnect
			ev.Message = fmt.Sprintf("disconnecting: DELETE sent to %s", p.Peer)
		case pr.phase == phaseConnected && p.Reason != ike.DownReset:
			ev.Message = fmt.Sprintf("connection lost: IKE SA deleted (%s); reconnecting", p.Reason)
		default:
			return
		}
	default:
		ev.Message = fmt.Sprintf("%s %s", p.Kind, p)
	}
	u.emit(ev)
}

// failed: a failure before the tunnel is up ends connect with it (the
// first one is what classify turns into the exit code); later ones are
// shown and connect goes on.
func (pr *printer) failed(ev Event, p ike.Progress) {
	u := pr.u
	u.mu.Lock()
	fatal := pr.phase == phaseIKE && u.first == nil
	if fatal {
		u.first = p.Err
	}
	u.mu.Unlock()
	if fatal {
		pr.snapshot()
		u.cancel(p.Err)
		return
	}
	ev.Error = fmt.Sprint(p.Err)
	switch {
	case p.Kind == ike.EvChildFailed && (pr.phase == phaseHosts || pr.phase == phasePaths):
		ev.Message = fmt.Sprintf("the path-monitoring SA failed (%v): failover detection is limited", p.Err)
	case p.Kind == ike.EvFailed && pr.phase == phaseConnected:
		ev.Message = fmt.Sprintf("connection lost: IKE SA failed (%v); reconnecting", p.Err)
	default:
		ev.Message = fmt.Sprintf("failed: %v", p.Err)
	}
	u.emit(ev)
	if pr.phase == phaseHosts && p.Kind == ike.EvChildFailed {
		pr.afterChild()
	}
}

// childInstalled shows a Child SA: the tunnel, the path-monitoring SA, or
// a rekey; a new one moves connect on (afterChild).
func (u *connectUI) childInstalled(ev Event, ce *ike.ChildEvent, seen map[string]bool, waitingHosts bool, afterChild func()) {
	if ce == nil {
		return
	}
	name := ce.Name
	var c *ChildStatus
	if st, ok := u.status(); ok {
		for i := range st.Children {
			if st.Children[i].Name == name {
				c = &st.Children[i]
			}
		}
	}
	ev.Child, ev.Message = c, "Child SA "+ev.Info
	switch {
	case c == nil:
	case seen[name]:
		ev.Message = fmt.Sprintf("rekeyed %s: SPIs in %s out %s", name, c.SPIIn, c.SPIOut)
	case c.HostToHost:
		ev.Message = fmt.Sprintf("path monitoring SA: SPIs in %s out %s, %s <=> %s", c.SPIIn, c.SPIOut, c.Local, c.Remote)
	default:
		ev.Event = "tunnel_up"
		inner := "inner addresses " + c.Local + " (RFC 3554: our own)"
		if len(c.VirtualIP) > 0 {
			inner = "virtual address " + strings.Join(c.VirtualIP, ", ")
		}
		ev.Message = fmt.Sprintf("tunnel up: %s; SPIs in %s out %s; %s <=> %s (%s)", inner, c.SPIIn, c.SPIOut, c.Local, c.Remote, c.Proposal)
	}
	fresh := !seen[name]
	seen[name] = true
	u.emit(ev)
	if fresh && (!ce.HostToHost || waitingHosts) {
		afterChild()
	}
}

func pathLine(p PathStatus, change bool) string {
	what := map[string]string{
		"active":             "answers",
		"inactive":           "no answer",
		"potentially-failed": "missed heartbeats",
		"unconfirmed":        "not confirmed yet",
	}[p.State]
	extra := ""
	if p.InUse {
		extra = ", in use"
	}
	if change {
		return fmt.Sprintf("path %s (%s → %s) now %s (%s%s)", p.Name, p.Local, p.Peer, what, p.State, extra)
	}
	return fmt.Sprintf("path %s (%s → %s): %s (%s%s)", p.Name, p.Local, p.Peer, what, p.State, extra)
}
