// Command failover is the failover scenario that runs inside the VM (real
// kernel, kernel SCTP available): it builds the namespace test bed, starts
// the gateway and road-warrior daemons with the given configs, streams
// UDP through the tunnel, kills the primary path (link down; then link up
// but dropping everything, with netem), checks that traffic resumes over
// the secondary with the same SPIs, restores the primary and checks that
// traffic returns. It prints one RESULT line per trial and PASS or FAIL
// with the timings; it exits non-zero on FAIL.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

func main() {
	bin := flag.String("bin", "/usr/local/bin", "directory of the gateway and roadwarrior binaries")
	gwCfg := flag.String("gw", "/etc/roamsec/gateway.yaml", "gateway config")
	rwCfg := flag.String("rw", "/etc/roamsec/roadwarrior.yaml", "road warrior config")
	trials := flag.Int("trials", 3, "trials per kind of death")
	flag.Parse()
	if err := run(*bin, *gwCfg, *rwCfg, *trials); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
}

var spiRe = regexp.MustCompile(`spi=(0x[0-9a-f]+)`)

func run(bin, gwCfg, rwCfg string, trials int) error {
	bed, err := netns.NewStandalone()
	if err != nil {
		return fmt.Errorf("test bed: %w", err)
	}
	defer bed.Close()
	gw, err := rig.Start(bed.GW, filepath.Join(bin, "gateway"), 60*time.Second, "-config", gwCfg)
	if err != nil {
		return err
	}
	defer gw.Stop(10 * time.Second)
	rw, err := rig.Start(bed.RW, filepath.Join(bin, "roadwarrior"), 60*time.Second, "-config", rwCfg)
	if err != nil {
		return err
	}
	defer rw.Stop(10 * time.Second)
	if err := rig.EchoServer(bed); err != nil {
		return err
	}
	stream, err := rig.StartStream(bed, 20*time.Millisecond)
	if err != nil {
		return err
	}
	defer stream.Close()
	if !rig.WaitFor(30*time.Second, func() bool { return !stream.FirstReplyAfter(time.Time{}).IsZero() }) {
		return fmt.Errorf("no traffic through the tunnel:\n%s\n%s", rw.Log(), gw.Log())
	}
	// The detector must have confirmed the secondary before it can be a
	// failover destination.
	if !rig.WaitFor(30*time.Second, func() bool { return strings.Contains(rw.Log(), "path up") || strings.Contains(rw.Log(), "detector") }) {
		return fmt.Errorf("mobility did not start:\n%s", rw.Log())
	}
	time.Sleep(2 * time.Second)
	spis := slices.Compact(slices.Sorted(slices.Values(spiRe.FindAllString(rw.Log(), -1))))

	netem := func(verb string) func() error {
		return func() error {
			for _, ns := range []*netns.NS{bed.RW, bed.GW} {
				if out, err := ns.Run("tc", "qdisc", verb, "dev", netns.IfPrimary, "root", "netem", "loss", "100%"); err != nil {
					return fmt.Errorf("tc: %v: %s", err, out)
				}
			}
			return nil
		}
	}
	// No nftables in the VM: the silent drop is netem's, just as silent.
	deaths := []rig.Death{rig.Deaths(bed)[0], {Name: "silent-drop (netem)", Kill: netem("add"), Restore: netem("del")}}
	failed := 0
	var summary []string
	for _, d := range deaths {
		var overs, backs []time.Duration
		for i := range trials {
			over, back, err := rig.Trial(bed, stream, d, time.Second, 30*time.Second)
			if errors.Is(err, rig.ErrTrial) {
				fmt.Printf("RESULT death=%q trial=%d failed: %v\n", d.Name, i+1, err)
				failed++
				continue
			}
			if err != nil {
				return fmt.Errorf("%s trial %d: %w\n%s", d.Name, i+1, err, rw.Log())
			}
			overs, backs = append(overs, over), append(backs, back)
			fmt.Printf("RESULT death=%q trial=%d failover_ms=%d back_ms=%d\n", d.Name, i+1, over.Milliseconds(), back.Milliseconds())
		}
		summary = append(summary, fmt.Sprintf("%s: failover median %v, back median %v (%d trials)", d.Name, median(overs), median(backs), len(overs)))
	}
	stream.Close()
	after := slices.Compact(slices.Sorted(slices.Values(spiRe.FindAllString(rw.Log(), -1))))
	if !slices.Equal(spis, after) {
		return fmt.Errorf("SPIs changed: %v -> %v", spis, after)
	}
	for _, l := range strings.Split(rw.Log(), "\n") {
		if strings.Contains(l, "path switch") || strings.Contains(l, "mobility") || strings.Contains(l, "sctp") {
			fmt.Println("LOG", l)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d trials failed; %s", failed, strings.Join(summary, "; "))
	}
	fmt.Printf("PASS: same SPIs %v; %s\n", spis, strings.Join(summary, "; "))
	return nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}
