package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/daemon"
	"github.com/roamsec/roamsec/internal/enroll"
	etcdtest "github.com/roamsec/roamsec/test/etcd"
	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// Issue 13: gateways on different machines share one Host through etcd.
// Two gateway processes, each in its own bed (its own "machine", no
// shared file system use: each its own accounting log), reach one etcd
// in a namespace of its own over a veth each; two road warriors race with
// the same code: exactly one is admitted, and the two accounting logs
// together show one marked_used and one refusal as used.
func TestOneTimeKeyRacingGatewaysOnTwoMachinesShareEtcd(t *testing.T) {
	bedA, bedB := netns.New(t), netns.New(t)
	etcdNS := netns.NewNS(t)
	// etcd's side .1 and .5, the gateways' .2 and .6 (100.64.250.0/30
	// and /30 above it: shared address space, apart from the pools).
	epA := linkEtcd(t, etcdNS, bedA.GW, "rse-a", "100.64.250.1", "100.64.250.2")
	epB := linkEtcd(t, etcdNS, bedB.GW, "rse-b", "100.64.250.5", "100.64.250.6")
	srv := etcdtest.Start(t, etcdNS, epA, epB)
	urlA, urlB := srv.Endpoints[0], srv.Endpoints[1]

	dir := t.TempDir()
	out, errOut, code := runCLI(t, bedA.GW, "gateway", "enroll", "issue", "bob", "-count", "2", "-etcd", urlA, "-json")
	if code != 0 {
		t.Fatalf("enroll issue -etcd: exit %d: %s\n%s", code, errOut, srv.Log())
	}
	keys := parseIssued(t, out)
	dirA, dirB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	gwA := startEtcdGW(t, bedA.GW, dir, dirA, "gw-a", urlA)
	gwB := startEtcdGW(t, bedB.GW, dir, dirB, "gw-b", urlB)
	pa := connectOnce(t, bedA.RW, dir, keys[0].Code)
	pb := connectOnce(t, bedB.RW, dir, keys[0].Code)
	up := func(p *cliProc) bool { return strings.Contains(p.Stdout(), "connected — Ctrl-C to disconnect") }
	if !rig.WaitFor(40*time.Second, func() bool { return (up(pa) || pa.exited()) && (up(pb) || pb.exited()) }) {
		t.Fatalf("neither settled:\nA: %s\nB: %s\n%s\n%s", pa, pb, gwA.Log(), gwB.Log())
	}
	winners := 0
	for _, p := range []*cliProc{pa, pb} {
		switch {
		case up(p):
			winners++
		case p.wait(5*time.Second) == daemon.ExitOneTimeRefused:
		default:
			t.Errorf("exit %d, neither connected nor refused:\n%s", p.wait(5*time.Second), p)
		}
	}
	if winners != 1 {
		t.Fatalf("%d road warriors admitted, want exactly 1\nA: %s\nB: %s\n%s\n%s", winners, pa, pb, gwA.Log(), gwB.Log())
	}
	var used, refusedUsed int
	for _, d := range []string{dirA, dirB} {
		for _, e := range accounting(t, d) {
			switch {
			case e.Event == enroll.EvMarkedUsed && e.KeyID == keys[0].KeyID:
				used++
			case e.Event == enroll.EvRefused && e.Reason == enroll.ReasonUsed && e.KeyID == keys[0].KeyID:
				refusedUsed++
			}
		}
	}
	if used != 1 || refusedUsed != 1 {
		t.Fatalf("accounting: %d marked_used, %d refused as used; want 1 and 1", used, refusedUsed)
	}
	// The Host's view, from the other machine: the key is used, by the
	// gateway that won.
	// Revoked from the other machine: the unused key only.
	if out, errOut, code := runCLI(t, bedB.GW, "gateway", "enroll", "revoke", "bob", "-etcd", urlB); code != 0 || strings.Count(out, "revoked key") != 1 || !strings.Contains(out, keys[1].KeyID) {
		t.Fatalf("enroll revoke -etcd: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, bedB.GW, "gateway", "enroll", "list", "-etcd", urlB, "-json")
	if code != 0 || !strings.Contains(out, `"status": "used"`) || !strings.Contains(out, `"status": "revoked"`) || !strings.Contains(out, `"used_by": "gw-`) {
		t.Fatalf("enroll list -etcd: exit %d: %s%s", code, out, errOut)
	}
}

// linkEtcd joins etcd's namespace to a gateway's by a veth, etcd's end
// named ifname with address etcdAddr/30, the gateway's end rse-etcd with
// gwAddr/30; it returns etcd's address.
func linkEtcd(t *testing.T, etcdNS, gw *netns.NS, ifname, etcdAddr, gwAddr string) netip.Addr {
	t.Helper()
	for _, c := range [][]string{
		{"ip", "-n", etcdNS.Name, "link", "add", ifname, "type", "veth", "peer", "name", "rse-etcd", "netns", gw.Name},
		{"ip", "-n", etcdNS.Name, "addr", "add", etcdAddr + "/30", "dev", ifname},
		{"ip", "-n", gw.Name, "addr", "add", gwAddr + "/30", "dev", "rse-etcd"},
		{"ip", "-n", etcdNS.Name, "link", "set", ifname, "up"},
		{"ip", "-n", gw.Name, "link", "set", "rse-etcd", "up"},
	} {
		if out, err := execOut(c...); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return netip.MustParseAddr(etcdAddr)
}

// startEtcdGW is startOneTimeGW with the Host in etcd at url and the
// accounting log in gwDir.
func startEtcdGW(t *testing.T, ns *netns.NS, dir, gwDir, name, url string) *rig.Proc {
	t.Helper()
	cfg := fmt.Sprintf(oneTimeGW, dir, name, gwDir)
	cfg = strings.Replace(cfg, "database: "+gwDir+"/keys.json", "etcd: {endpoints: ["+url+"]}", 1)
	if !strings.Contains(cfg, "etcd:") {
		t.Fatal("the gateway template has no database line to replace")
	}
	if err := os.MkdirAll(gwDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path, err := rig.WriteFile(gwDir, name+".yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := rig.Start(ns, filepath.Join(bin, "gateway"), 15*time.Second, "-config", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(5 * time.Second) })
	return gw
}

func parseIssued(t *testing.T, out string) []issued {
	t.Helper()
	var keys []issued
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) == 0 {
		t.Fatalf("enroll issue -json: %v\n%s", err, out)
	}
	return keys
}

func execOut(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}
