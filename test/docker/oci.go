// Package docker tests the gateway's container image without a container
// engine: scripts/docker.sh builds it with buildah into an OCI archive,
// Unpack turns the archive into a root file system and the image's
// configuration, and the test runs the gateway from that root in the test
// bed's gateway namespace.
package docker

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI media types (and the Docker ones a registry may hand out).
const (
	mediaIndex          = "application/vnd.oci.image.index.v1+json"
	mediaManifest       = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type index struct {
	MediaType string       `json:"mediaType"`
	Manifests []Descriptor `json:"manifests"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    Descriptor   `json:"config"`
	Layers    []Descriptor `json:"layers"`
}

// Config is the part of an image configuration a runtime uses.
type Config struct {
	User         string              `json:"User"`
	Env          []string            `json:"Env"`
	Entrypoint   []string            `json:"Entrypoint"`
	Cmd          []string            `json:"Cmd"`
	WorkingDir   string              `json:"WorkingDir"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	Labels       map[string]string   `json:"Labels"`
	StopSignal   string              `json:"StopSignal"`
	Healthcheck  *Healthcheck        `json:"Healthcheck"`
}

// Healthcheck is the Docker image format's HEALTHCHECK (durations in
// nanoseconds); the OCI image format has none.
type Healthcheck struct {
	Test        []string `json:"Test"` // ["CMD", argv...]
	Interval    int64    `json:"Interval"`
	Timeout     int64    `json:"Timeout"`
	StartPeriod int64    `json:"StartPeriod"`
	Retries     int      `json:"Retries"`
}

// Image is an unpacked image: its configuration and where it came from.
type Image struct {
	Config       Config
	Architecture string
	OS           string
	RefName      string   // org.opencontainers.image.ref.name of the manifest
	Layers       []string // layer digests, lowest first
}

// Unpack reads an OCI image archive (a tar of an OCI image layout, as
// `buildah push IMAGE oci-archive:FILE` writes it), follows index.json to
// the linux/amd64 manifest and its configuration, and applies the layers
// in order to rootfs (created if missing), gzip-compressed or not,
// honouring whiteouts. Every blob's digest and size and every layer's
// diff_id are checked. Ownership is kept when running as root.
func Unpack(archive, rootfs string) (*Image, error) {
	blobs, err := readArchive(archive)
	if err != nil {
		return nil, err
	}
	layout, ok := blobs["oci-layout"]
	if !ok || !bytes.Contains(layout, []byte(`"imageLayoutVersion"`)) {
		return nil, fmt.Errorf("%s: no oci-layout file: not an OCI image layout", archive)
	}
	var idx index
	if err := unmarshal(blobs, "index.json", &idx); err != nil {
		return nil, err
	}
	desc, err := pickManifest(blobs, idx, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archive, err)
	}
	mdata, err := blob(blobs, desc)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(mdata, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	cdata, err := blob(blobs, m.Config)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       Config `json:"config"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cdata, &cfg); err != nil {
		return nil, fmt.Errorf("image config %s: %w", m.Config.Digest, err)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image config: rootfs %q with %d diff_ids for %d layers", cfg.RootFS.Type, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	img := &Image{Config: cfg.Config, Architecture: cfg.Architecture, OS: cfg.OS, RefName: desc.Annotations["org.opencontainers.image.ref.name"]}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		data, err := blob(blobs, l)
		if err != nil {
			return nil, err
		}
		if err := applyLayer(rootfs, l.MediaType, data, cfg.RootFS.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		img.Layers = append(img.Layers, l.Digest)
	}
	return img, nil
}

// readArchive returns the regular files of the tar, by cleaned name.
func readArchive(archive string) (map[string][]byte, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", archive, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", archive, h.Name, err)
		}
		files[path.Clean(strings.TrimPrefix(h.Name, "./"))] = data
	}
}

func unmarshal(files map[string][]byte, name string, v any) error {
	data, ok := files[name]
	if !ok {
		return fmt.Errorf("no %s in the archive", name)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// blob returns the blob of d after checking its size and digest.
func blob(files map[string][]byte, d Descriptor) ([]byte, error) {
	algo, hexsum, ok := strings.Cut(d.Digest, ":")
	if !ok || algo != "sha256" || len(hexsum) != 64 {
		return nil, fmt.Errorf("unsupported digest %q", d.Digest)
	}
	data, ok := files["blobs/sha256/"+hexsum]
	if !ok {
		return nil, fmt.Errorf("blob %s missing", d.Digest)
	}
	if int64(len(data)) != d.Size {
		return nil, fmt.Errorf("blob %s: %d bytes, descriptor says %d", d.Digest, len(data), d.Size)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != hexsum {
		return nil, fmt.Errorf("blob %s: digest mismatch", d.Digest)
	}
	return data, nil
}

// pickManifest finds the linux/amd64 image manifest, through nested
// indexes if need be.
func pickManifest(files map[string][]byte, idx index, depth int) (Descriptor, error) {
	if depth > 4 {
		return Descriptor{}, errors.New("indexes nested too deep")
	}
	var found []Descriptor
	for _, d := range idx.Manifests {
		if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != "amd64") {
			continue
		}
		switch d.MediaType {
		case mediaManifest, mediaDockerManifest:
			found = append(found, d)
		case mediaIndex, mediaDockerList:
			data, err := blob(files, d)
			if err != nil {
				return Descriptor{}, err
			}
			var sub index
			if err := json.Unmarshal(data, &sub); err != nil {
				return Descriptor{}, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			m, err := pickManifest(files, sub, depth+1)
			if err != nil {
				return Descriptor{}, err
			}
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return Descriptor{}, fmt.Errorf("%d linux/amd64 image manifests, want exactly one", len(found))
	}
	return found[0], nil
}

// Whiteouts (OCI image spec, "Representing Changes").
const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
)

// applyLayer unpacks one layer (tar, tar+gzip) onto rootfs. Whiteouts
// remove what lower layers put there; entries of this layer itself are
// never whited out, whatever their order in the tar.
func applyLayer(rootfs, mediaType string, data []byte, diffID string) error {
	var r io.Reader = bytes.NewReader(data)
	switch {
	case strings.HasSuffix(mediaType, "+zstd") || strings.HasSuffix(mediaType, ".zstd"):
		return fmt.Errorf("zstd layers are not supported (%s)", mediaType)
	case strings.HasSuffix(mediaType, "+gzip") || strings.HasSuffix(mediaType, ".gzip") ||
		len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b:
		z, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		defer z.Close()
		r = z
	}
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(r, h))
	ours := map[string]bool{} // paths this layer created
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rel, err := cleanPath(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the layer's "./"
		}
		dir, base := path.Split(rel)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == whOpaque:
			if err := removeChildren(rootfs, dir, ours); err != nil {
				return err
			}
			continue
		case strings.HasPrefix(base, whPrefix):
			victim := path.Join(dir, strings.TrimPrefix(base, whPrefix))
			if !ours[victim] {
				if err := checkParents(rootfs, victim); err != nil {
					return err
				}
				if err := os.RemoveAll(filepath.Join(rootfs, victim)); err != nil {
					return err
				}
			}
			continue
		}
		if err := checkParents(rootfs, rel); err != nil {
			return err
		}
		if err := mkdirParents(rootfs, dir); err != nil {
			return err
		}
		target := filepath.Join(rootfs, rel)
		if fi, err := os.Lstat(target); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := os.RemoveAll(target); err != nil {
				return err
			}
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			dirs = append(dirs, dirTime{target, hdr.ModTime})
		case tar.TypeReg:
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			src, err := cleanPath(hdr.Linkname)
			if err != nil || src == "" {
				return fmt.Errorf("hard link %s to %q outside the root", rel, hdr.Linkname)
			}
			if err := checkParents(rootfs, src); err != nil {
				return err
			}
			if err := os.Link(filepath.Join(rootfs, src), target); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
			dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
			if err := unix.Mknod(target, kind|mode, int(dev)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported tar entry type %q", rel, hdr.Typeflag)
		}
		ours[rel] = true
		if os.Geteuid() == 0 {
			if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
		}
		if hdr.Typeflag != tar.TypeSymlink && hdr.Typeflag != tar.TypeLink {
			// After chown, which clears set-id bits.
			if err := unix.Chmod(target, mode); err != nil {
				return err
			}
		}
		if hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeLink {
			ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
	}
	// Read to the end, so the digest covers the whole stream.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return fmt.Errorf("uncompressed layer is %s, the config's diff_id says %s", got, diffID)
	}
	// Directory times last: creating entries inside changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t)
	}
	return nil
}

// cleanPath turns a tar name into a path relative to the root, refusing
// names that climb out of it.
func cleanPath(name string) (string, error) {
	p := path.Clean("/" + name)
	if strings.Contains(name, "..") {
		for _, part := range strings.Split(name, "/") {
			if part == ".." {
				return "", fmt.Errorf("tar entry %q leaves the root", name)
			}
		}
	}
	return strings.TrimPrefix(p, "/"), nil
}

// checkParents refuses to write through a symlink: every existing parent
// of rel inside rootfs must be a real directory.
func checkParents(rootfs, rel string) error {
	cur := rootfs
	parts := strings.Split(rel, "/")
	for _, part := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: parent %s is not a directory (%v): refusing to follow it", rel, strings.TrimPrefix(cur, rootfs), fi.Mode().Type())
		}
	}
	return nil
}

// mkdirParents creates missing parent directories (0755, as runtimes do
// for entries whose directories the layer does not list).
func mkdirParents(rootfs, dir string) error {
	if dir == "" {
		return nil
	}
	return os.MkdirAll(filepath.Join(rootfs, dir), 0o755)
}

// removeChildren empties dir of everything lower layers put there.
func removeChildren(rootfs, dir string, ours map[string]bool) error {
	if err := checkParents(rootfs, path.Join(dir, "x")); err != nil {
		return err
	}
	full := filepath.Join(rootfs, dir)
	ents, err := os.ReadDir(full)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		rel := path.Join(dir, e.Name())
		if ours[rel] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(full, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
