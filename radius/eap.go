package radius

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/vendors/microsoft"

	"github.com/roamsec/roamsec/ike"
)

// EAP relays a gateway's EAP conversations to the RADIUS servers (RFC
// 3579): it is the ike.EAPBackend.
type EAP struct {
	Client        *Client
	NASIdentifier string // RFC 2865 §5.32; the gateway's IKE identity
}

// NAS-Port-Type Virtual and Service-Type Framed: what strongSwan's
// eap-radius sends for an IKEv2 road warrior (RFC 2865 §5.6, §5.41).
const (
	nasPortTypeVirtual = 5
	serviceTypeFramed  = 2
)

// Relay sends msg in an Access-Request and returns the verdict (RFC 3579
// §2.6.2: Access-Challenge continues, Access-Accept and Access-Reject end
// the conversation).
func (a *EAP) Relay(ctx context.Context, conv *ike.EAPConversation, msg []byte) (ike.EAPAnswer, error) {
	resp, req, err := a.Client.Exchange(ctx, false, func(secret []byte) (*radius.Packet, error) {
		return a.accessRequest(secret, conv, msg)
	})
	if err != nil {
		return ike.EAPAnswer{}, err
	}
	return answer(resp, req, conv)
}

func (a *EAP) accessRequest(secret []byte, conv *ike.EAPConversation, msg []byte) (*radius.Packet, error) {
	p := radius.New(radius.CodeAccessRequest, secret)
	if err := rfc2865.UserName_SetString(p, conv.Identity); err != nil {
		return nil, err
	}
	rfc2865.ServiceType_Set(p, serviceTypeFramed)
	rfc2865.NASPortType_Set(p, nasPortTypeVirtual)
	if a.NASIdentifier != "" {
		rfc2865.NASIdentifier_SetString(p, a.NASIdentifier)
	}
	if conv.Local.Is4() {
		rfc2865.NASIPAddress_Set(p, net.IP(conv.Local.AsSlice()))
	}
	// strongSwan's form: "address[port]".
	rfc2865.CallingStationID_SetString(p, fmt.Sprintf("%s[%d]", conv.Peer.Addr(), conv.Peer.Port()))
	if conv.Local.IsValid() {
		rfc2865.CalledStationID_SetString(p, fmt.Sprintf("%s[%d]", conv.Local, 4500))
	}
	// RFC 3579 §3.1: an EAP packet longer than 253 bytes goes in several
	// EAP-Message attributes, in order.
	for b := msg; len(b) > 0; {
		n := min(len(b), 253)
		p.Add(rfc2869.EAPMessage_Type, radius.Attribute(b[:n]))
		b = b[n:]
	}
	if len(conv.State) > 0 {
		rfc2865.State_Set(p, conv.State)
	}
	// Filled in by encode (RFC 3579 §3.2: required with EAP-Message).
	p.Add(rfc2869.MessageAuthenticator_Type, make(radius.Attribute, 16))
	return p, nil
}

// answer reads an Access-Accept, -Reject or -Challenge.
func answer(resp, req *radius.Packet, conv *ike.EAPConversation) (ike.EAPAnswer, error) {
	var eap []byte
	for _, v := range resp.Attributes {
		if v.Type == rfc2869.EAPMessage_Type {
			eap = append(eap, v.Attribute...)
		}
	}
	switch resp.Code {
	case radius.CodeAccessChallenge:
		conv.State = rfc2865.State_Get(resp)
		if len(eap) < 4 {
			return ike.EAPAnswer{}, errors.New("Access-Challenge without EAP-Message")
		}
		return ike.EAPAnswer{Verdict: ike.EAPContinue, Msg: eap}, nil
	case radius.CodeAccessReject:
		return ike.EAPAnswer{Verdict: ike.EAPReject, Msg: eap}, nil
	case radius.CodeAccessAccept:
		msk, err := MSK(resp, req)
		if err != nil {
			return ike.EAPAnswer{}, err
		}
		return ike.EAPAnswer{Verdict: ike.EAPAccept, Msg: eap, MSK: msk, Authz: Authz(resp)}, nil
	}
	return ike.EAPAnswer{}, fmt.Errorf("unexpected RADIUS answer %v", resp.Code)
}

// MSK is the EAP method's Master Session Key from an Access-Accept:
// MS-MPPE-Recv-Key followed by MS-MPPE-Send-Key (RFC 2548 §2.4.2-3, each
// decrypted with the shared secret and the request's authenticator), as
// RFC 3579 §2.4 and strongSwan's eap-radius take it. Nil when the server
// sent neither (a method without keys); an error for one without the
// other or a key that does not decrypt.
func MSK(resp, req *radius.Packet) ([]byte, error) {
	recv, errR := microsoft.MSMPPERecvKey_Lookup(resp, req)
	send, errS := microsoft.MSMPPESendKey_Lookup(resp, req)
	if errors.Is(errR, radius.ErrNoAttribute) && errors.Is(errS, radius.ErrNoAttribute) {
		return nil, nil
	}
	if errR != nil || errS != nil {
		return nil, fmt.Errorf("MS-MPPE keys: %w", errors.Join(errR, errS))
	}
	if len(recv) == 0 || len(send) == 0 {
		return nil, errors.New("MS-MPPE keys: empty")
	}
	msk := append(append(make([]byte, 0, len(recv)+len(send)), recv...), send...)
	clear(recv)
	clear(send)
	return msk, nil
}

// Authz reads the authorization attributes of an Access-Accept.
func Authz(resp *radius.Packet) *ike.Authorization {
	z := &ike.Authorization{User: rfc2865.UserName_GetString(resp)}
	if ip := rfc2865.FramedIPAddress_Get(resp); ip != nil {
		if a, ok := netipFrom(ip); ok && a.Is4() && !a.IsUnspecified() && a != broadcast {
			// 255.255.255.254 (let the NAS choose) and .255 (let the user
			// choose) are RFC 2865 §5.8's special values: the pool decides.
			if a != nasChooses {
				z.VirtualIP4 = a
			}
		}
	}
	if t := rfc2865.SessionTimeout_Get(resp); t > 0 {
		z.SessionTimeout = time.Duration(t) * time.Second
	}
	for _, v := range resp.Attributes {
		if v.Type == rfc2865.Class_Type {
			z.Class = append(z.Class, append([]byte(nil), v.Attribute...))
		}
	}
	return z
}
