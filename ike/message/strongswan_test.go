package message

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// A real strongSwan 5.9.8 IKE_SA_INIT request, captured on the wire (see
// the file's comments): its default proposals, KE, nonce and notifies all
// decode as RFC 7296 §3 lays them out.
func TestStrongSwanIKESAInitRequest(t *testing.T) {
	dgs, _ := captured(t, "strongswan-default.txt")
	m, err := Parse(dgs[0].b)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if h.Exchange != IKE_SA_INIT || h.MsgID != 0 || h.SPIr != 0 || h.SPIi == 0 || !h.IsInitiator() || h.IsResponse() || h.Version != 0x20 || h.Length != 892 {
		t.Fatalf("header %+v", h)
	}
	want := "IKE_SA_INIT request 0 [ SA KE Nonce N(NAT_DETECTION_SOURCE_IP) N(NAT_DETECTION_DESTINATION_IP) N(IKEV2_FRAGMENTATION_SUPPORTED) N(SIGNATURE_HASH_ALGORITHMS) N(REDIRECT_SUPPORTED) ]"
	if m.String() != want {
		t.Fatalf("got  %s\nwant %s", m, want)
	}
	sa := Find[*SA](m.Payloads)
	if len(sa.Proposals) != 2 {
		t.Fatalf("%d proposals", len(sa.Proposals))
	}
	// strongSwan's default: a classic proposal and an AEAD one, each with
	// every algorithm it supports; IKE_SA_INIT carries no SPI (§3.3.1).
	for i, p := range sa.Proposals {
		if p.Num != uint8(i+1) || p.Protocol != ProtoIKE || p.SPI != nil {
			t.Fatalf("proposal %d: %+v", i, p)
		}
		for _, tr := range p.Transforms {
			if !tr.Acceptable() {
				t.Fatalf("unknown attributes in %v", tr)
			}
		}
	}
	p1, p2 := sa.Proposals[0].Transforms, sa.Proposals[1].Transforms
	if len(p1) != 34 || len(p2) != 36 {
		t.Fatalf("%d and %d transforms", len(p1), len(p2))
	}
	for _, c := range []struct {
		got, want Transform
	}{
		{p1[0], Transform{Type: TransformENCR, ID: ENCR_AES_CBC, KeyLen: 128}},
		{p1[2], Transform{Type: TransformENCR, ID: ENCR_AES_CBC, KeyLen: 256}},
		{p1[12], Transform{Type: TransformENCR, ID: ENCR_3DES}},
		{p1[13], Transform{Type: TransformINTEG, ID: AUTH_HMAC_SHA2_256_128}},
		{p1[17], Transform{Type: TransformPRF, ID: PRF_HMAC_SHA2_256}},
		{p1[21], Transform{Type: TransformDH, ID: DH_CURVE25519}},
		{p1[33], Transform{Type: TransformDH, ID: DH_MODP2048}},
		{p2[0], Transform{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLen: 128}},
		{p2[6], Transform{Type: TransformENCR, ID: ENCR_CHACHA20_POLY1305}},
		{p2[19], Transform{Type: TransformPRF, ID: PRF_HMAC_SHA2_256}},
	} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
	ke := Find[*KE](m.Payloads)
	if ke.Group != DH_CURVE25519 || len(ke.Data) != 32 {
		t.Fatalf("KE %d, %d bytes", ke.Group, len(ke.Data))
	}
	if n := Find[*Nonce](m.Payloads); len(n.Data) != 32 {
		t.Fatalf("nonce of %d bytes", len(n.Data))
	}
	for _, typ := range []NotifyType{NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP} {
		if n := m.Notify(typ); n == nil || len(n.Data) != 20 || n.SPI != nil { // SHA-1 (RFC 7296 §2.23)
			t.Fatalf("%v: %+v", typ, n)
		}
	}
	// RFC 7427 §4: SHA2-256, SHA2-384, SHA2-512, Identity.
	if n := m.Notify(SIGNATURE_HASH_ALGORITHMS); !bytes.Equal(n.Data, []byte{0, 2, 0, 3, 0, 4, 0, 5}) {
		t.Fatalf("hash algorithms %x", n.Data)
	}
	// The bytes strongSwan wrote are the ones Encode writes.
	if again := m.Encode(); !bytes.Equal(again, dgs[0].b) {
		t.Fatalf("re-encoded differently:\n%x\n%x", again, dgs[0].b)
	}
}

// Every message of two captured strongSwan exchanges parses, says what
// strongSwan logged it as, and re-encodes to the very bytes strongSwan
// sent.
func TestStrongSwanExchangesReencodeIdentically(t *testing.T) {
	for file, want := range map[string][]string{
		"strongswan-default.txt": {
			"IKE_SA_INIT request 0 [ SA KE Nonce N(NAT_DETECTION_SOURCE_IP) N(NAT_DETECTION_DESTINATION_IP) N(IKEV2_FRAGMENTATION_SUPPORTED) N(SIGNATURE_HASH_ALGORITHMS) N(REDIRECT_SUPPORTED) ]",
			"IKE_SA_INIT response 0 [ SA KE Nonce N(NAT_DETECTION_SOURCE_IP) N(NAT_DETECTION_DESTINATION_IP) N(IKEV2_FRAGMENTATION_SUPPORTED) N(SIGNATURE_HASH_ALGORITHMS) N(CHILDLESS_IKEV2_SUPPORTED) N(MULTIPLE_AUTH_SUPPORTED) ]",
			"IKE_AUTH request 1 [ SK ]",
			"IKE_AUTH response 1 [ SK ]",
			"INFORMATIONAL request 2 [ SK ]",
			"INFORMATIONAL response 2 [ SK ]",
		},
		"strongswan-gcm-fragments.txt": {
			"IKE_SA_INIT request 0 [ SA KE Nonce N(NAT_DETECTION_SOURCE_IP) N(NAT_DETECTION_DESTINATION_IP) N(IKEV2_FRAGMENTATION_SUPPORTED) N(SIGNATURE_HASH_ALGORITHMS) N(REDIRECT_SUPPORTED) ]",
			"IKE_SA_INIT response 0 [ SA KE Nonce N(NAT_DETECTION_SOURCE_IP) N(NAT_DETECTION_DESTINATION_IP) N(IKEV2_FRAGMENTATION_SUPPORTED) N(SIGNATURE_HASH_ALGORITHMS) N(CHILDLESS_IKEV2_SUPPORTED) N(MULTIPLE_AUTH_SUPPORTED) ]",
			"IKE_AUTH request 1 [ SKF(1/3) ]",
			"IKE_AUTH request 1 [ SKF(2/3) ]",
			"IKE_AUTH request 1 [ SKF(3/3) ]",
			"IKE_AUTH response 1 [ SK ]",
			"INFORMATIONAL request 2 [ SK ]",
			"INFORMATIONAL response 2 [ SK ]",
		},
	} {
		dgs, _ := captured(t, file)
		if len(dgs) != len(want) {
			t.Fatalf("%s: %d datagrams", file, len(dgs))
		}
		for i, d := range dgs {
			m, err := Parse(d.b)
			if err != nil {
				t.Fatalf("%s #%d: %v", file, i, err)
			}
			if m.String() != want[i] {
				t.Errorf("%s #%d: %s, want %s", file, i, m, want[i])
			}
			if m.Header.IsInitiator() != d.out {
				t.Errorf("%s #%d: Initiator flag %v", file, i, m.Header.IsInitiator())
			}
			if again := m.Encode(); !bytes.Equal(again, d.b) {
				t.Errorf("%s #%d: re-encoded differently", file, i)
			}
		}
	}
}

// RFC 5282 §5.1 and RFC 7383 §2.5.3: with the keys strongSwan logged, the
// associated data msg[:AADLen] and Body authenticate and decrypt every SK
// and SKF payload of the exchange; the fragments reassemble (RFC 7383
// §2.6) into the IKE_AUTH request strongSwan logged, and the inner
// payloads decode.
func TestStrongSwanEncryptedPayloadsDecrypt(t *testing.T) {
	dgs, comments := captured(t, "strongswan-gcm-fragments.txt")
	keys := map[bool]cipher.AEAD{} // by sender: initiator (true) or responder
	salts := map[bool][]byte{}
	for _, c := range comments {
		f := strings.Fields(c)
		if len(f) == 3 && (f[1] == "SK_ei" || f[1] == "SK_er") {
			k, _ := hex.DecodeString(f[2])
			blk, err := aes.NewCipher(k[:32])
			if err != nil {
				t.Fatal(err)
			}
			g, _ := cipher.NewGCM(blk)
			keys[f[1] == "SK_ei"], salts[f[1] == "SK_ei"] = g, k[32:]
		}
	}
	if len(keys) != 2 {
		t.Fatal("keys missing from the capture's comments")
	}
	open := func(m *Message, e *Encrypted) []byte {
		t.Helper()
		aead := keys[m.Header.IsInitiator()]
		nonce := append(append([]byte(nil), salts[m.Header.IsInitiator()]...), e.Body[:8]...)
		pt, err := aead.Open(nil, nonce, e.Body[8:], m.Raw[:e.AADLen])
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		// RFC 7296 §3.14: padding, then Pad Length.
		pad := int(pt[len(pt)-1])
		return pt[:len(pt)-1-pad]
	}
	var inner [][]Payload
	var frags []byte
	var fragFirst PayloadType
	for _, d := range dgs {
		m, err := Parse(d.b)
		if err != nil {
			t.Fatal(err)
		}
		e := Find[*Encrypted](m.Payloads)
		if e == nil {
			continue
		}
		if !e.Fragment {
			ps, err := ParsePayloads(e.Next, open(m, e))
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			inner = append(inner, ps)
			continue
		}
		if e.FragNum == 1 {
			fragFirst = e.Next
		}
		frags = append(frags, open(m, e)...)
		if e.FragNum == e.TotalFrags {
			ps, err := ParsePayloads(fragFirst, frags)
			if err != nil {
				t.Fatalf("reassembled: %v", err)
			}
			inner = append(inner, ps)
		}
	}
	wants := []string{
		"[ IDi N(INITIAL_CONTACT) IDr AUTH SA TSi TSr N(MOBIKE_SUPPORTED) N(NO_ADDITIONAL_ADDRESSES) N(MULTIPLE_AUTH_SUPPORTED) N(EAP_ONLY_AUTHENTICATION) N(IKEV2_MESSAGE_ID_SYNC_SUPPORTED) ]",
		"[ IDr AUTH N(MOBIKE_SUPPORTED) N(NO_ADDITIONAL_ADDRESSES) N(TS_UNACCEPTABLE) ]",
		"[ D ]",
		"[ ]",
	}
	if len(inner) != len(wants) {
		t.Fatalf("%d inner chains", len(inner))
	}
	for i, ps := range inner {
		s := (&Message{Payloads: ps}).String()
		if got := s[strings.Index(s, "["):]; got != wants[i] {
			t.Errorf("inner %d: %s, want %s", i, got, wants[i])
		}
	}

	req := inner[0]
	if id := FindID(req, false); id.IDType != ID_FQDN || string(id.Data) != "rw.example.org" {
		t.Fatalf("IDi %+v", id)
	}
	if id := FindID(req, true); id.IDType != ID_FQDN || string(id.Data) != "gw.example.org" {
		t.Fatalf("IDr %+v", id)
	}
	if a := Find[*Auth](req); a.Method != AUTH_METHOD_SHARED_KEY_MIC || len(a.Data) != 32 {
		t.Fatalf("AUTH %d, %d bytes", a.Method, len(a.Data))
	}
	sa := Find[*SA](req)
	if err := sa.CheckNumbering(false); err != nil {
		t.Fatal(err)
	}
	wantTr := []Transform{{Type: TransformENCR, ID: ENCR_AES_CBC, KeyLen: 128}, {Type: TransformINTEG, ID: AUTH_HMAC_SHA2_256_128}, {Type: TransformESN, ID: ESN_NO}}
	if p := sa.Proposals[0]; len(sa.Proposals) != 1 || p.Protocol != ProtoESP || len(p.SPI) != 4 || !slices.Equal(p.Transforms, wantTr) {
		t.Fatalf("child SA %+v", sa.Proposals)
	}
	tsi, tsr := FindTS(req, false), FindTS(req, true)
	wantTSi := []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("10.1.0.0/24"))}
	wantTSr := []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("10.2.0.0/24")), SelectorFromPrefix(netip.MustParsePrefix("fd00:2::/64"))}
	if !slices.Equal(tsi.Selectors, wantTSi) || !slices.Equal(tsr.Selectors, wantTSr) {
		t.Fatalf("TSi %+v TSr %+v", tsi.Selectors, tsr.Selectors)
	}
	if d := Find[*Delete](inner[2]); d.Protocol != ProtoIKE || d.SPIs != nil {
		t.Fatalf("Delete %+v", d)
	}
}
