package enroll

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Accounting steps (seed 002 table 4's accounting, and the tunnel's life).
const (
	EvIssued     = "issued"
	EvRevoked    = "revoked"
	EvRequest    = "request"     // an IKE_AUTH with a one-time key arrived
	EvVerified   = "verified"    // the Host checked the signature with the stored key
	EvMarkedUsed = "marked_used" // valid → used, written
	EvAuthorized = "authorized"  // the Target's authorization: objective → proposals, pool
	EvRefused    = "refused"     // Reason says why
	EvTunnelUp   = "tunnel_up"
	EvTunnelDown = "tunnel_down" // with the Child SA's bytes and packets
)

// Event is one line of the accounting log. It never holds key material.
type Event struct {
	Time       time.Time `json:"time"`
	Event      string    `json:"event"`
	KeyID      string    `json:"key_id,omitempty"`
	User       string    `json:"user,omitempty"`
	Objective  Objective `json:"objective,omitempty"`
	Gateway    string    `json:"gateway,omitempty"`
	Remote     string    `json:"remote,omitempty"`
	Request    string    `json:"request_id,omitempty"` // the IKE SPIs
	Reason     Reason    `json:"reason,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Expires    time.Time `json:"expires,omitzero"`
	Child      string    `json:"child,omitempty"`
	VirtualIP  string    `json:"virtual_ip,omitempty"`
	Proposal   string    `json:"proposal,omitempty"`
	BytesIn    uint64    `json:"bytes_in,omitempty"`
	BytesOut   uint64    `json:"bytes_out,omitempty"`
	PacketsIn  uint64    `json:"packets_in,omitempty"`
	PacketsOut uint64    `json:"packets_out,omitempty"`
}

// Accounting appends events as JSON lines. Each line is one write to a
// file opened O_APPEND, so processes sharing the file do not interleave
// within a line. A nil *Accounting logs nothing.
type Accounting struct {
	mu  sync.Mutex
	f   *os.File
	Now func() time.Time
}

// OpenAccounting opens (creates, mode 0600) the log at path.
func OpenAccounting(path string) (*Accounting, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("accounting log: %w", err)
	}
	return &Accounting{f: f, Now: time.Now}, nil
}

// Log writes e, stamped now if it has no time.
func (a *Accounting) Log(e Event) error {
	if a == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = a.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return os.ErrClosed
	}
	_, err = a.f.Write(append(b, '\n'))
	return err
}

// Close closes the file.
func (a *Accounting) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}
