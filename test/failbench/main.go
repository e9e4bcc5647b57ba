// Command failbench measures roamsec's failover on the namespace test bed:
// for each kind of path death (link down; link up but silently dropping
// everything), the time from the death to the first packet delivered over
// the secondary uplink, and from the primary's recovery to the first
// packet over it again, median and range of N trials. The daemons run the
// shipped example configs with switch_back 0 (return as soon as the
// primary answers), so "back" measures recovery detection.
//
//	go run ./test/failbench [-trials 10] [-json]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

type result struct {
	Death  string    `json:"death"`
	Over   []float64 `json:"failover_ms"`
	Back   []float64 `json:"back_ms"`
	Failed int       `json:"failed_trials"`
}

func main() {
	trials := flag.Int("trials", 10, "trials per kind of death")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	res, err := run(*trials)
	if err != nil {
		fmt.Fprintln(os.Stderr, "failbench:", err)
		os.Exit(1)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Printf("\nroamsec failover on the namespace test bed, %d trials each (detector: ESP-level probes + netlink;\n", *trials)
	hb := "heartbeat: see " + rig.ExampleConfig("roadwarrior.yaml")
	if c, err := config.Load(rig.ExampleConfig("roadwarrior.yaml")); err == nil && c.Mobility != nil {
		h := c.Mobility.Heartbeat
		hb = fmt.Sprintf("heartbeat %v, RTO %v-%v, Path.Max.Retrans %d, PF threshold %d", h.Interval, h.RTOMin, h.RTOMax, h.PathMaxRetrans, h.PFThreshold)
	}
	fmt.Println(hb + "; 10 ms UDP stream)")
	fmt.Printf("%-44s %-26s %-26s %s\n", "death", "failover median (min-max)", "back median (min-max)", "failed")
	for _, r := range res {
		fmt.Printf("%-44s %-26s %-26s %d\n", r.Death, stat(r.Over), stat(r.Back), r.Failed)
	}
}

func stat(ms []float64) string {
	if len(ms) == 0 {
		return "n/a"
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	return fmt.Sprintf("%.0f ms (%.0f-%.0f)", s[len(s)/2], s[0], s[len(s)-1])
}

func run(trials int) ([]result, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("run as root")
	}
	dir, err := os.MkdirTemp("", "roamsec-failbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := rig.Build(dir); err != nil {
		return nil, err
	}
	cfg := map[string]string{}
	for _, name := range []string{"gateway.yaml", "roadwarrior.yaml"} {
		data, err := os.ReadFile(rig.ExampleConfig(name))
		if err != nil {
			return nil, err
		}
		text := strings.Replace(string(data), "switch_back: 10s", "switch_back: 0s", 1)
		if cfg[name], err = rig.WriteFile(dir, name, text); err != nil {
			return nil, err
		}
	}
	bed, err := netns.NewStandalone()
	if err != nil {
		return nil, err
	}
	defer bed.Close()
	gw, err := rig.Start(bed.GW, filepath.Join(dir, "gateway"), 15*time.Second, "-config", cfg["gateway.yaml"])
	if err != nil {
		return nil, err
	}
	defer gw.Stop(5 * time.Second)
	rw, err := rig.Start(bed.RW, filepath.Join(dir, "roadwarrior"), 15*time.Second, "-config", cfg["roadwarrior.yaml"])
	if err != nil {
		return nil, err
	}
	defer rw.Stop(5 * time.Second)
	if err := rig.EchoServer(bed); err != nil {
		return nil, err
	}
	stream, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	time.Sleep(time.Second)

	var out []result
	for _, d := range rig.Deaths(bed) {
		r := result{Death: d.Name}
		for i := range trials {
			fmt.Fprintf(os.Stderr, "failbench: %s, trial %d/%d\n", d.Name, i+1, trials)
			over, back, err := rig.Trial(bed, stream, d, 300*time.Millisecond, 10*time.Second)
			switch {
			case errors.Is(err, rig.ErrTrial):
				r.Failed++
				continue
			case err != nil:
				return nil, fmt.Errorf("%w\n%s", err, rw.Log())
			}
			r.Over, r.Back = append(r.Over, ms(over)), append(r.Back, ms(back))
		}
		out = append(out, r)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
