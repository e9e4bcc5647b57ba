package transport

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetMark sets SO_MARK on the socket, so routing rules can tell the
// tunnel's own ESP packets from the traffic they carry. In RFC 3554 mode
// inner and outer addresses are the same, and the rule "not fwmark M
// lookup <tunnel table>" sends the inner packets into the TUN and the ESP
// onto the wire. Needs CAP_NET_ADMIN.
func (c *batchConn) SetMark(mark uint32) error {
	var serr error
	if err := c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("transport: SO_MARK %#x: %w", mark, serr)
	}
	c.mark.Store(mark)
	return nil
}
