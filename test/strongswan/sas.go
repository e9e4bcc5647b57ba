package strongswan

import (
	"fmt"
	"strconv"
	"strings"
)

// IKESA is one IKE SA as vici list-sas gives it. Strings are vici's: states
// "CREATED", "CONNECTING", "ESTABLISHED", "REKEYING", "REKEYED",
// "DELETING", ...; algorithms "AES_GCM_16", "ECP_256", "PRF_HMAC_SHA2_256".
type IKESA struct {
	Name       string // connection name
	UniqueID   string
	Version    int
	State      string
	Initiator  bool // we initiated this IKE SA
	LocalHost  string
	LocalPort  int
	RemoteHost string
	RemotePort int
	LocalID    string
	RemoteID   string
	SPIi, SPIr string // hex, as vici gives them (16 digits)
	Encr       string
	KeySize    int
	Integ      string // "" with AEAD
	PRF        string
	DH         string
	NATLocal   bool // we are behind a NAT
	NATRemote  bool // the peer is
	NATAny     bool // some NAT detected or faked: ESP in UDP
	// Established is the IKE SA's age in seconds; RekeyTime and ReauthTime
	// the seconds until the scheduled rekeying / reauthentication (0: none).
	Established, RekeyTime, ReauthTime int
	LocalVIPs, RemoteVIPs              []string
	// Tasks: exchanges queued (not started), active (we initiated them,
	// in flight) and passive (the peer's, being answered), e.g. "IKE_DPD",
	// "CHILD_REKEY", "IKE_MOBIKE".
	TasksQueued, TasksActive, TasksPassive []string
	Children                               []ChildSA
}

// ChildSA is one Child SA of an IKESA.
type ChildSA struct {
	Name     string // child config name
	UniqueID string
	ReqID    string
	State    string // "INSTALLED", "REKEYING", "REKEYED", "DELETING", "DELETED" (a rekeyed SA's inbound half, kept 5 s), ...
	Mode     string // "TUNNEL", "TRANSPORT", "BEET"
	Protocol string // "ESP", "AH"
	Encap    bool   // ESP in UDP
	SPIIn    string // hex, 8 digits
	SPIOut   string
	Encr     string
	KeySize  int
	Integ    string
	DH       string // PFS group of the last rekeying, "" without
	ESN      bool
	// Counters of the SA (libipsec counts them itself).
	BytesIn, BytesOut, PacketsIn, PacketsOut uint64
	// InstallTime is the age in seconds; RekeyTime and LifeTime the
	// seconds until rekeying and expiry.
	InstallTime, RekeyTime, LifeTime int
	LocalTS, RemoteTS                []string
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func atou(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

func (m *vmsg) list(k string) []string {
	if m == nil {
		return nil
	}
	l, _ := m.vals[k].([]string)
	return l
}

func (m *vmsg) yes(k string) bool { return m.str(k) == "yes" }

func parseIKESA(name string, m *vmsg) IKESA {
	s := IKESA{
		Name:         name,
		UniqueID:     m.str("uniqueid"),
		Version:      atoi(m.str("version")),
		State:        m.str("state"),
		Initiator:    m.yes("initiator"),
		LocalHost:    m.str("local-host"),
		LocalPort:    atoi(m.str("local-port")),
		RemoteHost:   m.str("remote-host"),
		RemotePort:   atoi(m.str("remote-port")),
		LocalID:      m.str("local-id"),
		RemoteID:     m.str("remote-id"),
		SPIi:         m.str("initiator-spi"),
		SPIr:         m.str("responder-spi"),
		Encr:         m.str("encr-alg"),
		KeySize:      atoi(m.str("encr-keysize")),
		Integ:        m.str("integ-alg"),
		PRF:          m.str("prf-alg"),
		DH:           m.str("dh-group"),
		NATLocal:     m.yes("nat-local"),
		NATRemote:    m.yes("nat-remote"),
		NATAny:       m.yes("nat-any"),
		Established:  atoi(m.str("established")),
		RekeyTime:    atoi(m.str("rekey-time")),
		ReauthTime:   atoi(m.str("reauth-time")),
		LocalVIPs:    m.list("local-vips"),
		RemoteVIPs:   m.list("remote-vips"),
		TasksQueued:  m.list("tasks-queued"),
		TasksActive:  m.list("tasks-active"),
		TasksPassive: m.list("tasks-passive"),
	}
	children := m.sub("child-sas")
	if children == nil {
		return s
	}
	for _, k := range children.keys { // "<name>-<uniqueid>"
		ch := children.sub(k)
		if ch == nil {
			continue
		}
		s.Children = append(s.Children, ChildSA{
			Name:        ch.str("name"),
			UniqueID:    ch.str("uniqueid"),
			ReqID:       ch.str("reqid"),
			State:       ch.str("state"),
			Mode:        ch.str("mode"),
			Protocol:    ch.str("protocol"),
			Encap:       ch.yes("encap"),
			SPIIn:       ch.str("spi-in"),
			SPIOut:      ch.str("spi-out"),
			Encr:        ch.str("encr-alg"),
			KeySize:     atoi(ch.str("encr-keysize")),
			Integ:       ch.str("integ-alg"),
			DH:          ch.str("dh-group"),
			ESN:         ch.yes("esn"),
			BytesIn:     atou(ch.str("bytes-in")),
			BytesOut:    atou(ch.str("bytes-out")),
			PacketsIn:   atou(ch.str("packets-in")),
			PacketsOut:  atou(ch.str("packets-out")),
			InstallTime: atoi(ch.str("install-time")),
			RekeyTime:   atoi(ch.str("rekey-time")),
			LifeTime:    atoi(ch.str("life-time")),
			LocalTS:     ch.list("local-ts"),
			RemoteTS:    ch.list("remote-ts"),
		})
	}
	return s
}

// Tasks is every exchange queued, active or passive; empty when the IKE SA
// is idle.
func (s IKESA) Tasks() []string {
	var t []string
	t = append(t, s.TasksActive...)
	t = append(t, s.TasksQueued...)
	return append(t, s.TasksPassive...)
}

// Child returns the Child SA of config name, an INSTALLED one if there is
// one (during a rekeying the old and the new are both listed).
func (s IKESA) Child(name string) (ChildSA, bool) {
	var found ChildSA
	ok := false
	for _, c := range s.Children {
		if c.Name != name {
			continue
		}
		if !ok || c.State == "INSTALLED" && found.State != "INSTALLED" {
			found, ok = c, true
		}
	}
	return found, ok
}

// Installed returns the INSTALLED Child SAs.
func (s IKESA) Installed() []ChildSA {
	var l []ChildSA
	for _, c := range s.Children {
		if c.State == "INSTALLED" {
			l = append(l, c)
		}
	}
	return l
}

func (s IKESA) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s[%s] %s %s[%s]-%s[%s] %s_i/%s_r %s-%d/%s", s.Name, s.UniqueID, s.State,
		s.LocalHost, s.LocalID, s.RemoteHost, s.RemoteID, s.SPIi, s.SPIr, s.Encr, s.KeySize, s.DH)
	if len(s.LocalVIPs)+len(s.RemoteVIPs) > 0 {
		fmt.Fprintf(&b, " vips local %v remote %v", s.LocalVIPs, s.RemoteVIPs)
	}
	if t := s.Tasks(); len(t) > 0 {
		fmt.Fprintf(&b, " tasks %v", t)
	}
	for _, c := range s.Children {
		fmt.Fprintf(&b, "\n  %s", c)
	}
	return b.String()
}

func (c ChildSA) String() string {
	return fmt.Sprintf("%s{%s} %s %s %s %s_i/%s_o %s-%d %v === %v in %d B/%d p, out %d B/%d p",
		c.Name, c.UniqueID, c.State, c.Mode, c.Protocol, c.SPIIn, c.SPIOut, c.Encr, c.KeySize,
		c.LocalTS, c.RemoteTS, c.BytesIn, c.PacketsIn, c.BytesOut, c.PacketsOut)
}

// FormatSAs is one IKESA.String per line, "(none)" for none.
func FormatSAs(sas []IKESA) string {
	if len(sas) == 0 {
		return "(none)\n"
	}
	var b strings.Builder
	for _, s := range sas {
		b.WriteString(s.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// FindIKE returns the IKE SA of connection name, an ESTABLISHED one if
// there is one (during a rekeying or a reauthentication there may be two).
func FindIKE(sas []IKESA, name string) (IKESA, bool) {
	var found IKESA
	ok := false
	for _, s := range sas {
		if s.Name != name {
			continue
		}
		if !ok || s.State == "ESTABLISHED" && found.State != "ESTABLISHED" {
			found, ok = s, true
		}
	}
	return found, ok
}

// ChildInstalled is a WaitSA condition: an ESTABLISHED IKE SA with an
// INSTALLED Child SA of config child.
func ChildInstalled(child string) func([]IKESA) bool {
	return func(sas []IKESA) bool {
		for _, s := range sas {
			if c, ok := s.Child(child); ok && s.State == "ESTABLISHED" && c.State == "INSTALLED" {
				return true
			}
		}
		return false
	}
}

// NoIKESA is a WaitSA condition: no IKE SA of connection name ("" for
// none at all).
func NoIKESA(name string) func([]IKESA) bool {
	return func(sas []IKESA) bool {
		for _, s := range sas {
			if name == "" || s.Name == name {
				return false
			}
		}
		return true
	}
}
