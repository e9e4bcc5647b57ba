package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// HeapProfileEnv names a file: when the daemon runs with it set, SIGUSR1
// writes a heap profile (runtime/pprof, in-use and allocated) there, after
// a garbage collection; the file appears whole (renamed into place). For measuring memory per peer (make bench-scale
// -heapprofile); unset, SIGUSR1 keeps its default action.
const HeapProfileEnv = "ROAMSEC_HEAP_PROFILE"

// heapProfiles writes a heap profile to path on each SIGUSR1 until ctx
// ends.
func heapProfiles(ctx context.Context, path string, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		}
		runtime.GC()
		f, err := os.Create(path + ".tmp")
		if err == nil {
			err = pprof.Lookup("heap").WriteTo(f, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			err = os.Rename(path+".tmp", path) // whole, or not there
		}
		if err != nil {
			log.Warn("heap profile", "path", path, "err", err)
			continue
		}
		log.Info("heap profile written", "path", path)
	}
}
