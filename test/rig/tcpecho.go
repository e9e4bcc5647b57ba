package rig

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/roamsec/roamsec/test/netns"
)

// TCPEcho is one TCP connection from the road warrior to an echo server
// on the server (srv:port): opened once, it is checked again after a fault
// to show that an established connection survived it.
type TCPEcho struct {
	ln     net.Listener
	c      net.Conn
	wg     sync.WaitGroup
	mu     sync.Mutex
	srvc   []net.Conn
	closed bool
}

// DialTCPEcho starts the echo server on srv:port in the server's
// namespace and connects to it from the road warrior's.
func DialTCPEcho(bed *netns.Bed, srv netip.Addr, port uint16) (*TCPEcho, error) {
	e := &TCPEcho{}
	addr := netip.AddrPortFrom(srv, port).String()
	if err := bed.Srv.Do(func() (err error) {
		e.ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return nil, err
	}
	e.wg.Go(func() {
		for {
			c, err := e.ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			if e.closed {
				c.Close()
			}
			e.srvc = append(e.srvc, c)
			e.mu.Unlock()
			e.wg.Go(func() { io.Copy(c, c) })
		}
	})
	if err := bed.RW.Do(func() (err error) {
		e.c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	}); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Check sends size random bytes and reads them back within timeout,
// comparing them.
func (e *TCPEcho) Check(size int, timeout time.Duration) error {
	data := make([]byte, size)
	rand.Read(data)
	e.c.SetDeadline(time.Now().Add(timeout))
	defer e.c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := e.c.Write(data); errc <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(e.c, got); err != nil {
		return fmt.Errorf("established TCP connection: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("established TCP connection: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("established TCP connection: data corrupted")
	}
	return nil
}

// Close ends the connection and the server.
func (e *TCPEcho) Close() {
	if e.c != nil {
		e.c.Close()
	}
	e.ln.Close()
	e.mu.Lock()
	e.closed = true
	for _, c := range e.srvc {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}
