package control

import (
	"bufio"
	"bytes"
	"encoding"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"sync"
	"time"
)

// writeJSON writes v as encoding/json would marshal it (the same bytes,
// no trailing newline), but a slice one element at a time and a struct
// that holds one (hasList) one field at a time, so no buffer holds more
// than one element:
// a gateway's status with 10,000 Child SAs, SAs and IKE SAs goes to the
// socket through w's buffer instead of being built in one (that buffer,
// pooled by encoding/json, is what kept the daemon's heap large after a
// status call). Everything else (a list's element, a struct without a
// list, a map, a scalar) is marshalled whole: one encoding/json call per
// element, not per field.
func writeJSON(w *bufio.Writer, v reflect.Value) error {
	if !v.IsValid() {
		_, err := w.WriteString("null")
		return err
	}
	if ownMarshal(v) || v.Kind() != reflect.Interface && !hasList(v.Type()) {
		return writeWhole(w, v)
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			_, err := w.WriteString("null")
			return err
		}
		return writeJSON(w, v.Elem())
	case reflect.Struct:
		return writeStruct(w, v)
	case reflect.Slice:
		if v.IsNil() {
			_, err := w.WriteString("null")
			return err
		}
		return writeList(w, v) // hasList: not []byte
	}
	return writeWhole(w, v)
}

var listTypes sync.Map // reflect.Type → bool

// hasList says whether values of t may hold a slice (not []byte) that
// encoding/json would walk: through struct fields, pointers and
// interfaces (which may hold anything).
func hasList(t reflect.Type) bool {
	if v, ok := listTypes.Load(t); ok {
		return v.(bool)
	}
	r := findList(t, map[reflect.Type]bool{})
	listTypes.Store(t, r)
	return r
}

func findList(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	if t.Implements(marshalerType) || t.Implements(textMarshalerType) ||
		t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface &&
			(reflect.PointerTo(t).Implements(marshalerType) || reflect.PointerTo(t).Implements(textMarshalerType)) {
		return false
	}
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Slice:
		return t.Elem().Kind() != reflect.Uint8
	case reflect.Pointer, reflect.Array:
		return findList(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && findList(f.Type, seen) {
				return true
			}
		}
	}
	return false
}

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// ownMarshal says whether encoding/json would call a method of v's (or,
// addressable, of its pointer's) instead of walking it.
func ownMarshal(v reflect.Value) bool {
	t := v.Type()
	if t.Kind() == reflect.Interface {
		return false
	}
	if t.Implements(marshalerType) || t.Implements(textMarshalerType) {
		return true
	}
	pt := reflect.PointerTo(t)
	return v.CanAddr() && (pt.Implements(marshalerType) || pt.Implements(textMarshalerType))
}

func writeWhole(w *bufio.Writer, v reflect.Value) error {
	if v.CanAddr() {
		v = v.Addr() // encoding/json calls pointer methods of what it can address
	}
	// An Encoder into a pooled buffer, not json.Marshal: Marshal returns a
	// new slice per call, a list's worth of garbage per answer (10,000
	// Child SAs: megabytes the daemon's heap then kept). Encode writes
	// Marshal's bytes (HTML escaped too) and a newline, left out here.
	e := wholePool.Get().(*wholeEnc)
	defer func() {
		if e.buf.Cap() <= maxPooledWhole { // a big one-off value's buffer goes with it
			wholePool.Put(e)
		}
	}()
	e.buf.Reset()
	if err := e.enc.Encode(v.Interface()); err != nil {
		return err
	}
	b := e.buf.Bytes()
	_, err := w.Write(b[:len(b)-1])
	return err
}

// maxPooledWhole bounds the buffer wholePool keeps: an element of a list
// (a Child SA, an SA) is well under it.
const maxPooledWhole = 64 << 10

// wholeEnc is writeWhole's encoder and the buffer it encodes into.
type wholeEnc struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var wholePool = sync.Pool{New: func() any {
	e := new(wholeEnc)
	e.enc = json.NewEncoder(&e.buf)
	return e
}}

// writeList writes v's elements one at a time, each marshalled whole (an
// element is one Child SA, one SA: small).
func writeList(w *bufio.Writer, v reflect.Value) error {
	w.WriteByte('[')
	for i := range v.Len() {
		if i > 0 {
			w.WriteByte(',')
		}
		if err := writeWhole(w, v.Index(i)); err != nil {
			return err
		}
	}
	return w.WriteByte(']')
}

// writeStruct writes v's exported fields under their json tags, in order,
// omitempty honoured as encoding/json does. Embedded structs and the
// ",string" option are not used by the control answers; such a struct is
// marshalled whole, so the bytes stay encoding/json's.
func writeStruct(w *bufio.Writer, v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous || strings.Contains(f.Tag.Get("json"), ",string") {
			return writeWhole(w, v)
		}
	}
	w.WriteByte('{')
	first := true
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" && opts == "" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fv := v.Field(i)
		if strings.Contains(","+opts+",", ",omitempty,") && emptyValue(fv) ||
			strings.Contains(","+opts+",", ",omitzero,") && fv.IsZero() {
			continue
		}
		if !first {
			w.WriteByte(',')
		}
		first = false
		key, _ := json.Marshal(name)
		w.Write(key)
		w.WriteByte(':')
		if err := writeJSON(w, fv); err != nil {
			return err
		}
	}
	return w.WriteByte('}')
}

// emptyValue is encoding/json's omitempty test.
func emptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64,
		reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// deadlineWriter sets the connection's write deadline before each write:
// a client that stops reading does not hold the answering goroutine for
// ever.
type deadlineWriter struct{ c net.Conn }

func (d deadlineWriter) Write(b []byte) (int, error) {
	d.c.SetWriteDeadline(time.Now().Add(streamItemTimeout))
	return d.c.Write(b)
}

// sendReply writes r as one JSON line, streamed (writeJSON).
func sendReply(c net.Conn, r reply) error {
	w := bufio.NewWriterSize(deadlineWriter{c}, 32<<10)
	if err := writeJSON(w, reflect.ValueOf(r)); err != nil {
		return err
	}
	w.WriteByte('\n')
	return w.Flush()
}
