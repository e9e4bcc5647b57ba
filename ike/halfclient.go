package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/roamsec/roamsec/ike/message"
)

// HalfOpenClient is an IKEv2 initiator that stops after IKE_SA_INIT: what
// an attacker without credentials can do (answer cookies, hold half-open
// SAs, send authenticated fragments that never complete). It exists for
// the flood tests and benchmarks (test/e2e, test/floodbench), which build
// their packets with the project's own encoder and SK cipher. It is not
// safe for concurrent use.
type HalfOpenClient struct {
	SPIi, SPIr uint64
	props      []IKEProposal
	prop       ikeSuite
	dh         *dhKey
	ni         []byte
	cookie     []byte
	peerKE, nr []byte // from the response; the keys are derived when Fragments needs them
	send       *skCipher
	first      []byte // the request without a cookie, shared by Again's clients (SPIi at 0..8 patched)
}

// NewHalfOpenClient makes a client offering props (nil: the defaults).
func NewHalfOpenClient(props []IKEProposal) (*HalfOpenClient, error) {
	if props == nil {
		props = DefaultIKEProposals
	}
	dh, err := newDH(props[0].dh[0])
	if err != nil {
		return nil, err
	}
	return &HalfOpenClient{SPIi: randomSPI64(), props: props, dh: dh, ni: randomBytes(minNonceLen)}, nil
}

// Again is a new client, with a new SPI, that reuses c's Diffie-Hellman
// key and nonce, as a real attacker would: RFC 7296 §2.12 lets an
// initiator reuse its DH value, and nothing tells a responder that one
// nonce is another's. So an attacker's cost per IKE_SA_INIT is a copy and
// a send, not a key generation (the flood benchmarks show the attacker's
// CPU beside the gateway's).
func (c *HalfOpenClient) Again() *HalfOpenClient {
	if c.first == nil {
		c.first = c.encode()
	}
	return &HalfOpenClient{SPIi: randomSPI64(), props: c.props, dh: c.dh, ni: c.ni, first: c.first}
}

// Request is the IKE_SA_INIT request, with the cookie if one came.
func (c *HalfOpenClient) Request() []byte {
	if c.cookie == nil && c.first != nil {
		b := bytes.Clone(c.first)
		binary.BigEndian.PutUint64(b, c.SPIi)
		return b
	}
	return c.encode()
}

func (c *HalfOpenClient) encode() []byte {
	var ps []message.Payload
	if c.cookie != nil {
		ps = append(ps, notify(message.COOKIE, c.cookie))
	}
	ps = append(ps, ikeSAPayload(c.props, nil), &message.KE{Group: uint16(c.dh.group), Data: c.dh.public()},
		&message.Nonce{Data: c.ni}, notify(message.IKEV2_FRAGMENTATION_SUPPORTED, nil))
	m := &message.Message{Header: message.Header{SPIi: c.SPIi, Version: 0x20, Exchange: message.IKE_SA_INIT, Flags: message.FlagInitiator}, Payloads: ps}
	return m.Encode()
}

// ErrCookie says the response asked for a cookie: send Request again.
var ErrCookie = errors.New("ike: responder wants a cookie")

// Response takes the IKE_SA_INIT response: a COOKIE (ErrCookie: send
// Request again), or the responder's SA, KE and nonce (nil: half-open;
// Fragments derives the keys).
func (c *HalfOpenClient) Response(b []byte) error {
	m, err := message.Parse(b)
	if err != nil {
		return err
	}
	if m.Header.SPIi != c.SPIi || !m.Header.IsResponse() {
		return errors.New("ike: not our IKE_SA_INIT response")
	}
	if n := m.Notify(message.COOKIE); n != nil {
		c.cookie = bytes.Clone(n.Data)
		return ErrCookie
	}
	sa, ke, nr := message.Find[*message.SA](m.Payloads), message.Find[*message.KE](m.Payloads), message.Find[*message.Nonce](m.Payloads)
	if sa == nil || ke == nil || nr == nil {
		return fmt.Errorf("ike: IKE_SA_INIT response without SA, KE or Nonce (%d payloads)", len(m.Payloads))
	}
	prop, err := acceptIKE(c.props, sa)
	if err != nil {
		return err
	}
	c.SPIr, c.prop, c.peerKE, c.nr = m.Header.SPIr, prop, bytes.Clone(ke.Data), bytes.Clone(nr.Data)
	return nil
}

func (c *HalfOpenClient) keys() error {
	if c.send != nil {
		return nil
	}
	if c.nr == nil {
		return errors.New("ike: no IKE_SA_INIT response yet")
	}
	shared, err := c.dh.shared(c.peerKE)
	if err != nil {
		return err
	}
	keys := deriveIKE(c.prop.prf, c.prop.encr, 0, nil, shared, c.ni, c.nr, c.SPIi, c.SPIr)
	c.send, _, err = newCiphers(c.prop, keys, true)
	return err
}

// Fragments returns RFC 7383 fragments from..to (1-based, inclusive) of an
// IKE_AUTH request (message ID 1) of total fragments, each carrying size
// bytes of plaintext, authenticated with the half-open SA's keys: with
// from > 1 the set never completes.
func (c *HalfOpenClient) Fragments(total, from, to, size int) ([][]byte, error) {
	if err := c.keys(); err != nil {
		return nil, err
	}
	var out [][]byte
	part := make([]byte, size)
	for i := from; i <= to; i++ {
		l := 8 + sealedLen(size)
		h := message.Header{SPIi: c.SPIi, SPIr: c.SPIr, NextPayload: message.PayloadSKF, Version: 0x20,
			Exchange: message.IKE_AUTH, Flags: message.FlagInitiator, MsgID: 1, Length: uint32(message.HeaderLen + l)}
		b := h.AppendTo(make([]byte, 0, message.HeaderLen+l))
		next := byte(0)
		if i == 1 {
			next = byte(message.PayloadIDi)
		}
		b = append(b, next, 0, byte(l>>8), byte(l), byte(i>>8), byte(i), byte(total>>8), byte(total))
		out = append(out, c.send.seal(b, b, part))
	}
	return out, nil
}
