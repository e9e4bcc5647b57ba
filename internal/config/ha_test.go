package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/internal/hactx"
)

const haGateway = "role: gateway\ntun: {name: rs0}\nha:\n"

func haFiles(t *testing.T) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cluster.key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "short.key"), []byte("abcd\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "open.key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o644)
	return dir
}

// TestHASectionDefaults: the defaults of the brief (50 ms heartbeats,
// dead after 3), the default port, the key loaded and wiped by Build.
func TestHASectionDefaults(t *testing.T) {
	dir := haFiles(t)
	y := haGateway + "  listen: 192.0.2.11:4600\n  peer: 192.0.2.12:4600\n  cluster_key: cluster.key\n" +
		"  service_addresses: [{prefix: 192.0.2.100/24, interface: lan0}, {prefix: \"2001:db8:1::100/64\", interface: lan0}]\n"
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	h := c.HA
	if !h.Pair || h.Listen.String() != "192.0.2.11:4600" || h.Peer.String() != "192.0.2.12:4600" || h.Heartbeat != 50*time.Millisecond ||
		h.DeadAfter != 150*time.Millisecond || h.Priority != DefaultHAPriority || len(h.Services) != 2 || len(h.Key) != 32 || h.Key[0] != 0xab ||
		h.CheckpointPackets != DefaultCheckpointPackets || h.CheckpointInterval != time.Second {
		t.Fatalf("ha section %+v", h)
	}
	b, err := c.Build()
	if err != nil {
		t.Fatal(err)
	}
	if b.HA == nil || b.HA.Key[0] != 0xab || c.HA.Key[0] != 0 {
		t.Fatal("Build must hand the key on and wipe the Config's copy")
	}
}

// TestHAClusterKeyOnly: a section with the cluster key alone is valid
// (context get/put between gateways) and is no pair.
func TestHAClusterKeyOnly(t *testing.T) {
	dir := haFiles(t)
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(haGateway+"  cluster_key: cluster.key\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Wipe()
	if c.HA == nil || c.HA.Pair || len(c.HA.Key) != 32 || c.HA.KeyFile != filepath.Join(dir, "cluster.key") {
		t.Fatalf("ha section %+v", c.HA)
	}
}

// TestHAConfigErrors: file:line: field: reason for each rule of the section.
func TestHAConfigErrors(t *testing.T) {
	dir := haFiles(t)
	ok := "  listen: 192.0.2.11\n  peer: 192.0.2.12\n  cluster_key: cluster.key\n  service_addresses: [{prefix: 192.0.2.100/24, interface: lan0}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"RoadWarriorHasNoStandby", strings.Replace(haGateway, "gateway", "roadwarrior", 1) + ok, ": ha: only a gateway has a standby"},
		{"PeerIsNotListen", haGateway + strings.Replace(ok, "192.0.2.12", "192.0.2.11", 1), "ha.peer: is the same as ha.listen"},
		{"PeerFamily", haGateway + strings.Replace(ok, "192.0.2.12", "2001:db8::2", 1), "of different families"},
		{"BadPeer", haGateway + strings.Replace(ok, "192.0.2.12", "gw-b", 1), "gw.yaml:5: ha.peer: want an address"},
		{"KeyMissing", haGateway + strings.Replace(ok, "  cluster_key: cluster.key\n", "", 1), "ha.cluster_key: missing"},
		{"KeyShort", haGateway + strings.Replace(ok, "cluster.key", "short.key", 1), "gw.yaml:6: ha.cluster_key: bad cluster key file: want 64 hex digits"},
		{"KeyReadableByOthers", haGateway + strings.Replace(ok, "cluster.key", "open.key", 1), "gw.yaml:6: ha.cluster_key: bad cluster key file"},
		{"PairSettingWithoutPair", haGateway + "  cluster_key: cluster.key\n  heartbeat: 50ms\n", "gw.yaml:5: ha.heartbeat: is a pair's setting"},
		{"KeyAbsent", haGateway + strings.Replace(ok, "cluster.key", "none.key", 1), "no such file"},
		{"NoServiceAddresses", haGateway + strings.Replace(ok, "  service_addresses: [{prefix: 192.0.2.100/24, interface: lan0}]\n", "", 1), "ha.service_addresses: missing"},
		{"ServiceNeedsInterface", haGateway + strings.Replace(ok, ", interface: lan0", "", 1), "ha.service_addresses[0].interface: missing"},
		{"ServiceNotMulticast", haGateway + strings.Replace(ok, "192.0.2.100/24", "224.0.0.5/4", 1), "cannot be a service address"},
		{"HeartbeatTooShort", haGateway + ok + "  heartbeat: 1ms\n", "ha.heartbeat: 1ms is too short"},
		{"DeadAfterBelowTwoHeartbeats", haGateway + ok + "  heartbeat: 50ms\n  dead_after: 60ms\n", "ha.dead_after: 60ms is below two heartbeats"},
		{"CheckpointPacketsBounded", haGateway + ok + "  checkpoint_packets: 3\n", "ha.checkpoint_packets"},
		{"CheckpointIntervalAtLeastAHeartbeat", haGateway + ok + "  checkpoint_interval: 10ms\n", "ha.checkpoint_interval: 10ms"},
		{"UnknownField", haGateway + ok + "  prio: 3\n", "ha.prio: unknown field"},
		{"KeyReadableByOthers", haGateway + strings.Replace(ok, "cluster.key", "open.key", 1), "chmod 600"},
		{"OnePortForBoth", haGateway + strings.Replace(ok, "peer: 192.0.2.12", "peer: 192.0.2.12:4600", 1), "port 4600 differs from listen's 4501"},
		{"PairFieldWithoutAPair", haGateway + "  cluster_key: cluster.key\n  heartbeat: 50ms\n", "ha.heartbeat: is a pair's setting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.Repeat("ab", 8)) {
				t.Fatal("the key leaked into the message")
			}
		})
	}
}

// TestHACheckHost: the sync address and the service interfaces must be
// this host's.
func TestHACheckHost(t *testing.T) {
	dir := haFiles(t)
	y := haGateway + "  listen: 192.0.2.11\n  peer: 192.0.2.12\n  cluster_key: cluster.key\n  service_addresses: [{prefix: 192.0.2.100/24, interface: lan0}]\n"
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Wipe()
	err = c.CheckHost(StaticHost(nil, []string{"eth0"}))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:4: ha.listen: 192.0.2.11 is not an address") || !strings.Contains(err.Error(), "no network interface is named \"lan0\"") {
		t.Fatalf("err %v", err)
	}
	// A service address in transport.listen is the active's only: the
	// standby starts without it.
	y2 := strings.Replace(y, "ha:\n", "transport: {listen: [192.0.2.100]}\nha:\n", 1)
	c2, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(y2))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Wipe()
	if err := c2.CheckHost(StaticHost([]netip.Addr{netip.MustParseAddr("192.0.2.11")}, []string{"lan0"})); err != nil {
		t.Fatalf("a standby without the service address it listens on: %v", err)
	}
}

// TestHAClusterKeyAlone: cluster_key alone is the context get/put
// section (seed 004), no pair; the key file is hactx's (gateway ha keygen).
func TestHAClusterKeyAlone(t *testing.T) {
	dir := t.TempDir()
	if err := hactx.Generate(filepath.Join(dir, "gen.key")); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte("role: gateway\ntun: {name: rs0}\nha: {cluster_key: gen.key}\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Wipe()
	if c.HA == nil || c.HA.Pair || c.HA.KeyFile != filepath.Join(dir, "gen.key") || len(c.HA.Key) != hactx.KeyLen {
		t.Fatalf("ha section %+v", c.HA)
	}
}
