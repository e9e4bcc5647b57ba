package ike

import (
	"fmt"
	"strings"

	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// IKEProposal is one IKE SA suite: an AEAD cipher, a PRF and a DH group.
type IKEProposal struct {
	encr encrAlg
	prf  prfAlg
	dh   dhGroup
}

// ESPProposal is one Child SA suite: an AEAD cipher, extended sequence
// numbers or not, and a DH group for PFS in CREATE_CHILD_SA (0: none).
type ESPProposal struct {
	encr encrAlg
	esn  bool
	dh   dhGroup
}

// Default proposals, strongest first. Every one is also strongSwan 5.9's
// name for it, so the same strings configure both.
var (
	DefaultIKEProposals = mustIKE("aes256gcm16-prfsha256-ecp256", "aes256gcm16-prfsha384-ecp384",
		"aes128gcm16-prfsha256-x25519", "chacha20poly1305-prfsha256-x25519")
	DefaultESPProposals = mustESP("aes256gcm16-esn", "aes256gcm16", "aes128gcm16-esn", "aes128gcm16", "chacha20poly1305")
)

func mustIKE(ss ...string) []IKEProposal {
	var ps []IKEProposal
	for _, s := range ss {
		p, err := ParseIKEProposal(s)
		if err != nil {
			panic(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func mustESP(ss ...string) []ESPProposal {
	var ps []ESPProposal
	for _, s := range ss {
		p, err := ParseESPProposal(s)
		if err != nil {
			panic(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func parseEncr(tok string) (encrAlg, bool) {
	switch tok {
	case "aes128gcm16", "aes128gcm":
		return encrAlg{encrAESGCM16, 128}, true
	case "aes256gcm16", "aes256gcm":
		return encrAlg{encrAESGCM16, 256}, true
	case "chacha20poly1305":
		return encrAlg{encrChaCha20P, 256}, true
	}
	return encrAlg{}, false
}

func parseDH(tok string) (dhGroup, bool) {
	switch tok {
	case "ecp256":
		return dhECP256, true
	case "ecp384":
		return dhECP384, true
	case "x25519", "curve25519":
		return dhCurve25519, true
	}
	return 0, false
}

// ParseIKEProposal parses "ENCR-PRF-DH" as strongSwan writes it, e.g.
// aes256gcm16-prfsha256-ecp256. Only AEAD ciphers: aes128gcm16,
// aes256gcm16, chacha20poly1305; PRFs prfsha256/384/512; DH ecp256,
// ecp384, x25519.
func ParseIKEProposal(s string) (IKEProposal, error) {
	var p IKEProposal
	toks := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	if len(toks) != 3 {
		return p, fmt.Errorf("IKE proposal %q: want cipher-prf-dhgroup, e.g. aes256gcm16-prfsha256-ecp256", s)
	}
	var ok bool
	if p.encr, ok = parseEncr(toks[0]); !ok {
		return p, fmt.Errorf("IKE proposal %q: cipher %q not supported (aes128gcm16, aes256gcm16, chacha20poly1305)", s, toks[0])
	}
	switch toks[1] {
	case "prfsha256":
		p.prf = prfSHA256
	case "prfsha384":
		p.prf = prfSHA384
	case "prfsha512":
		p.prf = prfSHA512
	default:
		return p, fmt.Errorf("IKE proposal %q: PRF %q not supported (prfsha256, prfsha384, prfsha512)", s, toks[1])
	}
	if p.dh, ok = parseDH(toks[2]); !ok {
		return p, fmt.Errorf("IKE proposal %q: DH group %q not supported (ecp256, ecp384, x25519)", s, toks[2])
	}
	return p, nil
}

func (p IKEProposal) String() string {
	prf := map[prfAlg]string{prfSHA256: "prfsha256", prfSHA384: "prfsha384", prfSHA512: "prfsha512"}[p.prf]
	dh := p.dh.String()
	if p.dh == dhCurve25519 {
		dh = "x25519"
	}
	return p.encr.String() + "-" + prf + "-" + dh
}

// ParseESPProposal parses "ENCR[-DH][-esn|-noesn]", e.g. aes256gcm16-esn
// or aes128gcm16-x25519 (PFS on rekey).
func ParseESPProposal(s string) (ESPProposal, error) {
	var p ESPProposal
	toks := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	var ok bool
	if p.encr, ok = parseEncr(toks[0]); !ok {
		return p, fmt.Errorf("ESP proposal %q: cipher %q not supported (aes128gcm16, aes256gcm16, chacha20poly1305)", s, toks[0])
	}
	for _, t := range toks[1:] {
		switch t {
		case "esn":
			p.esn = true
		case "noesn":
			p.esn = false
		default:
			if p.dh, ok = parseDH(t); !ok {
				return p, fmt.Errorf("ESP proposal %q: %q is neither esn/noesn nor a DH group (ecp256, ecp384, x25519)", s, t)
			}
		}
	}
	return p, nil
}

func (p ESPProposal) String() string {
	s := p.encr.String()
	if p.dh != 0 {
		s += "-" + p.dh.String()
	}
	if p.esn {
		s += "-esn"
	}
	return s
}

// transform maps the ESP cipher to the tunnel package's.
func (p ESPProposal) transform() tunnel.Transform {
	switch {
	case p.encr.id == encrChaCha20P:
		return tunnel.ChaCha20Poly1305
	case p.encr.bits == 128:
		return tunnel.AESGCM128
	}
	return tunnel.AESGCM256
}

func encrTransform(e encrAlg) message.Transform {
	t := message.Transform{Type: message.TransformENCR, ID: e.id}
	if e.id == encrAESGCM16 {
		t.KeyLen = uint16(e.bits) // Key Length attribute, RFC 7296 §3.3.5
	}
	return t
}

// ikeSAPayload is our SA payload offer for an IKE SA. spi is empty in
// IKE_SA_INIT and 8 bytes in a rekey (RFC 7296 §3.3.1).
func ikeSAPayload(ps []IKEProposal, spi []byte) *message.SA {
	sa := new(message.SA)
	for i, p := range ps {
		sa.Proposals = append(sa.Proposals, message.Proposal{
			Num: uint8(i + 1), Protocol: message.ProtoIKE, SPI: spi,
			Transforms: []message.Transform{
				encrTransform(p.encr),
				{Type: message.TransformPRF, ID: uint16(p.prf)},
				{Type: message.TransformDH, ID: uint16(p.dh)},
			},
		})
	}
	return sa
}

// espSAPayload is our offer for a Child SA; pfs adds each proposal's DH
// group (CREATE_CHILD_SA with PFS); the first Child SA, created with
// IKE_AUTH, carries none (RFC 7296 §1.2).
func espSAPayload(ps []ESPProposal, spi uint32, pfs bool) *message.SA {
	sa := new(message.SA)
	spib := []byte{byte(spi >> 24), byte(spi >> 16), byte(spi >> 8), byte(spi)}
	for i, p := range ps {
		ts := []message.Transform{encrTransform(p.encr)}
		if pfs && p.dh != 0 {
			ts = append(ts, message.Transform{Type: message.TransformDH, ID: uint16(p.dh)})
		}
		esn := uint16(esnNo)
		if p.esn {
			esn = esnYes
		}
		ts = append(ts, message.Transform{Type: message.TransformESN, ID: esn})
		sa.Proposals = append(sa.Proposals, message.Proposal{Num: uint8(i + 1), Protocol: message.ProtoESP, SPI: spib, Transforms: ts})
	}
	return sa
}

// has reports whether a received proposal offers transform t.
func has(p *message.Proposal, t message.Transform) bool {
	for _, x := range p.Transforms {
		// §3.3.6: a transform with an attribute we do not understand is
		// never chosen.
		if x.Acceptable() && x.Type == t.Type && x.ID == t.ID && x.KeyLen == t.KeyLen {
			return true
		}
	}
	return false
}

// typesOffered is the set of transform types in p.
func typesOffered(p *message.Proposal) map[message.TransformType]bool {
	m := map[message.TransformType]bool{}
	for _, x := range p.Transforms {
		m[x.Type] = true
	}
	return m
}

// chooseIKE picks, in our order of preference, the first of ours that one
// of the peer's proposals offers in full (RFC 7296 §3.3.6), and returns the
// chosen proposal as the response carries it.
func chooseIKE(ours []IKEProposal, sa *message.SA) (IKEProposal, message.Proposal, bool) {
	for _, o := range ours {
		want := []message.Transform{encrTransform(o.encr), {Type: message.TransformPRF, ID: uint16(o.prf)}, {Type: message.TransformDH, ID: uint16(o.dh)}}
		for i := range sa.Proposals {
			p := &sa.Proposals[i]
			if p.Protocol != message.ProtoIKE {
				continue
			}
			types := typesOffered(p)
			if types[message.TransformINTEG] && !hasID(p, message.TransformINTEG, 0) {
				continue // an AEAD proposal carries no integrity transform, or NONE (§3.3.3)
			}
			ok := true
			for _, w := range want {
				ok = ok && has(p, w)
			}
			if ok {
				return o, message.Proposal{Num: p.Num, Protocol: message.ProtoIKE, SPI: p.SPI, Transforms: want}, true
			}
		}
	}
	return IKEProposal{}, message.Proposal{}, false
}

func hasID(p *message.Proposal, t message.TransformType, id uint16) bool {
	for _, x := range p.Transforms {
		if x.Acceptable() && x.Type == t && x.ID == id {
			return true
		}
	}
	return false
}

// chooseESP picks a Child SA proposal the same way. dh is the KE group the
// peer sent in CREATE_CHILD_SA (0: none): with it, the proposal must offer
// that group (PFS); without it, no DH or DH NONE.
func chooseESP(ours []ESPProposal, sa *message.SA, dh dhGroup) (ESPProposal, message.Proposal, bool) {
	for _, o := range ours {
		for i := range sa.Proposals {
			p := &sa.Proposals[i]
			if p.Protocol != message.ProtoESP || len(p.SPI) != 4 {
				continue
			}
			if !has(p, encrTransform(o.encr)) {
				continue
			}
			types := typesOffered(p)
			if types[message.TransformINTEG] && !hasID(p, message.TransformINTEG, 0) {
				continue
			}
			esn := uint16(esnNo)
			if o.esn {
				esn = esnYes
			}
			if types[message.TransformESN] && !hasID(p, message.TransformESN, esn) {
				continue
			}
			if !types[message.TransformESN] && o.esn {
				continue
			}
			resp := []message.Transform{encrTransform(o.encr)}
			if dh != 0 {
				if !hasID(p, message.TransformDH, uint16(dh)) {
					continue
				}
				resp = append(resp, message.Transform{Type: message.TransformDH, ID: uint16(dh)})
			} else if types[message.TransformDH] && !hasID(p, message.TransformDH, 0) {
				continue
			}
			resp = append(resp, message.Transform{Type: message.TransformESN, ID: esn})
			chosen := o
			chosen.dh = dh
			return chosen, message.Proposal{Num: p.Num, Protocol: message.ProtoESP, SPI: p.SPI, Transforms: resp}, true
		}
	}
	return ESPProposal{}, message.Proposal{}, false
}

// acceptIKE checks a responder's choice against what we offered (§2.7:
// exactly one proposal, one transform per type, one we sent).
func acceptIKE(ours []IKEProposal, sa *message.SA) (IKEProposal, error) {
	if sa == nil || len(sa.Proposals) != 1 {
		return IKEProposal{}, fmt.Errorf("responder's SA payload must hold exactly one proposal")
	}
	got, _, ok := chooseIKE(ours, sa)
	if !ok || len(sa.Proposals[0].Transforms) != 3 {
		return IKEProposal{}, fmt.Errorf("responder chose a proposal we did not offer")
	}
	return got, nil
}

func acceptESP(ours []ESPProposal, sa *message.SA, dh dhGroup) (ESPProposal, uint32, error) {
	if sa == nil || len(sa.Proposals) != 1 {
		return ESPProposal{}, 0, fmt.Errorf("responder's SA payload must hold exactly one proposal")
	}
	got, p, ok := chooseESP(ours, sa, dh)
	if !ok || len(sa.Proposals[0].Transforms) != len(p.Transforms) {
		return ESPProposal{}, 0, fmt.Errorf("responder chose a Child SA proposal we did not offer")
	}
	s := sa.Proposals[0].SPI
	return got, uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3]), nil
}
