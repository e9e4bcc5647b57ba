// Command gateway is the roamsec gateway daemon; see -help.
package main

import (
	"os"

	"github.com/roamsec/roamsec/internal/daemon"
)

func main() { os.Exit(daemon.Main("gateway", os.Args[1:], os.Stdout, os.Stderr)) }
