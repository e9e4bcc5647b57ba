package ike

import (
	"fmt"
	"slices"
	"strings"

	"github.com/roamsec/roamsec/ike/message"
	"github.com/roamsec/roamsec/tunnel"
)

// IKEProposal is one IKE SA proposal as strongSwan writes it: one or more
// ciphers, PRFs and DH groups, each list in our order of preference. Any
// combination of one of each is acceptable (RFC 7296 §3.3: a proposal
// offers every combination of its transforms).
type IKEProposal struct {
	encr []encrAlg
	prf  []prfAlg
	dh   []dhGroup
}

// ESPProposal is one Child SA proposal: ciphers, extended sequence
// numbers or not (in preference order), and the DH groups accepted for PFS
// in CREATE_CHILD_SA (none named: any group we implement).
type ESPProposal struct {
	encr []encrAlg
	esn  []bool
	dh   []dhGroup
}

// ikeSuite is what an IKE SA negotiated: one of each.
type ikeSuite struct {
	encr encrAlg
	prf  prfAlg
	dh   dhGroup
}

// espSuite is what a Child SA negotiated; dh 0: no PFS exchange.
type espSuite struct {
	encr encrAlg
	esn  bool
	dh   dhGroup
}

// What roamsec implements, in our order of preference.
var (
	allEncr = []encrAlg{{encrAESGCM16, 256}, {encrAESGCM16, 128}, {encrChaCha20P, 256}}
	allPRF  = []prfAlg{prfSHA256, prfSHA384, prfSHA512}
	allDH   = []dhGroup{dhECP256, dhECP384, dhCurve25519}
)

// Default proposals: everything we implement, like strongSwan's
// `default`; a peer may pick any combination (our preference first).
// Configured proposals restrict it.
var (
	DefaultIKEProposals = mustIKE("default")
	DefaultESPProposals = mustESP("default")
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

func parsePRF(tok string) (prfAlg, bool) {
	switch tok {
	case "prfsha256":
		return prfSHA256, true
	case "prfsha384":
		return prfSHA384, true
	case "prfsha512":
		return prfSHA512, true
	}
	return 0, false
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

const (
	supportedEncr = "aes128gcm16, aes256gcm16, chacha20poly1305"
	supportedPRF  = "prfsha256, prfsha384, prfsha512"
	supportedDH   = "ecp256, ecp384, x25519 (curve25519)"
)

func addOnce[T comparable](l []T, v T) []T {
	if slices.Contains(l, v) {
		return l
	}
	return append(l, v)
}

// ParseIKEProposal parses a proposal as strongSwan writes it: tokens
// joined by "-", any number of ciphers, PRFs and DH groups, e.g.
// aes128gcm16-prfsha384-curve25519 or
// aes256gcm16-aes128gcm16-prfsha256-prfsha512-ecp256-x25519; "default" is
// everything we implement. AEAD ciphers only (aes128gcm16, aes256gcm16,
// chacha20poly1305), so no integrity algorithm.
func ParseIKEProposal(s string) (IKEProposal, error) {
	var p IKEProposal
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "default" {
		return IKEProposal{encr: slices.Clone(allEncr), prf: slices.Clone(allPRF), dh: slices.Clone(allDH)}, nil
	}
	for _, t := range strings.Split(s, "-") {
		if e, ok := parseEncr(t); ok {
			p.encr = addOnce(p.encr, e)
		} else if f, ok := parsePRF(t); ok {
			p.prf = addOnce(p.prf, f)
		} else if g, ok := parseDH(t); ok {
			p.dh = addOnce(p.dh, g)
		} else {
			return p, fmt.Errorf("IKE proposal %q: %q not supported: not a cipher (%s), PRF (%s) or DH group (%s) we implement", s, t, supportedEncr, supportedPRF, supportedDH)
		}
	}
	switch {
	case len(p.encr) == 0:
		return p, fmt.Errorf("IKE proposal %q names no cipher (%s)", s, supportedEncr)
	case len(p.prf) == 0:
		return p, fmt.Errorf("IKE proposal %q names no PRF (%s)", s, supportedPRF)
	case len(p.dh) == 0:
		return p, fmt.Errorf("IKE proposal %q names no DH group (%s)", s, supportedDH)
	}
	return p, nil
}

func joinTokens[T fmt.Stringer](parts []string, l []T) []string {
	for _, x := range l {
		parts = append(parts, x.String())
	}
	return parts
}

func (p IKEProposal) String() string {
	parts := joinTokens(nil, p.encr)
	parts = joinTokens(parts, p.prf)
	return strings.Join(joinTokens(parts, p.dh), "-")
}

func (p prfAlg) String() string {
	switch p {
	case prfSHA384:
		return "prfsha384"
	case prfSHA512:
		return "prfsha512"
	}
	return "prfsha256"
}

func (s ikeSuite) String() string {
	return s.encr.String() + "-" + s.prf.String() + "-" + s.dh.String()
}

// ParseESPProposal parses "CIPHER[-CIPHER...][-DH...][-esn][-noesn]", e.g.
// aes256gcm16, aes128gcm16-curve25519 (these groups for PFS at rekey) or
// aes256gcm16-esn-noesn; "default" is every cipher, ESN or not, and PFS
// with any group we implement. Without esn/noesn: no ESN (strongSwan's
// default too).
func ParseESPProposal(s string) (ESPProposal, error) {
	var p ESPProposal
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "default" {
		return ESPProposal{encr: slices.Clone(allEncr), esn: []bool{true, false}}, nil
	}
	for _, t := range strings.Split(s, "-") {
		if e, ok := parseEncr(t); ok {
			p.encr = addOnce(p.encr, e)
		} else if g, ok := parseDH(t); ok {
			p.dh = addOnce(p.dh, g)
		} else if t == "esn" || t == "noesn" {
			p.esn = addOnce(p.esn, t == "esn")
		} else {
			return p, fmt.Errorf("ESP proposal %q: %q not supported: not a cipher (%s), DH group (%s), esn or noesn", s, t, supportedEncr, supportedDH)
		}
	}
	if len(p.encr) == 0 {
		return p, fmt.Errorf("ESP proposal %q names no cipher (%s)", s, supportedEncr)
	}
	if len(p.esn) == 0 {
		p.esn = []bool{false}
	}
	return p, nil
}

func (p ESPProposal) String() string {
	parts := joinTokens(joinTokens(nil, p.encr), p.dh)
	for _, e := range p.esn {
		parts = append(parts, map[bool]string{true: "esn", false: "noesn"}[e])
	}
	return strings.Join(parts, "-")
}

func (s espSuite) String() string {
	out := s.encr.String()
	if s.dh != 0 {
		out += "-" + s.dh.String()
	}
	if s.esn {
		out += "-esn"
	}
	return out
}

// pfsGroups is the groups p accepts for PFS: those it names, else all.
func (p ESPProposal) pfsGroups() []dhGroup {
	if len(p.dh) > 0 {
		return p.dh
	}
	return allDH
}

// transform maps the ESP cipher to the tunnel package's.
func (s espSuite) transform() tunnel.Transform {
	switch {
	case s.encr.id == encrChaCha20P:
		return tunnel.ChaCha20Poly1305
	case s.encr.bits == 128:
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

func esnID(esn bool) uint16 {
	if esn {
		return esnYes
	}
	return esnNo
}

// ikeSAPayload is our SA payload offer for an IKE SA. spi is empty in
// IKE_SA_INIT and 8 bytes in a rekey (RFC 7296 §3.3.1).
func ikeSAPayload(ps []IKEProposal, spi []byte) *message.SA {
	sa := new(message.SA)
	for i, p := range ps {
		var ts []message.Transform
		for _, e := range p.encr {
			ts = append(ts, encrTransform(e))
		}
		for _, f := range p.prf {
			ts = append(ts, message.Transform{Type: message.TransformPRF, ID: uint16(f)})
		}
		for _, g := range p.dh {
			ts = append(ts, message.Transform{Type: message.TransformDH, ID: uint16(g)})
		}
		sa.Proposals = append(sa.Proposals, message.Proposal{Num: uint8(i + 1), Protocol: message.ProtoIKE, SPI: spi, Transforms: ts})
	}
	return sa
}

// espSAPayload is our offer for a Child SA. pfs, if not 0, is the KE group
// we send (CREATE_CHILD_SA with PFS): each proposal then offers its
// groups, that one first, and NONE last; the first Child SA, created with
// IKE_AUTH, offers none (RFC 7296 §1.2).
//
// NONE last makes PFS preferred but optional (RFC 7296 §3.3.3: "the
// initiator ... includes a D-H transform with value NONE" to make it
// optional; §1.3 lets the responder pick NONE and send no KE). The first
// Child SA came up without any group, so nothing tells us the peer does
// PFS: a strongSwan road warrior with its default esp_proposals (no
// group) refuses a rekey that requires one with NO_PROPOSAL_CHOSEN, and
// its Child SA then expires.
func espSAPayload(ps []ESPProposal, spi uint32, pfs dhGroup) *message.SA {
	sa := new(message.SA)
	spib := []byte{byte(spi >> 24), byte(spi >> 16), byte(spi >> 8), byte(spi)}
	for i, p := range ps {
		var ts []message.Transform
		for _, e := range p.encr {
			ts = append(ts, encrTransform(e))
		}
		if pfs != 0 {
			ts = append(ts, message.Transform{Type: message.TransformDH, ID: uint16(pfs)})
			for _, g := range p.dh {
				if g != pfs {
					ts = append(ts, message.Transform{Type: message.TransformDH, ID: uint16(g)})
				}
			}
			ts = append(ts, message.Transform{Type: message.TransformDH, ID: 0})
		}
		for _, e := range p.esn {
			ts = append(ts, message.Transform{Type: message.TransformESN, ID: esnID(e)})
		}
		sa.Proposals = append(sa.Proposals, message.Proposal{Num: uint8(i + 1), Protocol: message.ProtoESP, SPI: spib, Transforms: ts})
	}
	return sa
}

// offers reports whether a received proposal offers transform t.
func offers(p *message.Proposal, t message.Transform) bool {
	for _, x := range p.Transforms {
		// §3.3.6: a transform with an attribute we do not understand is
		// never chosen.
		if x.Acceptable() && x.Type == t.Type && x.ID == t.ID && x.KeyLen == t.KeyLen {
			return true
		}
	}
	return false
}

func offersID(p *message.Proposal, t message.TransformType, id uint16) bool {
	return offers(p, message.Transform{Type: t, ID: id})
}

// typesOffered is the set of transform types in p.
func typesOffered(p *message.Proposal) map[message.TransformType]bool {
	m := map[message.TransformType]bool{}
	for _, x := range p.Transforms {
		m[x.Type] = true
	}
	return m
}

// aeadOnly: an AEAD proposal carries no integrity transform, or NONE
// (RFC 7296 §3.3.3, RFC 5282 §8).
func aeadOnly(p *message.Proposal) bool {
	return !typesOffered(p)[message.TransformINTEG] || offersID(p, message.TransformINTEG, 0)
}

func firstEncr(p *message.Proposal, ours []encrAlg) (encrAlg, bool) {
	for _, e := range ours {
		if offers(p, encrTransform(e)) {
			return e, true
		}
	}
	return encrAlg{}, false
}

func firstPRF(p *message.Proposal, ours []prfAlg) (prfAlg, bool) {
	for _, f := range ours {
		if offersID(p, message.TransformPRF, uint16(f)) {
			return f, true
		}
	}
	return 0, false
}

// pickDH is the group of a proposal: want (the KE payload's group) if the
// peer offers it and we allow it, else the first of ours it offers.
func pickDH(p *message.Proposal, ours []dhGroup, want dhGroup) (dhGroup, bool) {
	if want != 0 && slices.Contains(ours, want) && offersID(p, message.TransformDH, uint16(want)) {
		return want, true
	}
	for _, g := range ours {
		if offersID(p, message.TransformDH, uint16(g)) {
			return g, true
		}
	}
	return 0, false
}

// chooseIKE picks, for the first of our proposals that one of the peer's
// proposals matches, one transform of each type (RFC 7296 §3.3.6): ours
// in our order of preference, and the group of the peer's KE payload
// (ke) if that proposal offers it, so no INVALID_KE_PAYLOAD round trip is
// needed. Proposals offering the KE group win over earlier ones that do
// not. The returned group differs from ke only if the chosen proposal
// lacks it: then it is one the peer offered there, the one an
// INVALID_KE_PAYLOAD may name (§1.2).
func chooseIKE(ours []IKEProposal, sa *message.SA, ke dhGroup) (ikeSuite, message.Proposal, bool) {
	for _, needKE := range []bool{true, false} {
		for _, o := range ours {
			for i := range sa.Proposals {
				p := &sa.Proposals[i]
				if p.Protocol != message.ProtoIKE || !aeadOnly(p) {
					continue
				}
				e, ok1 := firstEncr(p, o.encr)
				f, ok2 := firstPRF(p, o.prf)
				g, ok3 := pickDH(p, o.dh, ke)
				if !ok1 || !ok2 || !ok3 || needKE && g != ke {
					continue
				}
				s := ikeSuite{e, f, g}
				return s, message.Proposal{Num: p.Num, Protocol: message.ProtoIKE, SPI: p.SPI, Transforms: s.transforms()}, true
			}
		}
	}
	return ikeSuite{}, message.Proposal{}, false
}

func (s ikeSuite) transforms() []message.Transform {
	return []message.Transform{encrTransform(s.encr), {Type: message.TransformPRF, ID: uint16(s.prf)}, {Type: message.TransformDH, ID: uint16(s.dh)}}
}

// espChoice says how chooseESP treats DH transforms.
type espChoice uint8

const (
	// inAuth: the first Child SA takes its keys from the IKE SA (RFC 7296
	// §1.2, §2.17); a DH transform offered with it is not negotiated.
	inAuth espChoice = iota
	// inCreate: CREATE_CHILD_SA; the KE payload's group (0: none) must be
	// in the chosen proposal, or no DH / DH NONE when there is no KE
	// (§1.3.1).
	inCreate
)

// chooseESP picks a Child SA proposal the same way: the first of ours
// that one of the peer's ESP proposals matches, one transform of each
// type. In CREATE_CHILD_SA, proposals that match the KE payload's group
// (ke, 0 for none) win; failing those, a proposal that offers another
// group we accept is returned with that group, for INVALID_KE_PAYLOAD.
func chooseESP(ours []ESPProposal, sa *message.SA, ke dhGroup, how espChoice) (espSuite, message.Proposal, bool) {
	for _, needKE := range []bool{true, false} {
		for _, o := range ours {
			for i := range sa.Proposals {
				p := &sa.Proposals[i]
				if p.Protocol != message.ProtoESP || len(p.SPI) != 4 || !aeadOnly(p) {
					continue
				}
				e, ok := firstEncr(p, o.encr)
				if !ok {
					continue
				}
				esn, ok := pickESN(p, o.esn)
				if !ok {
					continue
				}
				s := espSuite{encr: e, esn: esn}
				if how == inCreate {
					if s.dh, ok = pickChildDH(p, o, ke); !ok || needKE && s.dh != ke {
						continue
					}
				}
				return s, message.Proposal{Num: p.Num, Protocol: message.ProtoESP, SPI: p.SPI, Transforms: s.transforms()}, true
			}
		}
	}
	return espSuite{}, message.Proposal{}, false
}

// pickESN: an ESP proposal names ESN (§3.3.3); one that names none is
// taken as "no ESN".
func pickESN(p *message.Proposal, ours []bool) (bool, bool) {
	if !typesOffered(p)[message.TransformESN] {
		return false, slices.Contains(ours, false)
	}
	for _, e := range ours {
		if offersID(p, message.TransformESN, esnID(e)) {
			return e, true
		}
	}
	return false, false
}

// pickChildDH is a CREATE_CHILD_SA proposal's group: none if the peer's
// proposal allows none (no DH transform, or DH NONE) and it sent no KE;
// else its KE group if offered and allowed, else the first allowed group
// it offers.
func pickChildDH(p *message.Proposal, o ESPProposal, ke dhGroup) (dhGroup, bool) {
	noneOK := !typesOffered(p)[message.TransformDH] || offersID(p, message.TransformDH, 0)
	if ke == 0 && noneOK {
		return 0, true
	}
	return pickDH(p, o.pfsGroups(), ke)
}

func (s espSuite) transforms() []message.Transform {
	ts := []message.Transform{encrTransform(s.encr)}
	if s.dh != 0 {
		ts = append(ts, message.Transform{Type: message.TransformDH, ID: uint16(s.dh)})
	}
	return append(ts, message.Transform{Type: message.TransformESN, ID: esnID(s.esn)})
}

// singleChoice checks a responder's SA payload (§2.7: exactly one
// proposal, one transform of each type) and returns that proposal.
func singleChoice(sa *message.SA) (*message.Proposal, error) {
	if sa == nil || len(sa.Proposals) != 1 {
		return nil, fmt.Errorf("responder's SA payload must hold exactly one proposal")
	}
	p := &sa.Proposals[0]
	seen := map[message.TransformType]bool{}
	for _, t := range p.Transforms {
		if seen[t.Type] {
			return nil, fmt.Errorf("responder chose two %v transforms", t.Type)
		}
		seen[t.Type] = true
	}
	return p, nil
}

// acceptIKE checks a responder's choice against what we offered.
func acceptIKE(ours []IKEProposal, sa *message.SA) (ikeSuite, error) {
	p, err := singleChoice(sa)
	if err != nil {
		return ikeSuite{}, err
	}
	got, _, ok := chooseIKE(ours, sa, 0)
	if !ok || len(p.Transforms) != 3 {
		return ikeSuite{}, fmt.Errorf("responder chose a proposal we did not offer: %s", offerString(sa))
	}
	return got, nil
}

// acceptESP checks a responder's Child SA choice; dh is the KE group we
// sent (0: none), which the choice must name.
func acceptESP(ours []ESPProposal, sa *message.SA, dh dhGroup, how espChoice) (espSuite, uint32, error) {
	p, err := singleChoice(sa)
	if err != nil {
		return espSuite{}, 0, err
	}
	got, want, ok := chooseESP(ours, sa, dh, how)
	// A DH transform NONE in the answer is "no PFS", as no DH transform.
	n := len(p.Transforms)
	if offersID(p, message.TransformDH, 0) {
		n--
	}
	if !ok || got.dh != dh || n != len(want.Transforms) {
		return espSuite{}, 0, fmt.Errorf("responder chose a Child SA proposal we did not offer: %s", offerString(sa))
	}
	s := p.SPI
	return got, uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3]), nil
}

// offerString is a peer's SA payload for the log, e.g.
// "IKE:ENCR_AES_GCM_16_128/PRF_HMAC_SHA2_384/DH_CURVE25519, IKE:...".
func offerString(sa *message.SA) string {
	if sa == nil {
		return "(no SA payload)"
	}
	var ps []string
	for _, p := range sa.Proposals {
		var ts []string
		for _, t := range p.Transforms {
			ts = append(ts, t.String())
		}
		ps = append(ps, p.Protocol.String()+":"+strings.Join(ts, "/"))
	}
	return strings.Join(ps, ", ")
}

func proposalsString[T fmt.Stringer](ps []T) string {
	return strings.Join(joinTokens(nil, ps), ", ")
}
