// Package enroll is seed 002's Host and Target for one-time key pairs
// (Kuo et al., "Implementations of the User Mobility Support over IPsec"):
// the Host's key database (host.go: issue, revoke, list, and the atomic
// valid → used mark), the accounting log (accounting.go), and the Target
// (target.go): the gateway's ike.OneTimeAuthority, which asks the Host and
// authorizes the user with the objective's proposals and a virtual address.
package enroll

import (
	"fmt"
	"strings"

	"github.com/roamsec/roamsec/ike"
)

// Objective is seed 002's Objective-ID: the security objectives a tunnel
// must meet, which its table 3 maps to IPsec options. roamsec carries ESP
// with AEAD transforms only (RFC 8221 §5: AH is not needed where ESP's
// AEAD authenticates), so the objectives are told apart by the transforms
// allowed.
type Objective string

const (
	// ObjectiveESP is table 3's ID-3 (ESP): O.Comm_Trusted_Channel,
	// O.Data_Exchange_Conf, O.Crypto_Comm_Channel. Any AEAD we implement.
	ObjectiveESP Objective = "esp"
	// ObjectiveStrict is table 3's ID-4 (AH+ESP): all five objectives.
	// ESP's AEAD gives O.Integrity_Attr_Exch; the signed, accounted
	// request gives O.Non-repudiation; the transform is held to
	// AES-GCM-256 (RFC 8221 §5's 256-bit option).
	ObjectiveStrict Objective = "strict"
)

// ParseObjective reads a level: a name or table 3's ID number.
func ParseObjective(s string) (Objective, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "esp", "3", "id-3":
		return ObjectiveESP, nil
	case "strict", "ah+esp", "4", "id-4":
		return ObjectiveStrict, nil
	case "native", "1", "id-1":
		return "", fmt.Errorf("objective %q (table 3 ID-1, no security service) is not offered: a one-time key always gets an ESP tunnel", s)
	case "ah", "2", "id-2":
		return "", fmt.Errorf("objective %q (table 3 ID-2, AH alone) is not offered: roamsec carries ESP with AEAD only (RFC 8221); use strict for integrity and non-repudiation", s)
	}
	return "", fmt.Errorf("objective %q unknown: want esp (ID-3) or strict (ID-4)", s)
}

// ESPProposals are the Child SA proposals the objective allows.
func (o Objective) ESPProposals() ([]ike.ESPProposal, error) {
	switch o {
	case ObjectiveESP:
		return ike.DefaultESPProposals, nil
	case ObjectiveStrict:
		p, err := ike.ParseESPProposal("aes256gcm16-esn-noesn")
		if err != nil {
			return nil, err
		}
		return []ike.ESPProposal{p}, nil
	}
	return nil, fmt.Errorf("objective %q unknown", string(o))
}
