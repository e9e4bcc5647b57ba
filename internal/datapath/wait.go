package datapath

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waiter blocks a reader in ppoll(2) until its file descriptor (the TUN
// device or an ESP socket) is readable, or the data path stops.
//
// Why not let the read park in Go's poller, as it did: a reader that finds
// its descriptor empty costs a failed read (EAGAIN), an epoll_wait, and,
// when the process had gone idle between two packets, waking the runtime's
// sysmon thread on the next system call (entersyscall's notewakeup), which
// then sleeps 20 µs and parks again: two futex calls, a nanosleep and two
// context switches of another thread per packet. Profiles of both daemons
// under 64-byte UDP at 8k packets/s showed sysmon's share at 25-30 % of
// their CPU, and the failed read and epoll_wait at another 15 % (see
// /work/notes/i14-profile.md). A reader blocked in a system call keeps its
// P out of the idle list, so sysmon does not park while packets flow
// (it backs off to 10 ms sleeps), and the kernel wakes the reader's
// thread directly: one ppoll per batch in place of the three calls. The
// descriptor stays non-blocking and in the poller (the read after ppoll
// finds data at once; a spurious wake-up only parks that read).
//
// Shutdown writes to a pipe that every waiter also polls, so a reader in
// ppoll returns at once (closing the descriptor would not wake it: ppoll
// holds it through RawConn.Control).
type waiter struct {
	rc  syscall.RawConn
	fds [2]unix.PollFd
	fn  func(fd uintptr) // w.poll, bound once: Control gets no new closure per call
}

// rawConner is a TUN device or transport whose descriptor can be polled.
type rawConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// newWaiter returns a waiter on x's descriptor, or nil (wait does nothing)
// if x has none: test doubles, or no wake pipe.
func (d *Datapath) newWaiter(x any) *waiter {
	rcr, ok := x.(rawConner)
	if !ok || d.wakeR < 0 {
		return nil
	}
	rc, err := rcr.SyscallConn()
	if err != nil {
		return nil
	}
	w := &waiter{rc: rc}
	w.fds[1] = unix.PollFd{Fd: int32(d.wakeR), Events: unix.POLLIN}
	w.fn = w.poll
	return w
}

// wait returns once the descriptor is readable, has an error or hung up,
// or the data path is stopping (the caller checks which). An error of
// Control (descriptor closed) returns at once: the read reports it.
func (w *waiter) wait() {
	if w != nil {
		w.rc.Control(w.fn)
	}
}

func (w *waiter) poll(fd uintptr) {
	w.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	for {
		// No timeout: shutdown wakes us through the pipe. A blocking
		// Syscall (not RawSyscall): the runtime may hand our P to other
		// goroutines while we wait.
		_, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&w.fds[0])), 2, 0, 0, 0, 0)
		if e != unix.EINTR {
			return
		}
	}
}

// openWake makes the shutdown pipe; closeWake closes it once no reader
// waits any more.
func (d *Datapath) openWake() {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		d.log.Debug("no wake pipe: readers wait in Go's poller", "err", err)
		d.wakeR, d.wakeW = -1, -1
		return
	}
	d.wakeR, d.wakeW = p[0], p[1]
}

// wake makes every waiter's ppoll return, now and from then on (the byte
// is never read).
func (d *Datapath) wake() {
	if d.wakeW >= 0 {
		unix.Write(d.wakeW, []byte{1})
	}
}

func (d *Datapath) closeWake() {
	if d.wakeR >= 0 {
		unix.Close(d.wakeR)
		unix.Close(d.wakeW)
		d.wakeR, d.wakeW = -1, -1
	}
}

// stopping reports whether stop is closed, without blocking.
func stopping(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}
