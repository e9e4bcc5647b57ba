// Package radius is the gateway's RADIUS client (RFC 2865, RFC 2866): EAP
// passed through to the AAA server (RFC 3579, Message-Authenticator of RFC
// 2869), the MSK from MS-MPPE-Recv-Key/Send-Key (RFC 2548), the
// authorization attributes, and accounting (RFC 2866). Packets are encoded
// and decoded with layeh.com/radius; the exchange (retransmission, the
// second server, the Message-Authenticator checks) is ours, so every
// request waits on one socket in the caller's goroutine and nothing runs
// behind its back.
package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2869"
)

// Server is one RADIUS server.
type Server struct {
	Auth   netip.AddrPort // Access-Request (1812)
	Acct   netip.AddrPort // Accounting-Request (1813); zero: Auth's port + 1
	Secret []byte         // the shared secret; never logged
}

func (s Server) acct() netip.AddrPort {
	if s.Acct.IsValid() {
		return s.Acct
	}
	return netip.AddrPortFrom(s.Auth.Addr(), s.Auth.Port()+1)
}

// Stats are the client's counters.
type Stats struct {
	Requests       atomic.Uint64 // requests sent (not counting retransmissions)
	Retransmits    atomic.Uint64
	Timeouts       atomic.Uint64 // a server that gave no answer after every try
	Failovers      atomic.Uint64 // moves to the next server
	BadResponses   atomic.Uint64 // wrong identifier, authenticator or Message-Authenticator: dropped
	AccountingLost atomic.Uint64 // accounting requests no server answered
}

// Client sends requests to the first server that answers, moving to the
// next one when a server stays silent through every retransmission, and
// staying there (RFC 2865 §2.6 leaves the choice to the client).
type Client struct {
	Servers []Server
	Timeout time.Duration // wait for an answer this long, then retransmit; default 2s
	Retries int           // retransmissions per server; default 2
	Log     *slog.Logger

	Stats Stats

	mu  sync.Mutex
	cur int // the server that answered last
}

// ErrNoServer: no server answered.
var ErrNoServer = errors.New("radius: no server answered")

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 2 * time.Second
	}
	return c.Timeout
}

func (c *Client) log() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}

// Exchange sends the request that build makes for a server (its secret
// goes into the authenticators, so each server gets its own packet) and
// returns the verified answer and the request it answers.
func (c *Client) Exchange(ctx context.Context, acct bool, build func(secret []byte) (*radius.Packet, error)) (resp, req *radius.Packet, err error) {
	if len(c.Servers) == 0 {
		return nil, nil, ErrNoServer
	}
	c.mu.Lock()
	first := c.cur
	c.mu.Unlock()
	var errs []error
	for i := range c.Servers {
		n := (first + i) % len(c.Servers)
		srv := c.Servers[n]
		to := srv.Auth
		if acct {
			to = srv.acct()
		}
		req, err := build(srv.Secret)
		if err != nil {
			return nil, nil, err
		}
		resp, err := c.try(ctx, to, req)
		if err == nil {
			c.mu.Lock()
			c.cur = n
			c.mu.Unlock()
			return resp, req, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%v: %w", to, err))
		if i+1 < len(c.Servers) {
			c.Stats.Failovers.Add(1)
			c.log().Warn("RADIUS server did not answer: trying the next one", "server", to, "err", err)
		}
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrNoServer, errors.Join(errs...))
}

// try sends req to one server, retransmitting the same bytes (RFC 5080
// §2.2.1: same Identifier and Request Authenticator) after each timeout.
func (c *Client) try(ctx context.Context, to netip.AddrPort, req *radius.Packet) (*radius.Packet, error) {
	wire, err := encode(req)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", to.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	c.Stats.Requests.Add(1)
	buf := make([]byte, radius.MaxPacketLength)
	for try := 0; try <= max(c.Retries, 0); try++ {
		if try > 0 {
			c.Stats.Retransmits.Add(1)
		}
		if _, err := conn.Write(wire); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(c.timeout())
		conn.SetReadDeadline(deadline)
		for {
			n, err := conn.Read(buf)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // retransmit
			}
			if err != nil {
				// ICMP port unreachable: nobody listens there.
				return nil, err
			}
			resp, err := verifyResponse(buf[:n], wire, req.Secret)
			if err != nil {
				c.Stats.BadResponses.Add(1)
				c.log().Debug("RADIUS response dropped", "server", to, "err", err)
				continue
			}
			return resp, nil
		}
	}
	c.Stats.Timeouts.Add(1)
	return nil, errors.New("timed out")
}

// encode is req on the wire, with its Message-Authenticator (RFC 3579
// §3.2) filled in when it has one: HMAC-MD5 over the whole packet, keyed
// with the shared secret, computed with the attribute's value zero. Only
// Access-Requests carry one here (accounting needs none, RFC 2866 §3
// authenticates those requests already).
func encode(req *radius.Packet) ([]byte, error) {
	b, err := req.Encode()
	if err != nil {
		return nil, err
	}
	if off := findAttr(b, byte(rfc2869.MessageAuthenticator_Type)); off >= 0 && req.Code == radius.CodeAccessRequest {
		clear(b[off : off+16])
		mac := hmac.New(md5.New, req.Secret)
		mac.Write(b)
		mac.Sum(b[off:off])
	}
	return b, nil
}

// findAttr is the offset of the value of the first attribute of type t in
// an encoded packet, which must hold 16 bytes; -1 if there is none.
func findAttr(b []byte, t byte) int {
	for i := 20; i+2 <= len(b); {
		l := int(b[i+1])
		if l < 2 || i+l > len(b) {
			return -1
		}
		if b[i] == t {
			if l != 18 {
				return -1
			}
			return i + 2
		}
		i += l
	}
	return -1
}

// verifyResponse parses a server's answer to request (its wire form) and
// checks, in order: the identifier, the Response Authenticator (RFC 2865
// §3), and the Message-Authenticator (RFC 3579 §3.2), which an answer
// carrying EAP-Message must have. Anything wrong is an error: the caller
// drops the packet and keeps waiting (a spoofed answer must not end the
// wait for the real one).
func verifyResponse(b, request, secret []byte) (*radius.Packet, error) {
	if len(b) < 20 || len(request) < 20 {
		return nil, errors.New("short packet")
	}
	p, err := radius.Parse(b, secret)
	if err != nil {
		return nil, err
	}
	b = b[:int(b[2])<<8|int(b[3])]
	if b[1] != request[1] {
		return nil, errors.New("identifier does not match the request")
	}
	if !radius.IsAuthenticResponse(b, request, secret) {
		return nil, errors.New("bad Response Authenticator (wrong shared secret?)")
	}
	off := findAttr(b, byte(rfc2869.MessageAuthenticator_Type))
	if off < 0 {
		if _, has := p.Attributes.Lookup(rfc2869.EAPMessage_Type); has {
			return nil, errors.New("EAP-Message without Message-Authenticator (RFC 3579 §3.2)")
		}
		if _, has := p.Attributes.Lookup(rfc2869.MessageAuthenticator_Type); has {
			return nil, errors.New("malformed Message-Authenticator")
		}
		return p, nil
	}
	c := append([]byte(nil), b...)
	copy(c[4:20], request[4:20]) // computed over the Request Authenticator
	clear(c[off : off+16])
	mac := hmac.New(md5.New, secret)
	mac.Write(c)
	if !hmac.Equal(mac.Sum(nil), b[off:off+16]) {
		return nil, errors.New("bad Message-Authenticator")
	}
	return p, nil
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%016X", b[:])
}
