package ike

import (
	"testing"
	"unsafe"
)

// A gateway holds one ikeSA and one Child per road warrior; at 10,000 each
// byte over a Go allocator size class costs the whole next class (issue
// 11's RSS budget of 16 KB per road warrior). These are the classes the
// structs were cut to; a field that pushes one over must pay for itself.
func TestPerPeerStructsStayInTheirSizeClass(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, max uintptr
	}{
		{"ikeSA", unsafe.Sizeof(ikeSA{}), 1024},
		{"Child", unsafe.Sizeof(Child{}), 448},
	} {
		if tc.size > tc.max {
			t.Errorf("%s is %d bytes, over its %d-byte size class", tc.name, tc.size, tc.max)
		}
	}
}
