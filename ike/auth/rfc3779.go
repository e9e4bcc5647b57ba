package auth

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// oidIPAddrBlocks is id-pe-ipAddrBlocks (RFC 3779 §2.2.1).
var oidIPAddrBlocks = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 7}

// ipFamily is one IPAddressFamily of an ipAddrBlocks extension.
type ipFamily struct {
	afi     uint16 // 1 IPv4, 2 IPv6
	inherit bool
	ranges  []addrRange // addressesOrRanges as inclusive ranges
}

type addrRange struct{ lo, hi netip.Addr }

const (
	afiIPv4 = 1
	afiIPv6 = 2
	// maxIPBlocks bounds the work on an extension read before the
	// certificate's signature is checked.
	maxIPBlocks = 1024
)

// ipAddrBlocks finds and parses a certificate's RFC 3779 IP address
// blocks; nil, nil when there are none.
func ipAddrBlocks(cert *x509.Certificate) ([]ipFamily, error) {
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidIPAddrBlocks) {
			return parseIPAddrBlocks(e.Value)
		}
	}
	return nil, nil
}

// parseIPAddrBlocks reads IPAddrBlocks (RFC 3779 §2.2.3): per address
// family (AFI 1 or 2, SAFI ignored; other AFIs skipped) either inherit or a
// list of prefixes (BIT STRINGs) and ranges (min and max BIT STRINGs, the
// missing bits 0 in min and 1 in max, §2.2.3.9). It does not insist on the
// canonical ordering of §2.2.3.6.
func parseIPAddrBlocks(der []byte) ([]ipFamily, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("malformed IPAddrBlocks")
	}
	var fams []ipFamily
	total := 0
	for !seq.Empty() {
		var fam, afiBytes cryptobyte.String
		if !seq.ReadASN1(&fam, cbasn1.SEQUENCE) || !fam.ReadASN1(&afiBytes, cbasn1.OCTET_STRING) ||
			len(afiBytes) < 2 || len(afiBytes) > 3 {
			return nil, errors.New("malformed IPAddressFamily")
		}
		f := ipFamily{afi: uint16(afiBytes[0])<<8 | uint16(afiBytes[1])}
		bits := 0
		switch f.afi {
		case afiIPv4:
			bits = 32
		case afiIPv6:
			bits = 128
		}
		if fam.PeekASN1Tag(cbasn1.NULL) {
			var null cryptobyte.String
			if !fam.ReadASN1(&null, cbasn1.NULL) || !null.Empty() || !fam.Empty() {
				return nil, errors.New("malformed inherit")
			}
			f.inherit = true
			fams = append(fams, f)
			continue
		}
		var list cryptobyte.String
		if !fam.ReadASN1(&list, cbasn1.SEQUENCE) || !fam.Empty() {
			return nil, errors.New("malformed addressesOrRanges")
		}
		for !list.Empty() {
			if total++; total > maxIPBlocks {
				return nil, fmt.Errorf("more than %d address blocks", maxIPBlocks)
			}
			var r addrRange
			if list.PeekASN1Tag(cbasn1.SEQUENCE) {
				var rng cryptobyte.String
				var lo, hi asn1.BitString
				if !list.ReadASN1(&rng, cbasn1.SEQUENCE) || !rng.ReadASN1BitString(&lo) ||
					!rng.ReadASN1BitString(&hi) || !rng.Empty() {
					return nil, errors.New("malformed IPAddressRange")
				}
				if bits == 0 {
					continue
				}
				var ok1, ok2 bool
				r.lo, ok1 = bitsToAddr(lo, bits, false)
				r.hi, ok2 = bitsToAddr(hi, bits, true)
				if !ok1 || !ok2 || r.hi.Less(r.lo) {
					return nil, errors.New("malformed IPAddressRange")
				}
			} else {
				var p asn1.BitString
				if !list.ReadASN1BitString(&p) {
					return nil, errors.New("malformed IPAddressOrRange")
				}
				if bits == 0 {
					continue
				}
				var ok1, ok2 bool
				r.lo, ok1 = bitsToAddr(p, bits, false)
				r.hi, ok2 = bitsToAddr(p, bits, true)
				if !ok1 || !ok2 {
					return nil, errors.New("malformed addressPrefix")
				}
			}
			f.ranges = append(f.ranges, r)
		}
		if bits != 0 {
			fams = append(fams, f)
		}
	}
	return fams, nil
}

// bitsToAddr widens a BIT STRING of at most bits bits to an address, the
// missing bits all 0 or all 1.
func bitsToAddr(b asn1.BitString, bits int, ones bool) (netip.Addr, bool) {
	if b.BitLength > bits {
		return netip.Addr{}, false
	}
	buf := make([]byte, bits/8)
	for i := range bits {
		bit := ones
		if i < b.BitLength {
			bit = b.At(i) == 1
		}
		if bit {
			buf[i/8] |= 0x80 >> (i % 8)
		}
	}
	return netip.AddrFromSlice(buf)
}

// rangePrefixes splits an inclusive range into the fewest CIDR prefixes.
func rangePrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for {
		p := netip.PrefixFrom(lo, lo.BitLen())
		// Grow the block while it stays aligned on lo and inside the range.
		for l := lo.BitLen() - 1; l >= 0; l-- {
			q := netip.PrefixFrom(lo, l).Masked()
			if q.Addr() != lo || hi.Less(lastAddr(q)) {
				break
			}
			p = q
		}
		out = append(out, p)
		end := lastAddr(p)
		if end == hi {
			return out
		}
		lo = end.Next()
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// mergeRanges sorts ranges and joins overlapping or adjacent ones.
func mergeRanges(rs []addrRange) []addrRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b addrRange) int { return a.lo.Compare(b.lo) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if next := last.hi.Next(); !next.IsValid() || !next.Less(r.lo) {
				if last.hi.Less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// covered reports whether every range of child lies inside parent's union.
func covered(child, parent []addrRange) bool {
	merged := mergeRanges(parent)
	for _, c := range child {
		if !slices.ContainsFunc(merged, func(p addrRange) bool {
			return !c.lo.Less(p.lo) && !p.hi.Less(c.hi)
		}) {
			return false
		}
	}
	return true
}

// checkIPAddrBlocks bounds the leaf's explicit address blocks by every CA
// of its verified chain that carries the extension (RFC 3779 §2.3): a
// family the CA lists must cover the leaf's, one it omits gives nothing, an
// inherit defers to the CA above. Deviation: a CA without the extension
// neither grants nor limits (RFC 3779 would invalidate the leaf), so a VPN
// CA that knows nothing of RFC 3779 can still issue leaves with it.
func checkIPAddrBlocks(chain []*x509.Certificate) error {
	leaf, err := ipAddrBlocks(chain[0])
	if err != nil || leaf == nil {
		return err
	}
	for _, ca := range chain[1:] {
		fams, err := ipAddrBlocks(ca)
		if err != nil {
			return fmt.Errorf("CA %s: RFC 3779 IP address blocks: %v", subjectString(ca), err)
		}
		if fams == nil {
			continue
		}
		for _, lf := range leaf {
			if lf.inherit || len(lf.ranges) == 0 {
				continue
			}
			i := slices.IndexFunc(fams, func(f ipFamily) bool { return f.afi == lf.afi })
			if i >= 0 && fams[i].inherit {
				continue
			}
			if i < 0 || !covered(lf.ranges, fams[i].ranges) {
				return fmt.Errorf("certificate %s claims IP address blocks outside those of CA %s (RFC 3779 §2.3)",
					subjectString(chain[0]), subjectString(ca))
			}
		}
	}
	return nil
}

// acceptIPAddrBlocks marks a critical ipAddrBlocks extension as handled, so
// x509.Verify does not refuse the certificate, once it parses; this package
// evaluates it (checkIPAddrBlocks, CertifiedAddrs).
func acceptIPAddrBlocks(cert *x509.Certificate) error {
	if _, err := ipAddrBlocks(cert); err != nil {
		return fmt.Errorf("RFC 3779 IP address blocks: %v", err)
	}
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions,
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidIPAddrBlocks) })
	return nil
}
