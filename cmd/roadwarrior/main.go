// Command roadwarrior is the roamsec roadwarrior daemon; see -help.
package main

import (
	"os"

	"github.com/roamsec/roamsec/internal/daemon"
)

func main() { os.Exit(daemon.Main("roadwarrior", os.Args[1:], os.Stdout, os.Stderr)) }
