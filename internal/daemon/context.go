package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/control"
	"github.com/roamsec/roamsec/internal/hactx"
)

// Seed 004's get and put: a gateway's IKE SAs and their Child SAs, sealed
// with the cluster key (internal/hactx), written by `context get` on one
// gateway and carried on by `context put` on another with the same
// service addresses, with the same SPIs and no new negotiation.

const (
	cmdContextGet = "context get" // + "all" or a name
	cmdContextPut = "context put" // + seq jump, then the body's length
	// contextPurpose binds a sealed file to this use (hactx.Key.Seal).
	contextPurpose = "context file"
	// maxContextBody bounds what context put reads: ~3 KiB per IKE SA.
	maxContextBody = 256 << 20
	// DefaultSeqJump is how far context put moves every outbound ESP
	// sequence number past the exported one: what the old gateway may
	// have sent between get and its death (2^24 packets: minutes of a
	// saturated gigabit link on one SA; 0.4 % of a 32-bit space).
	DefaultSeqJump = 1 << 24
)

// ContextReply is context get's answer.
type ContextReply struct {
	SAs    int    `json:"sas"`
	Sealed []byte `json:"sealed"`
}

// ContextPutReply is context put's answer.
type ContextPutReply struct {
	Imported int      `json:"imported"`
	Refused  []string `json:"refused,omitempty"`
}

var errNoClusterKey = errors.New("no ha.cluster_key in the configuration: contexts are only ever moved sealed (gateway ha keygen FILE makes a key)")

// contextGet exports the IKE SAs asked for ("all", or an IKE SA's name,
// peer identity or SPIi in hex) and seals them.
func (r *Running) contextGet(what string) (any, error) {
	s := r.setup
	if s.ClusterKey == "" {
		return nil, errNoClusterKey
	}
	if s.ike == nil || s.Role != string(config.RoleGateway) {
		return nil, errors.New("context get: a gateway with ike only")
	}
	recs, err := exportRetry(s.ike.ep, what)
	wipe := func() {
		for _, b := range recs {
			clear(b)
		}
	}
	if err != nil {
		wipe()
		return nil, err
	}
	key, err := hactx.Load(s.ClusterKey)
	if err != nil {
		wipe()
		return nil, err
	}
	defer key.Wipe()
	plain := hactx.Join(recs)
	wipe()
	defer clear(plain)
	sealed, err := key.Seal(contextPurpose, plain)
	if err != nil {
		return nil, err
	}
	s.Log.Info("context get: IKE SAs exported, sealed", "what", what, "ike_sas", len(recs), "bytes", len(sealed))
	return ContextReply{SAs: len(recs), Sealed: sealed}, nil
}

// exportRetry exports, waiting up to a second for Child SA exchanges in
// flight (ike.ErrBusy) to finish.
func exportRetry(ep *ike.Endpoint, what string) ([][]byte, error) {
	deadline := time.Now().Add(time.Second)
	for {
		recs, err := exportOnce(ep, what)
		if !errors.Is(err, ike.ErrBusy) || time.Now().After(deadline) {
			return recs, err
		}
		for _, b := range recs {
			clear(b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func exportOnce(ep *ike.Endpoint, what string) ([][]byte, error) {
	if what == "all" {
		all, err := ep.ExportAll()
		var out [][]byte
		for _, x := range all {
			out = append(out, x.Data)
		}
		return out, err
	}
	for _, sa := range ep.SAs() {
		if sa.Name != what && sa.PeerID != what && sa.SPIi != what {
			continue
		}
		spi, err := strconv.ParseUint(sa.SPIi, 16, 64)
		if err != nil {
			return nil, err
		}
		b, err := ep.ExportSA(spi)
		if err != nil {
			return nil, err
		}
		return [][]byte{b}, nil
	}
	return nil, fmt.Errorf("no established IKE SA named %q (an IKE SA's name, peer identity or SPIi: see gateway status)", what)
}

// contextPut opens a sealed context file and imports its IKE SAs.
func (r *Running) contextPut(cmd string, body []byte) (any, error) {
	s := r.setup
	jump, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(cmd, cmdContextPut)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("context put: want the sequence number jump, got %q", cmd)
	}
	if s.ClusterKey == "" {
		return nil, errNoClusterKey
	}
	if s.ike == nil || s.Role != string(config.RoleGateway) {
		return nil, errors.New("context put: a gateway with ike only")
	}
	key, err := hactx.Load(s.ClusterKey)
	if err != nil {
		return nil, err
	}
	defer key.Wipe()
	plain, err := key.Open(contextPurpose, body)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	recs, err := hactx.Split(plain)
	if err != nil {
		return nil, err
	}
	var out ContextPutReply
	for i, rec := range recs {
		if err := s.ike.ep.ImportSA(rec, jump); err != nil {
			out.Refused = append(out.Refused, fmt.Sprintf("IKE SA %d of %d: %v", i+1, len(recs), err))
			continue
		}
		out.Imported++
	}
	s.Log.Info("context put: IKE SAs imported", "imported", out.Imported, "refused", len(out.Refused), "seq_jump", jump)
	for _, msg := range out.Refused {
		s.Log.Warn("context put: refused", "why", msg)
	}
	return out, nil
}

// contextCmd is `gateway context get [NAME|-all] > FILE` and `gateway
// context put FILE`.
func contextCmd(role string, args []string, stdout, stderr io.Writer) int {
	if role != string(config.RoleGateway) {
		fmt.Fprintf(stderr, "%s: context is a gateway command\n", role)
		return ExitUsage
	}
	if len(args) == 0 || args[0] != "get" && args[0] != "put" {
		fmt.Fprintf(stderr, "gateway context: want \"context get [NAME|-all]\" or \"context put FILE\"\n")
		return ExitUsage
	}
	fs, cfgPath, _ := cmdFlags(role, "context "+args[0], stderr, false)
	all := fs.Bool("all", false, "every established IKE SA (get)")
	jump := fs.Uint64("seq-jump", DefaultSeqJump, "added to every outbound ESP sequence number (put): at least what the old gateway sent after get")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return usageCode(err)
	}
	sock, code := controlSocket(role, "context", *cfgPath, stderr)
	if code != ExitOK {
		return code
	}
	if args[0] == "get" {
		return contextGetCmd(sock, pos, *all, stdout, stderr)
	}
	return contextPutCmd(sock, pos, *jump, stdout, stderr)
}

func contextGetCmd(sock string, pos []string, all bool, stdout, stderr io.Writer) int {
	if all == (len(pos) == 1) || len(pos) > 1 {
		fmt.Fprintf(stderr, "gateway context get: give one IKE SA (name, peer identity or SPIi) or -all\n")
		return ExitUsage
	}
	what := "all"
	if !all {
		what = pos[0]
	}
	var rep ContextReply
	if err := control.Query(sock, cmdContextGet+" "+what, &rep); err != nil {
		return runtimeFail(stderr, "context get", err)
	}
	if _, err := stdout.Write(rep.Sealed); err != nil {
		fmt.Fprintf(stderr, "gateway context get: %v\n", err)
		return ExitRuntime
	}
	fmt.Fprintf(stderr, "gateway context get: %d IKE SAs, %d bytes sealed with the cluster key\n", rep.SAs, len(rep.Sealed))
	return ExitOK
}

func contextPutCmd(sock string, pos []string, jump uint64, stdout, stderr io.Writer) int {
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "gateway context put: give the FILE context get wrote (- for standard input)\n")
		return ExitUsage
	}
	var body []byte
	var err error
	if pos[0] == "-" {
		body, err = io.ReadAll(io.LimitReader(os.Stdin, maxContextBody+1))
	} else {
		body, err = os.ReadFile(pos[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway context put: %v\n", err)
		return ExitUsage
	}
	var rep ContextPutReply
	if err := control.QueryBody(sock, fmt.Sprintf("%s %d", cmdContextPut, jump), body, &rep); err != nil {
		return runtimeFail(stderr, "context put", err)
	}
	fmt.Fprintf(stdout, "imported %d IKE SAs\n", rep.Imported)
	for _, r := range rep.Refused {
		fmt.Fprintf(stderr, "refused: %s\n", r)
	}
	if len(rep.Refused) > 0 {
		return ExitRuntime
	}
	return ExitOK
}

func runtimeFail(stderr io.Writer, what string, err error) int {
	fmt.Fprintf(stderr, "gateway %s: %v\n", what, err)
	if errors.Is(err, os.ErrPermission) {
		return ExitPermission
	}
	return ExitRuntime
}

// haKeygenCmd is `gateway ha keygen FILE`: a new cluster key, mode 0600.
func haKeygenCmd(role string, args []string, stdout, stderr io.Writer) int {
	if role != string(config.RoleGateway) {
		fmt.Fprintf(stderr, "%s: ha is a gateway command\n", role)
		return ExitUsage
	}
	fs := flag.NewFlagSet("gateway ha keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageCode(err)
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "gateway ha keygen: give the FILE to write (it must not exist)\n")
		return ExitUsage
	}
	if err := hactx.Generate(pos[0]); err != nil {
		fmt.Fprintf(stderr, "gateway ha keygen: %v\n", err)
		return ExitRuntime
	}
	fmt.Fprintf(stdout, "wrote a cluster key to %s (mode 0600): copy it to every gateway of the cluster and name it in ha.cluster_key\n", pos[0])
	return ExitOK
}
