package strongswan

// A minimal synchronous client of strongSwan's vici protocol
// (src/libcharon/plugins/vici/README.md): one request at a time on one
// connection, read in order. github.com/strongswan/govici v0.8.0 was tried
// first, but its reader hands events and the command response to the caller
// through two channels in one select, so a list-sas answer can be taken
// before list-sa events still queued: the listing comes back short (the IKE
// SA "missing") and the leftover events fail the next call with "vici:
// unexpected response type: 7".

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
)

// Packet types.
const (
	pktCmdRequest      = 0
	pktCmdResponse     = 1
	pktCmdUnknown      = 2
	pktEventRegister   = 3
	pktEventUnregister = 4
	pktEventConfirm    = 5
	pktEventUnknown    = 6
	pktEvent           = 7
)

// Message element types.
const (
	elSectionStart = 1
	elSectionEnd   = 2
	elKeyValue     = 3
	elListStart    = 4
	elListItem     = 5
	elListEnd      = 6
)

// vmsg is a vici message: values are string, []string or *vmsg.
type vmsg struct {
	keys []string
	vals map[string]any
}

func newMsg(kv ...string) *vmsg {
	m := &vmsg{vals: map[string]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		m.set(kv[i], kv[i+1])
	}
	return m
}

func (m *vmsg) set(k string, v any) {
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
}

func (m *vmsg) str(k string) string {
	if m == nil {
		return ""
	}
	s, _ := m.vals[k].(string)
	return s
}

func (m *vmsg) sub(k string) *vmsg {
	if m == nil {
		return nil
	}
	s, _ := m.vals[k].(*vmsg)
	return s
}

// err is the error of a command response ("success" = "no").
func (m *vmsg) err() error {
	if m.str("success") == "no" {
		return errors.New(m.str("errmsg"))
	}
	return nil
}

func (m *vmsg) encode(b []byte) []byte {
	for _, k := range m.keys {
		switch v := m.vals[k].(type) {
		case string:
			b = append(b, elKeyValue, byte(len(k)))
			b = append(b, k...)
			b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
			b = append(b, v...)
		case []string:
			b = append(b, elListStart, byte(len(k)))
			b = append(b, k...)
			for _, s := range v {
				b = append(b, elListItem)
				b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
				b = append(b, s...)
			}
			b = append(b, elListEnd)
		case *vmsg:
			b = append(b, elSectionStart, byte(len(k)))
			b = append(b, k...)
			b = v.encode(b)
			b = append(b, elSectionEnd)
		}
	}
	return b
}

var errShort = errors.New("vici: truncated message")

func decodeMsg(b []byte) (*vmsg, error) {
	root := newMsg()
	stack := []*vmsg{root}
	var list []string
	var listName string
	inList := false
	name8 := func() (string, error) {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return "", errShort
		}
		s := string(b[1 : 1+b[0]])
		b = b[1+b[0]:]
		return s, nil
	}
	val16 := func() (string, error) {
		if len(b) < 2 {
			return "", errShort
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return "", errShort
		}
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s, nil
	}
	for len(b) > 0 {
		t := b[0]
		b = b[1:]
		cur := stack[len(stack)-1]
		switch t {
		case elSectionStart:
			k, err := name8()
			if err != nil {
				return nil, err
			}
			s := newMsg()
			cur.set(k, s)
			stack = append(stack, s)
		case elSectionEnd:
			if len(stack) == 1 {
				return nil, errors.New("vici: unbalanced section end")
			}
			stack = stack[:len(stack)-1]
		case elKeyValue:
			k, err := name8()
			if err != nil {
				return nil, err
			}
			v, err := val16()
			if err != nil {
				return nil, err
			}
			cur.set(k, v)
		case elListStart:
			k, err := name8()
			if err != nil {
				return nil, err
			}
			listName, list, inList = k, nil, true
		case elListItem:
			v, err := val16()
			if err != nil {
				return nil, err
			}
			if !inList {
				return nil, errors.New("vici: list item outside a list")
			}
			list = append(list, v)
		case elListEnd:
			cur.set(listName, list)
			inList = false
		default:
			return nil, fmt.Errorf("vici: unknown element type %d", t)
		}
	}
	return root, nil
}

// viciConn is one connection to charon's vici socket.
type viciConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialVici(path string) (*viciConn, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return &viciConn{c: c, r: bufio.NewReader(c)}, nil
}

func (v *viciConn) Close() error { return v.c.Close() }

func (v *viciConn) send(ptype byte, name string, m *vmsg) error {
	body := []byte{ptype}
	if name != "" {
		body = append(body, byte(len(name)))
		body = append(body, name...)
	}
	if m != nil {
		body = m.encode(body)
	}
	pkt := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	_, err := v.c.Write(append(pkt, body...))
	return err
}

// recv reads one packet: its type, name (events) and message.
func (v *viciConn) recv() (byte, string, *vmsg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(v.r, hdr[:]); err != nil {
		return 0, "", nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(v.r, body); err != nil {
		return 0, "", nil, err
	}
	if len(body) == 0 {
		return 0, "", nil, errShort
	}
	ptype, body := body[0], body[1:]
	var name string
	if ptype == pktEvent {
		if len(body) < 1 || len(body) < 1+int(body[0]) {
			return 0, "", nil, errShort
		}
		name, body = string(body[1:1+body[0]]), body[1+body[0]:]
	}
	var m *vmsg
	if ptype == pktCmdResponse || ptype == pktEvent {
		var err error
		if m, err = decodeMsg(body); err != nil {
			return 0, "", nil, err
		}
	}
	return ptype, name, m, nil
}

// event registers or unregisters event and waits for the confirmation.
func (v *viciConn) event(ptype byte, event string) error {
	if err := v.send(ptype, event, nil); err != nil {
		return err
	}
	for {
		t, _, _, err := v.recv()
		if err != nil {
			return err
		}
		switch t {
		case pktEventConfirm:
			return nil
		case pktEventUnknown:
			return fmt.Errorf("vici: unknown event %q", event)
		case pktEvent:
			continue // a straggler of an earlier stream
		default:
			return fmt.Errorf("vici: unexpected packet type %d for event (un)registration", t)
		}
	}
}

// call sends command cmd and returns its response. With stream set, it
// registers that event first and returns the events received before the
// response, in order. The caller sets the connection's deadline.
func (v *viciConn) call(cmd string, in *vmsg, stream string) (*vmsg, []*vmsg, error) {
	if stream != "" {
		if err := v.event(pktEventRegister, stream); err != nil {
			return nil, nil, err
		}
	}
	if err := v.send(pktCmdRequest, cmd, in); err != nil {
		return nil, nil, err
	}
	var events []*vmsg
	for {
		t, name, m, err := v.recv()
		if err != nil {
			return nil, nil, err
		}
		switch t {
		case pktEvent:
			if name == stream {
				events = append(events, m)
			}
		case pktCmdResponse:
			if stream != "" {
				if err := v.event(pktEventUnregister, stream); err != nil {
					return nil, nil, err
				}
			}
			return m, events, m.err()
		case pktCmdUnknown:
			return nil, nil, fmt.Errorf("vici: unknown command %q", cmd)
		default:
			return nil, nil, fmt.Errorf("vici: unexpected packet type %d", t)
		}
	}
}

// Msg is a vici message as Call takes and returns it: values are string,
// []string or Msg (a section). Call also accepts bool ("yes"/"no"), int
// and map[string]any values. Keys are sent in sorted order (vici itself
// does not care, except that a connection's children and auth rounds are
// taken in the order given: name them so that sorting keeps it).
type Msg map[string]any

func toVmsg(m Msg) (*vmsg, error) {
	out := newMsg()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if len(k) > 255 {
			return nil, fmt.Errorf("vici: key %.20q... longer than 255 bytes", k)
		}
		switch v := m[k].(type) {
		case string:
			out.set(k, v)
		case []string:
			out.set(k, v)
		case bool:
			out.set(k, map[bool]string{true: "yes", false: "no"}[v])
		case int:
			out.set(k, strconv.Itoa(v))
		case Msg:
			s, err := toVmsg(v)
			if err != nil {
				return nil, err
			}
			out.set(k, s)
		case map[string]any:
			s, err := toVmsg(Msg(v))
			if err != nil {
				return nil, err
			}
			out.set(k, s)
		default:
			return nil, fmt.Errorf("vici: key %q: unsupported value type %T", k, v)
		}
	}
	return out, nil
}

func (m *vmsg) toMsg() Msg {
	if m == nil {
		return nil
	}
	out := Msg{}
	for _, k := range m.keys {
		switch v := m.vals[k].(type) {
		case *vmsg:
			out[k] = v.toMsg()
		default:
			out[k] = v
		}
	}
	return out
}
