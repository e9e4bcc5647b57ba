// Command demo shows roamsec's main job on this machine: it builds the
// gateway and road-warrior daemons, starts them in network namespaces of
// the test bed with the IKEv2 example configs (a fresh pre-shared key),
// `roadwarrior connect` negotiates the SAs, ping and a TCP transfer go
// from the road warrior to a server behind the gateway through the ESP
// tunnel, the primary uplink dies twice (link down, silent drop) and the
// same SA carries on over the secondary, and it all comes down cleanly.
// Run it with `make demo` (root).
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
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
	// The IKEv2 example configs, copied with mode 600 as a real install
	// keeps them, with a fresh pre-shared key next to them.
	var cfg = map[string]string{}
	for _, name := range []string{"gateway.yaml", "roadwarrior.yaml"} {
		data, err := os.ReadFile(rig.ExampleConfig(strings.Replace(name, ".yaml", "-ike.yaml", 1)))
		if err != nil {
			return err
		}
		// The demo returns to the primary after 2 s instead of 10 s, and
		// keeps its control sockets to itself.
		text := strings.Replace(string(data), "switch_back: 10s", "switch_back: 2s", 1)
		text = strings.Replace(text, "/run/roamsec/", dir+"/", 1)
		if cfg[name], err = rig.WriteFile(dir, name, text); err != nil {
			return err
		}
	}
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "rw1.psk"), []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return err
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

	step("starting the gateway, then `roadwarrior connect` (IKEv2, pre-shared key)")
	gw, err := rig.Start(bed.GW, filepath.Join(dir, "gateway"), 15*time.Second, "-config", cfg["gateway.yaml"])
	if err != nil {
		return err
	}
	defer gw.Stop(5 * time.Second)
	rw, err := rig.Start(bed.RW, filepath.Join(dir, "roadwarrior"), 15*time.Second, "connect", "-config", cfg["roadwarrior.yaml"])
	if err != nil {
		return err
	}
	defer rw.Stop(5 * time.Second)
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Contains(rw.Log(), "connected —") }) {
		return fmt.Errorf("roadwarrior connect did not connect:\n%s", rw.Log())
	}
	for _, l := range strings.Split(rw.Log(), "\n") {
		if l != "" && !strings.HasPrefix(l, "time=") {
			fmt.Println("    " + l)
		}
	}
	for _, l := range strings.Split(gw.Log(), "\n") {
		if strings.Contains(l, "IKE SA established") || strings.Contains(l, "Child SA installed") {
			fmt.Println("    gateway: " + strings.TrimSpace(trimLog(l)))
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

	step("failover: a UDP stream every 10 ms from the road warrior to the server, then the primary dies")
	if err := rig.EchoServer(bed); err != nil {
		return err
	}
	stream, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		return err
	}
	defer stream.Close()
	time.Sleep(700 * time.Millisecond) // heartbeats confirm both paths
	for _, death := range rig.Deaths(bed) {
		if err := death.Kill(); err != nil {
			return err
		}
		dead := time.Now()
		if !rig.WaitFor(10*time.Second, func() bool { return !stream.FirstReplyAfter(dead).IsZero() }) {
			return fmt.Errorf("%s: traffic did not resume", death.Name)
		}
		fmt.Printf("    %s: traffic back, over the secondary uplink, %v later\n", death.Name, stream.FirstReplyAfter(dead).Sub(dead).Round(time.Millisecond))
		out, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String())
		if m := srcRe.FindStringSubmatch(out); m != nil {
			fmt.Printf("    new flows into the tunnel now start from %s (RFC 3554 mode: the route's source moved)\n", m[1])
		}
		if err := death.Restore(); err != nil {
			return err
		}
		back := time.Now()
		if !rig.WaitFor(20*time.Second, func() bool {
			out, _ := bed.RW.Run("ip", "route", "get", netns.Srv4.String())
			return strings.Contains(out, "src "+netns.RWPrimary4.String())
		}) {
			return fmt.Errorf("did not return to the primary")
		}
		fmt.Printf("    primary restored: traffic back on it after %v (switch_back: 2s)\n", time.Since(back).Round(100*time.Millisecond))
	}
	stream.Close()
	for _, l := range strings.Split(rw.Log(), "\n") {
		if strings.Contains(l, "path switch") {
			fmt.Println("    roadwarrior: " + strings.TrimSpace(trimLog(l)))
		}
	}
	if n := strings.Count(gw.Log(), "Child SA installed"); n != 2 || strings.Count(gw.Log(), "IKE SA established") != 1 {
		return fmt.Errorf("the failover renegotiated (%d Child SA installs)", n)
	}
	fmt.Println("    The SPIs never changed and no key exchange ran: the same SA pair carried it all.")

	step("roadwarrior status")
	out, _, err := rig.Run(context.Background(), nil, filepath.Join(dir, "roadwarrior"), "status", "-config", cfg["roadwarrior.yaml"])
	if err != nil {
		return err
	}
	fmt.Println(indent(strings.TrimRight(out, "\n")))

	step("disconnecting (Ctrl-C on connect, SIGTERM on the gateway): DELETE, counters and cleanup")
	if err := rw.Signal(os.Interrupt, 10*time.Second); err != nil {
		return err
	}
	for _, l := range strings.Split(rw.Log(), "\n") {
		if strings.HasPrefix(l, "disconnect") {
			fmt.Println("    " + l)
		}
	}
	if !rig.WaitFor(5*time.Second, func() bool { return strings.Contains(gw.Log(), "deleted by the peer") }) {
		return fmt.Errorf("the gateway never saw the DELETE:\n%s", gw.Log())
	}
	if err := gw.Stop(10 * time.Second); err != nil {
		return err
	}
	for _, l := range strings.Split(gw.Log(), "\n") {
		if strings.Contains(l, "deleted by the peer") || strings.Contains(l, "stopped cleanly") {
			fmt.Println("    gateway: " + strings.TrimSpace(trimLog(l)))
		}
	}
	fmt.Println("\nPath failures here are found by RFC 4960 heartbeats run as ESP-level probes (this kernel")
	fmt.Println("has no SCTP); the kernel-SCTP detector runs in the VM test (see README).")
	return nil
}

var (
	logPrefix = regexp.MustCompile(`^time=\S+ level=\S+ `)
	srcRe     = regexp.MustCompile(`src (\S+)`)
)

func trimLog(l string) string { return logPrefix.ReplaceAllString(l, "") }

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
