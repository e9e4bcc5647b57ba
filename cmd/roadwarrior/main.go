// Command roadwarrior is the roamsec roadwarrior daemon. The data path (TUN devices, ESP
// transports, YAML config) is being built; today this binary reports its
// version and refuses to start rather than pretend to run a tunnel.
package main

import (
	"fmt"
	"os"

	"github.com/roamsec/roamsec/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("%s roadwarrior %s\n", version.Product, version.Version)
		return
	}
	fmt.Fprintf(os.Stderr, "%s roadwarrior %s: the tunnel data path is not available in this build yet (only the ESP core is); see README\n", version.Product, version.Version)
	os.Exit(2)
}
