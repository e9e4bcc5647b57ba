// Package control is the daemons' local control interface: a unix socket
// that only root (mode 0600) can open, one request per connection (a
// command word and a newline), one JSON answer.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Handler answers a command with a value encoded as JSON, or an error.
type Handler func(cmd string) (any, error)

// Serve listens on path until ctx ends, then removes the socket.
func Serve(ctx context.Context, path string, h Handler) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	// A socket left by a daemon that died is stale: nothing answers it.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("control: %s: another daemon is already listening there", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control: %w", err)
	}
	go func() { <-ctx.Done(); ln.Close(); os.Remove(path) }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control: %w", err)
		}
		go serveOne(c, h)
	}
}

type reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  any    `json:"data,omitempty"`
}

func serveOne(c net.Conn, h Handler) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
	if err != nil {
		return
	}
	v, err := h(strings.TrimSpace(line))
	r := reply{OK: err == nil, Data: v}
	if err != nil {
		r.Error = err.Error()
	}
	json.NewEncoder(c).Encode(r)
}

// Query sends cmd to the daemon at path and decodes its answer into out.
func Query(path, cmd string, out any) error {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("cannot reach the daemon at %s: %w (is it running? are you root?)", path, err)
		}
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return err
	}
	var r struct {
		OK    bool            `json:"ok"`
		Error string          `json:"error"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return fmt.Errorf("control: bad answer from %s: %w", path, err)
	}
	if !r.OK {
		return errors.New(r.Error)
	}
	return json.Unmarshal(r.Data, out)
}
