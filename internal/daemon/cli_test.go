package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/internal/config"
)

// Each failure a person can hit: its exit code and advice.
func TestCLIClassify(t *testing.T) {
	id, _ := auth.ParseIdentity("rw1@example.org")
	k := &config.IKE{ID: id, Port: 500, LocalTS: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/32")}, RemoteTS: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	fc := failureContext{role: "roadwarrior connect", cfgPath: "/etc/roamsec/roadwarrior.yaml", ike: k, gwName: "gw.example", gwAddr: "192.0.2.1:500"}
	silent := ike.ErrPeerSilent
	for _, c := range []struct {
		err  error
		code int
		want string
	}{
		{&ike.ExchangeError{Exchange: message.IKE_SA_INIT, Err: silent}, ExitUnreachable, "no answer from gw.example (192.0.2.1) on UDP 500: is the gateway up, and is UDP 500/4500 open?"},
		{&ike.ExchangeError{Exchange: message.IKE_AUTH, Err: silent}, ExitUnreachable, "gw.example (192.0.2.1) answered on UDP 500 but not on UDP 4500"},
		{fmt.Errorf("%w: gw.example: %w", ErrNameNotFound, &net.DNSError{Err: "no such host", Name: "gw.example", IsNotFound: true}), ExitNameUnknown, "cannot resolve the gateway's name gw.example: no such host"},
		{ike.ErrAuthRefused, ExitAuthRefused, "refused our authentication as rw1@example.org: check ike.id and the pre-shared key"},
		{fmt.Errorf("%w: gw.example: bad AUTH", ike.ErrPeerAuth), ExitAuthRefused, "did not prove its identity"},
		{&TUNError{Name: "roamsec0", Err: syscall.EPERM}, ExitPermission, "no permission to create the TUN device (/dev/net/tun: operation not permitted): run as root (sudo roadwarrior connect)"},
		{fmt.Errorf("IKE port 500: %w", &os.SyscallError{Syscall: "bind", Err: syscall.EACCES}), ExitPermission, "run as root"},
		{&ike.NotifyError{Type: message.TS_UNACCEPTABLE}, ExitTSRefused, "the gateway refused the addresses we asked for (TS_UNACCEPTABLE: 192.0.2.2/32 <=> 203.0.113.0/24)"},
		{ike.ErrNoVirtualAddress, ExitTSRefused, "no virtual address for us"},
		{&ike.NotifyError{Exchange: message.IKE_SA_INIT, Type: message.NO_PROPOSAL_CHOSEN}, ExitNoProposal, "set ike.proposals and ike.esp_proposals"},
		{errors.New("something else"), ExitRuntime, "something else"},
	} {
		f := classify(c.err, fc)
		if f.code != c.code || !strings.Contains(f.msg, c.want) {
			t.Errorf("%v: %d %q, want %d with %q", c.err, f.code, f.msg, c.code, c.want)
		}
	}
}

// The exit code follows the error's type, not its words: the same typed
// error under any message keeps its code, and a message that only reads
// like one (an untyped error) does not get it.
func TestCLIExitCodeNotFromText(t *testing.T) {
	fc := failureContext{role: "roadwarrior connect", cfgPath: "rw.yaml"}
	typed := []struct {
		err  error
		code int
	}{
		{&ike.ExchangeError{Exchange: message.IKE_AUTH, Err: ike.ErrPeerSilent}, ExitUnreachable},
		{ike.ErrPeerSilent, ExitUnreachable},
		{ike.ErrAuthRefused, ExitAuthRefused},
		{ike.ErrPeerAuth, ExitAuthRefused},
		{&ike.NotifyError{Type: message.TS_UNACCEPTABLE}, ExitTSRefused},
		{&ike.NotifyError{Type: message.INTERNAL_ADDRESS_FAILURE}, ExitTSRefused},
		{ike.ErrNoVirtualAddress, ExitTSRefused},
		{&ike.NotifyError{Exchange: message.IKE_SA_INIT, Type: message.NO_PROPOSAL_CHOSEN}, ExitNoProposal},
		{ike.ErrNoProposal, ExitNoProposal},
	}
	// Permission: the errno, not the words "operation not permitted"; the
	// TUN device's advice by the error's type, not "TUN device" in it.
	typed = append(typed, struct {
		err  error
		code int
	}{fmt.Errorf("add route: %w", syscall.EPERM), ExitPermission}, struct {
		err  error
		code int
	}{fmt.Errorf("bind: %w", &os.SyscallError{Syscall: "bind", Err: syscall.EACCES}), ExitPermission})
	for _, c := range typed {
		reworded := fmt.Errorf("quite different words entirely: %w", c.err)
		if got := classify(reworded, fc).code; got != c.code {
			t.Errorf("%T %v reworded: exit %d, want %d", c.err, c.err, got, c.code)
		}
		if got := classify(errors.New(c.err.Error()), fc).code; got == c.code {
			t.Errorf("untyped %q: exit %d from its text alone", c.err, got)
		}
	}
}

// The TUN device's advice follows the error's type: a TUNError under
// other words gets it, a message that only mentions a TUN device does not.
func TestCLITUNAdviceFromType(t *testing.T) {
	fc := failureContext{role: "roadwarrior connect", cfgPath: "rw.yaml"}
	const tunAdvice = "no permission to create the TUN device"
	if f := classify(fmt.Errorf("quite different words: %w", &TUNError{Name: "x", Err: syscall.EPERM}), fc); f.code != ExitPermission || !strings.Contains(f.msg, tunAdvice) {
		t.Errorf("typed TUNError reworded: %d %q", f.code, f.msg)
	}
	if f := classify(fmt.Errorf("TUN device route: %w", syscall.EPERM), fc); f.code != ExitPermission || strings.Contains(f.msg, tunAdvice) {
		t.Errorf("untyped error mentioning a TUN device: %d %q", f.code, f.msg)
	}
}

// Every exit code is in the usage text and in both man pages.
func TestCLIExitCodesDocumented(t *testing.T) {
	codes := []int{ExitOK, ExitUsage, ExitConfig, ExitRuntime, ExitUnreachable, ExitNameUnknown, ExitAuthRefused, ExitPermission, ExitTSRefused, ExitNoProposal,
		ExitOneTimeRefused, ExitOneTimeCode}
	for _, role := range []string{"roadwarrior", "gateway"} {
		var b bytes.Buffer
		if code := Main(role, []string{"-help"}, &b, &b); code != ExitOK {
			t.Fatalf("%s -help: exit %d", role, code)
		}
		for _, c := range codes {
			if !regexp.MustCompile(fmt.Sprintf(`(?m)^  %d +\S`, c)).MatchString(b.String()) {
				t.Errorf("%s -help does not explain exit code %d:\n%s", role, c, b.String())
			}
		}
	}
	man, err := os.ReadFile("../../packaging/man/roamsec-roadwarrior.8")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range codes {
		if !strings.Contains(string(man), fmt.Sprintf(".TP\n.B %d\n", c)) {
			t.Errorf("roamsec-roadwarrior.8 does not explain exit code %d", c)
		}
	}
	var b bytes.Buffer
	if code := Main("gateway", []string{"connect"}, &b, &b); code != ExitUsage {
		t.Errorf("gateway connect: exit %d, want %d", code, ExitUsage)
	}
	if code := Main("roadwarrior", []string{"sa", "lst"}, &b, &b); code != ExitUsage {
		t.Errorf("roadwarrior sa lst: exit %d, want %d", code, ExitUsage)
	}
}
