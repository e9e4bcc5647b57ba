package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

type cpioEntry struct {
	name         string
	mode         uint32
	data         string
	rmaj, rminor uint32
}

// readCPIO parses a newc archive, checking the format's alignment rules.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var es []cpioEntry
	off := 0
	field := func(h []byte, i int) uint32 {
		v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 || off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		h := b[off : off+110]
		size, namesize := int(field(h, 6)), int(field(h, 11))
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		data := align(off + 110 + namesize)
		if name == "TRAILER!!!" {
			return es
		}
		es = append(es, cpioEntry{name, field(h, 1), string(b[data : data+size]), field(h, 9), field(h, 10)})
		off = align(data + size)
	}
}

func TestCPIO(t *testing.T) {
	src := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("/bin")
	c.File("/usr/local/bin/prog", src)
	c.Bytes("/etc/x", 0o644, []byte("abc"))
	c.Symlink("/var/run", "/run")
	c.CharDev("/dev/console", 0o600, 5, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{"bin", modeDir | 0o755, "", 0, 0},
		{"usr", modeDir | 0o755, "", 0, 0},
		{"usr/local", modeDir | 0o755, "", 0, 0},
		{"usr/local/bin", modeDir | 0o755, "", 0, 0},
		{"usr/local/bin/prog", modeFile | 0o750, "#!/bin/sh\necho hi\n", 0, 0},
		{"etc", modeDir | 0o755, "", 0, 0},
		{"etc/x", modeFile | 0o644, "abc", 0, 0},
		{"var", modeDir | 0o755, "", 0, 0},
		{"var/run", modeLink | 0o777, "/run", 0, 0},
		{"dev", modeDir | 0o755, "", 0, 0},
		{"dev/console", modeChar | 0o600, "", 5, 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries:\n got %v\nwant %v", got, want)
	}

	c = newCPIOWriter(&buf)
	c.Bytes("/a", 0o644, nil)
	c.Bytes("a", 0o644, nil)
	if err := c.Close(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: err = %v", err)
	}
	c = newCPIOWriter(&buf)
	c.File("/x", filepath.Dir(src))
	if err := c.Close(); err == nil {
		t.Error("a directory as a file: no error")
	}
}

func TestModuleOrder(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/crypto/crc32c_generic.ko:\n" +
		"kernel/lib/libcrc32c.ko:\n" +
		"kernel/net/ipv4/udp_tunnel.ko:\n" +
		"kernel/net/ipv6/ip6_udp_tunnel.ko:\n" +
		"kernel/net/sctp/sctp.ko: kernel/net/ipv6/ip6_udp_tunnel.ko kernel/net/ipv4/udp_tunnel.ko kernel/lib/libcrc32c.ko\n" +
		"kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko\n" +
		"kernel/net/netfilter/nfnetlink.ko:\n" +
		"kernel/drivers/net/veth.ko:\n"
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/net/ipv6/ipv6.ko\n"), 0o644)
	got, err := moduleOrder(dir, []string{"crc32c-generic", "sctp", "ipv6", "nf_tables", "veth"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/crypto/crc32c_generic.ko", "kernel/lib/libcrc32c.ko", "kernel/net/ipv4/udp_tunnel.ko",
		"kernel/net/ipv6/ip6_udp_tunnel.ko", "kernel/net/sctp/sctp.ko", "kernel/net/netfilter/nfnetlink.ko",
		"kernel/net/netfilter/nf_tables.ko", "kernel/drivers/net/veth.ko"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order:\n got %v\nwant %v", got, want)
	}
	if _, err := moduleOrder(dir, []string{"nosuch"}); err == nil {
		t.Error("unknown module: no error")
	}
}

func TestConsole(t *testing.T) {
	const m = "ROAMSEC-VM-0123"
	feed := func(lines ...string) (Result, error) {
		c := newConsole(m, time.Now())
		c.read(strings.NewReader(strings.Join(lines, "")))
		return c.result()
	}
	r, err := feed("[    1.0] boot\r\n", m+" START\r\n", "a\r\n", "b", "\r\n", m+" EXIT 3\r\n", "[    9.9] reboot: Power down\r\n")
	if err != nil || r.Output != "a\nb" || r.ExitCode != 3 {
		t.Errorf("output without final newline: %q %d %v", r.Output, r.ExitCode, err)
	}
	r, err = feed(m+" START\n", "a\n", "\n", m+" EXIT 0\n")
	if err != nil || r.Output != "a\n" || r.ExitCode != 0 {
		t.Errorf("output with final newline: %q %d %v", r.Output, r.ExitCode, err)
	}
	// A line that looks like the end but names another run is output.
	r, err = feed(m+" START\n", "ROAMSEC-VM-9999 EXIT 1\n", "\n", m+" EXIT 0\n")
	if err != nil || r.Output != "ROAMSEC-VM-9999 EXIT 1\n" {
		t.Errorf("foreign marker: %q %v", r.Output, err)
	}
	if _, err = feed("Kernel panic - not syncing\n"); err == nil || !strings.Contains(err.Error(), "did not reach") {
		t.Errorf("no start: %v", err)
	}
	if r, err = feed(m+" START\n", "half\n"); err == nil || r.Output != "half\n" {
		t.Errorf("no end: %q %v", r.Output, err)
	}
}

// HostBinary packs a dynamically linked program with its whole library
// closure and the dynamic loader (nft: libnftables, libnftnl, libmnl, ...).
func TestHostBinary(t *testing.T) {
	if _, err := lookHost("nft"); err != nil {
		t.Skip(err)
	}
	files, err := HostBinary("nft")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for k, v := range files {
		if k != v || !filepath.IsAbs(k) {
			t.Errorf("entry %s -> %s: want the same absolute path on both sides", k, v)
		}
		names = append(names, filepath.Base(k))
	}
	all := strings.Join(names, " ")
	for _, w := range []string{"nft", "ld-linux-x86-64.so.2", "libc.so.6", "libnftables.so.1", "libnftnl.so.11", "libmnl.so.0"} {
		if !strings.Contains(" "+all+" ", " "+w+" ") {
			t.Errorf("HostBinary(nft) lacks %s: %s", w, all)
		}
	}
	if _, err := HostBinary("roamsec-no-such-program"); err == nil {
		t.Error("a missing program: no error")
	}
	both, err := HostBinaries("nft", "nft")
	if err != nil || len(both) != len(files) {
		t.Errorf("HostBinaries(nft, nft): %d entries, %v; want %d", len(both), err, len(files))
	}
}
