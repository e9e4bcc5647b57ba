// Command mkdeb builds .deb packages from nfpm configuration files with
// nfpm (github.com/goreleaser/nfpm/v2, pinned in go.mod) used as a
// library: what `nfpm package --packager deb` does, with only the deb
// packager linked and nothing to install (packaging/README.md says why).
//
//	mkdeb [-o DIR] CONFIG.yaml...
//
// scripts/deb.sh runs it from the repository root (relative paths in the
// configurations are relative to the working directory) after building
// the binaries and rendering the generated files; see
// packaging/nfpm-gateway.yaml.
//
// Differences from the nfpm command:
//
//   - ${VAR} and $VAR come from the environment, and a variable that is
//     not set is an error instead of an empty string (NFPM_*PASSPHRASE,
//     which nfpm itself looks up, may stay unset);
//   - they are expanded in the maintainer scripts' paths too (nfpm
//     expands them only in the fields its documentation lists);
//   - SOURCE_DATE_EPOCH must be set: every timestamp in the package is
//     that time, so one tree gives the same bytes.
//
// It prints the paths of the packages it wrote, one a line.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
)

func main() {
	out := flag.String("o", "dist", "`directory` for the packages")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mkdeb [-o DIR] CONFIG.yaml...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if _, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb: SOURCE_DATE_EPOCH must be set to a Unix time (the packages' timestamps)")
		os.Exit(2)
	}
	for _, config := range flag.Args() {
		path, err := build(config, *out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mkdeb: %s: %v\n", config, err)
			os.Exit(1)
		}
		fmt.Println(path)
	}
}

// build packages one configuration into dir and returns the package's
// path.
func build(config, dir string) (string, error) {
	var unset []string
	lookup := func(name string) string {
		v, ok := os.LookupEnv(name)
		if !ok && !(strings.HasPrefix(name, "NFPM_") && strings.HasSuffix(name, "PASSPHRASE")) && !slices.Contains(unset, name) {
			unset = append(unset, name)
		}
		return v
	}
	cfg, err := nfpm.ParseFileWithEnvMapping(config, lookup)
	if err != nil {
		return "", err
	}
	for _, s := range []*string{
		&cfg.Scripts.PreInstall, &cfg.Scripts.PostInstall, &cfg.Scripts.PreRemove, &cfg.Scripts.PostRemove,
		&cfg.Deb.Scripts.Config, &cfg.Deb.Scripts.Templates, &cfg.Deb.Scripts.Rules,
	} {
		*s = os.Expand(*s, lookup)
	}
	if len(unset) > 0 {
		return "", fmt.Errorf("variables not set: %s", strings.Join(unset, ", "))
	}
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", err
	}
	packager := deb.Default
	path := filepath.Join(dir, packager.ConventionalFileName(info))

	// Write beside the target, then rename: no half-written package under
	// the final name.
	f, err := os.CreateTemp(dir, ".mkdeb-*.deb")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := packager.Package(info, f); err != nil {
		f.Close()
		return "", err
	}
	if err := errors.Join(f.Chmod(0o644), f.Close()); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
