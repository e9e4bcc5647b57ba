package daemon

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/roamsec/roamsec/internal/config"
	"github.com/roamsec/roamsec/internal/enroll"
)

const enrollUsage = `Usage: gateway enroll issue USER [-count N] [-objective LEVEL] [-expires D] [-o FILE] [-qr] [-json]
       gateway enroll revoke KEYID|USER
       gateway enroll list [-json]
  (each also takes -db FILE or -etcd URL,... and -accounting FILE, else
  ike.one_time of -config FILE)

One-time key pairs (seed 002's Host): issue makes N Ed25519 key pairs for
USER, stores their public halves in the database and prints one code per
key (or writes them to -o FILE, mode 0600); on a borrowed machine
"roadwarrior connect GATEWAY -one-time CODE" connects once with it. revoke
revokes a key (by key ID) or all of a user's valid keys; list shows every
key and its state (valid, used, revoked, expired).
Objectives (seed 002 table 3): esp (ID-3, any AEAD; the default) or strict
(ID-4, AES-GCM-256 only).
`

// enrollCmd is `gateway enroll`.
func enrollCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "issue" && args[0] != "revoke" && args[0] != "list") {
		fmt.Fprint(stderr, enrollUsage)
		if len(args) > 0 && (args[0] == "-help" || args[0] == "-h" || args[0] == "help") {
			return ExitOK
		}
		return ExitUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("gateway enroll "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, enrollUsage, "\nFlags:\n"); fs.PrintDefaults() }
	cfgPath := fs.String("config", "/etc/roamsec/gateway.yaml", "the gateway's configuration, for ike.one_time")
	dbPath := fs.String("db", "", "the one-time key database (default: ike.one_time.database)")
	etcdURLs := fs.String("etcd", "", "the one-time keys in etcd at these client URLs, comma-separated (default: ike.one_time.etcd); prefix /roamsec/onetime/, no TLS")
	acctPath := fs.String("accounting", "", "the accounting log (default: ike.one_time.accounting)")
	asJSON := fs.Bool("json", false, "JSON output")
	count := fs.Int("count", 1, "issue: how many key pairs")
	objective := fs.String("objective", "esp", "issue: the security objective (esp = ID-3, strict = ID-4)")
	var expires days
	fs.Var(&expires, "expires", "issue: valid for this long (e.g. 7d, 72h, 90m); 0: until used or revoked")
	out := fs.String("o", "", "issue: write the codes to this file (mode 0600) instead of standard output")
	qr := fs.Bool("qr", false, "issue: also print each code as a QR code")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return usageCode(err)
	}
	if (sub == "list" && len(pos) != 0) || (sub != "list" && len(pos) != 1) {
		fmt.Fprint(stderr, enrollUsage)
		return ExitUsage
	}
	o, code := enrollSource(*cfgPath, *dbPath, *etcdURLs, stderr)
	if code != ExitOK {
		return code
	}
	if *acctPath == "" {
		*acctPath = o.Accounting
	}
	h, err := openOneTimeStore(o)
	if err != nil {
		fmt.Fprintf(stderr, "gateway enroll: %v\n", err)
		return ExitRuntime
	}
	defer h.Close()
	var acct *enroll.Accounting
	if *acctPath != "" && sub != "list" {
		if acct, err = enroll.OpenAccounting(*acctPath); err != nil {
			fmt.Fprintf(stderr, "gateway enroll: %v\n", err)
			return ExitRuntime
		}
		defer acct.Close()
	}
	switch sub {
	case "issue":
		obj, err := enroll.ParseObjective(*objective)
		if err != nil {
			fmt.Fprintf(stderr, "gateway enroll issue: -objective: %v\n", err)
			return ExitUsage
		}
		return enrollIssue(h, acct, pos[0], *count, obj, time.Duration(expires), *out, *qr, *asJSON, stdout, stderr)
	case "revoke":
		return enrollRevoke(h, acct, pos[0], stdout, stderr)
	}
	return enrollList(h, *asJSON, stdout, stderr)
}

// enrollSource is the key database enroll works on: -db, -etcd, or the
// configuration's ike.one_time.
func enrollSource(cfgPath, dbPath, etcdURLs string, stderr io.Writer) (*config.OneTime, int) {
	if dbPath != "" && etcdURLs != "" {
		fmt.Fprintln(stderr, "gateway enroll: -db (a file) or -etcd (etcd), not both")
		return nil, ExitUsage
	}
	if etcdURLs != "" {
		return &config.OneTime{Etcd: &config.OneTimeEtcd{Endpoints: strings.Split(etcdURLs, ","), Prefix: enroll.DefaultEtcdPrefix}}, ExitOK
	}
	if dbPath != "" {
		return &config.OneTime{Database: dbPath}, ExitOK
	}
	return oneTimeFromConfig(cfgPath, stderr)
}

// enrollRevoke revokes what id names (a key ID or a user's keys).
func enrollRevoke(h enroll.Store, acct *enroll.Accounting, id string, stdout, stderr io.Writer) int {
	recs, err := h.Revoke(id)
	if err != nil {
		fmt.Fprintf(stderr, "gateway enroll revoke: %v\n", err)
		return ExitRuntime
	}
	for _, r := range recs {
		acct.Log(enroll.Event{Event: enroll.EvRevoked, KeyID: r.KeyID, User: r.User, Objective: r.Objective})
		fmt.Fprintf(stdout, "revoked key %s of %s\n", r.KeyID, r.User)
	}
	return ExitOK
}

// oneTimeFromConfig finds ike.one_time in the gateway's configuration.
func oneTimeFromConfig(path string, stderr io.Writer) (*config.OneTime, int) {
	c, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "gateway enroll: no -db or -etcd, and %s cannot be read for ike.one_time: %v\n", path, err)
		return nil, ExitConfig
	}
	defer c.Wipe()
	if c.IKE == nil || c.IKE.OneTime == nil {
		fmt.Fprintf(stderr, "gateway enroll: no -db or -etcd, and %s has no ike.one_time section\n", path)
		return nil, ExitConfig
	}
	return c.IKE.OneTime, ExitOK
}

type issuedKey struct {
	Code      string           `json:"code"`
	KeyID     string           `json:"key_id"`
	User      string           `json:"user"`
	Objective enroll.Objective `json:"objective"`
	Expires   time.Time        `json:"expires,omitzero"`
}

func enrollIssue(h enroll.Store, acct *enroll.Accounting, user string, n int, obj enroll.Objective, ttl time.Duration,
	outPath string, qr, asJSON bool, stdout, stderr io.Writer) int {
	keys, recs, err := h.Issue(user, n, obj, ttl)
	if err != nil {
		fmt.Fprintf(stderr, "gateway enroll issue: %v\n", err)
		return ExitRuntime
	}
	var b strings.Builder
	var list []issuedKey
	for i, k := range keys {
		r := recs[i]
		code := k.Code()
		k.Zero()
		acct.Log(enroll.Event{Event: enroll.EvIssued, KeyID: r.KeyID, User: r.User, Objective: r.Objective, Expires: r.Expires})
		list = append(list, issuedKey{Code: code, KeyID: r.KeyID, User: r.User, Objective: r.Objective, Expires: r.Expires})
		if asJSON {
			continue
		}
		exp := "no expiry"
		if !r.Expires.IsZero() {
			exp = "expires " + r.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(&b, "%s  # key %s, %s, objective %s, %s\n", code, r.KeyID, r.User, r.Objective, exp)
		if qr {
			if q, err := qrcode.New(code, qrcode.Medium); err == nil {
				b.WriteString(q.ToSmallString(false))
			}
		}
	}
	text := b.String()
	if asJSON {
		j, _ := json.MarshalIndent(list, "", "  ")
		text = string(j) + "\n"
	}
	if outPath != "" {
		if err := os.WriteFile(outPath, []byte(text), 0o600); err != nil {
			fmt.Fprintf(stderr, "gateway enroll issue: the keys are issued, but the codes could not be written: %v (revoke them: gateway enroll revoke %s)\n", err, user)
			return ExitRuntime
		}
		fmt.Fprintf(stdout, "%d one-time codes for %s written to %s\n", n, user, outPath)
		return ExitOK
	}
	io.WriteString(stdout, text)
	return ExitOK
}

func enrollList(h enroll.Store, asJSON bool, stdout, stderr io.Writer) int {
	recs, err := h.List()
	if err != nil {
		fmt.Fprintf(stderr, "gateway enroll list: %v\n", err)
		return ExitRuntime
	}
	now := time.Now()
	if asJSON {
		type row struct {
			enroll.Record
			Status string `json:"status"`
		}
		rows := []row{}
		for _, r := range recs {
			rows = append(rows, row{r, r.Status(now)})
		}
		j, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Fprintf(stdout, "%s\n", j)
		return ExitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tUSER\tOBJECTIVE\tSTATE\tISSUED\tEXPIRES\tUSED BY")
	for _, r := range recs {
		exp, by := "-", "-"
		if !r.Expires.IsZero() {
			exp = r.Expires.Format(time.RFC3339)
		}
		if r.UsedBy != "" {
			by = fmt.Sprintf("%s from %s at %s", r.UsedBy, r.UsedFrom, r.Used.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.KeyID, r.User, r.Objective, r.Status(now), r.Issued.Format(time.RFC3339), exp, by)
	}
	if err := tw.Flush(); err != nil && !errors.Is(err, os.ErrClosed) {
		return ExitRuntime
	}
	return ExitOK
}

// days is a duration flag that also takes whole days ("7d"), since key
// lifetimes are counted in days.
type days time.Duration

func (d *days) String() string { return time.Duration(*d).String() }

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("want whole days (7d) or a duration (72h)")
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("want whole days (7d) or a duration (72h)")
	}
	*d = days(v)
	return nil
}
