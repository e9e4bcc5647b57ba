package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roamsec/roamsec/test/netns"
	"github.com/roamsec/roamsec/test/strongswan"
)

const (
	ikeName   = "home" // the road warrior's connection and child
	gwIKEName = "rw"   // the gateway's connection
	psk       = "swanbench-not-a-secret-0123456789abcdef"
)

// swanctlConf returns the gateway's or the road warrior's swanctl.conf:
// IKEv2, PSK, AES-GCM-16 256 for IKE and ESP, MOBIKE, DPD, virtual-address
// mode (gw pool 100.64.0.0/24; rw vips 0.0.0.0, local_ts dynamic).
// swanctl.conf wants one key = value per line.
func swanctlConf(gateway bool, dpd time.Duration) string {
	dpdDelay := fmt.Sprintf("%ds", int(dpd/time.Second))
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("connections {")
	if gateway {
		w("\t%s {", gwIKEName)
		w("\t\tversion = 2")
		w("\t\tlocal_addrs = %%any")
		w("\t\tremote_addrs = %%any")
		w("\t\tpools = p")
	} else {
		w("\t%s {", ikeName)
		w("\t\tversion = 2")
		w("\t\tremote_addrs = %s", netns.GWPrimary4)
		w("\t\tvips = 0.0.0.0")
	}
	w("\t\tproposals = aes256gcm16-prfsha256-ecp256")
	w("\t\tmobike = yes")
	w("\t\tdpd_delay = %s", dpdDelay)
	w("\t\tlocal {")
	w("\t\t\tauth = psk")
	w("\t\t\tid = %s", map[bool]string{true: "gw.example", false: "rw.example"}[gateway])
	w("\t\t}")
	w("\t\tremote {")
	w("\t\t\tauth = psk")
	w("\t\t\tid = %s", map[bool]string{true: "rw.example", false: "gw.example"}[gateway])
	w("\t\t}")
	w("\t\tchildren {")
	if gateway {
		w("\t\t\tnet {")
		w("\t\t\t\tlocal_ts = %s", netns.ServerNet4)
		w("\t\t\t\tremote_ts = dynamic")
		w("\t\t\t\tdpd_action = clear")
	} else {
		w("\t\t\t%s {", ikeName)
		w("\t\t\t\tlocal_ts = dynamic")
		w("\t\t\t\tremote_ts = %s", netns.ServerNet4)
		w("\t\t\t\tdpd_action = restart")
	}
	w("\t\t\t\tesp_proposals = aes256gcm16")
	w("\t\t\t}")
	w("\t\t}")
	w("\t}")
	w("}")
	if gateway {
		w("pools {")
		w("\tp {")
		w("\t\taddrs = 100.64.0.0/24")
		w("\t}")
		w("}")
	}
	w("secrets {")
	w("\tike-1 {")
	w("\t\tid-1 = gw.example")
	w("\t\tid-2 = rw.example")
	w("\t\tsecret = %q", psk)
	w("\t}")
	w("}")
	return b.String()
}

// startCharon runs charon-systemd in ns with its files in dir (kept for
// -logs): the gateway's or the road warrior's swanctl.conf, IKE logged at
// level 2.
func startCharon(ctx context.Context, ns *netns.NS, name, dir string, gateway bool, dpd time.Duration) (*strongswan.Charon, error) {
	return strongswan.Start(ctx, ns, strongswan.Config{
		Name:    name,
		Swanctl: swanctlConf(gateway, dpd),
		Debug:   map[string]int{"ike": 2},
		Dir:     dir,
	})
}

// stopCharon stops c (nil: never started) with SIGTERM, SIGKILL after timeout.
func stopCharon(c *strongswan.Charon, timeout time.Duration) error {
	if c == nil {
		return nil
	}
	return c.Stop(timeout)
}

// saState is what list-sas says about the road warrior's IKE SA.
type saState struct {
	IKEState  string   `json:"ike_state"`
	Local     string   `json:"local_host"`
	Remote    string   `json:"remote_host"`
	IKESPIs   string   `json:"ike_spis"`
	Installed []string `json:"esp_spis"` // "in/out" of each INSTALLED Child SA
	Children  []string `json:"children"` // "name state in/out" of every Child SA
	Tasks     []string `json:"tasks"`    // exchanges active or queued (e.g. IKE_DPD)
}

func (s saState) up() bool { return s.IKEState == "ESTABLISHED" && len(s.Installed) > 0 }

func (s saState) String() string {
	if s.IKEState == "" {
		return "no IKE SA"
	}
	t := ""
	if len(s.Tasks) > 0 {
		t = fmt.Sprintf(", tasks %v", s.Tasks)
	}
	return fmt.Sprintf("IKE %s %s %s-%s, Child SAs %v%s", s.IKEState, s.IKESPIs, s.Local, s.Remote, s.Children, t)
}

// sas lists the road warrior's IKE SA (zero saState if there is none).
func sas(ctx context.Context, c *strongswan.Charon) (saState, error) { return sasOf(ctx, c, ikeName) }

// sasOf lists the IKE SA of connection name.
func sasOf(ctx context.Context, c *strongswan.Charon, name string) (saState, error) {
	var st saState
	all, err := c.SAsNoBlock(ctx)
	if err != nil {
		return st, err
	}
	for _, ike := range all {
		if ike.Name != name || st.IKEState == "ESTABLISHED" && ike.State != "ESTABLISHED" {
			continue // keep the established one when there are several
		}
		st = saState{
			IKEState: ike.State,
			Local:    ike.LocalHost,
			Remote:   ike.RemoteHost,
			IKESPIs:  ike.SPIi + "_i/" + ike.SPIr + "_r",
		}
		st.Tasks = append(append(st.Tasks, ike.TasksActive...), ike.TasksQueued...)
		for _, ch := range ike.Children {
			spis := ch.SPIIn + "/" + ch.SPIOut
			// vici's key of the Child SA: name-uniqueid.
			st.Children = append(st.Children, ch.Name+"-"+ch.UniqueID+" "+ch.State+" "+spis)
			if ch.State == "INSTALLED" {
				st.Installed = append(st.Installed, spis)
			}
		}
	}
	return st, nil
}

// espChanged reports whether none of after's installed ESP SAs was
// installed before.
func espChanged(before, after saState) bool {
	for _, s := range after.Installed {
		if slices.Contains(before.Installed, s) {
			return false
		}
	}
	return len(after.Installed) > 0
}
