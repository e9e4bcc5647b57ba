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
	var cpu *os.File
	stop := func() {
		pprof.StopCPUProfile()
		err := cpu.Close()
		cpu = nil
		for _, name := range []string{"block", "mutex"} {
			err = errors.Join(err, writeProfile(name, prefix+"."+name))
		}
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
		if err != nil {
			log.Warn("profiles", "prefix", prefix, "err", err)
			return
		}
		log.Info("profiles written", "prefix", prefix)
	}
	defer func() {
		if cpu != nil {
			stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		}
		if cpu != nil {
			stop()
			continue
		}
		f, err := os.Create(prefix + ".cpu")
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			log.Warn("CPU profile", "prefix", prefix, "err", err)
			continue
		}
		cpu = f
		runtime.SetBlockProfileRate(blockRate)
		runtime.SetMutexProfileFraction(mutexFraction)
		log.Info("profiling", "prefix", prefix)
	}
}

func writeProfile(name, path string) error {
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
