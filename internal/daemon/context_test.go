package daemon

import (
	"errors"
	"testing"
)

// Contexts only ever leave sealed: without ha.cluster_key, get and put
// refuse, saying what to configure.
func TestContextNeedsTheClusterKey(t *testing.T) {
	r := &Running{setup: &Setup{Role: "gateway"}}
	if _, err := r.contextGet("all"); !errors.Is(err, errNoClusterKey) {
		t.Fatalf("context get without a cluster key: %v", err)
	}
	if _, err := r.contextPut(cmdContextPut+" 0", []byte("x")); !errors.Is(err, errNoClusterKey) {
		t.Fatalf("context put without a cluster key: %v", err)
	}
	if _, err := r.contextPut(cmdContextPut+" lots", []byte("x")); err == nil {
		t.Fatal("context put took a jump that is not a number")
	}
}
