package freeradius

import (
	"net/netip"
	"os"
	"testing"

	"github.com/roamsec/roamsec/test/netns"
)

// TestStartStop: the server starts on its own directory in a namespace of
// the bed and stops, leaving nothing behind.
func TestStartStop(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	bed := netns.New(t)
	s, err := Start(bed.Srv, Config{Listen: netns.Srv4, Client: netip.PrefixFrom(netns.GWServer4, 32), Secret: "testing123-secret",
		Users: []User{{Name: "carol", Password: "carol-password", Reply: []string{"Framed-IP-Address = 100.64.0.77", `Class = "gold"`}}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there after Stop: %v", dir, err)
	}
}
