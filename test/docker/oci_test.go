package docker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func layerTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// writeArchive writes an OCI archive of the layers (gzip-compressed
// where gz says so) and returns its path. corrupt flips a byte of the
// first layer blob after its digest was taken.
func writeArchive(t *testing.T, layers [][]byte, gz []bool, corrupt bool) string {
	t.Helper()
	blobs := map[string][]byte{}
	var descs []Descriptor
	var diffIDs []string
	for i, l := range layers {
		diffIDs = append(diffIDs, digest(l))
		data, mt := l, "application/vnd.oci.image.layer.v1.tar"
		if gz[i] {
			var b bytes.Buffer
			z := gzip.NewWriter(&b)
			z.Write(l)
			z.Close()
			data, mt = b.Bytes(), mt+"+gzip"
		}
		d := Descriptor{MediaType: mt, Digest: digest(data), Size: int64(len(data))}
		if corrupt && i == 0 {
			data = append([]byte(nil), data...)
			data[len(data)-1] ^= 1
		}
		blobs[d.Digest] = data
		descs = append(descs, d)
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/bin/x"}, "Cmd": []string{"-y"}, "Env": []string{"PATH=/bin"}, "WorkingDir": "/w"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cd := Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(cfg), Size: int64(len(cfg))}
	blobs[cd.Digest] = cfg
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaManifest, "config": cd, "layers": descs})
	md := Descriptor{MediaType: mediaManifest, Digest: digest(man), Size: int64(len(man)), Annotations: map[string]string{"org.opencontainers.image.ref.name": "test/image:latest"}}
	blobs[md.Digest] = man
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []Descriptor{md}})

	p := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	add := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion": "1.0.0"}`))
	add("index.json", idx)
	for d, data := range blobs {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// Layers apply in order; whiteouts and opaque directories hide what lower
// layers put there but not what their own layer adds, whatever the order.
func TestUnpackWhiteouts(t *testing.T) {
	l1 := layerTar(t, []entry{
		{name: "a/", typ: tar.TypeDir},
		{name: "a/x", body: "x1"},
		{name: "a/y", body: "y1"},
		{name: "b/", typ: tar.TypeDir},
		{name: "b/z", body: "z1"},
		{name: "b/sub/", typ: tar.TypeDir},
		{name: "b/sub/deep", body: "deep"},
		{name: "c", body: "c1"},
		{name: "l", typ: tar.TypeSymlink, link: "c"},
		{name: "h", typ: tar.TypeLink, link: "c"},
		{name: "secret", body: "k", mode: 0o600},
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/tool", body: "#!", mode: 0o755},
	})
	l2 := layerTar(t, []entry{
		{name: "a/.wh.x", typ: tar.TypeReg},
		{name: "b/new", body: "new"}, // before the opaque marker: still ours
		{name: "b/.wh..wh..opq", typ: tar.TypeReg},
		{name: ".wh.c", typ: tar.TypeReg},
		{name: "d", body: "d2"},
		{name: "secret", body: "k2", mode: 0o600},
	})
	l3 := layerTar(t, []entry{
		{name: "d", typ: tar.TypeDir}, // a file becomes a directory
		{name: "d/e", body: "e3"},
	})
	archive := writeArchive(t, [][]byte{l1, l2, l3}, []bool{false, true, true}, false)
	root := filepath.Join(t.TempDir(), "rootfs")
	img, err := Unpack(archive, root)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 3 || img.RefName != "test/image:latest" || img.Config.WorkingDir != "/w" ||
		strings.Join(img.Config.Entrypoint, " ") != "/bin/x" || strings.Join(img.Config.Cmd, " ") != "-y" {
		t.Errorf("image %+v", img)
	}
	files := map[string]string{"a/y": "y1", "b/new": "new", "h": "c1", "secret": "k2", "d/e": "e3", "bin/tool": "#!"}
	for name, want := range files {
		if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
	for _, gone := range []string{"a/x", "b/z", "b/sub", "c"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s survived its whiteout (%v)", gone, err)
		}
	}
	if link, err := os.Readlink(filepath.Join(root, "l")); err != nil || link != "c" {
		t.Errorf("symlink l -> %q (%v)", link, err)
	}
	for name, want := range map[string]os.FileMode{"secret": 0o600, "bin/tool": 0o755, "a": 0o755 | os.ModeDir} {
		if fi, err := os.Stat(filepath.Join(root, name)); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode(), err, want)
		}
	}
}

func TestUnpackRefusesBadArchives(t *testing.T) {
	good := layerTar(t, []entry{{name: "f", body: "1"}})
	if _, err := Unpack(writeArchive(t, [][]byte{good}, []bool{true}, true), t.TempDir()); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Errorf("corrupted blob: %v", err)
	}
	escape := layerTar(t, []entry{{name: "../evil", body: "x"}})
	if _, err := Unpack(writeArchive(t, [][]byte{escape}, []bool{false}, false), t.TempDir()); err == nil || !strings.Contains(err.Error(), "leaves the root") {
		t.Errorf("../evil: %v", err)
	}
	outside := t.TempDir()
	through := layerTar(t, []entry{{name: "lnk", typ: tar.TypeSymlink, link: outside}, {name: "lnk/evil", body: "x"}})
	if _, err := Unpack(writeArchive(t, [][]byte{through}, []bool{false}, false), t.TempDir()); err == nil || !strings.Contains(err.Error(), "refusing to follow") {
		t.Errorf("write through a symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "evil")); err == nil {
		t.Error("a layer wrote outside the root through a symlink")
	}
}
