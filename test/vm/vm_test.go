package vm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needVM skips when no VM can run here, except on CI (CI=true), where
// scripts/deps.sh has installed what it needs and a skip would hide a
// breakage.
func needVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM (10-20 s)")
	}
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// TestVM boots once and checks, in that one boot: the script runs and its
// output and exit status come back; kernel SCTP works (sctpcheck, a static
// Go program); dynamically linked host programs run with HostBinary (the
// host's iproute2 ip and tc, when installed: "ip netns", and a silent drop
// with netem loaded through Options.Modules; the host's nft, when
// installed: test/netns's silent drop, a netdev ingress chain with policy
// drop, in a namespace, with nf_tables loaded through Options.Modules).
func TestVM(t *testing.T) {
	needVM(t)
	dir := t.TempDir()
	check := filepath.Join(dir, "sctpcheck")
	if err := BuildStatic("./internal/sctpcheck", check, false); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"/usr/local/bin/sctpcheck": check}
	script := `echo hello
cat /proc/version
grep -c '^sctp ' /proc/modules | sed 's/^/sctp modules: /'
sctpcheck; echo "sctpcheck exit $?"
`
	var modules []string
	iproute := true
	for _, prog := range []string{"ip", "tc"} {
		f, err := HostBinary("/usr/sbin/" + prog)
		if err != nil {
			t.Logf("no host %s, not checking HostBinary: %v", prog, err)
			iproute = false
			break
		}
		for k, v := range f {
			files[k] = v
		}
	}
	if iproute {
		modules = append(modules, "sch_netem")
		script += `/usr/sbin/ip netns add a && /usr/sbin/ip netns exec a /usr/sbin/ip -o link show lo | grep -o 'lo: <[A-Z,]*>' | sed 's/^/netns a: /'
/usr/sbin/tc qdisc add dev lo root netem loss 100% && echo "netem on lo"
ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; echo "ping through netem loss: exit $?"
`
	}
	nft := false
	if f, err := HostBinary("nft"); err != nil {
		t.Logf("no host nft, not checking nftables: %v", err)
	} else {
		nft = true
		for k, v := range f {
			files[k] = v
		}
		modules = append(modules, "nf_tables")
		// The rule test/netns's BlockIngress installs, on lo of a fresh
		// namespace (unshare: busybox ip has no netns).
		script += `unshare -n sh -c '
ip link set lo up
ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; echo "ping before nft: exit $?"
printf "table netdev roamsec_drop_lo {\n\tchain in {\n\t\ttype filter hook ingress device \"lo\" priority -500; policy drop;\n\t}\n}\n" | nft -f - && echo "nft drop on lo"
ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; echo "ping through nft drop: exit $?"
nft delete table netdev roamsec_drop_lo && ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; echo "ping after nft delete: exit $?"
'
`
	}
	script += "exit 7\n"

	start := time.Now()
	res, err := Run(context.Background(), Options{Files: files, Script: script, Modules: modules, Timeout: 3 * time.Minute})
	t.Logf("boot %v, script %v, total %v", res.BootTime.Round(time.Millisecond), res.RunTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("output:\n%s", res.Output)
	if res.ExitCode != 7 {
		t.Errorf("exit code %d, want 7 (the script's exit 7)", res.ExitCode)
	}
	if !strings.HasPrefix(res.Output, "hello\n") {
		t.Errorf("output does not start with hello:\n%s", res.Output)
	}
	want := []string{"Linux version ", "sctp modules: 1\n", "sctpcheck: OK ", "sctpcheck exit 0\n"}
	if iproute {
		want = append(want, "netns a: lo: <LOOPBACK>\n", "netem on lo\n", "ping through netem loss: exit 1\n")
	}
	if nft {
		want = append(want, "ping before nft: exit 0\n", "nft drop on lo\n", "ping through nft drop: exit 1\n", "ping after nft delete: exit 0\n")
	}
	for _, w := range want {
		if !strings.Contains(res.Output, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if strings.Contains(res.Output, "insmod") {
		t.Errorf("a module failed to load:\n%s", res.Output)
	}

	// With the cache now filled, a timeout too short to boot is a harness
	// error, and comes back quickly.
	start = time.Now()
	_, err = Run(context.Background(), Options{Script: "true", Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("2 s timeout: err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("2 s timeout took %v", d)
	}
}
