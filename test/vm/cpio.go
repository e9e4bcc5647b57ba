package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// cpioWriter writes a cpio archive in the "newc" format the kernel unpacks
// as an initramfs. Everything belongs to root; device nodes can be written
// without being root because nothing is created on the host. Parent
// directories are added on demand, each once.
type cpioWriter struct {
	w    *bufio.Writer
	n    int64 // bytes written, for padding
	ino  uint32
	dirs map[string]bool
	seen map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<16), ino: 1, dirs: map[string]bool{"": true, "/": true}, seen: map[string]bool{}}
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// header writes one entry's header and name; name is a path inside the
// archive, with or without a leading slash.
func (c *cpioWriter) header(name string, mode uint32, size int64, rmajor, rminor uint32) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	c.ino++
	c.write([]byte(fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmajor, rminor, len(name)+1, 0)))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
}

// claim records name and its parents, adding the directories not yet in
// the archive. It reports a duplicate entry as an error.
func (c *cpioWriter) claim(name string) {
	name = path.Clean("/" + name)
	if c.seen[name] || c.dirs[name] {
		if c.err == nil {
			c.err = fmt.Errorf("initramfs: %s added twice", name)
		}
		return
	}
	c.mkdirs(path.Dir(name))
	c.seen[name] = true
}

func (c *cpioWriter) mkdirs(dir string) {
	dir = path.Clean("/" + dir)
	if c.dirs[dir] {
		return
	}
	c.mkdirs(path.Dir(dir))
	c.dirs[dir] = true
	c.header(dir, modeDir|0o755, 0, 0, 0)
}

// Dir adds a directory (and its parents).
func (c *cpioWriter) Dir(name string) { c.mkdirs(name) }

// Bytes adds a regular file with the given content and permission bits.
func (c *cpioWriter) Bytes(name string, perm uint32, data []byte) {
	c.claim(name)
	c.header(name, modeFile|perm&0o7777, int64(len(data)), 0, 0)
	c.write(data)
	c.pad()
}

// File adds the host file src (symbolic links followed) as name, keeping
// its permission bits.
func (c *cpioWriter) File(name, src string) {
	if c.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		c.err = err
		return
	}
	if !st.Mode().IsRegular() {
		c.err = fmt.Errorf("initramfs: %s is not a regular file", src)
		return
	}
	if st.Size() >= 1<<32 {
		c.err = fmt.Errorf("initramfs: %s is too large for cpio", src)
		return
	}
	c.claim(name)
	c.header(name, modeFile|uint32(st.Mode().Perm()), st.Size(), 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, f)
	c.n += n
	if err == nil && n != st.Size() {
		err = fmt.Errorf("initramfs: %s changed size while being read", src)
	}
	c.err = err
	c.pad()
}

// Symlink adds a symbolic link name -> target.
func (c *cpioWriter) Symlink(name, target string) {
	c.claim(name)
	c.header(name, modeLink|0o777, int64(len(target)), 0, 0)
	c.write([]byte(target))
	c.pad()
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.claim(name)
	c.header(name, modeChar|perm&0o7777, 0, major, minor)
}

// Close writes the trailer and flushes; it returns the first error met.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
