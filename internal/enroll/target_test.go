package enroll

import (
	"bufio"
	"crypto"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/ike/auth"
)

// Seed 002 table 4: the Target authorizes (objective → proposals, pool)
// and every step, refusals too, is a line of the accounting log and a
// count by reason; a request that is not a one-time key's reaches the log.
func TestSeed002TargetAuthorizesAndAccountsEveryStep(t *testing.T) {
	dir := t.TempDir()
	h := OpenHost(filepath.Join(dir, "keys.json"))
	keys, _, err := h.Issue("alice", 1, ObjectiveStrict, 0)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := OpenAccounting(filepath.Join(dir, "acct.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	tg := &Target{Host: h, Acct: acct, Gateway: "gw-a", VirtualPool: netip.MustParsePrefix("100.64.1.0/24")}
	k := keys[0]
	msg := []byte("octets")
	_, sig, _ := k.Credential().Sign(msg, []auth.HashAlg{auth.HashIdentity})
	req := ike.OneTimeRequest{ID: k.Identity(), SPIi: 1, SPIr: 2, Remote: netip.MustParseAddrPort("192.0.2.2:4500"),
		Verify: func(pub crypto.PublicKey) error { return auth.Verify(auth.MethodDigitalSignature, sig, msg, pub) }}
	p, err := tg.Admit(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.PSK) != 32 || !p.OneTime || p.VirtualPool != tg.VirtualPool || len(p.ESPProposals) != 1 || p.ESPProposals[0].String() != "aes256gcm16-esn-noesn" {
		t.Fatalf("peer %+v", p)
	}
	if _, err := tg.Admit(req); ReasonOf(err) != ReasonUsed {
		t.Fatalf("second: %v", err)
	}
	bad := req
	bad.ID = auth.Identity{Type: auth.IDKeyID, Data: []byte{1, 2}}
	if _, err := tg.Admit(bad); ReasonOf(err) != ReasonMalformed {
		t.Fatalf("malformed: %v", err)
	}
	acct.Close()
	f, _ := os.Open(filepath.Join(dir, "acct.jsonl"))
	defer f.Close()
	var got []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Event+"/"+string(e.Reason))
		if e.Request != "0000000000000001_0000000000000002" || e.Gateway != "gw-a" {
			t.Errorf("event without its request or gateway: %+v", e)
		}
	}
	want := []string{"request/", "verified/", "marked_used/", "authorized/", "request/", "refused/used", "request/", "refused/malformed"}
	if !slices.Equal(got, want) {
		t.Fatalf("accounting %v, want %v", got, want)
	}
	if c := tg.Counts(); c.Admitted != 1 || c.Refused["used"] != 1 || c.Refused["malformed"] != 1 {
		t.Fatalf("counts %+v", c)
	}
}
