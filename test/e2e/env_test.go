package e2e

import (
	"os"
	"strconv"
)

// envInt is the environment variable name as a count ≥ 0, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// envTrials is the environment variable name as a number of trials > 0
// (a bench-* target's measuring mode), or def.
func envTrials(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
