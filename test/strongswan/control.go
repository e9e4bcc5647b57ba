package strongswan

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// defaultTimeout bounds a vici call whose context has no deadline.
const defaultTimeout = 20 * time.Second

// getConn takes an idle vici connection or dials a new one, so that calls
// from several goroutines (an Initiate waiting while SAs polls) run side by
// side; vici serves each connection on its own.
func (c *Charon) getConn() (*viciConn, error) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: stopped", c.name)
	}
	if n := len(c.idle); n > 0 {
		vc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return vc, nil
	}
	c.mu.Unlock()
	return dialVici(c.sock)
}

func (c *Charon) putConn(vc *viciConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || len(c.idle) >= 4 {
		vc.Close()
		return
	}
	c.idle = append(c.idle, vc)
}

// call runs one vici command (with stream: collecting those events) until
// the response, timeout or the end of ctx. After I/O or protocol trouble the
// connection is dropped, since its state is unknown; a command that failed
// (success = no) returns its response and an error.
func (c *Charon) call(ctx context.Context, timeout time.Duration, cmd string, in *vmsg, stream string) (*vmsg, []*vmsg, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	vc, err := c.getConn()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: vici: %w", c.name, err)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	vc.c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { vc.c.SetDeadline(time.Now()) })
	m, events, err := vc.call(cmd, in, stream)
	cancelled := !stop()
	if cancelled || err != nil && m == nil {
		vc.Close()
	} else {
		vc.c.SetDeadline(time.Time{})
		c.putConn(vc)
	}
	if err != nil {
		if cancelled && ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return m, events, fmt.Errorf("%s: vici %s: %w", c.name, cmd, err)
	}
	return m, events, nil
}

// Call sends vici command cmd (src/libcharon/plugins/vici/README.md) and
// returns its response; a response with success = no is returned with an
// error carrying errmsg. It waits until ctx's deadline, at most 20 s.
func (c *Charon) Call(ctx context.Context, cmd string, args Msg) (Msg, error) {
	m, _, err := c.CallStream(ctx, cmd, args, "")
	return m, err
}

// CallStream is Call for commands that stream events (list-sas: "list-sa",
// list-conns: "list-conn", initiate: "control-log", ...): it registers event
// first and returns the events received before the response, in order.
func (c *Charon) CallStream(ctx context.Context, cmd string, args Msg, event string) (Msg, []Msg, error) {
	in, err := toVmsg(args)
	if err != nil {
		return nil, nil, err
	}
	m, events, err := c.call(ctx, defaultTimeout, cmd, in, event)
	var out []Msg
	for _, e := range events {
		out = append(out, e.toMsg())
	}
	return m.toMsg(), out, err
}

// blocking returns the I/O timeout and the vici "timeout" (ms) of a command
// that waits for an exchange: charon's own timeout ends 1 s before ctx's
// deadline (15 s without one), so it answers before we give up on it.
func blocking(ctx context.Context) (time.Duration, string) {
	io, op := defaultTimeout, 15*time.Second
	if d, ok := ctx.Deadline(); ok {
		io = time.Until(d)
		op = max(io-time.Second, time.Second)
	}
	return io, strconv.FormatInt(op.Milliseconds(), 10)
}

// controlLog formats initiate's and terminate's "control-log" events.
func controlLog(events []*vmsg) string {
	if len(events) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("control log:\n")
	for _, e := range events {
		fmt.Fprintf(&b, "  [%s] %s\n", e.str("group"), e.str("msg"))
	}
	return b.String()
}

// Initiate initiates Child SA child (of any connection; "" with ike set:
// the IKE SA of connection ike alone) and waits for the outcome: until
// ctx's deadline, 15 s without one. The error has charon's control log of
// the attempt and the tail of its log.
func (c *Charon) Initiate(ctx context.Context, child, ike string) error {
	args := newMsg()
	if child != "" {
		args.set("child", child)
	}
	if ike != "" {
		args.set("ike", ike)
	}
	io, ms := blocking(ctx)
	args.set("timeout", ms)
	args.set("loglevel", "1")
	_, events, err := c.call(ctx, io, "initiate", args, "control-log")
	if err != nil {
		return fmt.Errorf("%w\n%s%s log tail:\n%s", err, controlLog(events), c.name, c.Tail(30))
	}
	return nil
}

// Terminate deletes the IKE SAs of connection ike (and their Child SAs):
// it sends the DELETE and waits up to 2 s for the answer (it may wait
// behind an exchange in flight), then removes the SAs locally anyway
// (vici's force). TerminateWait tells whether the peer answered.
func (c *Charon) Terminate(ctx context.Context, ike string) error {
	return c.terminate(ctx, newMsg("ike", ike, "timeout", "2000", "force", "yes"))
}

// TerminateWait deletes the IKE SAs of connection ike and waits for the
// peer's answer to the DELETE, until ctx's deadline (15 s without one); an
// error if it does not come.
func (c *Charon) TerminateWait(ctx context.Context, ike string) error {
	_, ms := blocking(ctx)
	return c.terminate(ctx, newMsg("ike", ike, "timeout", ms))
}

// TerminateChild deletes the Child SAs of child config child with an
// INFORMATIONAL exchange and waits for the answer (as TerminateWait).
func (c *Charon) TerminateChild(ctx context.Context, child string) error {
	_, ms := blocking(ctx)
	return c.terminate(ctx, newMsg("child", child, "timeout", ms))
}

func (c *Charon) terminate(ctx context.Context, args *vmsg) error {
	io, _ := blocking(ctx)
	args.set("loglevel", "1")
	_, events, err := c.call(ctx, io, "terminate", args, "control-log")
	if err != nil {
		return fmt.Errorf("%w\n%s%s log tail:\n%s", err, controlLog(events), c.name, c.Tail(30))
	}
	return nil
}

// Rekey starts a rekeying of the Child SAs of child config name (ike
// false) or of the IKE SAs of connection name (ike true). vici only queues
// the exchange: wait for its result with WaitSA (new SPIs). An error if no
// SA matched.
func (c *Charon) Rekey(ctx context.Context, name string, ike bool) error {
	k := "child"
	if ike {
		k = "ike"
	}
	return c.rekey(ctx, newMsg(k, name))
}

// RekeyID is Rekey of one SA by its unique id (IKESA.UniqueID or
// ChildSA.UniqueID).
func (c *Charon) RekeyID(ctx context.Context, uniqueID string, ike bool) error {
	k := "child-id"
	if ike {
		k = "ike-id"
	}
	return c.rekey(ctx, newMsg(k, uniqueID))
}

func (c *Charon) rekey(ctx context.Context, args *vmsg) error {
	m, _, err := c.call(ctx, 5*time.Second, "rekey", args, "")
	if err != nil {
		return err
	}
	if m.str("matches") == "0" {
		return fmt.Errorf("%s: vici rekey: no SA matched %v", c.name, args.vals)
	}
	return nil
}

// SAs lists the IKE SAs and their Child SAs (vici list-sas). It waits
// for IKE SAs that a charon thread holds at the moment (processing a
// message, starting an exchange): those SAs are listed too.
func (c *Charon) SAs(ctx context.Context) ([]IKESA, error) { return c.listSAs(ctx, newMsg()) }

// SAsNoBlock is SAs with vici's noblock: it does not wait, and an IKE SA
// held by a charon thread at the moment is left out of the listing (after
// a Child SA is installed, charon's MOBIKE address update alone holds it
// for a moment).
func (c *Charon) SAsNoBlock(ctx context.Context) ([]IKESA, error) {
	return c.listSAs(ctx, newMsg("noblock", "yes"))
}

func (c *Charon) listSAs(ctx context.Context, args *vmsg) ([]IKESA, error) {
	_, events, err := c.call(ctx, 5*time.Second, "list-sas", args, "list-sa")
	if err != nil {
		return nil, err
	}
	var sas []IKESA
	for _, m := range events {
		for _, name := range m.keys {
			if ike := m.sub(name); ike != nil {
				sas = append(sas, parseIKESA(name, ike))
			}
		}
	}
	return sas, nil
}

// WaitSA polls SAs every 20 ms until cond holds for the listing and returns
// it. On timeout (or the end of ctx) the error has the last listing and the
// log tail; if charon has exited, it says so at once.
func (c *Charon) WaitSA(ctx context.Context, timeout time.Duration, cond func([]IKESA) bool) ([]IKESA, error) {
	end := time.Now().Add(timeout)
	var sas []IKESA
	var err error
	for {
		if !c.Alive() {
			return nil, fmt.Errorf("%s: charon exited (%v)\n%s log tail:\n%s", c.name, c.werr, c.name, c.Tail(30))
		}
		sas, err = c.SAs(ctx)
		if err == nil && cond(sas) {
			return sas, nil
		}
		if ctx.Err() != nil || time.Now().After(end) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	why := "timeout " + timeout.String()
	if ctx.Err() != nil {
		why = ctx.Err().Error()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: WaitSA (%s): %w\n%s log tail:\n%s", c.name, why, err, c.name, c.Tail(30))
	}
	return sas, fmt.Errorf("%s: WaitSA: condition not met (%s); SAs:\n%s%s log tail:\n%s",
		c.name, why, FormatSAs(sas), c.name, c.Tail(30))
}
