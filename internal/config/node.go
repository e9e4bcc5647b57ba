package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roamsec/roamsec/tunnel"
)

// parser walks the yaml.Node tree, recording every problem with its line
// and field path instead of stopping at the first.
type parser struct {
	file  string // as given to Parse, used in messages
	dir   string // relative key_file paths are relative to this
	errs  []*FieldError
	warns []string
	lines map[string]int // field path -> line, for the semantic checks

	inlineKeys bool
	role       Role // once read, for messages
	// oneTimeClient: ParseOneTime, the credential comes from a code.
	oneTimeClient bool
}

func (p *parser) errf(line int, path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Path: path, Msg: redact(fmt.Sprintf(format, args...))})
}

func (p *parser) warnf(line int, path, format string, args ...any) {
	p.warns = append(p.warns, (&FieldError{File: p.file, Line: line, Path: path, Msg: redact(fmt.Sprintf(format, args...))}).Error())
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func elem(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func kindName(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	return "a single value"
}

// rejectAliases reports every alias: anchors and aliases would let one
// line of the file stand for another, and an alias bomb for millions.
func (p *parser) rejectAliases(n *yaml.Node, depth int) {
	if n == nil || depth > 200 {
		return
	}
	if n.Kind == yaml.AliasNode {
		p.errf(n.Line, "", "YAML aliases (*%s) are not supported: write the value out", n.Value)
		return
	}
	for _, c := range n.Content {
		p.rejectAliases(c, depth+1)
	}
}

// fields is one YAML mapping whose field names have been checked.
type fields struct {
	p      *parser
	path   string
	line   int // of the mapping, or of its parent field when absent
	vals   map[string]*yaml.Node
	klines map[string]int
}

// fields checks that n is a mapping whose keys are all in known, each at
// most once. An absent or empty n gives an empty mapping; line is then
// used for "missing" errors.
func (p *parser) fields(n *yaml.Node, line int, path string, known ...string) *fields {
	f := &fields{p: p, path: path, line: line, vals: map[string]*yaml.Node{}, klines: map[string]int{}}
	if isNull(n) || n.Kind == yaml.AliasNode {
		return f
	}
	f.line = n.Line
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, path, "want a mapping (field: value, ...), got %s", kindName(n))
		return f
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errf(k.Line, path, "field names must be plain words, got %s", kindName(k))
			continue
		}
		name := k.Value
		if !slices.Contains(known, name) {
			p.errf(k.Line, join(path, name), "unknown field%s", suggest(name, known))
			continue
		}
		if l, dup := f.klines[name]; dup {
			p.errf(k.Line, join(path, name), "given twice (first at line %d)", l)
			continue
		}
		f.klines[name] = k.Line
		f.vals[name] = v
	}
	return f
}

// suggest names the closest known field, or lists them all.
func suggest(name string, known []string) string {
	best, bd := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bd {
			best, bd = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (known fields: " + strings.Join(known, ", ") + ")"
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (f *fields) path2(name string) string { return join(f.path, name) }

// get returns the value of a field, nil when absent or empty.
func (f *fields) get(name string) *yaml.Node {
	if n := f.vals[name]; !isNull(n) {
		return n
	}
	return nil
}

func (f *fields) has(name string) bool { return f.get(name) != nil }

// lineOf is the line of a field's value, else of its key, else of the
// mapping.
func (f *fields) lineOf(name string) int {
	if n := f.vals[name]; n != nil && n.Line > 0 {
		return n.Line
	}
	if l, ok := f.klines[name]; ok {
		return l
	}
	return f.line
}

func (f *fields) missing(name, hint string) {
	f.p.errf(f.lineOf(name), f.path2(name), "missing (required%s)", hint)
}

// forbid reports a field that must not be given in this context.
func (f *fields) forbid(name, why string) {
	if _, ok := f.vals[name]; ok {
		f.p.errf(f.lineOf(name), f.path2(name), "%s", why)
	}
}

// scalar checks that n is a single value.
func (p *parser) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind == yaml.AliasNode {
		return "", false // reported by rejectAliases
	}
	if n.Kind != yaml.ScalarNode {
		p.errf(n.Line, path, "want a single value, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (f *fields) scalar(name string) (string, *yaml.Node, bool) {
	n := f.get(name)
	if n == nil {
		return "", nil, false
	}
	v, ok := f.p.scalar(n, f.path2(name))
	return v, n, ok
}

// str returns a string field, def when absent.
func (f *fields) str(name, def string) string {
	v, _, ok := f.scalar(name)
	if !ok {
		return def
	}
	return v
}

// enum returns a field that must be one of allowed, def when absent.
func (f *fields) enum(name, def string, allowed ...string) (string, bool) {
	v, n, ok := f.scalar(name)
	if n == nil {
		return def, true
	}
	if !ok {
		return def, false
	}
	if !slices.Contains(allowed, v) {
		f.p.errf(n.Line, f.path2(name), "want %s, got %s", orList(allowed), show(v))
		return def, false
	}
	return v, true
}

func orList(s []string) string {
	switch len(s) {
	case 1:
		return s[0]
	case 2:
		return s[0] + " or " + s[1]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

func (f *fields) boolean(name string, def bool) bool {
	v, n, ok := f.scalar(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "true":
		return true
	case "false":
		return false
	}
	f.p.errf(n.Line, f.path2(name), "want true or false, got %s", show(v))
	return def
}

// parseUint reads decimal or 0x-prefixed hexadecimal. A leading 0 is
// decimal, not octal.
func parseUint(v string, bits int) (uint64, error) {
	if h, ok := strings.CutPrefix(strings.ToLower(v), "0x"); ok {
		return strconv.ParseUint(h, 16, bits)
	}
	return strconv.ParseUint(v, 10, bits)
}

// uint returns an unsigned field within [lo, hi], def when absent.
func (f *fields) uint(name string, def, lo, hi uint64) (uint64, bool) {
	v, n, ok := f.scalar(name)
	if n == nil {
		return def, true
	}
	if !ok {
		return def, false
	}
	x, err := parseUint(v, 64)
	if err != nil || x < lo || x > hi {
		f.p.errf(n.Line, f.path2(name), "want a whole number from %d to %d (decimal, or hex with 0x), got %s", lo, hi, show(v))
		return def, false
	}
	return x, true
}

// duration reads a Go duration such as 20s, 50m or 1h30m; 0 is allowed.
func (f *fields) duration(name string, def time.Duration) (time.Duration, bool) {
	v, n, ok := f.scalar(name)
	if n == nil {
		return def, true
	}
	if !ok {
		return def, false
	}
	d, err := time.ParseDuration(v)
	if v == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 {
		f.p.errf(n.Line, f.path2(name), "want a duration such as 20s, 50m or 1h30m (or 0), got %s", show(v))
		return def, false
	}
	return d, true
}

// list returns the items of a list field; a single value is a list of one.
func (f *fields) list(name string) []*yaml.Node {
	n := f.get(name)
	switch {
	case n == nil || n.Kind == yaml.AliasNode:
		return nil
	case n.Kind == yaml.SequenceNode:
		return n.Content
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}
	}
	f.p.errf(n.Line, f.path2(name), "want a list, got %s", kindName(n))
	return nil
}

// itemPath names list item i, or the field itself when it was a single
// value rather than a list.
func (f *fields) itemPath(name string, i int) string {
	if n := f.get(name); n != nil && n.Kind == yaml.SequenceNode {
		return elem(f.path2(name), i)
	}
	return f.path2(name)
}

// addr parses one outer or inner address: no zone, not unspecified, not
// multicast, not v4-mapped.
func (p *parser) addr(n *yaml.Node, path string) (netip.Addr, bool) {
	v, ok := p.scalar(n, path)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(v))
	switch {
	case err != nil:
		p.errf(n.Line, path, "want an IP address, got %s", show(v))
	case a.Zone() != "":
		p.errf(n.Line, path, "%s: zoned addresses are not supported", a)
	case a.IsUnspecified():
		p.errf(n.Line, path, "%s is the unspecified address: give a real address", a)
	case a.IsMulticast():
		p.errf(n.Line, path, "%s is a multicast address", a)
	case a.Is4In6():
		p.errf(n.Line, path, "%s: write IPv4-mapped addresses as plain IPv4", a)
	default:
		return a, true
	}
	return netip.Addr{}, false
}

// addrs reads a list of addresses (or one), refusing duplicates.
func (f *fields) addrs(name string) ([]netip.Addr, bool) {
	var out []netip.Addr
	good := true
	for i, n := range f.list(name) {
		a, ok := f.p.addr(n, f.itemPath(name, i))
		if !ok {
			good = false
			continue
		}
		if slices.Contains(out, a) {
			f.p.errf(n.Line, f.itemPath(name, i), "%s is listed twice", a)
			good = false
			continue
		}
		out = append(out, a)
	}
	return out, good
}

// prefix parses "addr/bits"; a bare address is a host prefix. Host bits
// are kept (an interface address 10.99.0.1/24 means something).
func (p *parser) prefix(n *yaml.Node, path string) (netip.Prefix, bool) {
	v, ok := p.scalar(n, path)
	if !ok {
		return netip.Prefix{}, false
	}
	v = strings.TrimSpace(v)
	var pf netip.Prefix
	var err error
	if strings.Contains(v, "/") {
		pf, err = netip.ParsePrefix(v)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(v); err == nil {
			pf = netip.PrefixFrom(a, a.BitLen())
		}
	}
	switch {
	case err != nil:
		p.errf(n.Line, path, "want an address or address/prefix-length, got %s", show(v))
	case pf.Addr().Zone() != "":
		p.errf(n.Line, path, "%s: zoned addresses are not supported", v)
	case pf.Addr().Is4In6():
		p.errf(n.Line, path, "%s: write IPv4-mapped addresses as plain IPv4", v)
	default:
		return pf, true
	}
	return netip.Prefix{}, false
}

// addrSet reads an address set: a list of addresses and prefixes, or one
// comma-separated string as tunnel.ParseAddrSet takes it; "any" is every
// address. Absent is the empty set (which SAs take as "any").
func (f *fields) addrSet(name string) (tunnel.AddrSet, bool) {
	var ps []netip.Prefix
	good := true
	for i, n := range f.list(name) {
		path := f.itemPath(name, i)
		v, ok := f.p.scalar(n, path)
		if !ok {
			good = false
			continue
		}
		s, err := tunnel.ParseAddrSet(v)
		if err != nil {
			f.p.errf(n.Line, path, "%v", err)
			good = false
			continue
		}
		ps = append(ps, s.Entries()...)
	}
	s, err := tunnel.NewAddrSet(ps...)
	if err != nil {
		f.p.errf(f.lineOf(name), f.path2(name), "%v", err)
		return tunnel.AddrSet{}, false
	}
	return s, good
}

// selector reads a tunnel.ParseSelector text.
func (f *fields) selector(name string, required bool) (tunnel.Selector, bool) {
	v, n, ok := f.scalar(name)
	if n == nil {
		if required {
			f.missing(name, `: e.g. "local 192.0.2.2 remote 203.0.113.0/24"`)
		}
		return tunnel.Selector{}, false
	}
	if !ok {
		return tunnel.Selector{}, false
	}
	s, err := tunnel.ParseSelector(v)
	if err != nil {
		f.p.errf(n.Line, f.path2(name), "%s", strings.TrimPrefix(err.Error(), "selector: "))
		return tunnel.Selector{}, false
	}
	return s, true
}

func clampInt(x uint64) int {
	if x > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(x)
}
