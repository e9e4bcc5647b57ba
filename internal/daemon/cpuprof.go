package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// ProfileEnv names a path prefix: when the daemon runs with it set, each
// SIGUSR2 toggles profiling. The first starts a CPU profile (PREFIX.cpu)
// and turns on the block and mutex profiles; the next stops them and
// writes PREFIX.cpu, PREFIX.block and PREFIX.mutex. For profiling the data
// path under a load (make bench -profile DIR); unset, SIGUSR2 keeps its
// default action.
const ProfileEnv = "ROAMSEC_PROFILE"

// blockRate: one blocking event sampled per this many nanoseconds blocked
// (runtime.SetBlockProfileRate); mutexFraction: one contention event in
// that many (runtime.SetMutexProfileFraction). Cheap enough not to change
// what is measured much.
const (
	blockRate     = 10_000
	mutexFraction = 10
)

// cpuProfiles toggles profiling on each SIGUSR2 until ctx ends; a profile
// still running then is written.
func cpuProfiles(ctx context.Context, prefix string, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	defer signal.Stop(sig)
	p := &profiler{prefix: prefix, log: log}
	defer func() {
		if p.cpu != nil {
			p.toggle()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			p.toggle()
		}
	}
}

// profiler is ProfileEnv's state: cpu is the open CPU profile while one
// runs.
type profiler struct {
	prefix string
	log    *slog.Logger
	cpu    *os.File
}

// toggle starts the profiles, or stops them and writes them out.
func (p *profiler) toggle() {
	if p.cpu != nil {
		p.stop()
		return
	}
	f, err := os.Create(p.prefix + ".cpu")
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		p.log.Warn("CPU profile", "prefix", p.prefix, "err", err)
		return
	}
	p.cpu = f
	runtime.SetBlockProfileRate(blockRate)
	runtime.SetMutexProfileFraction(mutexFraction)
	p.log.Info("profiling", "prefix", p.prefix)
}

func (p *profiler) stop() {
	pprof.StopCPUProfile()
	err := p.cpu.Close()
	p.cpu = nil
	for _, name := range []string{"block", "mutex"} {
		err = errors.Join(err, WriteProfile(name, p.prefix+"."+name))
	}
	runtime.SetBlockProfileRate(0)
	runtime.SetMutexProfileFraction(0)
	if err != nil {
		p.log.Warn("profiles", "prefix", p.prefix, "err", err)
		return
	}
	p.log.Info("profiles written", "prefix", p.prefix)
}

// WriteProfile writes the runtime profile name (pprof.Lookup) to path:
// the daemon's block and mutex profiles, and a load generator's own.
func WriteProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup(name).WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
