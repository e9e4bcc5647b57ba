package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/rig"
	"github.com/roamsec/roamsec/test/vm"
)

// vmFailover runs the failover scenario (test/vm/internal/failover) inside
// Debian's kernel in qemu, where kernel SCTP exists, with the example
// configs edited by edit. It returns the scenario's output.
func vmFailover(t *testing.T, edit func(name, text string) string, trials string) string {
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
	files := map[string]string{}
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
	for _, prog := range []string{"ip", "tc"} {
		fs, err := vm.HostBinary(prog)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range fs {
			files[k] = v
		}
	}
	for _, name := range []string{"gateway.yaml", "roadwarrior.yaml"} {
		data, err := os.ReadFile(rig.ExampleConfig(name))
		if err != nil {
			t.Fatal(err)
		}
		p, err := rig.WriteFile(dir, name, edit(name, string(data)))
		if err != nil {
			t.Fatal(err)
		}
		files["/etc/roamsec/"+name] = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx, vm.Options{
		Files:   files,
		Script:  "ip link set lo up; /usr/local/bin/failover -trials " + trials,
		Timeout: 7 * time.Minute,
		Modules: []string{"sch_netem"},
		Memory:  1024,
	})
	if err != nil {
		t.Fatalf("VM: %v\n%s", err, res.Console)
	}
	t.Logf("VM boot %v, scenario %v", res.BootTime.Round(time.Millisecond), res.RunTime.Round(time.Millisecond))
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

// The failover scenario on a real kernel in the VM with the example
// configs as shipped: a kernel SCTP association between road warrior and
// gateway, carried in the host-to-host SA, drives the path switches, for
// both kinds of path death; the SPIs stay the same (the scenario checks).
func TestVMFailoverKernelSCTP(t *testing.T) {
	// ROAMSEC_VM_TRIALS=10 gives the benchmark's figures (median of 10).
	trials := "3"
	if n := os.Getenv("ROAMSEC_VM_TRIALS"); n != "" {
		trials = n
	}
	out := vmFailover(t, func(name, text string) string {
		return strings.Replace(text, "switch_back: 10s", "switch_back: 1s", 1)
	}, trials)
	if !strings.Contains(out, "SCTP association up") {
		t.Fatalf("the road warrior's SCTP association never came up:\n%s", out)
	}
	if strings.Contains(out, "NO KERNEL SCTP") {
		t.Fatalf("the VM kernel has SCTP, yet a daemon fell back:\n%s", out)
	}
	// The silent drop is invisible to netlink: its switches must come
	// from the SCTP notifications.
	sctpSwitches := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "path switch") && strings.Contains(l, "(sctp)") {
			sctpSwitches++
		}
	}
	t.Logf("%d switches from SCTP notifications", sctpSwitches)
	if sctpSwitches < 3 {
		t.Fatalf("%d path switches caused by SCTP notifications, want at least one per silent-drop trial:\n%s", sctpSwitches, out)
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
