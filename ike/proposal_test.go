package ike

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/roamsec/roamsec/ike/message"
)

// Proposal choice as a responder meets strongSwan's road warriors: they
// name one algorithm of each kind per suite, in any combination.

func tENCR(id, bits uint16) message.Transform {
	return message.Transform{Type: message.TransformENCR, ID: id, KeyLen: bits}
}
func tPRF(id uint16) message.Transform { return message.Transform{Type: message.TransformPRF, ID: id} }
func tDH(id uint16) message.Transform  { return message.Transform{Type: message.TransformDH, ID: id} }
func tESN(id uint16) message.Transform { return message.Transform{Type: message.TransformESN, ID: id} }

var (
	gcm128 = tENCR(message.ENCR_AES_GCM_16, 128)
	gcm256 = tENCR(message.ENCR_AES_GCM_16, 256)
	chacha = tENCR(message.ENCR_CHACHA20_POLY1305, 0)
	cbc128 = tENCR(message.ENCR_AES_CBC, 128)
)

// peerSA is a peer's SA payload, one proposal per transform list.
func peerSA(proto message.ProtocolID, props ...[]message.Transform) *message.SA {
	sa := new(message.SA)
	for i, ts := range props {
		p := message.Proposal{Num: uint8(i + 1), Protocol: proto, Transforms: ts}
		if proto == message.ProtoESP {
			p.SPI = []byte{1, 2, 3, 4}
		}
		sa.Proposals = append(sa.Proposals, p)
	}
	return sa
}

func TestParseProposals(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		esp      bool
		err      string
	}{
		{in: "aes128gcm16-prfsha384-curve25519", want: "aes128gcm16-prfsha384-curve25519"},
		{in: "aes256gcm16-aes128gcm16-prfsha256-prfsha512-ecp256-x25519", want: "aes256gcm16-aes128gcm16-prfsha256-prfsha512-ecp256-curve25519"},
		{in: "default", want: "aes256gcm16-aes128gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-ecp256-ecp384-curve25519"},
		{in: "aes128gcm16-prfsha256", err: "no DH group"},
		{in: "prfsha256-ecp256", err: "no cipher"},
		{in: "aes256cbc-sha256-modp2048", err: "not supported"},
		{in: "aes128gcm16", esp: true, want: "aes128gcm16-noesn"},
		{in: "aes256gcm16-ecp384-esn-noesn", esp: true, want: "aes256gcm16-ecp384-esn-noesn"},
		{in: "aes128gcm16-modp2048", esp: true, err: "not supported"},
		{in: "aes128gcm16-prfsha256", esp: true, err: "not supported"},
	} {
		var got string
		var err error
		if tc.esp {
			var p ESPProposal
			p, err = ParseESPProposal(tc.in)
			got = p.String()
		} else {
			var p IKEProposal
			p, err = ParseIKEProposal(tc.in)
			got = p.String()
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestChooseIKE_RFC7296_3_3_6 covers the IKE SA choice: any combination
// of what we allow, our preference first, the peer's KE group kept when
// its proposal offers it, INVALID_KE_PAYLOAD only for a group the peer
// offered, NO_PROPOSAL_CHOSEN otherwise.
func TestChooseIKE_RFC7296_3_3_6(t *testing.T) {
	for _, tc := range []struct {
		name string
		ours []string // nil: the default
		sa   *message.SA
		ke   uint16
		want string // the chosen suite; "" none (NO_PROPOSAL_CHOSEN)
	}{
		{name: "default takes any combination: strongSwan aes128gcm16-prfsha384-curve25519",
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm128, tPRF(message.PRF_HMAC_SHA2_384), tDH(message.DH_CURVE25519)}), ke: message.DH_CURVE25519,
			want: "aes128gcm16-prfsha384-curve25519"},
		{name: "default takes prfsha512 with ecp384",
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm256, tPRF(message.PRF_HMAC_SHA2_512), tDH(message.DH_ECP384)}), ke: message.DH_ECP384,
			want: "aes256gcm16-prfsha512-ecp384"},
		{name: "default takes chacha20poly1305 with ecp256",
			sa: peerSA(message.ProtoIKE, []message.Transform{chacha, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_ECP256)}), ke: message.DH_ECP256,
			want: "chacha20poly1305-prfsha256-ecp256"},
		{name: "our preference among several offered in one proposal",
			sa: peerSA(message.ProtoIKE, []message.Transform{chacha, gcm128, gcm256, tPRF(message.PRF_HMAC_SHA2_512), tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_ECP256)}), ke: message.DH_ECP256,
			want: "aes256gcm16-prfsha256-ecp256"},
		{name: "the KE group is kept when the proposal offers it",
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm256, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_ECP256), tDH(message.DH_CURVE25519)}), ke: message.DH_CURVE25519,
			want: "aes256gcm16-prfsha256-curve25519"},
		{name: "a later proposal with the KE group wins over an earlier one without",
			sa: peerSA(message.ProtoIKE,
				[]message.Transform{gcm256, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_ECP384)},
				[]message.Transform{gcm128, tPRF(message.PRF_HMAC_SHA2_384), tDH(message.DH_CURVE25519)}), ke: message.DH_CURVE25519,
			want: "aes128gcm16-prfsha384-curve25519"},
		{name: "INVALID_KE_PAYLOAD names an offered group: KE MODP-2048, ecp384 also offered",
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm256, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_MODP2048), tDH(message.DH_ECP384)}), ke: message.DH_MODP2048,
			want: "aes256gcm16-prfsha256-ecp384"},
		{name: "NO_PROPOSAL_CHOSEN when only groups we do not implement are offered",
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm256, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_MODP2048)}), ke: message.DH_MODP2048},
		{name: "configured suites restrict: prfsha384 not allowed", ours: []string{"aes128gcm16-prfsha256-x25519"},
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm128, tPRF(message.PRF_HMAC_SHA2_384), tDH(message.DH_CURVE25519)}), ke: message.DH_CURVE25519},
		{name: "configured multi-algorithm suite takes any of its combinations", ours: []string{"aes128gcm16-aes256gcm16-prfsha384-prfsha256-x25519-ecp256"},
			sa: peerSA(message.ProtoIKE, []message.Transform{gcm256, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_ECP256)}), ke: message.DH_ECP256,
			want: "aes256gcm16-prfsha256-ecp256"},
		{name: "integrity transforms mean a non-AEAD proposal",
			sa: peerSA(message.ProtoIKE, []message.Transform{cbc128, gcm128, tPRF(message.PRF_HMAC_SHA2_256), {Type: message.TransformINTEG, ID: message.AUTH_HMAC_SHA2_256_128}, tDH(message.DH_ECP256)}), ke: message.DH_ECP256},
		{name: "ESP proposals are not IKE proposals",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, tPRF(message.PRF_HMAC_SHA2_256), tDH(message.DH_ECP256)}), ke: message.DH_ECP256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours := DefaultIKEProposals
			if tc.ours != nil {
				ours = mustIKE(tc.ours...)
			}
			got, chosen, ok := chooseIKE(ours, tc.sa, dhGroup(tc.ke))
			if tc.want == "" {
				if ok {
					t.Fatalf("chose %v, want NO_PROPOSAL_CHOSEN", got)
				}
				return
			}
			if !ok || got.String() != tc.want {
				t.Fatalf("chose %v (ok %v), want %s", got, ok, tc.want)
			}
			if len(chosen.Transforms) != 3 {
				t.Fatalf("response proposal %v: want one transform of each type", chosen.Transforms)
			}
			// Whatever group we pick is one the peer offered (§1.2).
			if !offersID(&tc.sa.Proposals[chosen.Num-1], message.TransformDH, uint16(got.dh)) {
				t.Fatalf("chose group %v, which the peer's proposal %d does not offer", got.dh, chosen.Num)
			}
		})
	}
}

// TestChildProposal_RFC7296_1_3 covers the Child SA choice in IKE_AUTH
// and CREATE_CHILD_SA as the responder answers it: the notify, and the
// group INVALID_KE_PAYLOAD names.
func TestChildProposal_RFC7296_1_3(t *testing.T) {
	noESN := tESN(message.ESN_NO)
	for _, tc := range []struct {
		name   string
		ours   []string
		sa     *message.SA
		ke     uint16 // 0: no KE payload
		auth   bool   // IKE_AUTH
		want   string // chosen suite, or "" when refused
		notify message.NotifyType
		group  uint16 // INVALID_KE_PAYLOAD's group
	}{
		{name: "IKE_AUTH ignores an offered DH group (strongSwan aes128gcm16-curve25519)", auth: true,
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, tDH(message.DH_CURVE25519), noESN}), want: "aes128gcm16"},
		{name: "default takes chacha20poly1305", auth: true,
			sa: peerSA(message.ProtoESP, []message.Transform{chacha, noESN}), want: "chacha20poly1305"},
		{name: "rekey without PFS: no DH offered, no KE",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm256, noESN}), want: "aes256gcm16"},
		{name: "rekey with PFS on an offered group we implement",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, tDH(message.DH_ECP384), noESN}), ke: message.DH_ECP384, want: "aes128gcm16-ecp384"},
		{name: "rekey with PFS: the KE group wins over our preference",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, tDH(message.DH_ECP256), tDH(message.DH_CURVE25519), noESN}), ke: message.DH_CURVE25519, want: "aes128gcm16-curve25519"},
		{name: "NO_PROPOSAL_CHOSEN for MODP-2048 alone, never INVALID_KE_PAYLOAD for a group not offered",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm256, tDH(message.DH_MODP2048), noESN}), ke: message.DH_MODP2048, notify: message.NO_PROPOSAL_CHOSEN},
		{name: "INVALID_KE_PAYLOAD names the other group the peer offered",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm256, tDH(message.DH_MODP2048), tDH(message.DH_ECP256), noESN}), ke: message.DH_MODP2048,
			notify: message.INVALID_KE_PAYLOAD, group: message.DH_ECP256},
		{name: "configured groups restrict PFS", ours: []string{"aes256gcm16-ecp384"},
			sa: peerSA(message.ProtoESP, []message.Transform{gcm256, tDH(message.DH_CURVE25519), noESN}), ke: message.DH_CURVE25519, notify: message.NO_PROPOSAL_CHOSEN},
		{name: "a KE the proposal does not offer, when no DH is acceptable to the peer either",
			sa: peerSA(message.ProtoESP, []message.Transform{gcm256, noESN}), ke: message.DH_ECP256, notify: message.NO_PROPOSAL_CHOSEN},
		{name: "configured ciphers restrict", ours: []string{"aes256gcm16"}, auth: true,
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, noESN}), notify: message.NO_PROPOSAL_CHOSEN},
		{name: "ESN only offered, ours no ESN", ours: []string{"aes128gcm16"}, auth: true,
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, tESN(message.ESN_YES)}), notify: message.NO_PROPOSAL_CHOSEN},
		{name: "default prefers ESN when offered both", auth: true,
			sa: peerSA(message.ProtoESP, []message.Transform{gcm128, noESN, tESN(message.ESN_YES)}), want: "aes128gcm16-esn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{ESPProposals: DefaultESPProposals}
			if tc.ours != nil {
				cfg.ESPProposals = mustESP(tc.ours...)
			}
			s := &ikeSA{e: &Endpoint{cfg: cfg}}
			var ke *message.KE
			if tc.ke != 0 {
				ke = &message.KE{Group: tc.ke}
			}
			got, chosen, err := s.chooseChildProposal(tc.sa, ke, tc.auth)
			if tc.want != "" {
				if err != nil || got.String() != tc.want {
					t.Fatalf("chose %v, %v; want %s", got, err, tc.want)
				}
				if (got.dh != 0) != slicesHasType(chosen.Transforms, message.TransformDH) {
					t.Fatalf("response transforms %v for %v", chosen.Transforms, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("chose %v, want %v", got, tc.notify)
			}
			n := childError(err).(*message.Notify)
			if n.NotifyType != tc.notify {
				t.Fatalf("answer %v (%v), want %v", n.NotifyType, err, tc.notify)
			}
			if tc.notify == message.INVALID_KE_PAYLOAD && (len(n.Data) != 2 || binary.BigEndian.Uint16(n.Data) != tc.group) {
				t.Fatalf("INVALID_KE_PAYLOAD data %x, want group %d", n.Data, tc.group)
			}
			if !strings.Contains(err.Error(), "offered") && tc.notify == message.NO_PROPOSAL_CHOSEN {
				t.Fatalf("refusal %q does not say what the peer offered", err)
			}
		})
	}
}

func slicesHasType(ts []message.Transform, tt message.TransformType) bool {
	for _, t := range ts {
		if t.Type == tt {
			return true
		}
	}
	return false
}

// TestOurOfferAcceptedBack_RFC7296_2_7: what we offer as an initiator,
// a responder's single choice out of it is accepted; a choice we did not
// offer is refused.
func TestOurOfferAcceptedBack_RFC7296_2_7(t *testing.T) {
	ours := DefaultIKEProposals
	offer := ikeSAPayload(ours, nil)
	resp := peerSA(message.ProtoIKE, []message.Transform{gcm128, tPRF(message.PRF_HMAC_SHA2_512), tDH(message.DH_CURVE25519)})
	if got, err := acceptIKE(ours, resp); err != nil || got.String() != "aes128gcm16-prfsha512-curve25519" {
		t.Fatalf("accept %v, %v", got, err)
	}
	if _, err := acceptIKE(ours, offer); err == nil {
		t.Fatal("a response with every transform accepted")
	}
	if _, err := acceptIKE(ours, peerSA(message.ProtoIKE, []message.Transform{gcm128, tPRF(message.PRF_HMAC_SHA1), tDH(message.DH_CURVE25519)})); err == nil {
		t.Fatal("a PRF we did not offer accepted")
	}
	espOffer := espSAPayload(DefaultESPProposals, 0x1234, dhECP384)
	if !offersID(&espOffer.Proposals[0], message.TransformDH, dhECP384) {
		t.Fatalf("PFS offer %v lacks the KE group", espOffer)
	}
	r := peerSA(message.ProtoESP, []message.Transform{gcm256, tDH(message.DH_ECP384), tESN(message.ESN_YES)})
	if got, _, err := acceptESP(DefaultESPProposals, r, dhECP384, inCreate); err != nil || got.String() != "aes256gcm16-ecp384-esn" {
		t.Fatalf("accept ESP %v, %v", got, err)
	}
	if _, _, err := acceptESP(DefaultESPProposals, r, dhECP256, inCreate); err == nil {
		t.Fatal("a response with another group than our KE accepted")
	}
}

// FuzzParseProposals: any string parses or is refused with an error,
// never a panic; what parses prints as a string that parses to the same.
func FuzzParseProposals(f *testing.F) {
	for _, s := range []string{"default", "aes128gcm16-prfsha384-curve25519", "aes256gcm16-esn-noesn-ecp384", "-", "aes128gcm16--prfsha256", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParseIKEProposal(s); err == nil {
			if q, err := ParseIKEProposal(p.String()); err != nil || q.String() != p.String() {
				t.Fatalf("IKE %q -> %q -> %q, %v", s, p, q, err)
			}
		}
		if p, err := ParseESPProposal(s); err == nil {
			if q, err := ParseESPProposal(p.String()); err != nil || q.String() != p.String() {
				t.Fatalf("ESP %q -> %q -> %q, %v", s, p, q, err)
			}
		}
	})
}

// TestRekeyPFSOptional_RFC7296_3_3_3: our CREATE_CHILD_SA offer with PFS
// lists DH NONE after our groups (PFS preferred, optional), and an answer
// that chose no group (no DH transform: strongSwan's default
// esp_proposals; or NONE) is accepted with no DH; one with a group we did
// not send a KE for is not.
func TestRekeyPFSOptional_RFC7296_3_3_3(t *testing.T) {
	offer := espSAPayload(DefaultESPProposals, 0x1234, dhCurve25519)
	for _, p := range offer.Proposals {
		var dhs []uint16
		for _, x := range p.Transforms {
			if x.Type == message.TransformDH {
				dhs = append(dhs, x.ID)
			}
		}
		if len(dhs) < 2 || dhs[0] != uint16(dhCurve25519) || dhs[len(dhs)-1] != 0 {
			t.Fatalf("PFS offer's groups %v: want ours first (curve25519), NONE last", dhs)
		}
	}
	if first := espSAPayload(DefaultESPProposals, 0x1234, 0); offersID(&first.Proposals[0], message.TransformDH, 0) {
		t.Fatal("the IKE_AUTH offer names a DH group (NONE)")
	}
	for _, c := range []struct {
		name string
		ts   []message.Transform
		ok   bool
	}{
		{"no DH transform: no PFS", []message.Transform{gcm256, tESN(message.ESN_NO)}, true},
		{"DH NONE: no PFS", []message.Transform{gcm256, tDH(0), tESN(message.ESN_NO)}, true},
		{"a group without its KE", []message.Transform{gcm256, tDH(message.DH_CURVE25519), tESN(message.ESN_NO)}, false},
	} {
		got, _, err := acceptESP(DefaultESPProposals, peerSA(message.ProtoESP, c.ts), 0, inCreate)
		if (err == nil) != c.ok || err == nil && got.dh != 0 {
			t.Errorf("%s: accepted %v (%v), want ok=%v", c.name, got, err, c.ok)
		}
	}
}
