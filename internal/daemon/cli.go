package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/control"
	"github.com/roamsec/roamsec/internal/version"
	"github.com/roamsec/roamsec/tunnel"
)

// Exit codes shared by both daemons, so scripts and systemd can tell a
// bad config from a failure at run time.
const (
	ExitOK      = 0
	ExitUsage   = 2
	ExitConfig  = 3
	ExitRuntime = 4
)

// Main is the whole of cmd/gateway and cmd/roadwarrior: role is
// "gateway" or "roadwarrior".
func Main(role string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/roamsec/"+role+".yaml", "configuration file (YAML)")
	check := fs.Bool("check", false, "check the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: %s [-config FILE] [-check] [-version]
       %s status [-config FILE] [-json]

roamsec %s daemon: carries the traffic of a TUN device in ESP tunnel mode
(RFC 4303) over raw IP or UDP 4500, with SAs keyed by the configuration
(static keys). It creates the TUN device, installs its addresses, routes
and routing rule, and removes them again on SIGTERM or SIGINT.

Needs CAP_NET_ADMIN and CAP_NET_RAW (and CAP_NET_BIND_SERVICE for UDP 4500).

Exit codes: 0 clean shutdown, 2 usage, 3 configuration error, 4 failure at run time.

Flags:
`, role, role, role)
		fs.PrintDefaults()
	}
	if len(args) > 0 && args[0] == "version" {
		args = []string{"-version"}
	}
	if len(args) > 0 && args[0] == "status" {
		return statusCmd(role, args[1:], stdout, stderr)
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

	c, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s: configuration refused:\n%v\n", role, err)
		return ExitConfig
	}
	defer c.Wipe()
	if string(c.Role) != role {
		fmt.Fprintf(stderr, "%s: %s: role is %q, but this is the %s daemon\n", role, *cfgPath, c.Role, role)
		return ExitConfig
	}
	log := slog.New(c.Log.Handler(stderr)).With("daemon", role)
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
		fmt.Fprintf(stderr, "%s: configuration refused:\n%v\n", role, err)
		return ExitConfig
	}
	defer b.Close()
	for _, w := range b.Warnings {
		log.Warn("config", "warning", w)
	}
	if *check {
		fmt.Fprintf(stdout, "%s: configuration OK: %d SA pairs\n", *cfgPath, len(b.SAs))
		return ExitOK
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := Setup{
		TUN: b.TUN.Config, Addrs: b.TUN.Addresses, Routes: b.TUN.Routes,
		UDPPort: b.Transport.UDPPort, KeepAlive: b.Transport.NATKeepalive,
		SPD: b.SPD, SAD: b.SAD, Outbound: b.Outbound, Log: log,
		Mobility: b.Mobility, ControlSocket: b.ControlSocket, Role: role,
		IKE: b.IKE, Listen: b.Transport.Listen,
	}
	if r := b.TUN.BypassRule; r != nil {
		s.Rule = &Rule{Mark: r.Mark, Table: r.Table, Priority: r.Priority}
	}
	log.Info("starting", "version", version.Version, "config", *cfgPath)
	if err := Run(ctx, s); err != nil {
		log.Error("stopped", "err", err)
		return ExitRuntime
	}
	log.Info("stopped cleanly")
	return ExitOK
}

// statusCmd asks the running daemon for its status over the control
// socket named in the config.
func statusCmd(role string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(role+" status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/roamsec/"+role+".yaml", "configuration file (for the control socket's path)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	c, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s status: configuration refused:\n%v\n", role, err)
		return ExitConfig
	}
	c.Wipe()
	var st Status
	if err := control.Query(c.ControlSocket, "status", &st); err != nil {
		fmt.Fprintf(stderr, "%s status: %v\n", role, err)
		return ExitRuntime
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
