package radius

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/vendors/microsoft"

	"github.com/roamsec/roamsec/ike"
)

var secret = []byte("radius-shared-secret-0123")

func conv() *ike.EAPConversation {
	return &ike.EAPConversation{Identity: "carol@roamsec.example", Peer: netip.MustParseAddrPort("192.0.2.2:4500"),
		Local: netip.MustParseAddr("192.0.2.1")}
}

// reply signs an answer to request the way a server does: Response
// Authenticator over the packet with the Request Authenticator (RFC 2865
// §3), Message-Authenticator over it first (RFC 3579 §3.2).
func reply(t testing.TB, request []byte, code radius.Code, eap []byte, withMA bool, edit func(*radius.Packet)) []byte {
	t.Helper()
	req, err := radius.Parse(request, secret)
	if err != nil {
		t.Fatal(err)
	}
	p := req.Response(code)
	if eap != nil {
		p.Add(rfc2869.EAPMessage_Type, radius.Attribute(eap))
	}
	if edit != nil {
		edit(p)
	}
	if withMA {
		p.Add(rfc2869.MessageAuthenticator_Type, make(radius.Attribute, 16))
	}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if withMA {
		off := findAttr(b, byte(rfc2869.MessageAuthenticator_Type))
		m := hmac.New(md5.New, secret)
		m.Write(b) // authenticator field = the Request Authenticator here
		m.Sum(b[off:off])
	}
	h := md5.New()
	h.Write(b[:4])
	h.Write(request[4:20])
	h.Write(b[20:])
	h.Write(secret)
	h.Sum(b[4:4])
	return b
}

func accessRequest(t testing.TB) (*radius.Packet, []byte) {
	t.Helper()
	a := &EAP{NASIdentifier: "gw.roamsec.example"}
	msg := bytes.Repeat([]byte{2, 1, 0x02, 0x20, 26}, 110) // 550 bytes: three EAP-Message attributes
	p, err := a.accessRequest(secret, conv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// TestRFC3579_3_2_MessageAuthenticatorOnRequest: HMAC-MD5 keyed with the
// secret over the whole Access-Request, the attribute's value zero while
// computed; EAP-Message split into 253-byte attributes (§3.1).
func TestRFC3579_3_2_MessageAuthenticatorOnRequest(t *testing.T) {
	p, b := accessRequest(t)
	off := findAttr(b, byte(rfc2869.MessageAuthenticator_Type))
	if off < 0 {
		t.Fatal("no Message-Authenticator")
	}
	c := bytes.Clone(b)
	clear(c[off : off+16])
	m := hmac.New(md5.New, secret)
	m.Write(c)
	if !bytes.Equal(m.Sum(nil), b[off:off+16]) {
		t.Fatal("Message-Authenticator is not HMAC-MD5(secret, packet)")
	}
	var n, total int
	for _, a := range p.Attributes {
		if a.Type == rfc2869.EAPMessage_Type {
			n++
			total += len(a.Attribute)
		}
	}
	if n != 3 || total != 550 {
		t.Fatalf("EAP-Message in %d attributes, %d bytes; want 3, 550", n, total)
	}
	if rfc2865.UserName_GetString(p) != "carol@roamsec.example" || rfc2865.CallingStationID_GetString(p) != "192.0.2.2[4500]" {
		t.Fatalf("User-Name %q, Calling-Station-Id %q", rfc2865.UserName_GetString(p), rfc2865.CallingStationID_GetString(p))
	}
}

// TestRFC3579_3_2_ResponseChecks: an answer is taken only with the
// request's identifier, the right Response Authenticator and, when it
// carries EAP-Message, a valid Message-Authenticator.
func TestRFC3579_3_2_ResponseChecks(t *testing.T) {
	_, req := accessRequest(t)
	eap := []byte{1, 2, 0, 6, 26, 1}
	good := reply(t, req, radius.CodeAccessChallenge, eap, true, nil)
	if _, err := verifyResponse(good, req, secret); err != nil {
		t.Fatalf("a good answer refused: %v", err)
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	otherID := bytes.Clone(req)
	otherID[1]++
	for _, c := range []struct {
		name      string
		resp, req []byte
		secret    []byte
	}{
		{"wrong identifier", good, otherID, secret},
		{"wrong secret", good, req, []byte("another-secret")},
		{"EAP-Message altered", flip(len(good) - 20), req, secret},
		{"EAP-Message without Message-Authenticator", reply(t, req, radius.CodeAccessChallenge, eap, false, nil), req, secret},
		{"short", good[:19], req, secret},
		{"length beyond the datagram", append(bytes.Clone(good[:2]), append([]byte{0xff, 0xff}, good[4:]...)...), req, secret},
	} {
		if _, err := verifyResponse(c.resp, c.req, c.secret); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

// rfc2548Decrypt is RFC 2548 §2.4.3's decryption written out, to check
// the library's: b(1) = MD5(S + R + A), c(i) xor b(i), b(i) = MD5(S +
// c(i-1)); the plaintext is a length byte, the key, padding.
func rfc2548Decrypt(v []byte, reqAuth [16]byte) []byte {
	salt, c := v[:2], v[2:]
	var p []byte
	prev := append(append([]byte(nil), reqAuth[:]...), salt...)
	for i := 0; i+16 <= len(c); i += 16 {
		h := md5.New()
		h.Write(secret)
		h.Write(prev)
		b := h.Sum(nil)
		for j := 0; j < 16; j++ {
			p = append(p, c[i+j]^b[j])
		}
		prev = c[i : i+16]
	}
	return p[1 : 1+int(p[0])]
}

// TestRFC2548_MSK: the MSK is MS-MPPE-Recv-Key then MS-MPPE-Send-Key,
// each decrypted with the secret and the request's authenticator.
func TestRFC2548_MSK(t *testing.T) {
	reqP, req := accessRequest(t)
	recv, send := bytes.Repeat([]byte{0xa1}, 32), bytes.Repeat([]byte{0xb2}, 32)
	var rawRecv []byte
	b := reply(t, req, radius.CodeAccessAccept, []byte{3, 9, 0, 4}, true, func(p *radius.Packet) {
		p.Authenticator = reqP.Authenticator // the salt encryption uses the request's
		if err := microsoft.MSMPPERecvKey_Add(p, recv); err != nil {
			t.Fatal(err)
		}
		if err := microsoft.MSMPPESendKey_Add(p, send); err != nil {
			t.Fatal(err)
		}
		rfc2865.FramedIPAddress_Set(p, net.IPv4(100, 64, 0, 77))
		rfc2865.SessionTimeout_Set(p, 3600)
		p.Add(rfc2865.Class_Type, radius.Attribute("gold"))
		for _, v := range p.Attributes {
			if v.Type == rfc2865.VendorSpecific_Type && v.Attribute[4] == 17 {
				rawRecv = bytes.Clone(v.Attribute[6:])
			}
		}
	})
	resp, err := verifyResponse(b, req, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got := rfc2548Decrypt(rawRecv, reqP.Authenticator); !bytes.Equal(got, recv) {
		t.Fatalf("RFC 2548 decryption of the Recv-Key: %x", got)
	}
	c := conv()
	ans, err := answer(resp, reqP, c)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Verdict != ike.EAPAccept || !bytes.Equal(ans.MSK, append(append([]byte(nil), recv...), send...)) {
		t.Fatalf("verdict %v, MSK %x", ans.Verdict, ans.MSK)
	}
	z := ans.Authz
	if z.VirtualIP4 != netip.MustParseAddr("100.64.0.77") || z.SessionTimeout != time.Hour || len(z.Class) != 1 || string(z.Class[0]) != "gold" {
		t.Fatalf("authorization %+v", z)
	}
}

// udpServer answers each datagram with f's reply (nil: silence).
func udpServer(t *testing.T, f func(n int, req []byte) []byte) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for n := 0; ; n++ {
			k, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if r := f(n, bytes.Clone(buf[:k])); r != nil {
				c.WriteToUDP(r, from)
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestRFC5080_RetransmitThenFailover: a silent server is given up after
// its retransmissions; the next one's first copy is lost and the
// retransmission, the same bytes (RFC 5080 §2.2.1), is answered; a
// forged answer before the real one is dropped, counted; later requests
// go straight to the server that answered.
func TestRFC5080_RetransmitThenFailover(t *testing.T) {
	var silentGot atomic.Int32
	silent := udpServer(t, func(int, []byte) []byte { silentGot.Add(1); return nil })
	var first []byte
	var same atomic.Bool
	good := udpServer(t, func(n int, req []byte) []byte {
		switch n {
		case 0:
			first = req
			return nil // lost
		case 1:
			same.Store(bytes.Equal(first, req))
			forged := reply(t, req, radius.CodeAccessChallenge, []byte{1, 3, 0, 6, 26, 1}, true, nil)
			forged[len(forged)-1] ^= 0xff // bad Message-Authenticator
			return forged
		}
		return reply(t, req, radius.CodeAccessChallenge, []byte{1, 3, 0, 6, 26, 1}, true, func(p *radius.Packet) {
			rfc2865.State_Set(p, []byte("state-1"))
		})
	})
	c := &Client{Servers: []Server{{Auth: silent, Secret: secret}, {Auth: good, Secret: secret}}, Timeout: 100 * time.Millisecond, Retries: 2}
	a := &EAP{Client: c}
	cv := conv()
	// The second copy gets a forged answer, dropped; the third the real one.
	ans, err := a.Relay(context.Background(), cv, []byte{2, 0, 0, 5, 1})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Verdict != ike.EAPContinue || string(cv.State) != "state-1" {
		t.Fatalf("answer %+v, State %q", ans, cv.State)
	}
	if silentGot.Load() != 3 || !same.Load() {
		t.Fatalf("silent server got %d copies (want 3), retransmission identical: %v", silentGot.Load(), same.Load())
	}
	if c.Stats.Failovers.Load() != 1 || c.Stats.BadResponses.Load() != 1 || c.Stats.Timeouts.Load() != 1 {
		t.Fatalf("failovers %d, bad responses %d, timeouts %d", c.Stats.Failovers.Load(), c.Stats.BadResponses.Load(), c.Stats.Timeouts.Load())
	}
	if _, err := a.Relay(context.Background(), cv, []byte{2, 3, 0, 5, 1}); err != nil {
		t.Fatal(err)
	}
	if silentGot.Load() != 3 {
		t.Fatal("the second request went to the silent server again")
	}
}

// TestNoServerAnswers: every server silent is an error wrapping
// ErrNoServer, after timeout × (retries + 1) each; a cancelled context
// ends the wait at once.
func TestNoServerAnswers(t *testing.T) {
	s := udpServer(t, func(int, []byte) []byte { return nil })
	c := &Client{Servers: []Server{{Auth: s, Secret: secret}}, Timeout: 50 * time.Millisecond, Retries: 1}
	a := &EAP{Client: c}
	if _, err := a.Relay(context.Background(), conv(), []byte{2, 0, 0, 5, 1}); err == nil {
		t.Fatal("no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.Timeout = time.Minute
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := a.Relay(ctx, conv(), []byte{2, 0, 0, 5, 1}); err == nil || time.Since(start) > 20*time.Second {
		t.Fatalf("cancelled relay: %v after %v", err, time.Since(start))
	}
}

// FuzzResponse: whatever comes back from the network, the checks and the
// reading of an accepted answer never panic; an answer that passes the
// checks was signed with the secret.
func FuzzResponse(f *testing.F) {
	reqP, req := accessRequest(f)
	f.Add(reply(f, req, radius.CodeAccessChallenge, []byte{1, 2, 0, 6, 26, 1}, true, nil))
	f.Add(reply(f, req, radius.CodeAccessAccept, []byte{3, 2, 0, 4}, true, func(p *radius.Packet) {
		p.Authenticator = reqP.Authenticator
		microsoft.MSMPPERecvKey_Add(p, make([]byte, 32))
		microsoft.MSMPPESendKey_Add(p, make([]byte, 32))
		rfc2865.FramedIPAddress_Set(p, net.IPv4(100, 64, 0, 77))
	}))
	f.Add(reply(f, req, radius.CodeAccessReject, nil, false, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= 20 {
			// Re-sign what the fuzzer made, so it gets past the checks
			// into the attribute reading too.
			b = bytes.Clone(b)
			b[1] = req[1]
			l := int(b[2])<<8 | int(b[3])
			if l >= 20 && l <= len(b) {
				if off := findAttr(b[:l], byte(rfc2869.MessageAuthenticator_Type)); off >= 0 {
					c := bytes.Clone(b[:l])
					copy(c[4:20], req[4:20])
					clear(c[off : off+16])
					m := hmac.New(md5.New, secret)
					m.Write(c)
					m.Sum(b[off:off])
				}
				h := md5.New()
				h.Write(b[:4])
				h.Write(req[4:20])
				h.Write(b[20:l])
				h.Write(secret)
				h.Sum(b[4:4])
			}
		}
		resp, err := verifyResponse(b, req, secret)
		if err != nil {
			return
		}
		answer(resp, reqP, conv())
		MSK(resp, reqP)
		Authz(resp)
	})
}
