package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/rig"
)

// IKEv2 between the roamsec daemons, RFC 3554 mode: the road warrior offers
// both uplink addresses as TSi; the gateway authorizes them against the
// identity's pools (RFC 3554 §4) and one pair of Child SAs (plus the
// host-to-host pair for path monitoring) covers both.

const ikeRW = `role: roadwarrior
log: {level: debug}
control_socket: %[1]s/rw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 203.0.113.0/24, src: 192.0.2.2}
    - {dst: 192.0.2.1/32, src: 192.0.2.2}
    - {dst: 198.51.100.1/32, src: 198.51.100.2}
transport:
  listen: [192.0.2.2, 198.51.100.2]
ike:
  id: rw1@roamsec.example
  gateway: 192.0.2.1
  gateway_id: gw.roamsec.example
  local_ts: [%[2]s]
  remote_ts: [203.0.113.0/24]
  psk_file: psk
  dpd: 2s
  child_lifetime: %[3]s
mobility:
  paths:
    - {name: primary, local: 192.0.2.2, peer: 192.0.2.1, link: rsb-pri}
    - {name: secondary, local: 198.51.100.2, peer: 198.51.100.1, link: rsb-sec}
  switch_back: 1s
  detector: probe
`

const ikeGW = `role: gateway
log: {level: debug}
control_socket: %[1]s/gw.sock
tun:
  name: roamsec0
  table: 220
  bypass_rule: {mark: 0x5253}
  routes:
    - {dst: 192.0.2.2/32, src: 192.0.2.1}
    - {dst: 198.51.100.2/32, src: 198.51.100.1}
transport:
  listen: [192.0.2.1, 198.51.100.1]
ike:
  id: gw.roamsec.example
  local_ts: [203.0.113.0/24]
  dpd: 2s
  peers:
    - {id: rw1@roamsec.example, psk_file: psk, addresses: [192.0.2.0/24, 198.51.100.0/24]}
    - {id: rw2@roamsec.example, psk_file: psk, addresses: [198.51.100.0/24]}
mobility:
  detector: probe
`

const testPSK = "roamsec-e2e-psk-not-a-secret-0123456789"

func ikeConfigs(t *testing.T, localTS, childLifetime string) (gwCfg, rwCfg string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "psk"), []byte(testPSK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if gwCfg, err = rig.WriteFile(dir, "gw.yaml", fmt.Sprintf(ikeGW, dir)); err != nil {
		t.Fatal(err)
	}
	if rwCfg, err = rig.WriteFile(dir, "rw.yaml", fmt.Sprintf(ikeRW, dir, localTS, childLifetime)); err != nil {
		t.Fatal(err)
	}
	return gwCfg, rwCfg
}

var childRE = regexp.MustCompile(`Child SA (?:installed|rekeyed).*child=(\S+).*spi_in=(0x[0-9a-f]+) spi_out=(0x[0-9a-f]+)`)

// TestIKEBetweenDaemonsRFC3554 negotiates the SAs, carries ping and TCP,
// survives a failover and a Child SA rekey under traffic.
func TestIKEBetweenDaemonsRFC3554(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "8s")
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Count(rw.Log(), "Child SA installed") >= 2 }) {
		t.Fatalf("no Child SAs\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	if out, err := bed.RW.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", netns.Srv4.String()); err != nil {
		t.Fatalf("ping through the IKE-negotiated tunnel: %v\n%s\nrw:\n%s\ngw:\n%s", err, out, rw.Log(), gw.Log())
	}
	// One SA pair covers both addresses: the gateway's network Child SA
	// has both in its selector.
	if !regexp.MustCompile(`Child SA installed.*child=\S+/net.*remote_ts=192.0.2.2/32,198.51.100.2/32`).MatchString(gw.Log()) {
		t.Errorf("gateway's Child SA does not cover both road-warrior addresses:\n%s", gw.Log())
	}
	if _, err := rig.TCPTransfer(bed, 4<<20); err != nil {
		t.Fatal(err)
	}
	// A Child SA rekey under traffic (child_lifetime 8s, jittered): the
	// stream keeps flowing.
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	s, err := rig.StartStream(bed, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !rig.WaitFor(20*time.Second, func() bool { return strings.Contains(rw.Log()+gw.Log(), "Child SA rekeyed") }) {
		t.Fatalf("no rekey within 20 s\nrw:\n%s", rw.Log())
	}
	time.Sleep(time.Second)
	s.Close()
	sent, got := s.Counts()
	if sent-got > 3 {
		t.Errorf("rekey under traffic: %d of %d datagrams lost", sent-got, sent)
	}
	t.Logf("stream across the rekey: %d sent, %d answered", sent, got)
}

// TestIKEUnauthorizedAddressRefused: peer B (rw2, authority for
// 198.51.100.0/24 only), properly authenticated, claims 192.0.2.2, which
// belongs to peer A (rw1): RFC 3554 §4, TS_UNACCEPTABLE, no SA, so none of
// A's traffic can be sent to B; the daemons say why.
func TestIKEUnauthorizedAddressRefused(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	data, _ := os.ReadFile(rwCfg)
	os.WriteFile(rwCfg, []byte(strings.Replace(string(data), "id: rw1@", "id: rw2@", 1)), 0o600)
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Contains(rw.Log(), "TS_UNACCEPTABLE") }) {
		t.Fatalf("no TS_UNACCEPTABLE\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	if !strings.Contains(gw.Log(), "rw2@roamsec.example claims 192.0.2.2/32, which it has no authority for (RFC 3554 §4)") ||
		strings.Contains(gw.Log(), "Child SA installed") {
		t.Fatalf("gateway log:\n%s", gw.Log())
	}
}

// TestIKEFailoverKeepsTheNegotiatedSA: the IKE-negotiated SAs survive both
// kinds of path death and the return to the primary with the same SPIs,
// no new Child SA and no new IKE_SA_INIT: ESP from the secondary address
// is accepted by the same inbound SA (its pool holds both addresses).
func TestIKEFailoverKeepsTheNegotiatedSA(t *testing.T) {
	bed := netns.New(t)
	gwCfg, rwCfg := ikeConfigs(t, "192.0.2.2, 198.51.100.2", "1h")
	gw, rw := up(t, bed, gwCfg, rwCfg)
	if !rig.WaitFor(15*time.Second, func() bool { return strings.Count(gw.Log(), "Child SA installed") >= 2 }) {
		t.Fatalf("no Child SAs\nrw:\n%s\ngw:\n%s", rw.Log(), gw.Log())
	}
	before := childRE.FindAllStringSubmatch(gw.Log(), -1)
	if err := rig.EchoServer(bed); err != nil {
		t.Fatal(err)
	}
	s, err := rig.StartStream(bed, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range rig.Deaths(bed) {
		over, back, err := rig.Trial(bed, s, d, 500*time.Millisecond, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v\nrw:\n%s", d.Name, err, rw.Log())
		}
		t.Logf("%s: traffic on the secondary after %v, back on the primary %v after the restore", d.Name, over.Round(time.Millisecond), back.Round(time.Millisecond))
	}
	after := childRE.FindAllStringSubmatch(gw.Log(), -1)
	if len(after) != len(before) || strings.Count(gw.Log(), "IKE SA established") != 1 {
		t.Fatalf("the failover renegotiated: Child SAs before %v, after %v", before, after)
	}
	if !strings.Contains(rw.Log(), "path switch") {
		t.Fatalf("no path switch logged:\n%s", rw.Log())
	}
}
