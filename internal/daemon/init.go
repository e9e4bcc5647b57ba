package daemon

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/roamsec/roamsec/internal/config"
)

// The files init writes. They are generated, not shipped: dpkg never asks
// about them on upgrade, and purge removes them (packaging/debian/postrm).
// The gateway's shipped /etc/roamsec/gateway.yaml (packaging/conffiles)
// names PSKFile; the road warrior's configuration names its gateway, which
// only init knows, so init writes it (RoadWarriorConfig).
const (
	// PSKFile holds the pre-shared key both ends share (text, mode 0600).
	PSKFile = "roadwarrior.psk"
	// The identities of the shipped configuration (PSK authentication:
	// labels the two ends agree on, RFC 7296 §2.15).
	InitGatewayID     = "roamsec-gateway"
	InitRoadWarriorID = "roadwarrior@roamsec"
	// InitGatewayInner is the gateway's inner address in the shipped
	// configuration; the road warriors lease theirs from 100.64.0.128/25.
	InitGatewayInner = "100.64.0.1"
)

// roadWarriorTemplate is the configuration `roadwarrior init` writes:
// virtual-address mode (RFC 7296 §3.15 CP), so it works wherever the laptop
// is, against the gateway's shipped configuration.
const roadWarriorTemplate = `# Written by roamsec-roadwarrior init: IKEv2 with the pre-shared key in
# roadwarrior.psk, a virtual address from the gateway (mode: virtual).
# Not a dpkg conffile: edit it freely (see
# /usr/share/doc/roamsec-roadwarrior/examples/roadwarrior-ike.yaml for
# every field, RFC 3554 mode and mobility between uplinks).
role: roadwarrior
log: { level: info, format: text }
control_socket: /run/roamsec/roadwarrior.sock
tun:
  name: roamsec0
  routes:
    - { dst: %[3]s/32 }            # the gateway's inner address; add the networks behind it
ike:
  id: %[4]s
  gateway: %[1]s
  gateway_id: %[2]s
  mode: virtual
  remote_ts: [%[3]s/32]          # what we reach through the tunnel: the gateway's local_ts
  psk_file: ` + PSKFile + `
`

// RoadWarriorConfig is the road warrior's configuration for a gateway at
// host (a name or an address).
func RoadWarriorConfig(host string) string {
	return fmt.Sprintf(roadWarriorTemplate, host, InitGatewayID, InitGatewayInner, InitRoadWarriorID)
}

// initCmd is `gateway init` and `roadwarrior init`.
func initCmd(role string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(role+" init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "/etc/roamsec", "where the files go")
	force := fs.Bool("force", false, "replace files that are already there (a new pre-shared key: the other side needs it again)")
	var pskFrom, gw, addr *string
	if role == string(config.RoleRoadWarrior) {
		gw = fs.String("gateway", "", "the gateway's name or address (required)")
		pskFrom = fs.String("psk-file", "", "read the pre-shared key the gateway's init printed from this file (- for standard input); none: make a new one")
	} else {
		addr = fs.String("address", "", "this gateway's public name or address, for the road warrior's command line")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s init [flags]\n\nWrites a fresh pre-shared key (mode 0600)%s into -dir and prints what the other side needs.\n\n", role, map[bool]string{true: " and roadwarrior.yaml", false: ""}[gw != nil])
		fs.PrintDefaults()
	}
	if _, err := parseArgs(fs, args); err != nil {
		return usageCode(err)
	}
	if gw != nil && *gw == "" {
		fmt.Fprintf(stderr, "%s init: -gateway is required: the gateway's name or address\n", role)
		return ExitUsage
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return initFailed(role, err, stderr)
	}
	var psk []byte
	defer func() { clear(psk) }()
	var err error
	if pskFrom != nil && *pskFrom != "" {
		psk, err = readPSK(*pskFrom, stdin)
	} else {
		psk, err = newPSK()
	}
	if err != nil {
		return initFailed(role, err, stderr)
	}
	pskPath := filepath.Join(*dir, PSKFile)
	kept, err := writeSecret(pskPath, psk, *force)
	if err != nil {
		return initFailed(role, err, stderr)
	}
	if kept {
		clear(psk)
		if psk, err = readPSK(pskPath, nil); err != nil {
			return initFailed(role, err, stderr)
		}
		fmt.Fprintf(stdout, "%s exists: kept (-force makes a new one)\n", pskPath)
	} else {
		fmt.Fprintf(stdout, "wrote %s (mode 0600)\n", pskPath)
	}
	if role == string(config.RoleRoadWarrior) {
		return initRoadWarrior(*dir, *gw, *force, pskFrom != nil && *pskFrom != "", psk, stdout, stderr)
	}
	host := *addr
	if host == "" {
		host = "GATEWAY-ADDRESS"
	}
	fmt.Fprintf(stdout, `The shipped configuration (/etc/roamsec/gateway.yaml) names it (%s beside it):
  systemctl enable --now roamsec-gateway
On the road warrior, as root (the pre-shared key is the line between the EOFs;
pass it only over a channel you trust):
  roamsec-roadwarrior init -gateway %s -psk-file - <<'EOF'
%s
EOF
`, PSKFile, host, psk)
	return ExitOK
}

func initRoadWarrior(dir, gw string, force, imported bool, psk []byte, stdout, stderr io.Writer) int {
	cfgPath := filepath.Join(dir, "roadwarrior.yaml")
	kept, err := writeFileExcl(cfgPath, []byte(RoadWarriorConfig(gw)), 0o644, force)
	if err != nil {
		return initFailed("roadwarrior", err, stderr)
	}
	if kept {
		fmt.Fprintf(stdout, "%s exists: kept (-force replaces it)\n", cfgPath)
	} else {
		fmt.Fprintf(stdout, "wrote %s (gateway %s)\n", cfgPath, gw)
	}
	if !imported {
		fmt.Fprintf(stdout, "This is a new pre-shared key: put it on the gateway, as root, in %s (mode 0600):\n  umask 077; cat > /etc/roamsec/%s <<'EOF'\n%s\nEOF\n", PSKFile, PSKFile, psk)
	}
	fmt.Fprintf(stdout, "Then: roamsec-roadwarrior connect (or systemctl enable --now roamsec-roadwarrior)\n")
	return ExitOK
}

func initFailed(role string, err error, stderr io.Writer) int {
	fmt.Fprintf(stderr, "%s init: %v\n", role, err)
	if errors.Is(err, fs.ErrPermission) {
		return ExitPermission
	}
	return ExitRuntime
}

// newPSK is 32 random bytes in base64: 256 bits, as text (the PSK file is
// the secret as text, as strongSwan's secrets take it).
func newPSK() ([]byte, error) {
	raw := make([]byte, 32)
	defer clear(raw)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(out, raw)
	return out, nil
}

// readPSK reads a pre-shared key: one line of at least 16 bytes.
func readPSK(path string, stdin io.Reader) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	buf := make([]byte, 4097)
	defer clear(buf)
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if n > 4096 {
		return nil, fmt.Errorf("pre-shared key in %s: too large", path)
	}
	s := bytes.TrimSpace(buf[:n])
	if len(s) < 16 || bytes.ContainsAny(s, "\r\n") {
		name := path
		if path == "-" {
			name = "standard input"
		}
		return nil, fmt.Errorf("pre-shared key in %s: want one line of at least 16 bytes (what the gateway's init printed)", name)
	}
	return append([]byte(nil), s...), nil
}

// writeSecret writes a secret file with mode 0600; an existing file is
// kept (kept true) unless force.
func writeSecret(path string, data []byte, force bool) (kept bool, err error) {
	line := append(append([]byte(nil), data...), '\n')
	defer clear(line)
	return writeFileExcl(path, line, 0o600, force)
}

// writeFileExcl creates path (through a temporary file and a rename when
// it replaces one, so a reader never sees half of it).
func writeFileExcl(path string, data []byte, mode os.FileMode, force bool) (kept bool, err error) {
	if _, err := os.Lstat(path); err == nil && !force {
		return true, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	return false, os.Rename(tmp.Name(), path)
}

// firstRunHint says how to make the configuration that is not there.
func firstRunHint(role string) string {
	if role == string(config.RoleRoadWarrior) {
		return "run `roamsec-roadwarrior init -gateway HOST` to write it (or copy one of /usr/share/doc/roamsec-roadwarrior/examples/)"
	}
	return "reinstall roamsec-gateway, or copy one of /usr/share/doc/roamsec-gateway/examples/"
}
