package daemon

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/sdnotify"
	"github.com/roamsec/roamsec/internal/version"
)

// runDaemon is the daemon proper (not connect): it runs until SIGTERM or
// SIGINT, tells systemd where it stands (Type=notify: READY=1 once the
// tunnel is up, STOPPING=1, RELOADING=1, WATCHDOG=1) and re-reads its
// configuration on SIGHUP.
func runDaemon(role, cfgPath string, p *prepared, stderr io.Writer) int {
	signal.Ignore(syscall.SIGPIPE) // see signals.go
	tuneGC(role)
	ctx, stop := signal.NotifyContext(context.Background(), daemonSignals...)
	defer stop()
	d := &daemonRun{role: role, cfgPath: cfgPath, p: p, stderr: stderr, sections: sectionHashes(cfgPath)}
	p.setup.Ready = d.ready

	helpers, stopHelpers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.reloads(helpers) })
	wg.Go(func() { d.watchdog(helpers) })
	if path := os.Getenv(HeapProfileEnv); path != "" {
		wg.Go(func() { heapProfiles(helpers, path, p.log) })
	}
	if prefix := os.Getenv(ProfileEnv); prefix != "" {
		wg.Go(func() { cpuProfiles(helpers, prefix, p.log) })
	}
	runDone := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done(): // a signal: the stop begins
			notify(p.log, sdnotify.Stopping, sdnotify.Status("stopping: deleting the IKE SAs, removing the TUN device, routes and rules"))
		case <-runDone:
		}
	})

	p.log.Info("starting", "version", version.Version, "config", cfgPath)
	err := Run(ctx, p.setup)
	close(runDone)
	stopHelpers()
	wg.Wait()
	if err != nil {
		fc := failureContext{role: role, cfgPath: cfgPath, ike: p.setup.IKE}
		if p.setup.IKE != nil {
			fc.gwName = p.setup.IKE.Gateway
		}
		f := classify(err, fc)
		p.log.Error("stopped", "err", err)
		fmt.Fprintf(stderr, "%s%s: %s\n", errPrefix(stderr), role, f.msg)
		return f.code
	}
	p.log.Info("stopped cleanly")
	return ExitOK
}

// errPrefix is the journal's err priority when stderr is the journal.
func errPrefix(w io.Writer) string {
	if journalStream(w) {
		return "<3>"
	}
	return ""
}

func notify(log *slog.Logger, assignments ...string) {
	if err := sdnotify.Notify(assignments...); err != nil && err != sdnotify.ErrNoSocket {
		log.Warn("systemd notification", "err", err)
	}
}

// daemonRun is one daemon process's state around Run.
type daemonRun struct {
	role, cfgPath string
	p             *prepared
	stderr        io.Writer
	sections      map[string][32]byte // the running configuration's sections

	mu  sync.Mutex
	run *Running
}

func (d *daemonRun) running() *Running {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.run
}

// ready: the tunnel is up, the sockets open, the control socket about to
// answer: systemd may start what depends on us.
func (d *daemonRun) ready(r *Running) {
	d.mu.Lock()
	d.run = r
	d.mu.Unlock()
	notify(d.p.log, sdnotify.Ready, sdnotify.Status(fmt.Sprintf("tunnel up on %s", r.Device.Name())), fmt.Sprintf("MAINPID=%d", os.Getpid()))
}

// watchdog sends WATCHDOG=1 at half the interval systemd asked for
// (WatchdogSec=), each time after taking a status snapshot, which takes
// the locks of the IKE glue and of mobility: a daemon wedged on one of
// them stops answering, and systemd kills and restarts it.
func (d *daemonRun) watchdog(ctx context.Context) {
	every := sdnotify.WatchdogInterval() / 2
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r := d.running(); r != nil {
			r.Status()
		}
		notify(d.p.log, sdnotify.Watchdog)
	}
}

// reloads re-reads the configuration on each SIGHUP until ctx ends.
func (d *daemonRun) reloads(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.reload()
		}
	}
}

// reload validates the file as a start would (config.Load and Build:
// every `file:line: field` error), and, if it is valid, applies what can
// change without a restart — the log level, and a gateway's ike.peers
// (applyPeers) — and names the sections whose changes wait for the next
// restart. A refused file changes nothing: the daemon keeps running as it
// was. (ExecReload runs -check first, so `systemctl reload` itself fails
// on a bad file.)
func (d *daemonRun) reload() {
	log := d.p.log
	notify(log, sdnotify.Reloading, sdnotify.Status("reloading "+d.cfgPath))
	defer notify(log, sdnotify.Ready, sdnotify.Status("running; last reload at "+time.Now().UTC().Format(time.RFC3339)))
	np, code := prepare(d.role, d.cfgPath, d.stderr, false)
	if np == nil {
		log.Error("reload refused: the configuration is not valid (see the line above); still running the previous one", "config", d.cfgPath, "exit_code", code)
		return
	}
	np.close() // only validated and read: the running SAs stay
	live := map[string]bool{"log": true}
	applied := []string{"log level"}
	if d.applyPeers(np.setup.IKE) {
		live[peersSection] = true
		applied = append(applied, peersSection)
	} else if np.setup.IKE != nil {
		np.setup.IKE.Wipe()
	}
	old := d.p.level.Level()
	d.p.level.Set(np.level.Level())
	next := sectionHashes(d.cfgPath)
	var pending []string
	if d.sections == nil {
		d.sections = map[string][32]byte{}
	}
	for name, h := range next {
		if live[name] {
			d.sections[name] = h
		} else if d.sections[name] != h {
			pending = append(pending, name)
		}
	}
	for name := range d.sections {
		if _, ok := next[name]; !ok && !live[name] {
			pending = append(pending, name)
		}
	}
	slices.Sort(pending)
	log.Info("reloaded", "config", d.cfgPath, "log_level", d.p.level.Level().String(), "log_level_was", old.String(), "applied", applied)
	if len(pending) > 0 {
		log.Warn("reload: changed sections take effect at the next restart (systemctl restart)", "sections", pending)
	}
}

// peersSection names a gateway's ike.peers among the sections a reload
// compares: the one part of the ike section it applies live.
const peersSection = "ike.peers"

// applyPeers hands a gateway's new ike.peers to its running IKE endpoint
// (ike.Endpoint.SetPeers: new IKE_AUTHs use them at once; the IKE SAs of
// removed or changed peers are deleted, the others keep their SPIs). It
// reports whether it did: not on a road warrior, not without an ike
// section, not before the tunnel is up. The endpoint then owns k's PSKs.
func (d *daemonRun) applyPeers(k *config.IKE) bool {
	r := d.running()
	if k == nil || d.role != string(config.RoleGateway) || r == nil || r.setup.ike == nil || r.setup.ike.ep == nil {
		return false
	}
	res := r.setup.ike.ep.SetPeers(ikePeers(k))
	d.p.log.Info("reload: ike.peers applied", "peers", len(k.Peers), "ike_sas_kept", len(res.Kept), "ike_sas_deleted", res.Deleted)
	return true
}

// sectionHashes is a digest of each top-level section of the YAML file,
// to tell which ones a reload changed without keeping the file (it holds
// keys) in memory. A gateway's ike.peers, which a reload applies live, is
// a section of its own (peersSection), apart from the rest of ike. An
// unreadable file gives nil.
func sectionHashes(path string) map[string][32]byte {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	defer clear(data)
	var doc map[string]yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return nil
	}
	out := make(map[string][32]byte, len(doc)+1)
	hash := func(name string, n *yaml.Node) {
		b, err := yaml.Marshal(n)
		if err != nil {
			return
		}
		out[name] = sha256.Sum256(b)
		clear(b)
	}
	for name, n := range doc {
		if name == "ike" && n.Kind == yaml.MappingNode {
			rest := n
			rest.Content = nil
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "peers" {
					hash(peersSection, n.Content[i+1])
					continue
				}
				rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
			}
			n = rest
		}
		hash(name, &n)
	}
	return out
}
