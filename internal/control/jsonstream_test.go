package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

type streamInner struct {
	Name  string            `json:"name"`
	Drops map[string]uint64 `json:"drops,omitempty"`
	At    time.Time         `json:"at"`
	Addr  netip.Addr        `json:"addr"`
	Opt   *float64          `json:"opt,omitempty"`
	Zero  time.Time         `json:"zero,omitzero"`
	hid   int
}

type streamDoc struct {
	A       string          `json:"a"`
	N       int             `json:"n,omitempty"`
	List    []streamInner   `json:"list"`
	Nil     []streamInner   `json:"nil"`
	Empty   []streamInner   `json:"empty,omitempty"`
	Ptr     *streamInner    `json:"ptr,omitempty"`
	NilPtr  *streamInner    `json:"nil_ptr"`
	Bytes   []byte          `json:"bytes"`
	Any     any             `json:"any,omitempty"`
	Arr     [2]int          `json:"arr"`
	Skip    string          `json:"-"`
	NoTag   bool            //
	HTML    string          `json:"html"`
	Raw     json.RawMessage `json:"raw"`
	Strings []string        `json:"strings"`
}

// TestControlAnswerStreamedIsEncodingJSONsBytes: the control socket's
// answers are written field by field and element by element, never whole,
// and the bytes are exactly encoding/json's (so every client, and
// QueryStream's and Query's decoders, read the same document).
func TestControlAnswerStreamedIsEncodingJSONsBytes(t *testing.T) {
	f := 2.5
	in := streamInner{Name: "rw1@example", Drops: map[string]uint64{"replay": 3, "icv": 1}, At: time.Unix(1e9, 5).UTC(),
		Addr: netip.MustParseAddr("2001:db8::1"), Opt: &f, hid: 7}
	docs := []any{
		streamDoc{A: "x", List: []streamInner{in, {}}, Empty: []streamInner{}, Ptr: &in, Bytes: []byte{1, 2, 255},
			Any: []streamInner{in}, Arr: [2]int{1, 2}, Skip: "no", NoTag: true, HTML: "<a&b>", Raw: json.RawMessage(`{"k":1}`)},
		streamDoc{},
		&streamDoc{N: 3, Any: map[string]int{"a": 1}},
		reply{OK: true, Data: []streamInner{in, in}},
		reply{OK: false, Error: "no daemon"},
		reply{OK: true, Data: nil},
		[]any{1, "two", nil, in},
	}
	for i, d := range docs {
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := writeJSON(w, reflect.ValueOf(d)); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("doc %d:\nstreamed %s\nwant     %s", i, buf.Bytes(), want)
		}
	}
}

// statusLike is the shape of a gateway's status: a header and long lists.
type statusLike struct {
	Daemon   string        `json:"daemon"`
	Started  time.Time     `json:"started"`
	SAs      []streamInner `json:"sas"`
	Children []streamInner `json:"children,omitempty"`
}

func bigStatus() reply {
	f := 1.0
	in := streamInner{Name: "rw1@example", Drops: map[string]uint64{"replay": 3}, At: time.Unix(1e9, 0).UTC(), Addr: netip.MustParseAddr("192.0.2.1"), Opt: &f}
	st := statusLike{Daemon: "gateway", SAs: make([]streamInner, 20000), Children: make([]streamInner, 10000)}
	for i := range st.SAs {
		st.SAs[i] = in
	}
	for i := range st.Children {
		st.Children[i] = in
	}
	return reply{OK: true, Data: st}
}

// BenchmarkControlAnswer10kStreamed and ...Whole: what the 10,000-peer
// status costs written element by element against encoding/json at once.
func BenchmarkControlAnswer10kStreamed(b *testing.B) {
	r := bigStatus()
	b.ReportAllocs()
	for b.Loop() {
		w := bufio.NewWriterSize(io.Discard, 32<<10)
		writeJSON(w, reflect.ValueOf(r))
		w.Flush()
	}
}

func BenchmarkControlAnswer10kWhole(b *testing.B) {
	r := bigStatus()
	b.ReportAllocs()
	for b.Loop() {
		json.NewEncoder(io.Discard).Encode(r)
	}
}
