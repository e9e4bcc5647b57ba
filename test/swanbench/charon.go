package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

const (
	charonBin  = "/usr/sbin/charon-systemd"
	swanctlBin = "/usr/sbin/swanctl"
	ikeName    = "home" // the road warrior's connection and child
	gwIKEName  = "rw"   // the gateway's connection
	psk        = "swanbench-not-a-secret-0123456789abcdef"
)

// plugins is the explicit load list of the notes: kernel-libipsec (the
// kernel here has no ESP), kdf (else "KDF_PRF with PRF_HMAC_SHA2_256 not
// supported"), openssl for AES-GCM and the DH groups.
const plugins = "random nonce openssl kdf pem pkcs1 x509 pubkey revocation constraints " +
	"kernel-libipsec kernel-netlink socket-default vici updown"

// strongswanConf is one daemon's strongswan.conf: its own vici socket, the
// load list, logs to stderr with millisecond timestamps, nothing to the
// journal.
func strongswanConf(dir string) string {
	return fmt.Sprintf(`charon-systemd {
	load = %s
	filelog {
		stderr {
			default = 1
			ike = 2
			time_format = %%H:%%M:%%S
			time_add_ms = yes
			flush_line = yes
		}
	}
	journal {
		default = -1
	}
	plugins {
		vici {
			socket = unix://%s
		}
	}
}
`, plugins, filepath.Join(dir, "charon.vici"))
}

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

// charon is one charon-systemd running in a namespace.
type charon struct {
	name string // "rw" or "gw"
	dir  string // its strongswan.conf, swanctl.conf, vici socket, log
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
	sock string
	vc   *viciConn  // nil after an error; redialled on the next call
	mu   sync.Mutex // serialises vici calls
}

// startCharon writes the configs into dir and runs charon-systemd in ns,
// waits for its vici socket and loads the connection with swanctl.
func startCharon(ctx context.Context, ns *netns.NS, name, dir string, gateway bool, dpd time.Duration) (*charon, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for file, text := range map[string]string{
		"strongswan.conf": strongswanConf(dir),
		"swanctl.conf":    swanctlConf(gateway, dpd),
	} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	logf, err := os.Create(filepath.Join(dir, "charon.log"))
	if err != nil {
		return nil, err
	}
	c := &charon{name: name, dir: dir, log: logf, done: make(chan struct{})}
	c.cmd = ns.Command(charonBin)
	c.cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C at the terminal reaches only us, and we
	// stop the daemons in order. Pdeathsig: should we be killed, so are
	// they (ip netns exec execs charon, which keeps the setting).
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, charonBin, err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()

	sock := filepath.Join(dir, "charon.vici")
	c.sock = sock
	deadline := time.Now().Add(15 * time.Second)
	for {
		if vc, err := dialVici(sock); err == nil {
			c.vc = vc
			break
		}
		select {
		case <-c.done:
			return c, fmt.Errorf("%s: charon exited at start (%v):\n%s", name, c.err, c.tail(40))
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("%s: no vici socket %s after 15 s:\n%s", name, sock, c.tail(40))
		}
	}
	out, err := exec.CommandContext(ctx, swanctlBin, "--load-all", "--file", filepath.Join(dir, "swanctl.conf"),
		"--uri", "unix://"+sock).CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("%s: swanctl --load-all: %w\n%s\n%s", name, err, out, c.tail(40))
	}
	return c, nil
}

// stop ends the daemon with SIGTERM (SIGKILL after timeout) and waits.
func (c *charon) stop(timeout time.Duration) error {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	if c.vc != nil {
		c.vc.Close()
	}
	defer c.log.Close()
	select {
	case <-c.done:
		return nil
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s: charon did not stop on SIGTERM within %v, killed", c.name, timeout)
	}
}

func (c *charon) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// tail is the last n lines of the daemon's log.
func (c *charon) tail(n int) string {
	data, _ := os.ReadFile(filepath.Join(c.dir, "charon.log"))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// call runs one vici command (with stream: collecting those events) with
// a timeout; after an error the connection is dropped and redialled next
// time, since its state is unknown.
func (c *charon) call(ctx context.Context, timeout time.Duration, cmd string, in *vmsg, stream string) (*vmsg, []*vmsg, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if c.vc == nil {
		vc, err := dialVici(c.sock)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: vici: %w", c.name, err)
		}
		c.vc = vc
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { c.vc.c.SetDeadline(time.Now()) }) // Ctrl-C
	defer stop()
	m, events, err := c.vc.call(deadline, cmd, in, stream)
	if err != nil {
		if m == nil { // not a failed command but I/O or protocol trouble
			c.vc.Close()
			c.vc = nil
		}
		return m, events, fmt.Errorf("%s: vici %s: %w", c.name, cmd, err)
	}
	return m, events, nil
}

// initiate starts the road warrior's Child SA (and IKE SA) and waits for it.
func (c *charon) initiate(ctx context.Context) error {
	_, _, err := c.call(ctx, 20*time.Second, "initiate", newMsg("child", ikeName, "timeout", "15000"), "")
	return err
}

// terminate deletes the IKE SA (and its Child SAs); after 2 s (its DELETE
// may wait behind an exchange in flight) without waiting for the answer.
func (c *charon) terminate(ctx context.Context) error {
	_, _, err := c.call(ctx, 10*time.Second, "terminate", newMsg("ike", ikeName, "timeout", "2000", "force", "yes"), "")
	return err
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
func (c *charon) sas(ctx context.Context) (saState, error) { return c.sasOf(ctx, ikeName) }

// sasOf lists the IKE SA of connection name.
func (c *charon) sasOf(ctx context.Context, name string) (saState, error) {
	var st saState
	_, events, err := c.call(ctx, 5*time.Second, "list-sas", newMsg("noblock", "yes", "ike", name), "list-sa")
	if err != nil {
		return st, err
	}
	for _, m := range events {
		ike := m.sub(name)
		if ike == nil || st.IKEState == "ESTABLISHED" && ike.str("state") != "ESTABLISHED" {
			continue // keep the established one when there are several
		}
		st = saState{
			IKEState: ike.str("state"),
			Local:    ike.str("local-host"),
			Remote:   ike.str("remote-host"),
			IKESPIs:  ike.str("initiator-spi") + "_i/" + ike.str("responder-spi") + "_r",
		}
		for _, k := range []string{"tasks-active", "tasks-queued"} {
			if l, ok := ike.vals[k].([]string); ok {
				st.Tasks = append(st.Tasks, l...)
			}
		}
		if children := ike.sub("child-sas"); children != nil {
			for _, k := range children.keys {
				ch := children.sub(k)
				if ch == nil {
					continue
				}
				spis := ch.str("spi-in") + "/" + ch.str("spi-out")
				st.Children = append(st.Children, k+" "+ch.str("state")+" "+spis)
				if ch.str("state") == "INSTALLED" {
					st.Installed = append(st.Installed, spis)
				}
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
