package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/vm"
)

// vmFailover runs the failover scenario (test/vm/internal/failover) inside
// Debian's kernel in qemu, where kernel SCTP exists, for the address
// families fams ("4,6"), with the configs configs (name -> text, written
// to /etc/roamsec/<name> in the VM: gateway.yaml, roadwarrior.yaml with
// IPv4 mobility paths, roadwarrior6.yaml with IPv6 ones). The silent drop
// is the bed's own nftables rule: the host's nft is packed into the VM
// with its libraries and nf_tables is loaded. It returns the scenario's
// output.
func vmFailover(t *testing.T, configs map[string]string, fams string, trials int) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM")
	}
	if err := vm.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the VM cannot run: %v", err)
		}
		t.Skipf("the VM cannot run here: %v", err)
	}
	dir := t.TempDir()
	// ip for the bed (ip netns), nft for its silent drop (Bed.Blackhole).
	files, err := vm.HostBinaries("ip", "nft")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"gateway", "roadwarrior"} {
		out := filepath.Join(dir, p)
		if err := vm.BuildStatic("github.com/roamsec/roamsec/cmd/"+p, out, false); err != nil {
			t.Fatal(err)
		}
		files["/usr/local/bin/"+p] = out
	}
	scen := filepath.Join(dir, "failover")
	if err := vm.BuildStatic("github.com/roamsec/roamsec/test/vm/internal/failover", scen, false); err != nil {
		t.Fatal(err)
	}
	files["/usr/local/bin/failover"] = scen
	for name, text := range configs {
		p, err := rig.WriteFile(dir, name, text)
		if err != nil {
			t.Fatal(err)
		}
		files["/etc/roamsec/"+name] = p
	}
	// A trial takes about 6 s under TCG (up to 15 s allowed), two deaths
	// per family; within the test binary's -timeout, so that a slow run
	// fails with the VM's output rather than a panic.
	runFor := 3*time.Minute + time.Duration(trials*2*len(strings.Split(fams, ",")))*15*time.Second
	if dl, ok := t.Deadline(); ok && time.Until(dl)-time.Minute < runFor {
		runFor = time.Until(dl) - time.Minute
		t.Logf("the VM gets %v (go test -timeout); %d trials may need more", runFor.Round(time.Second), trials)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runFor+time.Minute)
	defer cancel()
	res, err := vm.Run(ctx, vm.Options{
		Files:   files,
		Script:  fmt.Sprintf("/usr/local/bin/failover -families %s -trials %d", fams, trials),
		Timeout: runFor,
		Modules: []string{"nf_tables"},
		Memory:  1024,
	})
	if err != nil {
		t.Fatalf("VM: %v\n%s", err, res.Console)
	}
	t.Logf("VM boot %v, scenario %v", res.BootTime.Round(time.Millisecond), res.RunTime.Round(time.Millisecond))
	if strings.Contains(res.Output, "insmod") {
		t.Errorf("a kernel module failed to load:\n%s", res.Output)
	}
	if res.ExitCode != 0 || !strings.Contains(res.Output, "PASS") {
		t.Fatalf("scenario failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.HasPrefix(l, "RESULT") || strings.HasPrefix(l, "PASS") || strings.Contains(l, "path switch") || strings.Contains(l, "SCTP association") {
			t.Log(l)
		}
	}
	return res.Output
}

// vmConfigs are the example configs as shipped, edited for the VM
// scenario: switch-back after 1 s (so trials are short); the gateway
// answers SCTP path monitoring on its IPv6 path addresses too; and
// roadwarrior6.yaml, whose mobility paths are the IPv6 ones (2001:db8:1::2
// -> 2001:db8:1::1 primary, 2001:db8:2::2 -> 2001:db8:2::1), so its path
// set follows the IPv6 SCTP association.
func vmConfigs(t *testing.T) map[string]string {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(rig.ExampleConfig(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	replace := func(name, text, old, new string) string {
		if !strings.Contains(text, old) {
			t.Fatalf("example config %s changed: no %q", name, old)
		}
		return strings.Replace(text, old, new, 1)
	}
	// The example gateway listens for SCTP on its IPv6 addresses too.
	gw := read("gateway.yaml")
	if !strings.Contains(gw, `sctp_listen: [192.0.2.1, 198.51.100.1, "2001:db8:1::1", "2001:db8:2::1"]`) {
		t.Fatal("example config gateway.yaml changed: its sctp_listen lacks the IPv6 addresses")
	}
	rw := replace("roadwarrior.yaml", read("roadwarrior.yaml"), "switch_back: 10s", "switch_back: 1s")
	// ROAMSEC_VM_HEARTBEAT="interval: 50ms, rto_min: 50ms, ..." replaces the
	// example's heartbeat settings, to measure other kernel SCTP tunings.
	if hb := os.Getenv("ROAMSEC_VM_HEARTBEAT"); hb != "" {
		i := strings.Index(rw, "  heartbeat:\n")
		if i < 0 {
			t.Fatal("example config roadwarrior.yaml changed: no heartbeat section")
		}
		j := i + len("  heartbeat:\n")
		for strings.HasPrefix(rw[j:], "    ") {
			j += strings.Index(rw[j:], "\n") + 1
		}
		rw = rw[:i] + "  heartbeat: {" + hb + "}\n" + rw[j:]
		t.Logf("heartbeat: {%s}", hb)
	}
	rw6 := replace("roadwarrior.yaml", rw,
		"    - { name: primary, local: 192.0.2.2, peer: 192.0.2.1, link: rsb-pri }\n"+
			"    - { name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec }\n",
		"    - { name: primary6, local: \"2001:db8:1::2\", peer: \"2001:db8:1::1\", link: rsb-pri }\n"+
			"    - { name: secondary6, local: \"2001:db8:2::2\", peer: \"2001:db8:2::1\", link: rsb-sec }\n")
	rw6 = replace("roadwarrior.yaml", rw6, "primary: primary\n", "primary: primary6\n")
	return map[string]string{"gateway.yaml": gw, "roadwarrior.yaml": rw, "roadwarrior6.yaml": rw6}
}

// The failover scenario on a real kernel in the VM, with IPv4 paths and
// then IPv6 paths: a kernel SCTP association of that family between road
// warrior and gateway, carried in the host-to-host SA, drives the path
// switches, for both kinds of path death (link down; nftables silent
// drop); traffic to the server's address of that family resumes over the
// secondary with the same SAs and SPIs and returns to the primary (the
// scenario checks each trial).
func TestVMFailoverKernelSCTP(t *testing.T) {
	// ROAMSEC_VM_TRIALS=10 gives the benchmark's figures (median of 10).
	trials := 3
	if n := os.Getenv("ROAMSEC_VM_TRIALS"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 {
			t.Fatalf("ROAMSEC_VM_TRIALS=%q: want a positive number", n)
		}
		trials = v
	}
	out := vmFailover(t, vmConfigs(t), "4,6", trials)
	if strings.Contains(out, "NO KERNEL SCTP") {
		t.Fatalf("the VM kernel has SCTP, yet a daemon fell back:\n%s", out)
	}
	for _, f := range []struct{ name, local string }{{"IPv4", "192.0.2.2 198.51.100.2"}, {"IPv6", "2001:db8:1::2 2001:db8:2::2"}} {
		var assoc, sctpSwitches, silent int
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "LOG "+f.name+" rw") && strings.Contains(l, "SCTP association up") && strings.Contains(l, "["+f.local+"]") {
				assoc++
			}
			if strings.HasPrefix(l, "LOG "+f.name+" rw") && strings.Contains(l, "path switch") && strings.Contains(l, "(sctp)") {
				sctpSwitches++
			}
			if strings.HasPrefix(l, "RESULT family="+f.name+" ") && strings.Contains(l, "nftables") && strings.Contains(l, "switch=sctp") {
				silent++
			}
		}
		t.Logf("%s: %d switches from SCTP notifications", f.name, sctpSwitches)
		if assoc == 0 {
			t.Errorf("%s: the road warrior's SCTP association on %s never came up", f.name, f.local)
		}
		// The silent drop is invisible to netlink: its switches must come
		// from the SCTP notifications (the scenario checks each trial).
		if silent != trials {
			t.Errorf("%s: %d nftables silent-drop trials switched on an SCTP notification, want %d", f.name, silent, trials)
		}
	}
}

// The kernel tests of mobility/sctp (association on loopback, path
// failover between two namespaces, association loss, dial deadline) need
// kernel SCTP: they run inside the VM, where they must pass, not skip.
func TestVMSCTPKernelTests(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	if err := vm.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the VM cannot run: %v", err)
		}
		t.Skipf("the VM cannot run here: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sctp.test")
	if err := vm.BuildStatic("github.com/roamsec/roamsec/mobility/sctp", bin, true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx, vm.Options{
		Files:   map[string]string{"/usr/local/bin/sctp.test": bin},
		Script:  "/usr/local/bin/sctp.test -test.run Kernel -test.v -test.count 1",
		Timeout: 5 * time.Minute,
	})
	if err != nil {
		t.Fatalf("VM: %v\n%s", err, res.Console)
	}
	if res.ExitCode != 0 || strings.Contains(res.Output, "--- SKIP") || !strings.Contains(res.Output, "--- PASS: TestKernel") {
		t.Fatalf("kernel SCTP tests (exit %d):\n%s", res.ExitCode, res.Output)
	}
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.HasPrefix(l, "--- ") || strings.Contains(l, "after") {
			t.Log(l)
		}
	}
}
