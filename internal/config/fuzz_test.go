package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; it returns a Config or an error made of
// FieldErrors naming the file, never both and never neither; a Config
// builds or fails cleanly.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"gateway.yaml", "roadwarrior.yaml"} {
		data, err := os.ReadFile(filepath.Join(examples, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(base))
	f.Add([]byte("role: roadwarrior\nsas: []\n"))
	f.Add([]byte("tun: &t {name: x}\nlog: *t\n"))
	f.Add([]byte("a: [\n"))
	f.Add([]byte("role: gateway\nike:\n  id: gw.example\n  one_time:\n    etcd: {endpoints: [https://192.0.2.10:2379, http://[2001:db8::1]:2379], prefix: /r/, ca: ca.pem}\n    virtual_pool: [100.64.1.0/24]\n"))
	f.Add([]byte("role: gateway\nha:\n  listen: 192.0.2.11\n  peer: \"[2001:db8::2]:4501\"\n  cluster_key: /nonexistent\n  priority: 7\n  heartbeat: 20ms\n  service_addresses: [{prefix: 192.0.2.100/24, interface: eth0}]\n"))
	f.Add([]byte(""))
	f.Add([]byte(strings.Replace(base, "0x1001", "0x1000", 1) + "    lifetimes: {soft: {time: 1h}, hard: {time: 2h}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v, error %v", c, err)
		}
		if err != nil {
			j, ok := err.(interface{ Unwrap() []error })
			if !ok || len(j.Unwrap()) == 0 {
				t.Fatalf("not a joined error: %#v", err)
			}
			for _, e := range j.Unwrap() {
				var fe *FieldError
				if !errors.As(e, &fe) || fe.File != "fuzz.yaml" || fe.Msg == "" || !strings.HasPrefix(e.Error(), "fuzz.yaml") {
					t.Fatalf("bad error %#v", e)
				}
			}
			return
		}
		b, err := c.Build()
		if err != nil {
			if b != nil {
				t.Fatal("Built returned with an error")
			}
			return
		}
		b.Close()
	})
}

// ControlSocketOf's reader never panics, and returns an absolute path or
// an error.
func FuzzControlSocketOf(f *testing.F) {
	f.Add([]byte("role: gateway\n"))
	f.Add([]byte("role: roadwarrior\ncontrol_socket: /tmp/x.sock\n"))
	f.Add([]byte("control_socket: [a]\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sock, err := controlSocketOf("f.yaml", data)
		if err == nil && !strings.HasPrefix(sock, "/") {
			t.Fatalf("socket %q is not absolute", sock)
		}
	})
}
