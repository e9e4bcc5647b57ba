// Package control is the daemons' local control interface: a unix socket
// that only root (mode 0600) can open, or root and one group (0660) when
// the configuration names a control group; one request per connection (a
// command line and a newline), one JSON answer. Privileged commands
// (those that change the daemon's state, like disconnect) are refused to
// anyone but root and the daemon's own user, whatever the socket's mode:
// the peer's credentials (SO_PEERCRED) decide.
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handler answers a command with a value encoded as JSON, or an error.
// A Then value is sent as its Data, and its After runs once it is sent.
type Handler func(cmd string) (any, error)

// Then is an answer with something to do after sending it (e.g. stop the
// daemon once the client knows it will).
type Then struct {
	Data  any
	After func()
}

// Stream is an answer sent item by item, so neither the daemon nor the
// client holds the whole list (a gateway's 10,000 Child SAs): a header
// line {"ok":true,"stream":true}, one line {"item":...} per item, and a
// last line {"end":true,"count":n}. Items runs in the connection's
// goroutine; it stops when yield returns false (the client went away).
type Stream struct {
	Items func(yield func(any) bool)
}

// NoGroup leaves the socket to root alone.
const NoGroup = -1

// Options are how the socket is shared.
type Options struct {
	// Group, unless NoGroup, makes the socket 0660 with this group id.
	Group int
	// Privileged are the commands (first word) only root and the daemon's
	// own user may send.
	Privileged []string
	// Warn, if set, receives problems that do not stop serving (e.g. a
	// group that cannot reach the socket through its directory).
	Warn func(msg string)
	// Body answers the commands (first two words, e.g. "context put")
	// listed in BodyCommands: their line ends with the length of a body
	// that follows it (QueryBody), at most MaxBody bytes. Body gets the
	// line without the length. Such commands are privileged.
	Body         func(cmd string, body []byte) (any, error)
	BodyCommands []string
	MaxBody      int
}

// Serve listens on path until ctx ends, then removes the socket. The
// socket is root's only (0600).
func Serve(ctx context.Context, path string, h Handler) error {
	return ServeWith(ctx, path, Options{Group: NoGroup}, h)
}

// ServeWith is Serve with the socket shared as o says.
func ServeWith(ctx context.Context, path string, o Options, h Handler) error {
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
	mode := os.FileMode(0o600)
	if o.Group != NoGroup {
		mode = 0o660
		if err := os.Lchown(path, -1, o.Group); err != nil {
			ln.Close()
			return fmt.Errorf("control: %w", err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return fmt.Errorf("control: %w", err)
	}
	if o.Group != NoGroup && o.Warn != nil {
		if msg := unreachable(filepath.Dir(path), o.Group); msg != "" {
			o.Warn(msg)
		}
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
		go serveOne(c, h, o)
	}
}

// unreachable says why members of gid could not reach a socket in dir (a
// directory on the way that they may not search), or "".
func unreachable(dir string, gid int) string {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return ""
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		if ok && perm&0o001 == 0 && !(int(st.Gid) == gid && perm&0o010 != 0) {
			return fmt.Sprintf("control_group cannot reach the socket: %s is mode %04o, owner %d:%d: give the directory that group (chgrp) or mode 0755", d, perm, st.Uid, st.Gid)
		}
		if d == "/" || d == "." {
			return ""
		}
	}
}

type reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  any    `json:"data,omitempty"`
}

// peerUID is the connecting process's user id (SO_PEERCRED), -1 if unknown.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

func serveOne(c net.Conn, h Handler, o Options) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) > maxLine {
		return
	}
	cmd := strings.TrimSpace(string(line))
	var v any
	word, _, _ := strings.Cut(cmd, " ")
	bodyCmd, n, isBody := o.bodyCommand(cmd)
	if slices.Contains(o.Privileged, word) || isBody {
		if uid := peerUID(c); uid != 0 && uid != os.Geteuid() {
			err = fmt.Errorf("%s: %w: only root may ask that (you are uid %d)", word, os.ErrPermission, uid)
		}
	}
	switch {
	case err != nil:
	case isBody && (n < 0 || n > o.MaxBody):
		err = fmt.Errorf("%s: a body of %d bytes, at most %d", bodyCmd, n, o.MaxBody)
	case isBody:
		body := make([]byte, n)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err = io.ReadFull(br, body); err != nil {
			return
		}
		v, err = o.Body(bodyCmd, body)
	default:
		v, err = h(cmd)
	}
	if st, ok := v.(Stream); ok && err == nil {
		sendStream(c, st)
		return
	}
	var after func()
	if t, ok := v.(Then); ok {
		v, after = t.Data, t.After
	}
	r := reply{OK: err == nil, Data: v}
	if err != nil {
		r.Error = err.Error()
	}
	sendReply(c, r)
	if after != nil {
		c.Close()
		after()
	}
}

// maxLine bounds a command line.
const maxLine = 256

// bodyCommand reports whether cmd is one of the body commands, and
// splits off the body's length (-1 if it is not a number).
func (o Options) bodyCommand(cmd string) (string, int, bool) {
	if o.Body == nil {
		return "", 0, false
	}
	i := strings.LastIndexByte(cmd, ' ')
	if i < 0 {
		return "", 0, false
	}
	head := cmd[:i]
	for _, b := range o.BodyCommands {
		if head == b || strings.HasPrefix(head, b+" ") {
			n, err := strconv.Atoi(cmd[i+1:])
			if err != nil {
				n = -1
			}
			return head, n, true
		}
	}
	return "", 0, false
}

// streamItemTimeout bounds each write of a stream: a client that stops
// reading does not hold the connection's goroutine for ever.
const streamItemTimeout = 5 * time.Second

func sendStream(c net.Conn, st Stream) {
	w := bufio.NewWriter(c)
	enc := json.NewEncoder(w)
	if enc.Encode(streamLine{OK: true, Stream: true}) != nil {
		return
	}
	n := 0
	failed := false
	st.Items(func(item any) bool {
		c.SetWriteDeadline(time.Now().Add(streamItemTimeout))
		if err := enc.Encode(streamLine{Item: item}); err != nil {
			failed = true
			return false
		}
		n++
		return true
	})
	if !failed {
		c.SetWriteDeadline(time.Now().Add(streamItemTimeout))
		enc.Encode(streamLine{End: true, Count: n})
		w.Flush()
	}
}

type streamLine struct {
	OK     bool   `json:"ok,omitempty"`
	Error  string `json:"error,omitempty"`
	Stream bool   `json:"stream,omitempty"`
	Item   any    `json:"item,omitempty"`
	End    bool   `json:"end,omitempty"`
	Count  int    `json:"count,omitempty"`
}

// QueryStream sends cmd to the daemon at path and calls each for every
// item of its Stream answer, in order, as they arrive. It fails if the
// stream ends early (the daemon died), or if each does.
func QueryStream(path, cmd string, each func(json.RawMessage) error) error {
	c, err := send(path, cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	dec := json.NewDecoder(bufio.NewReader(c))
	var head struct {
		OK     bool   `json:"ok"`
		Error  string `json:"error"`
		Stream bool   `json:"stream"`
	}
	if err := dec.Decode(&head); err != nil {
		return fmt.Errorf("control: bad answer from %s: %w", path, err)
	}
	if !head.OK {
		return remoteError(head.Error)
	}
	if !head.Stream {
		return fmt.Errorf("control: %s answered %q without a stream (an older daemon?)", path, cmd)
	}
	for n := 0; ; n++ {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var l struct {
			Item  json.RawMessage `json:"item"`
			End   bool            `json:"end"`
			Count int             `json:"count"`
		}
		if err := dec.Decode(&l); err != nil {
			return fmt.Errorf("control: stream from %s ended after %d items: %w", path, n, err)
		}
		if l.End {
			if l.Count != n {
				return fmt.Errorf("control: stream from %s: %d items, its end says %d", path, n, l.Count)
			}
			return nil
		}
		if err := each(l.Item); err != nil {
			return err
		}
	}
}

// ErrNoDaemon: nothing listens on the control socket.
var ErrNoDaemon = errors.New("no daemon is running there")

// Query sends cmd to the daemon at path and decodes its answer into out.
// Errors wrap ErrNoDaemon when no daemon listens, and os.ErrPermission
// when we may not open the socket or send that command.
func Query(path, cmd string, out any) error {
	c, err := send(path, cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	return decodeReply(path, c, out)
}

// decodeReply reads one answer.
func decodeReply(path string, c net.Conn, out any) error {
	var r struct {
		OK    bool            `json:"ok"`
		Error string          `json:"error"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return fmt.Errorf("control: bad answer from %s: %w", path, err)
	}
	if !r.OK {
		return remoteError(r.Error)
	}
	if out == nil || len(r.Data) == 0 {
		return nil
	}
	return json.Unmarshal(r.Data, out)
}

// QueryBody sends cmd with body (Options.Body) and decodes the answer
// into out.
func QueryBody(path, cmd string, body []byte, out any) error {
	c, err := dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "%s %d\n", cmd, len(body)); err != nil {
		return err
	}
	if _, err := c.Write(body); err != nil {
		// The daemon refused before reading it all (too large): its
		// answer says why.
		var re remoteError
		if rerr := decodeReply(path, c, out); errors.As(rerr, &re) {
			return rerr
		}
		return err
	}
	return decodeReply(path, c, out)
}

// send dials the daemon at path and writes cmd, with the 5 s deadline a
// query gets; the caller reads the answer and closes the connection.
func send(path, cmd string) (net.Conn, error) {
	c, err := dial(path)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func dial(path string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("no permission to open the control socket %s: %w: run as root (sudo), or be in the configured control_group", path, os.ErrPermission)
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("cannot reach the daemon at %s: %w (is it running? start it, or use connect)", path, ErrNoDaemon)
		}
		return nil, fmt.Errorf("control: %s: %w", path, err)
	}
	return c, nil
}

// remoteError is the daemon's refusal; a refusal for lack of permission
// is os.ErrPermission.
type remoteError string

func (e remoteError) Error() string { return string(e) }

func (e remoteError) Is(target error) bool {
	return target == os.ErrPermission && strings.Contains(string(e), os.ErrPermission.Error())
}
