package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/roamsec/roamsec/ike"
	"github.com/roamsec/roamsec/radius"
)

// acctDrain bounds how long a stopping gateway still tries to deliver the
// accounting Stops of the IKE SAs it deleted.
const acctDrain = 5 * time.Second

// startAAA gives the endpoint its RADIUS servers: EAP relayed to them
// (RFC 3579) and, with accounting, Start/Interim/Stop around each
// EAP-authorized peer's Child SAs (RFC 2866). The accounting goroutine is
// pushed on the cleanup stack before the endpoint's Close (so it runs
// after it: the Stops of the shutdown's DELETEs are sent, for at most
// acctDrain) and joined there; the shared secrets are zeroed last.
func startAAA(cl *cleanups, s *Setup, icfg *ike.Config) {
	r := s.RADIUS
	c := &radius.Client{Timeout: r.Timeout, Retries: r.Retries, Log: s.Log}
	for _, sv := range r.Servers {
		c.Servers = append(c.Servers, radius.Server{Auth: sv.Auth, Acct: sv.Acct, Secret: sv.Secret})
	}
	cl.push(r.Wipe)
	nas := r.NASIdentifier
	if nas == "" {
		nas = icfg.LocalID.String()
	}
	icfg.EAP = &radius.EAP{Client: c, NASIdentifier: nas}
	s.aaa = c
	if !r.Accounting {
		return
	}
	acct := radius.NewAccounting(c, nas, r.Interim, s.Log)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { acct.Run(ctx, acctDrain) })
	cl.push(func() { stop(); wg.Wait() })
	install, remove := icfg.Install, icfg.Remove
	icfg.Install = func(ch *ike.Child) error {
		if err := install(ch); err != nil {
			return err
		}
		acct.ChildUp(ch)
		return nil
	}
	icfg.Remove = func(ch *ike.Child) {
		acct.ChildDown(ch)
		remove(ch)
	}
}
