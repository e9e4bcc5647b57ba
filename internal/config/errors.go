package config

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// FieldError is one problem found in a config file. Its Error is
//
//	FILE:LINE: PATH: REASON
//
// e.g. "/etc/roamsec/gateway.yaml:14: sas[0].outbound.key: want 72 hex
// digits (36 bytes: key and salt for aes256gcm16), got 70". Parse and Load
// return every problem they find, joined with errors.Join; use errors.As
// to get the first one, or Unwrap() []error on the joined error for all.
//
// A FieldError never contains key material: key values are never echoed,
// and every message is scrubbed of long hex strings as a second line of
// defence.
type FieldError struct {
	File string
	Line int    // 1-based; 0 when the problem is not tied to a line
	Path string // field path, e.g. "sas[0].outbound.key"; "" for the file itself
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// joinErrors sorts the problems by line (stable, so problems found on one
// line keep their order) and joins them.
func joinErrors(fes []*FieldError) error {
	if len(fes) == 0 {
		return nil
	}
	slices.SortStableFunc(fes, func(a, b *FieldError) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(fes))
	for i, fe := range fes {
		errs[i] = fe
	}
	return errors.Join(errs...)
}

var (
	// A run of 16 or more hex digits: longer than any SPI, port or
	// address group, as long as 8 bytes of a key.
	longHex = regexp.MustCompile(`(?i)(0x)?[0-9a-f]{16,}`)
	// Eight or more hex byte pairs with separators (aa:bb:cc:... or
	// aa-bb-..., aa bb ...): a key pasted in another notation.
	sepHex = regexp.MustCompile(`(?i)[0-9a-f]{2}(?:[:\- ][0-9a-f]{2}){7,}`)
)

// redact removes anything that could be key material from a message.
// Messages should not carry keys in the first place; this is the second
// line of defence for values echoed from the wrong field.
func redact(s string) string {
	s = longHex.ReplaceAllString(s, "[redacted]")
	return sepHex.ReplaceAllString(s, "[redacted]")
}

// show quotes a configured value for an error message. Long values are
// not echoed: a value that long in the wrong field may be a pasted key.
func show(v string) string {
	if len(v) > 48 {
		return fmt.Sprintf("(a %d-character value)", len(v))
	}
	return fmt.Sprintf("%q", v)
}
