package ikectx

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roamsec/roamsec/ike/message"
)

func sample() *SA {
	ts := func(a string) []message.TrafficSelector {
		x := netip.MustParseAddr(a)
		return []message.TrafficSelector{{Start: x, End: x, EndPort: 65535}}
	}
	k := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	return &SA{ExportedAt: time.Unix(1700000000, 5).UTC(), SPIi: 1, SPIr: 2,
		Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddrPort("192.0.2.2:4500"), NATT: true,
		Encr: 20, EncrBits: 256, PRF: 5, DH: 19, SKd: k(32, 1), SKei: k(36, 2), SKer: k(36, 3), SKpi: k(32, 4), SKpr: k(32, 5),
		SendIV: 7, PeerIDType: 3, PeerID: []byte("rw1@roamsec.example"), PSKAuth: true,
		Authority: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, PeerMOBIKE: true,
		PeerAddrs: []netip.Addr{netip.MustParseAddr("198.51.100.2")}, Proven: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.2:4500")},
		ESPPeer: netip.MustParseAddrPort("192.0.2.2:4500"), NextID: 3, PeerNext: 4, HaveCached: true, CachedID: 3, Cached: [][]byte{{1, 2, 3}},
		Rekeys: 1, Authenticated: time.Unix(1700000000, 0).UTC(), IKERekeyIn: time.Hour, SilentFor: time.Second,
		PeerMIDSync: true, PeerReplaySync: true,
		AAA: &AAA{User: "rw1", VirtualIP4: netip.MustParseAddr("100.64.1.7"), Class: [][]byte{[]byte("gold")}, SessionID: "acct-1",
			Peer: netip.MustParseAddrPort("192.0.2.2:4500"), Local: netip.MustParseAddr("192.0.2.1"), Timeout: time.Hour, SessionLeft: time.Minute},
		Children: []Child{{Name: "rw1#1/net", Created: time.Unix(1700000001, 0).UTC(), Ours: false, NonceMin: k(32, 9),
			Encr: 20, EncrBits: 256, ESN: true, LocalTS: ts("203.0.113.1"), RemoteTS: ts("192.0.2.2"),
			SPIIn: 0x1000, SPIOut: 0x2000, KeyIn: k(36, 6), KeyOut: k(36, 7), SeqOut: 1 << 33, ReplayTop: 99, UDPEncap: true, PeerPort: 4500, RekeyIn: time.Minute}}}
}

func TestRoundTripKeepsEveryField(t *testing.T) {
	in := sample()
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed the record:\n in %+v\nout %+v", in, out)
	}
	out.Wipe()
	if !bytes.Equal(out.SKd, make([]byte, 32)) || !bytes.Equal(out.Children[0].KeyOut, make([]byte, 36)) {
		t.Fatal("Wipe left key material")
	}
}

func TestDecodeRefusals(t *testing.T) {
	good, _ := Encode(sample())
	with := func(f func(*SA)) []byte {
		s := sample()
		f(s)
		s.Version = Version
		b, _ := jsonOf(s)
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"another version", reframe(good, func(j []byte) []byte { return bytes.Replace(j, []byte(`"v":1`), []byte(`"v":2`), 1) })},
		{"unknown field", reframe(good, func(j []byte) []byte { return bytes.Replace(j, []byte(`"v":1,`), []byte(`"v":1,"extra":0,`), 1) })},
		{"trailing JSON", reframe(good, func(j []byte) []byte { return append(j, []byte(` {}`)...) })},
		{"a key in the JSON", reframe(good, func(j []byte) []byte { return bytes.Replace(j, []byte(`"v":1,`), []byte(`"v":1,"sk_d":"AAAA",`), 1) })},
		{"trailing data", append(append([]byte(nil), good...), 0)},
		{"key block cut short", good[:len(good)-1]},
		{"JSON length past the end", append([]byte{0xff, 0xff, 0xff, 0xff}, good[4:]...)},
		{"no responder SPI (RFC 7296 §3.1)", with(func(s *SA) { s.SPIr = 0 })},
		{"AAA time left beyond its Session-Timeout", with(func(s *SA) { s.AAA.SessionLeft = 2 * time.Hour })},
		{"AAA time left negative", with(func(s *SA) { s.AAA.SessionLeft = -time.Second })},
		{"reserved ESP SPI (RFC 4303 §2.1)", with(func(s *SA) { s.Children[0].SPIIn = 255 })},
		{"sequence past 2^32 without ESN", with(func(s *SA) { s.Children[0].ESN = false })},
		{"inbound SPI twice", with(func(s *SA) { s.Children = append(s.Children, s.Children[0]) })},
		{"no selectors", with(func(s *SA) { s.Children[0].LocalTS = nil })},
		{"selector end before start", with(func(s *SA) {
			s.Children[0].LocalTS[0].Start = netip.MustParseAddr("203.0.113.9")
		})},
		{"too many Child SAs", with(func(s *SA) {
			for i := range MaxChildren {
				c := s.Children[0]
				c.SPIIn = uint32(0x5000 + i)
				s.Children = append(s.Children, c)
			}
		})},
		{"too large", frame(append([]byte(`{"v":1,"peer_id":"`), append(bytes.Repeat([]byte("A"), MaxSize), '"', '}')...), nil)},
		{"not JSON", []byte("\x00\x00\x00\x05RSCTX")},
		{"too short", []byte{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.b); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), "AAAA") {
				t.Fatal("the error echoes the input")
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode(sample())
	f.Add(good)
	f.Add(frame([]byte(`{"v":1}`), nil))
	f.Add(frame([]byte(`{"v":1,"children":[{"local_ts":[{}]}]}`), [][]byte{{1}, {2}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		sa, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes is consistent: it checks, and encodes again.
		if _, err := Encode(sa); err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
	})
}

// jsonOf encodes without checking: the refusal tests build bad records.
func jsonOf(sa *SA) ([]byte, error) {
	j, err := json.Marshal(sa)
	if err != nil {
		return nil, err
	}
	return frame(j, sa.keys()), nil
}

func frame(j []byte, keys [][]byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(j)))
	out = append(out, j...)
	for _, k := range keys {
		out = append(append(out, byte(len(k))), k...)
	}
	return out
}

// reframe changes a record's JSON and keeps its key block.
func reframe(rec []byte, f func([]byte) []byte) []byte {
	n := binary.BigEndian.Uint32(rec)
	j := f(append([]byte(nil), rec[4:4+n]...))
	out := binary.BigEndian.AppendUint32(nil, uint32(len(j)))
	return append(append(out, j...), rec[4+n:]...)
}

// No key goes through encoding/json (whose pooled buffers nobody
// zeroes): the JSON part holds none of them.
func TestKeysStayOutOfTheJSON(t *testing.T) {
	in := sample()
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	j := b[4 : 4+binary.BigEndian.Uint32(b)]
	for _, k := range in.keys() {
		if bytes.Contains(j, k) || bytes.Contains(j, []byte(base64.StdEncoding.EncodeToString(k)[:8])) {
			t.Fatalf("key %x in the JSON part", k[:4])
		}
	}
}
