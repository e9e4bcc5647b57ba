// Command sctpcheck checks that the kernel speaks SCTP: on loopback it
// opens a one-to-one SCTP socket (socket(AF_INET, SOCK_STREAM,
// IPPROTO_SCTP)), listens, connects a second one to it, sends a message and
// reads it back. It prints "sctpcheck: OK ..." and exits 0, or prints the
// failing step and exits 1. Static (no cgo), for test/vm's VM.
package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	msg, err := check()
	if err != nil {
		fmt.Println("sctpcheck: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("sctpcheck: OK", msg)
}

func check() (string, error) {
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, lo); err != nil {
		return "", fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return "", fmt.Errorf("getsockname: %w", err)
	}
	port := sa.(*unix.SockaddrInet4).Port

	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(c)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	for _, fd := range []int{ln, c} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return "", fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
	}
	// A blocking connect interrupted by one of the Go runtime's signals is
	// restarted by the kernel (SA_RESTART) and then finds the association
	// already up: EISCONN means connected.
	if err := unix.Connect(c, &unix.SockaddrInet4{Addr: lo.Addr, Port: port}); err != nil && err != unix.EISCONN {
		return "", fmt.Errorf("connect: %w", err)
	}
	s, _, err := unix.Accept(ln)
	if err != nil {
		return "", fmt.Errorf("accept: %w", err)
	}
	defer unix.Close(s)
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return "", fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	proto, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil || proto != unix.IPPROTO_SCTP {
		return "", fmt.Errorf("SO_PROTOCOL = %d, %v; want %d", proto, err, unix.IPPROTO_SCTP)
	}

	const ping = "roamsec over kernel SCTP"
	if _, err := unix.Write(c, []byte(ping)); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 256)
	n, err := unix.Read(s, buf)
	if err != nil {
		return "", fmt.Errorf("recv: %w", err)
	}
	if got := string(buf[:n]); got != ping {
		return "", fmt.Errorf("received %q, want %q", got, ping)
	}
	// And back, so both directions of the association carried data.
	if _, err := unix.Write(s, buf[:n]); err != nil {
		return "", fmt.Errorf("send back: %w", err)
	}
	if n, err = unix.Read(c, buf); err != nil {
		return "", fmt.Errorf("recv echo: %w", err)
	}
	if got := string(buf[:n]); got != ping {
		return "", fmt.Errorf("echo %q, want %q", got, ping)
	}
	return fmt.Sprintf("127.0.0.1:%d %q echoed", port, ping), nil
}
