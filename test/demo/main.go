// Command demo shows roamsec's main job on this machine: it builds the
// gateway and road-warrior daemons, starts them in network namespaces of
// the test bed with the example configs, sends ping and a TCP transfer
// from the road warrior to a server behind the gateway through the ESP
// tunnel, shows the SPIs and counters, sends traffic from the road
// warrior's second uplink address over the same SA, and tears it all
// down. Run it with `make demo` (root).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root (network namespaces, TUN devices)")
	}
	dir, err := os.MkdirTemp("", "roamsec-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("building cmd/gateway and cmd/roadwarrior")
	if err := rig.Build(dir); err != nil {
		return err
	}
	// The example configs, copied with mode 600 as a real install keeps them.
	var cfg = map[string]string{}
	for _, name := range []string{"gateway.yaml", "roadwarrior.yaml"} {
		data, err := os.ReadFile(rig.ExampleConfig(name))
		if err != nil {
			return err
		}
		if cfg[name], err = rig.WriteFile(dir, name, string(data)); err != nil {
			return err
		}
	}

	step("test bed: road warrior (%v, %v) — gateway (%v, %v) — server %v", netns.RWPrimary4, netns.RWSecondary4, netns.GWPrimary4, netns.GWSecondary4, netns.Srv4)
	bed, err := netns.NewStandalone()
	if err != nil {
		return err
	}
	defer bed.Close()
	if _, err := bed.RW.Run("ping", "-c", "1", "-W", "1", netns.Srv4.String()); err == nil {
		return fmt.Errorf("the server is reachable without the tunnel: the demo would prove nothing")
	}
	fmt.Println("    without the tunnel the road warrior cannot reach the server (no route)")

	step("starting the gateway and the road warrior")
	gw, err := rig.Start(bed.GW, filepath.Join(dir, "gateway"), 15*time.Second, "-config", cfg["gateway.yaml"])
	if err != nil {
		return err
	}
	defer gw.Stop(5 * time.Second)
	rw, err := rig.Start(bed.RW, filepath.Join(dir, "roadwarrior"), 15*time.Second, "-config", cfg["roadwarrior.yaml"])
	if err != nil {
		return err
	}
	defer rw.Stop(5 * time.Second)
	for _, p := range []*rig.Proc{gw, rw} {
		for _, l := range strings.Split(p.Log(), "\n") {
			if strings.Contains(l, "SA installed") || strings.Contains(l, "tunnel up") {
				fmt.Println("    " + p.Name + ": " + strings.TrimSpace(trimLog(l)))
			}
		}
	}

	step("ping through the tunnel (IPv4 and IPv6)")
	for _, dst := range []string{netns.Srv4.String(), netns.Srv6.String()} {
		out, err := bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", dst)
		fmt.Println(indent(lastLines(out, 2)))
		if err != nil {
			return fmt.Errorf("ping %s: %v", dst, err)
		}
	}

	step("TCP transfer of 32 MiB to the server")
	took, err := rig.TCPTransfer(bed, 32<<20)
	if err != nil {
		return err
	}
	secs := took.Seconds()
	fmt.Printf("    32 MiB arrived intact (SHA-256 checked) in %.2f s: %.0f Mbit/s\n", secs, 32*8*1.048576/secs)

	step("the second uplink, same SA: ping from %v", netns.RWSecondary4)
	out, err := bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", netns.RWSecondary4.String(), netns.Srv4.String())
	fmt.Println(indent(lastLines(out, 2)))
	if err != nil {
		return fmt.Errorf("ping from the secondary address: %v", err)
	}
	fmt.Println("    RFC 3554: the outer source is the inner source, so this ESP carried the road warrior's secondary")
	fmt.Println("    address as its outer source; the gateway accepted it on the same SA (same SPI) because that")
	fmt.Println("    address is in the SA's peer pool.")

	step("stopping (SIGTERM): counters and cleanup")
	for _, p := range []*rig.Proc{rw, gw} {
		if err := p.Stop(10 * time.Second); err != nil {
			return err
		}
		for _, l := range strings.Split(p.Log(), "\n") {
			if strings.Contains(l, "SA counters") || strings.Contains(l, "stopped cleanly") {
				fmt.Println("    " + p.Name + ": " + strings.TrimSpace(trimLog(l)))
			}
		}
	}
	fmt.Println("\nNot shown yet: automatic failover (SCTP path heartbeats move the SA when an uplink dies)")
	fmt.Println("arrives with the mobility issue; today traffic moves to the second uplink when the host's")
	fmt.Println("routing sends it there.")
	return nil
}

var logPrefix = regexp.MustCompile(`^time=\S+ level=\S+ `)

func trimLog(l string) string { return logPrefix.ReplaceAllString(l, "") }

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
