package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// iperfRun is an iperf3 TCP stream through a road warrior's tunnel: the
// server behind the HA pair sends (-R: the gateways' outbound direction,
// whose sequence numbers a takeover jumps) to the client namespace.
type iperfRun struct {
	srv, cli *exec.Cmd
	out      bytes.Buffer
	errOut   bytes.Buffer
}

// startIperf runs an iperf3 server on dst in srv and a client in cl for
// secs seconds at rate (e.g. "10M"), 100 ms intervals, JSON output.
func startIperf(t *testing.T, srv, cl *netns.NS, dst netip.Addr, secs int, rate string) *iperfRun {
	t.Helper()
	r := &iperfRun{srv: srv.Command("iperf3", "-s", "-1", "-B", dst.String(), "-p", "5201")}
	if err := r.srv.Start(); err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	t.Cleanup(func() { r.srv.Process.Kill(); r.srv.Wait() })
	time.Sleep(300 * time.Millisecond) // the server listening
	r.cli = cl.Command("iperf3", "-c", dst.String(), "-p", "5201", "-R", "-t", strconv.Itoa(secs), "-i", "0.1", "-b", rate, "-J")
	r.cli.Stdout, r.cli.Stderr = &r.out, &r.errOut
	if err := r.cli.Start(); err != nil {
		t.Fatalf("iperf3 client: %v", err)
	}
	t.Cleanup(func() {
		if r.cli.ProcessState == nil {
			r.cli.Process.Kill()
			r.cli.Wait()
		}
	})
	return r
}

// iperfResult is what bench-ha reports of the stream.
type iperfResult struct {
	Received    int64         // bytes the client received
	Retransmits int           // the sender's (server's) TCP retransmissions; -1 if not reported
	Stall       time.Duration // the longest run of 100 ms intervals with nothing received
	Err         string        // iperf3's error, if the stream broke
}

// wait waits for the client and reads its JSON.
func (r *iperfRun) wait(t *testing.T) iperfResult {
	t.Helper()
	werr := r.cli.Wait()
	var j struct {
		Error     string `json:"error"`
		Intervals []struct {
			Sum struct {
				Seconds float64 `json:"seconds"`
				Bytes   int64   `json:"bytes"`
			} `json:"sum"`
		} `json:"intervals"`
		End struct {
			SumSent struct {
				Retransmits *int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes int64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(r.out.Bytes(), &j); err != nil {
		t.Fatalf("iperf3 output (%v): %v\n%s\n%s", werr, err, tail(r.out.String(), 20), r.errOut.String())
	}
	res := iperfResult{Received: j.End.SumReceived.Bytes, Retransmits: -1, Err: j.Error}
	if werr != nil && res.Err == "" {
		res.Err = fmt.Sprint(werr)
	}
	if j.End.SumSent.Retransmits != nil {
		res.Retransmits = *j.End.SumSent.Retransmits
	}
	var run time.Duration
	for _, iv := range j.Intervals {
		if iv.Sum.Bytes == 0 {
			run += time.Duration(iv.Sum.Seconds * float64(time.Second))
			res.Stall = max(res.Stall, run)
		} else {
			run = 0
		}
	}
	return res
}
