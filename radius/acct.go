package radius

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"

	"github.com/roamsec/roamsec/ike"
)

// Accounting reports the EAP-authenticated road warriors' sessions (RFC
// 2866): Start when the first Child SA of an IKE SA line is installed,
// Interim-Update every Interim, Stop when its last Child SA goes, with
// the bytes and packets its SAs counted (rekeyed ones included). ChildUp
// and ChildDown are called under the IKE endpoint's lock: they only
// queue; one goroutine (Run) sends.
type Accounting struct {
	Client        *Client
	NASIdentifier string
	Interim       time.Duration // 0: no Interim-Update
	Log           *slog.Logger

	mu       sync.Mutex
	sessions map[*ike.Authorization]*session
	queue    chan acctReq
	closed   bool
}

type session struct {
	id      string
	z       *ike.Authorization
	started time.Time
	vip     []byte
	live    map[*ike.Child]struct{}
	done    usage // of the Child SAs gone
}

type usage struct{ inBytes, inPackets, outBytes, outPackets uint64 }

func (u *usage) add(c *ike.Child) {
	u.inBytes += c.In.Counters.Bytes.Load()
	u.inPackets += c.In.Counters.Packets.Load()
	u.outBytes += c.Out.Counters.Bytes.Load()
	u.outPackets += c.Out.Counters.Packets.Load()
}

func (s *session) usage() usage {
	u := s.done
	for c := range s.live {
		u.add(c)
	}
	return u
}

type acctReq struct {
	status  rfc2866.AcctStatusType
	sess    session // a snapshot
	u       usage
	queued  time.Time
	elapsed time.Duration
}

// acctQueue bounds what waits for the server; a full queue drops the
// request, counted (Stats.AccountingLost), never blocks IKE.
const acctQueue = 4096

// NewAccounting makes the accounting of a gateway.
func NewAccounting(c *Client, nasID string, interim time.Duration, log *slog.Logger) *Accounting {
	if log == nil {
		log = slog.Default()
	}
	return &Accounting{Client: c, NASIdentifier: nasID, Interim: interim, Log: log,
		sessions: map[*ike.Authorization]*session{}, queue: make(chan acctReq, acctQueue)}
}

// ChildUp is ike.Config.Install's: a Child SA of an EAP-authorized peer.
func (a *Accounting) ChildUp(c *ike.Child) {
	if c.AAA == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[c.AAA]
	if s == nil {
		s = &session{id: randomID(), z: c.AAA, started: time.Now(), live: map[*ike.Child]struct{}{}}
		for _, v := range c.VirtualIP {
			if v.Is4() {
				s.vip = v.AsSlice()
			}
		}
		a.sessions[c.AAA] = s
		s.live[c] = struct{}{}
		a.enqueue(rfc2866.AcctStatusType_Value_Start, s)
		return
	}
	s.live[c] = struct{}{}
}

// ChildDown is ike.Config.Remove's.
func (a *Accounting) ChildDown(c *ike.Child) {
	if c.AAA == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[c.AAA]
	if s == nil {
		return
	}
	if _, ok := s.live[c]; !ok {
		return
	}
	delete(s.live, c)
	s.done.add(c)
	if len(s.live) == 0 {
		delete(a.sessions, c.AAA)
		a.enqueue(rfc2866.AcctStatusType_Value_Stop, s)
	}
}

// enqueue; under a.mu.
func (a *Accounting) enqueue(st rfc2866.AcctStatusType, s *session) {
	if a.closed {
		return
	}
	r := acctReq{status: st, sess: *s, u: s.usage(), queued: time.Now(), elapsed: time.Since(s.started)}
	r.sess.live = nil
	select {
	case a.queue <- r:
	default:
		a.Client.Stats.AccountingLost.Add(1)
		a.Log.Warn("RADIUS accounting queue full: request dropped", "user", s.z.User, "status", st.String())
	}
}

// Run sends the queued requests and the Interim-Updates until ctx ends;
// then it sends what is queued (the Stops of the shutdown) for at most
// drain, and returns.
func (a *Accounting) Run(ctx context.Context, drain time.Duration) {
	var tick <-chan time.Time
	if a.Interim > 0 {
		t := time.NewTicker(a.Interim)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case r := <-a.queue:
			a.send(ctx, r)
		case <-tick:
			a.mu.Lock()
			for _, s := range a.sessions {
				a.enqueue(rfc2866.AcctStatusType_Value_InterimUpdate, s)
			}
			a.mu.Unlock()
		case <-ctx.Done():
			a.mu.Lock()
			a.closed = true
			a.mu.Unlock()
			dctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			for {
				select {
				case r := <-a.queue:
					a.send(dctx, r)
				default:
					return
				}
			}
		}
	}
}

func (a *Accounting) send(ctx context.Context, r acctReq) {
	_, _, err := a.Client.Exchange(ctx, true, func(secret []byte) (*radius.Packet, error) {
		return a.request(secret, r), nil
	})
	if err != nil {
		a.Client.Stats.AccountingLost.Add(1)
		a.Log.Warn("RADIUS accounting request lost", "user", r.sess.z.User, "status", r.status.String(), "err", err)
		return
	}
	a.Log.Debug("RADIUS accounting", "user", r.sess.z.User, "status", r.status.String(), "session", r.sess.id)
}

// request is one Accounting-Request (RFC 2866 §4.1, §5).
func (a *Accounting) request(secret []byte, r acctReq) *radius.Packet {
	p := radius.New(radius.CodeAccountingRequest, secret)
	z := r.sess.z
	rfc2866.AcctStatusType_Set(p, r.status)
	rfc2866.AcctSessionID_SetString(p, r.sess.id)
	rfc2865.UserName_SetString(p, z.User)
	for _, c := range z.Class {
		p.Add(rfc2865.Class_Type, radius.Attribute(c)) // RFC 2865 §5.25: echoed unchanged
	}
	if a.NASIdentifier != "" {
		rfc2865.NASIdentifier_SetString(p, a.NASIdentifier)
	}
	if z.Local.Is4() {
		rfc2865.NASIPAddress_Set(p, net.IP(z.Local.AsSlice()))
	}
	rfc2865.NASPortType_Set(p, nasPortTypeVirtual)
	rfc2865.ServiceType_Set(p, serviceTypeFramed)
	rfc2865.CallingStationID_SetString(p, fmt.Sprintf("%s[%d]", z.Peer.Addr(), z.Peer.Port()))
	if r.sess.vip != nil {
		rfc2865.FramedIPAddress_Set(p, net.IP(r.sess.vip))
	}
	rfc2866.AcctDelayTime_Set(p, rfc2866.AcctDelayTime(time.Since(r.queued)/time.Second))
	if r.status != rfc2866.AcctStatusType_Value_Start {
		rfc2866.AcctSessionTime_Set(p, rfc2866.AcctSessionTime(r.elapsed/time.Second))
		// RFC 2866 §5.3: octets modulo 2^32, Gigawords (RFC 2869 §5.1)
		// the times it wrapped. Input is what came from the peer.
		rfc2866.AcctInputOctets_Set(p, rfc2866.AcctInputOctets(uint32(r.u.inBytes)))
		rfc2869.AcctInputGigawords_Set(p, rfc2869.AcctInputGigawords(r.u.inBytes>>32))
		rfc2866.AcctInputPackets_Set(p, rfc2866.AcctInputPackets(uint32(r.u.inPackets)))
		rfc2866.AcctOutputOctets_Set(p, rfc2866.AcctOutputOctets(uint32(r.u.outBytes)))
		rfc2869.AcctOutputGigawords_Set(p, rfc2869.AcctOutputGigawords(r.u.outBytes>>32))
		rfc2866.AcctOutputPackets_Set(p, rfc2866.AcctOutputPackets(uint32(r.u.outPackets)))
	}
	return p
}
