package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"

	roamsecd "github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/test/netns"
)

// profileEnv is the environment that makes a roamsec daemon profile on
// SIGUSR2 (daemon.ProfileEnv), its files named after the path and role.
func (e *pathEnv) profileEnv(role string) []string {
	if e.profile == "" {
		return nil
	}
	return []string{roamsecd.ProfileEnv + "=" + e.profile + "-" + role}
}

// profileRun sends 64-byte UDP at pps for -profile-duration while perf
// (when installed) samples both tunnel processes with call graphs, and
// the roamsec daemons (profileEnv) write their CPU, block and mutex
// profiles. wireguard-go gets the perf profile only.
func profileRun(ctx context.Context, bed *netns.Bed, s *setup, o options, id string, pps float64) error {
	perfData := filepath.Join(o.profile, id+".perf.data")
	var perf *daemon
	if bin, err := lookPath("perf"); err == nil {
		secs := strconv.FormatFloat(o.profileDuration.Seconds()+1, 'f', 1, 64)
		perf, err = startDaemon(ctx, nil, nil, bin, "record", "-F", "1999", "-g", "-o", perfData,
			"-p", fmt.Sprintf("%d,%d", s.rw.pid(), s.gw.pid()), "--", "sleep", secs)
		if err != nil {
			return err
		}
	}
	roamsec := id == "b" || id == "d"
	toggle := func() {
		if roamsec {
			s.rw.cmd.Process.Signal(syscall.SIGUSR2)
			s.gw.cmd.Process.Signal(syscall.SIGUSR2)
		}
	}
	toggle()
	p, err := udpRun(ctx, bed, o.profileDuration, pps)
	toggle()
	if perf != nil {
		<-perf.done
		if perf.err != nil {
			err = errors.Join(err, fmt.Errorf("perf: %w: %s", perf.err, perf.out.String()))
		}
	}
	if err == nil {
		progress("%s: profiled at %s pps (delivered %s, loss %.3f%%): %s*", id, kpps(pps), kpps(p.DeliveredPPS), p.LossPercent, filepath.Join(o.profile, id))
	}
	return err
}
