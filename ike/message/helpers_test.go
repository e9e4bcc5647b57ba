package message

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// raw is one payload as bytes on the wire, for building malformed input
// that the encoder would never write.
type raw struct {
	t        PayloadType
	critical bool
	body     []byte
}

// rawChain lays out payloads with correct next-payload links and lengths.
func rawChain(ps ...raw) (PayloadType, []byte) {
	var b []byte
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].t
		}
		var flags byte
		if p.critical {
			flags = 0x80
		}
		b = append(b, byte(next), flags)
		b = binary.BigEndian.AppendUint16(b, uint16(4+len(p.body)))
		b = append(b, p.body...)
	}
	if len(ps) == 0 {
		return PayloadNone, b
	}
	return ps[0].t, b
}

// rawMessage puts an IKE header with the right length before a chain.
func rawMessage(flags uint8, first PayloadType, chain []byte) []byte {
	h := Header{SPIi: 0x0102030405060708, NextPayload: first, Version: 0x20, Exchange: IKE_SA_INIT, Flags: flags, Length: uint32(HeaderLen + len(chain))}
	return append(h.AppendTo(nil), chain...)
}

// hx decodes hex written with spaces, newlines and "|"-comments to the
// end of a line.
func hx(s string) []byte {
	var sb strings.Builder
	for l := range strings.SplitSeq(s, "\n") {
		if i := strings.Index(l, "|"); i >= 0 {
			l = l[:i]
		}
		sb.WriteString(strings.Join(strings.Fields(l), ""))
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		panic(err)
	}
	return b
}

func bytesN(n int, v byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v + byte(i)
	}
	return b
}

type datagram struct {
	out  bool // sent by the initiator
	port int
	b    []byte
}

// captured reads a testdata capture: "out|in PORT HEX" lines, # comments.
func captured(t testing.TB, name string) (dgs []datagram, comments []string) {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			comments = append(comments, l)
			continue
		}
		fs := strings.Fields(l)
		if len(fs) != 3 {
			t.Fatalf("%s: bad line %q", name, l)
		}
		b, err := hex.DecodeString(fs[2])
		if err != nil {
			t.Fatal(err)
		}
		port := 500
		if fs[1] == "4500" {
			port = 4500
		}
		dgs = append(dgs, datagram{out: fs[0] == "out", port: port, b: b})
	}
	return dgs, comments
}

// everyPayload has one or more of every payload this package knows, with
// the optional parts used; it is what the round-trip tests encode.
func everyPayload() []Payload {
	return []Payload{
		&SA{Proposals: []Proposal{
			{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
				{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLen: 256},
				{Type: TransformENCR, ID: ENCR_CHACHA20_POLY1305},
				{Type: TransformPRF, ID: PRF_HMAC_SHA2_256},
				{Type: TransformDH, ID: DH_CURVE25519},
				{Type: TransformDH, ID: DH_ECP256},
			}},
			{Num: 2, Protocol: ProtoIKE, SPI: bytesN(8, 0x10), Transforms: []Transform{
				{Type: TransformENCR, ID: ENCR_AES_CBC, KeyLen: 128, UnknownAttrs: "\x80\x63\x00\x01"},
				{Type: TransformINTEG, ID: AUTH_HMAC_SHA2_256_128, UnknownAttrs: "\x00\x64\x00\x02\xaa\xbb"},
				{Type: TransformPRF, ID: PRF_HMAC_SHA2_384},
				{Type: TransformDH, ID: DH_MODP2048},
			}},
			{Num: 3, Protocol: ProtoESP, SPI: []byte{0xc0, 0xff, 0xee, 0x01}, Transforms: []Transform{
				{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLen: 128},
				{Type: TransformESN, ID: ESN_YES},
				{Type: TransformESN, ID: ESN_NO},
			}},
			{Num: 4, Protocol: ProtoAH, SPI: []byte{1, 2, 3, 4}},
		}},
		&KE{Group: DH_ECP256, Data: bytesN(64, 1)},
		&ID{IDType: ID_FQDN, Data: []byte("rw.example.org")},
		&ID{Responder: true, IDType: ID_IPV6_ADDR, Data: bytesN(16, 0x20)},
		&Cert{Encoding: CERT_X509_SIGNATURE, Data: bytesN(300, 3)},
		&CertReq{Encoding: CERT_X509_SIGNATURE, Data: bytesN(40, 4)},
		&CertReq{Encoding: CERT_X509_SIGNATURE},
		&Auth{Method: AUTH_METHOD_DIGITAL_SIGNATURE, Data: bytesN(72, 5)},
		&Nonce{Data: bytesN(32, 6)},
		&Notify{NotifyType: NAT_DETECTION_SOURCE_IP, Data: bytesN(20, 7)},
		&Notify{NotifyType: MOBIKE_SUPPORTED},
		&Notify{Protocol: ProtoESP, SPI: []byte{0xc0, 0xff, 0xee, 0x02}, NotifyType: REKEY_SA},
		&Notify{Protocol: ProtoESP, NotifyType: USE_TRANSPORT_MODE},
		&Delete{Protocol: ProtoIKE},
		&Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}},
		&VendorID{Data: []byte("roamsec")},
		&TS{Selectors: []TrafficSelector{
			SelectorFromPrefix(netip.MustParsePrefix("10.1.0.0/24")),
			{Proto: 132, StartPort: 5000, EndPort: 5001, Start: netip.MustParseAddr("192.0.2.1"), End: netip.MustParseAddr("192.0.2.9")},
		}},
		&TS{Responder: true, Selectors: []TrafficSelector{
			SelectorFromPrefix(netip.MustParsePrefix("fd00:2::/64")),
			{Proto: 17, StartPort: 0xffff, EndPort: 0, Start: netip.MustParseAddr("10.2.0.1"), End: netip.MustParseAddr("10.2.0.1")},
		}},
		&TS{Responder: true},
		&CP{CfgType: CFG_REQUEST, Attrs: []CPAttr{{Type: INTERNAL_IP4_ADDRESS}, {Type: INTERNAL_IP6_ADDRESS}, {Type: INTERNAL_IP4_DNS}}},
		&CP{CfgType: CFG_REPLY, Attrs: []CPAttr{
			CPAttrAddr(INTERNAL_IP4_ADDRESS, netip.MustParseAddr("100.64.0.7")),
			CPAttrAddr(INTERNAL_IP4_NETMASK, netip.MustParseAddr("255.255.255.0")),
			CPAttrPrefix(INTERNAL_IP6_ADDRESS, netip.MustParsePrefix("fd00:64::7/64")),
			CPAttrPrefix(INTERNAL_IP4_SUBNET, netip.MustParsePrefix("10.2.0.0/16")),
			CPAttrPrefix(INTERNAL_IP6_SUBNET, netip.MustParsePrefix("fd00:2::/48")),
			{Type: SUPPORTED_ATTRIBUTES, Value: []byte{0, 1, 0, 3}},
			{Type: APPLICATION_VERSION, Value: []byte("roamsec 1")},
			{Type: 0x7fff, Value: []byte{9}},
		}},
		&EAP{Data: []byte{1, 7, 0, 5, 1}},
		&Unknown{PType: 49, Data: []byte("opaque")},
		&Unknown{PType: 200, Critical: true},
		&Encrypted{Next: PayloadIDi, Body: bytesN(64, 8)},
	}
}
