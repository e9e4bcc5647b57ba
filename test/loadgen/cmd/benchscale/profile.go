package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/rig"
)

// profDir, if set, is where -profile writes both processes' profiles of
// each measured phase (bring-up on 1 and 2 cores, each traffic phase):
// gw-PHASE.{cpu,block,mutex} from the gateway (daemon.ProfileEnv,
// SIGUSR2) and gen-PHASE.{cpu,block,mutex} from this process, the
// generator, and perf-PHASE.data, perf(1) of the whole machine with call
// graphs (the kernel's share: sockets, veth, TUN), if perf is installed.
// Profiling costs a little of both; figures of a profiled run are for
// comparing its phases, not for the README.
var profDir string

// gwProfilePrefix is where the gateway writes (the env it inherits); each
// phase's files are renamed after it.
func gwProfilePrefix() string { return filepath.Join(profDir, "gw") }

// profileSetup makes profDir absolute and has the gateway inherit
// daemon.ProfileEnv.
func profileSetup() error {
	if profDir == "" {
		return nil
	}
	var err error
	if profDir, err = filepath.Abs(profDir); err != nil {
		return err
	}
	if err := os.MkdirAll(profDir, 0o755); err != nil {
		return err
	}
	return os.Setenv(daemon.ProfileEnv, gwProfilePrefix())
}

// phaseProfile profiles the gateway gw and this process until the returned
// stop runs; stop writes the files of phase. Without -profile both are
// no-ops.
func phaseProfile(gw *rig.Proc, phase string) (stop func() error, err error) {
	if profDir == "" {
		return func() error { return nil }, nil
	}
	pre := gwProfilePrefix()
	for _, ext := range []string{".cpu", ".block", ".mutex"} {
		os.Remove(pre + ext)
	}
	if err := syscall.Kill(gw.PID(), syscall.SIGUSR2); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(profDir, "gen-"+phase+".cpu"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	runtime.SetBlockProfileRate(10_000)
	runtime.SetMutexProfileFraction(10)
	perf := exec.Command("perf", "record", "-a", "-g", "-q", "-o", filepath.Join(profDir, "perf-"+phase+".data"))
	if perf.Start() != nil {
		perf = nil
	}
	return func() error {
		if perf != nil {
			perf.Process.Signal(os.Interrupt)
			perf.Wait()
		}
		pprof.StopCPUProfile()
		err := f.Close()
		for _, name := range []string{"block", "mutex"} {
			if werr := daemon.WriteProfile(name, filepath.Join(profDir, "gen-"+phase+"."+name)); err == nil {
				err = werr
			}
		}
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
		if kerr := syscall.Kill(gw.PID(), syscall.SIGUSR2); kerr != nil {
			return kerr
		}
		if werr := awaitGatewayProfiles(pre, phase); err == nil {
			err = werr
		}
		return err
	}, nil
}

// awaitGatewayProfiles waits for the gateway's files (mutex is written
// last) and renames them after phase.
func awaitGatewayProfiles(pre, phase string) error {
	last := int64(-1)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if fi, err := os.Stat(pre + ".mutex"); err == nil && fi.Size() > 0 && fi.Size() == last {
			break
		} else if err == nil {
			last = fi.Size()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no profiles from the gateway at %s", pre)
		}
	}
	for _, ext := range []string{".cpu", ".block", ".mutex"} {
		if err := os.Rename(pre+ext, filepath.Join(profDir, "gw-"+phase+ext)); err != nil {
			return err
		}
	}
	return nil
}
