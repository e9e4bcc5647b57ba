package daemon

import (
	"os"
	"runtime/debug"
)

// gatewayGCPercent is the gateway daemon's GOGC when the environment sets
// none. A gateway's heap is almost all long-lived state (an IKE SA, its
// Child SAs and their AEADs per road warrior), and Go lets the heap grow to
// (1 + GOGC/100) times what the last collection found live before it
// collects again; the pages of that headroom stay resident. At the default
// 100 the process's RSS is up to twice its live state (issue 11: the
// gateway's RSS per road warrior at 10,000 was about twice what the heap
// profile held per road warrior). 50 keeps the headroom at half the live
// state, for collections twice as frequent: each marks the live state, so
// the collector's CPU is about twice the default's. make bench-scale's
// gateway CPU per handshake up to 10,000, at load 6-19, did not tell them
// apart: 0.71-1.04 ms in 9 of 10 bring-ups at 50 (1.42 in one), 0.83-1.35
// ms in 8 at 100. GOGC (or GOMEMLIMIT with GOGC=off) in the environment
// overrides it.
const gatewayGCPercent = 50

// tuneGC applies gatewayGCPercent to a gateway whose environment names no
// GOGC.
func tuneGC(role string) {
	if role == "gateway" && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gatewayGCPercent)
	}
}
