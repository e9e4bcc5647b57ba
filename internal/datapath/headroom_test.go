package datapath

import (
	"testing"
	"unsafe"

	"github.com/roamsec/roamsec/tunnel"
	"github.com/roamsec/roamsec/tunnel/transport"
)

// tcp4 returns an IPv4/TCP packet with the given TCP flags behind
// tunnel.HeaderLen bytes of headroom.
func tcp4(flags byte) []byte {
	p := make([]byte, tunnel.HeaderLen+40+100)
	in := p[tunnel.HeaderLen:]
	in[0], in[9], in[20+13] = 0x45, 6, flags
	return p
}

// TestHeadRoomCopiesOnlyWhereAGRORunStarts: of a coalesced read, the first
// packet and a packet after one that ends a TCP GRO run (PSH) or after a
// packet that was not written go to head buffers; packets that continue a
// run, the last packet of a read (it keeps the buffer's room) and
// datagrams read alone stay where they are.
func TestHeadRoomCopiesOnlyWhereAGRORunStarts(t *testing.T) {
	const ack, pshAck = 0x10, 0x18
	type pkt struct {
		segs   int
		flags  byte
		lost   bool
		copied bool
	}
	for _, c := range []struct {
		name string
		pkts []pkt
	}{
		{"first of a read is copied, the rest continue it", []pkt{{4, ack, false, true}, {0, ack, false, false}, {0, ack, false, false}, {0, ack, false, false}}},
		{"after PSH a new run starts", []pkt{{4, ack, false, true}, {0, pshAck, false, false}, {0, ack, false, true}, {0, ack, false, false}}},
		{"after a lost packet a new run starts", []pkt{{4, ack, false, true}, {0, ack, true, false}, {0, ack, false, true}, {0, ack, false, false}}},
		{"the last of a read has room", []pkt{{2, pshAck, false, true}, {0, ack, false, false}}},
		{"datagrams read alone are not copied", []pkt{{0, ack, false, false}, {0, pshAck, false, false}, {0, ack, false, false}}},
		{"a second read starts afresh", []pkt{{2, ack, false, true}, {0, pshAck, false, false}, {2, ack, false, true}, {0, ack, false, false}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			heads := [][]byte{make([]byte, 4096), make([]byte, 4096), make([]byte, 4096)}
			hr := headRoom{heads: heads}
			for i, p := range c.pkts {
				m := &transport.Datagram{Segs: p.segs}
				buf := tcp4(p.flags)
				if p.lost {
					hr.lost(m)
					continue
				}
				got := hr.place(m, buf)
				copied := unsafe.SliceData(got) != unsafe.SliceData(buf)
				if copied != p.copied || len(got) != len(buf) {
					t.Errorf("packet %d: copied %v (len %d), want %v", i, copied, len(got), p.copied)
				}
			}
		})
	}
}

func TestEndsGRORun(t *testing.T) {
	udp := make([]byte, 28)
	udp[0], udp[9] = 0x45, 17
	icmp := make([]byte, 28)
	icmp[0], icmp[9] = 0x45, 1
	v6ack := make([]byte, 60+10)
	v6ack[0], v6ack[6], v6ack[40+13] = 0x60, 6, 0x10
	for _, c := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"TCP ACK continues", tcp4(0x10)[tunnel.HeaderLen:], false},
		{"TCP PSH ends", tcp4(0x18)[tunnel.HeaderLen:], true},
		{"TCP FIN ends", tcp4(0x11)[tunnel.HeaderLen:], true},
		{"IPv6 TCP ACK continues", v6ack, false},
		{"UDP continues", udp, false},
		{"ICMP ends", icmp, true},
		{"truncated ends", []byte{0x45, 0}, true},
		{"empty ends", nil, true},
	} {
		if got := endsGRORun(c.in); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
