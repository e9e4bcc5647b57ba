package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// The WireGuard tunnel of path c runs between rw 192.0.2.2 and gw 192.0.2.1,
// like roamsec's: the inner addresses are the outer ones (rw's traffic to
// the server net keeps source 192.0.2.2). gw tells its own UDP packets to
// 192.0.2.2 from the traffic they carry with a fwmark, the way wg-quick and
// roamsec (transport.SetMark) do: unmarked packets to rw go into the tunnel.
const (
	wgPortRW = 51821
	wgPortGW = 51820
	wgMark   = 0x5243 // fwmark and routing table of gw's tunnel traffic
)

// wgSocketDir is where wireguard-go puts its UAPI socket; it is in the file
// system, shared by all namespaces, hence interface names unique per bed.
const wgSocketDir = "/var/run/wireguard"

// startWireGuard runs wireguard-go (its userspace TUN, with offloads) in rw
// and gw and configures it with wg and ip.
func startWireGuard(env *pathEnv) (_ *setup, err error) {
	bin := filepath.Join(env.bin, "wireguard-go")
	if err := checkBinary(bin, "go build -o $BIN/wireguard-go golang.zx2c4.com/wireguard"); err != nil {
		return nil, err
	}
	if _, err := lookPath("wg"); err != nil {
		return nil, fmt.Errorf("needs wg (apt-get install wireguard-tools): %w", err)
	}
	bed, ctx := env.bed, env.ctx
	// At most 15 characters, unique per bed: the UAPI socket is global.
	s := &setup{rwIf: bed.ID + "-wr", gwIf: bed.ID + "-wg"}
	var ds []*daemon
	s.stop = func() {
		for _, d := range ds {
			d.stop()
		}
		for _, n := range []string{s.rwIf, s.gwIf} {
			os.Remove(filepath.Join(wgSocketDir, n+".sock")) // left if it was killed
		}
	}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()

	keyRW, pubRW, err := wgKeyPair()
	if err != nil {
		return nil, err
	}
	keyGW, pubGW, err := wgKeyPair()
	if err != nil {
		return nil, err
	}
	keyRWFile, err := writeFile(env.dir, "rw.key", keyRW+"\n")
	if err != nil {
		return nil, err
	}
	keyGWFile, err := writeFile(env.dir, "gw.key", keyGW+"\n")
	if err != nil {
		return nil, err
	}

	fg := []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}
	for _, e := range []struct {
		ns    *netns.NS
		ifn   string
		which **daemon
	}{{bed.RW, s.rwIf, &s.rw}, {bed.GW, s.gwIf, &s.gw}} {
		d, err := startDaemon(ctx, e.ns, fg, bin, e.ifn)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		*e.which = d
	}
	// wg set talks to the UAPI socket, there once the device is up.
	for _, e := range []struct {
		d   *daemon
		ifn string
	}{{s.rw, s.rwIf}, {s.gw, s.gwIf}} {
		sock := filepath.Join(wgSocketDir, e.ifn+".sock")
		for deadline := time.Now().Add(5 * time.Second); ; {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if err := e.d.exited(); err != nil {
				return nil, err
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("wireguard-go %s: no %s after 5s", e.ifn, sock)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	srvNet, rw, gw := netns.ServerNet4.String(), netns.RWPrimary4.String(), netns.GWPrimary4.String()
	mark := strconv.Itoa(wgMark)
	type step struct {
		ns   *netns.NS
		args []string
	}
	steps := []step{
		{bed.RW, []string{"wg", "set", s.rwIf, "listen-port", strconv.Itoa(wgPortRW), "private-key", keyRWFile,
			"peer", pubGW, "endpoint", gw + ":" + strconv.Itoa(wgPortGW), "allowed-ips", srvNet}},
		{bed.RW, []string{"ip", "link", "set", s.rwIf, "up"}},
		{bed.RW, []string{"ip", "route", "add", srvNet, "dev", s.rwIf, "src", rw}},

		{bed.GW, []string{"wg", "set", s.gwIf, "listen-port", strconv.Itoa(wgPortGW), "private-key", keyGWFile,
			"fwmark", mark, "peer", pubRW, "endpoint", rw + ":" + strconv.Itoa(wgPortRW), "allowed-ips", rw + "/32"}},
		{bed.GW, []string{"ip", "link", "set", s.gwIf, "up"}},
		{bed.GW, []string{"ip", "route", "add", rw + "/32", "dev", s.gwIf, "table", mark}},
		{bed.GW, []string{"ip", "rule", "add", "not", "fwmark", mark, "table", mark, "priority", "100"}},
	}
	if q := env.wgTxQueue; q != 0 {
		steps = append(steps,
			step{bed.RW, []string{"ip", "link", "set", s.rwIf, "txqueuelen", strconv.Itoa(q)}},
			step{bed.GW, []string{"ip", "link", "set", s.gwIf, "txqueuelen", strconv.Itoa(q)}})
	}
	for _, st := range steps {
		if _, err := runIn(ctx, st.ns, st.args[0], st.args[1:]...); err != nil {
			return nil, err
		}
	}
	if err := waitTunnel(ctx, bed, 10*time.Second, s.rw, s.gw); err != nil {
		return nil, err
	}
	return s, nil
}

// wgKeyPair makes a WireGuard (Curve25519) key pair, base64 as wg wants it.
func wgKeyPair() (priv, pub string, err error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	b := k.Bytes()
	if len(b) != 32 {
		return "", "", errors.New("x25519: unexpected key length")
	}
	return base64.StdEncoding.EncodeToString(b), base64.StdEncoding.EncodeToString(k.PublicKey().Bytes()), nil
}
