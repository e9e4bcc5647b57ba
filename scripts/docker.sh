#!/usr/bin/env bash
# The gateway's container image, built from packaging/docker/Dockerfile
# without a Docker engine: buildah (Debian's package, installed with
# apt-get if missing) with the vfs storage driver and chroot isolation,
# its storage in a temporary directory, removed afterwards (buildah keeps
# only its small blob-info cache in /var/lib/containers/cache). The image
# is written as an OCI archive.
#
#   bash scripts/docker.sh [-o DIR] [-context DIR]
#
#   -o DIR        where roamsec-gateway-oci.tar goes (default dist/)
#   -context DIR  only assemble the build context in DIR (static binary,
#                 gateway.yaml, ca-certificates.crt) and stop, e.g. for
#                 docker build -f packaging/docker/Dockerfile DIR
#
# Environment: VERSION and SOURCE_DATE_EPOCH as for scripts/deb.sh (the
# image's files and creation time get SOURCE_DATE_EPOCH, so one commit
# gives the same image); IMAGE (default roamsec/gateway:latest) names
# the image inside the archive.
#
# Load it where a Docker engine runs (or `podman load -i` the archive):
#   skopeo copy oci-archive:dist/roamsec-gateway-oci.tar docker-daemon:roamsec/gateway:latest
#
# Prints the archive's path on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin

out=dist
context=""
while [ $# -gt 0 ]; do
	case "$1" in
	-o) out="$2"; shift 2 ;;
	-context|--context) context="$2"; shift 2 ;;
	-h|-help|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "docker.sh: unknown argument $1 (see -help)" >&2; exit 2 ;;
	esac
done

log() { echo "docker.sh: $*" >&2; }

arch=amd64
module=github.com/roamsec/roamsec
image=${IMAGE:-roamsec/gateway:latest}
certs=/etc/ssl/certs/ca-certificates.crt

. packaging/version.sh
log "version $VERSION"

apt_install() {
	log "apt-get install $*"
	export DEBIAN_FRONTEND=noninteractive
	# Wait for the dpkg lock: tests of other packages may be installing too.
	local lock=(-o DPkg::Lock::Timeout=300)
	apt-get install -y -q "${lock[@]}" --no-install-recommends "$@" >/dev/null 2>&1 ||
		{ apt-get update -q "${lock[@]}" >/dev/null && apt-get install -y -q "${lock[@]}" --no-install-recommends "$@" >/dev/null; }
}

command -v go >/dev/null || { log "needs go"; exit 1; }
if [ ! -s "$certs" ]; then
	apt_install ca-certificates
	[ -s "$certs" ] || update-ca-certificates >/dev/null
	[ -s "$certs" ] || { log "no $certs after installing ca-certificates"; exit 1; }
fi

work=$(mktemp -d /tmp/roamsec-docker.XXXXXX)
trap 'rm -rf "$work"' EXIT
ctx=${context:-$work/context}
mkdir -p "$ctx"

log "building the static gateway binary"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X $module/internal/version.Version=$VERSION" \
	-o "$ctx/roamsec-gateway" ./cmd/gateway
# COPY keeps the context's modes: the configuration holds no secret (the
# pre-shared key is mounted at run time).
install -m 0644 packaging/conffiles/gateway.yaml "$ctx/gateway.yaml"
install -m 0644 "$certs" "$ctx/ca-certificates.crt"
chmod 0755 "$ctx/roamsec-gateway"
touch -d "@$SOURCE_DATE_EPOCH" "$ctx"/*
if [ -n "$context" ]; then
	log "build context ready in $context"
	exit 0
fi

command -v buildah >/dev/null || apt_install buildah
command -v buildah >/dev/null || { log "needs buildah (apt-get install buildah)"; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
archive="$out/roamsec-gateway-oci.tar"
# Storage of our own, vfs (no overlay mounts), removed with $work.
bh=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() {
	"${bh[@]}" rm --all >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# --format docker: the OCI image format has no HEALTHCHECK (buildah drops
# it).
log "buildah bud -f packaging/docker/Dockerfile -t $image"
"${bh[@]}" bud --format docker --isolation chroot --timestamp "$SOURCE_DATE_EPOCH" \
	--label "org.opencontainers.image.version=$VERSION" \
	--label "org.opencontainers.image.revision=$commit" \
	-f packaging/docker/Dockerfile -t "$image" "$ctx" >&2
rm -f "$archive"
# v2s2: the Docker manifest and configuration (with the HEALTHCHECK) in
# the OCI layout; `skopeo copy oci-archive:... docker-daemon:...` and
# `podman load` take it as it is.
"${bh[@]}" push --quiet --format v2s2 "$image" "oci-archive:$archive:$image" >&2
log "built $archive ($(du -k "$archive" | cut -f1) KiB)"
echo "$archive"
