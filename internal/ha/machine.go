package ha

import (
	"fmt"
	"time"
)

// Role is a node's place in the pair.
type Role uint8

const (
	RoleJoining Role = iota + 1 // started; has not yet heard an active peer nor taken over
	RoleStandby                 // receives the state; does not hold the service addresses
	RoleActive                  // holds the service addresses and streams the state
)

var roleNames = [...]string{RoleJoining: "joining", RoleStandby: "standby", RoleActive: "active"}

func (r Role) String() string {
	if r.valid() {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

func (r Role) valid() bool { return r >= RoleJoining && r <= RoleActive }

// Action is what the machine asks its owner to do.
type Action uint8

const (
	ActNone     Action = iota
	ActProbe           // look for the active on the service networks; report with ProbeResult
	ActTakeOver        // add the service addresses, announce them, import the context
	ActRelease         // remove the service addresses
)

var actionNames = [...]string{ActNone: "none", ActProbe: "probe", ActTakeOver: "take over", ActRelease: "release"}

func (a Action) String() string { return actionNames[a] }

// Machine is the leadership state machine of one node. It has no clock
// and no I/O: every input carries the time, every output is an Action, so
// it is tested with a fake clock.
//
// The rule: a node becomes active only when (1) no active peer has been
// heard on the sync link for DeadAfter, (2) a peer that is alive but not
// active has lower priority (or equal priority and we hold the tie-break),
// and (3) a probe of the service networks finds no one answering for the
// service address. (3) is what keeps a split sync link from making two
// actives: the active still answers ARP/ND for the address, so the
// standby stays standby. Two actives that hear each other (a healed
// partition of both networks) resolve it at once: the higher epoch (the
// later takeover) stays, the other releases. A node never preempts an
// active peer because of its priority: priority only chooses between two
// nodes when neither is active.
type Machine struct {
	DeadAfter time.Duration
	Priority  uint8
	Tiebreak  bool // we win a priority tie (the lower sync address)

	role         Role
	epoch        uint64
	peerActiveAt time.Time // last heartbeat saying the peer is active (or our start, or our release)
	peerHeardAt  time.Time
	peerHeard    bool
	peerRole     Role
	peerPrio     uint8
	peerEpoch    uint64
	probing      bool
	probedAt     time.Time
	isolated     bool // sync link silent but the active answers on the service network
	takeovers    int
	lastTakeover time.Time
}

// NewMachine starts a node as joining at now.
func NewMachine(now time.Time, deadAfter time.Duration, priority uint8, tiebreak bool) *Machine {
	return &Machine{DeadAfter: deadAfter, Priority: priority, Tiebreak: tiebreak, role: RoleJoining, peerActiveAt: now}
}

func (m *Machine) Role() Role                   { return m.role }
func (m *Machine) Epoch() uint64                { return m.epoch }
func (m *Machine) Isolated() bool               { return m.isolated }
func (m *Machine) Takeovers() (int, time.Time)  { return m.takeovers, m.lastTakeover }
func (m *Machine) Peer() (Role, uint8, uint64)  { return m.peerRole, m.peerPrio, m.peerEpoch }
func (m *Machine) PeerHeard() (time.Time, bool) { return m.peerHeardAt, m.peerHeard }

// Heartbeat is a heartbeat from the peer.
func (m *Machine) Heartbeat(now time.Time, role Role, prio uint8, epoch uint64) Action {
	m.peerHeardAt, m.peerHeard = now, true
	m.peerRole, m.peerPrio, m.peerEpoch = role, prio, epoch
	if role != RoleActive {
		return m.Tick(now)
	}
	m.peerActiveAt = now
	m.isolated = false
	m.probing = false
	switch m.role {
	case RoleJoining:
		m.role = RoleStandby
		m.epoch = max(m.epoch, epoch)
	case RoleStandby:
		m.epoch = max(m.epoch, epoch)
	case RoleActive:
		if m.winsOver(prio, epoch) {
			return ActNone // the peer releases when it hears us
		}
		m.role = RoleStandby
		m.epoch = max(m.epoch, epoch)
		return ActRelease
	}
	return ActNone
}

// winsOver: between two actives, the later takeover (higher epoch) stays;
// then the higher priority; then the tie-break.
func (m *Machine) winsOver(prio uint8, epoch uint64) bool {
	if m.epoch != epoch {
		return m.epoch > epoch
	}
	if m.Priority != prio {
		return m.Priority > prio
	}
	return m.Tiebreak
}

// Tick advances time: a standby whose active has been silent for
// DeadAfter asks for a probe.
func (m *Machine) Tick(now time.Time) Action {
	if m.role == RoleActive || m.probing {
		return ActNone
	}
	if now.Sub(m.peerActiveAt) < m.DeadAfter {
		return ActNone
	}
	// The peer is alive but not active: only the higher priority moves.
	if m.peerHeard && now.Sub(m.peerHeardAt) < m.DeadAfter && m.peerRole != RoleActive {
		if m.Priority < m.peerPrio || m.Priority == m.peerPrio && !m.Tiebreak {
			return ActNone
		}
	}
	if m.isolated && now.Sub(m.probedAt) < m.DeadAfter {
		return ActNone // probe again only every DeadAfter
	}
	m.probing, m.probedAt = true, now
	return ActProbe
}

// ProbeResult reports the probe ActProbe asked for: seen is true when
// something answered for the service address.
func (m *Machine) ProbeResult(now time.Time, seen bool) Action {
	if !m.probing {
		return ActNone
	}
	m.probing = false
	if m.role == RoleActive || now.Sub(m.peerActiveAt) < m.DeadAfter {
		return ActNone // the active spoke while we probed
	}
	if seen {
		m.isolated = true
		if m.role == RoleJoining {
			m.role = RoleStandby
		}
		return ActNone
	}
	return m.takeOver(now)
}

func (m *Machine) takeOver(now time.Time) Action {
	m.role = RoleActive
	m.epoch = max(m.epoch, m.peerEpoch) + 1
	m.isolated = false
	m.takeovers++
	m.lastTakeover = now
	return ActTakeOver
}

// Handover is the peer's planned switchover: it has released the
// addresses and flushed its last checkpoint, so no probe is needed.
func (m *Machine) Handover(now time.Time, epoch uint64) Action {
	m.peerEpoch = max(m.peerEpoch, epoch)
	if m.role == RoleActive {
		return ActNone
	}
	m.peerHeardAt, m.peerHeard, m.peerRole = now, true, RoleStandby
	m.probing = false
	return m.takeOver(now)
}

// ErrNotActive: a switchover asked of a node that is not active.
var ErrNotActive = fmt.Errorf("ha: this node is not active")

// ErrNoPeer: a switchover with no live standby to take over.
var ErrNoPeer = fmt.Errorf("ha: no standby heard on the sync link")

// Switchover starts a planned switchover on the active: it releases and
// becomes standby. It waits DeadAfter for the peer to announce itself
// active before it would probe again.
func (m *Machine) Switchover(now time.Time) (Action, error) {
	if m.role != RoleActive {
		return ActNone, ErrNotActive
	}
	if !m.peerHeard || now.Sub(m.peerHeardAt) >= m.DeadAfter || m.peerRole == RoleActive {
		return ActNone, ErrNoPeer
	}
	m.role = RoleStandby
	m.peerActiveAt = now
	return ActRelease, nil
}
