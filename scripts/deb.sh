#!/usr/bin/env bash
# Deb packages of the two daemons: roamsec-gateway and roamsec-roadwarrior
# (amd64, static binaries), built with nfpm (github.com/goreleaser/nfpm/v2,
# as a Go library: packaging/cmd/mkdeb) from packaging/nfpm-gateway.yaml and
# packaging/nfpm-roadwarrior.yaml. This script builds the binaries, renders
# the generated files (man pages with date and version, copyright,
# changelog, lintian overrides, maintainer scripts) and runs mkdeb.
#
#   bash scripts/deb.sh [-o DIR] [-check]
#
#   -o DIR   where the .debs go (default dist/)
#   -check   then check them: lintian (installed with apt-get if missing)
#            must report no errors, systemd-analyze verify must pass on
#            both units in the extracted package, the packaged binaries
#            must run -version and -check their shipped configuration.
#
# Environment: VERSION overrides the version stamped into the binaries
# (default: the git tag vX.Y.Z at HEAD, else internal/version's Version
# plus +git<date>.<commit>); DEB_REVISION (default 1); MAINTAINER;
# SOURCE_DATE_EPOCH (default: the last commit's time).
#
# Prints the paths of the built packages, one a line, on stdout; progress
# goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin

out=dist
check=0
while [ $# -gt 0 ]; do
	case "$1" in
	-o) out="$2"; shift 2 ;;
	-check|--check) check=1; shift ;;
	-h|-help|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "deb.sh: unknown argument $1 (see -help)" >&2; exit 2 ;;
	esac
done

log() { echo "deb.sh: $*" >&2; }

for tool in go gzip; do
	command -v "$tool" >/dev/null || { log "needs $tool"; exit 1; }
done

arch=amd64
module=github.com/roamsec/roamsec
maintainer=${MAINTAINER:-"roamsec maintainers <roamsec@roamsec.invalid>"}
revision=${DEB_REVISION:-1}

# Version: the binaries get e.g. 0.1.0-dev+git20260101.aa25964, the
# packages the Debian form 0.1.0~dev+git20260101.aa25964-1 (~ sorts a
# pre-release before the release).
. packaging/version.sh
upstream="$(printf %s "$VERSION" | tr -- - '~' | tr -c -d 'A-Za-z0-9.+~')"
debversion="$upstream-$revision"
log "version $VERSION, package version $debversion"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/roamsec-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT

log "building static binaries and mkdeb"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X $module/internal/version.Version=$VERSION" \
	-o "$work/bin/" ./cmd/gateway ./cmd/roadwarrior
# The packager runs here, on the build machine. It is a module of its own
# (packaging/go.mod): nfpm's dependencies stay out of the daemons' module.
go build -C packaging -o "$work/mkdeb" ./cmd/mkdeb

changelog_date=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
mandate=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
years=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
if [ $in_git = 1 ]; then
	first=$(git log --max-parents=0 --format=%cd --date=format:%Y | tail -n 1)
	[ -n "$first" ] && [ "$first" != "$years" ] && years="$first-$years"
fi

# The files packaging/nfpm-<role>.yaml takes from ${GEN}/roamsec-<role>/:
# what nfpm cannot fill in itself. (Their modes in the package are set in
# the configuration.)
render() { # render ROLE
	local role=$1 pkg=roamsec-$1 dir
	dir="$work/gen/$pkg"
	mkdir -p "$dir"
	sed "1s/^\.TH \([^ ]*\) 8 \"\" \"roamsec\"/.TH \1 8 \"$mandate\" \"roamsec $VERSION\"/" \
		"packaging/man/$pkg.8" | gzip -9n >"$dir/$pkg.8.gz"
	sed "s/@YEARS@/$years/" packaging/debian/copyright >"$dir/copyright"
	sed "s/@PKG@/$pkg/g; s/@ROLE@/$role/g" packaging/debian/lintian-overrides >"$dir/lintian-overrides"
	{
		printf 'roamsec (%s) unstable; urgency=medium\n\n' "$debversion"
		printf '  * Build of roamsec %s (commit %s).\n\n' "$VERSION" "$commit"
		printf ' -- %s  %s\n' "$maintainer" "$changelog_date"
	} | gzip -9n >"$dir/changelog.Debian.gz"
	for s in postinst prerm postrm; do
		sed "s/@PKG@/$pkg/g; s/@ROLE@/$role/g" "packaging/debian/$s" >"$dir/$s"
	done
}
for role in gateway roadwarrior; do
	render $role
done

log "packaging with nfpm"
# The variables packaging/nfpm-*.yaml uses.
list=$(DEB_VERSION=$upstream DEB_REVISION=$revision ARCH=$arch MAINTAINER=$maintainer \
	BIN=$work/bin GEN=$work/gen "$work/mkdeb" -o "$out" packaging/nfpm-gateway.yaml packaging/nfpm-roadwarrior.yaml)
mapfile -t debs <<<"$list"
for deb in "${debs[@]}"; do
	log "built $deb"
done
printf '%s\n' "${debs[@]}"

[ $check = 1 ] || exit 0

# --- checks -----------------------------------------------------------
if ! command -v lintian >/dev/null; then
	log "apt-get install lintian"
	export DEBIAN_FRONTEND=noninteractive
	# Wait for the dpkg lock: tests of other packages may be installing too.
	apt-get update -qq -o DPkg::Lock::Timeout=300
	apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends lintian >/dev/null
fi
command -v systemd-analyze >/dev/null || { log "needs systemd-analyze (apt-get install systemd)"; exit 1; }
command -v dpkg-deb >/dev/null || { log "needs dpkg-deb (apt-get install dpkg)"; exit 1; }

fail=0
for deb in "${debs[@]}"; do
	pkg=$(dpkg-deb -f "$deb" Package)
	role=${pkg#roamsec-}
	log "== $pkg: contents"
	dpkg-deb -c "$deb" >&2
	log "== $pkg: conffiles"
	dpkg-deb -I "$deb" conffiles >&2

	log "== $pkg: lintian"
	# --fail-on error: warnings are shown, only errors fail.
	# (--show-overrides would make overridden errors fail: listed apart.)
	if ! lintian --fail-on error --info "$deb" >&2; then
		log "lintian: errors in $deb"; fail=1
	fi
	lintian --show-overrides "$deb" 2>/dev/null | grep '^O:' >&2 || true

	x="$work/x-$pkg"
	dpkg-deb -x "$deb" "$x"
	log "== $pkg: systemd-analyze verify"
	# In the extracted package, so ExecStart= finds the packaged binary;
	# the host's units are copied beside it for the dependencies
	# (sysinit.target, network-online.target, ...). Any message fails.
	cp -an /lib/systemd/system/. "$x/lib/systemd/system/"
	if ! msg=$(systemd-analyze verify --man=no --generators=no --root="$x" "$x/lib/systemd/system/$pkg.service" 2>&1) || [ -n "$msg" ]; then
		printf '%s\n' "$msg" >&2
		log "systemd-analyze verify failed for $pkg.service"; fail=1
	else
		log "systemd-analyze verify: OK"
	fi
	log "== $pkg: the packaged binary"
	"$x/usr/sbin/$pkg" -version >&2 || { log "$pkg -version failed"; fail=1; }
	# The first run: init writes the key (and the road warrior's config)
	# beside a copy of the shipped configuration, which -check then accepts.
	first="$work/first-$pkg"
	mkdir -p "$first"
	if [ "$role" = gateway ]; then
		cp "$x/etc/roamsec/gateway.yaml" "$first/"
		"$x/usr/sbin/$pkg" init -dir "$first" >/dev/null || { log "$pkg init failed"; fail=1; }
	else
		"$x/usr/sbin/$pkg" init -dir "$first" -gateway 192.0.2.1 >/dev/null || { log "$pkg init failed"; fail=1; }
	fi
	"$x/usr/sbin/$pkg" -check -config "$first/$role.yaml" >&2 || { log "$pkg -check of the shipped config after init failed"; fail=1; }
done
if [ $fail != 0 ]; then
	log "checks FAILED"
	exit 1
fi
log "checks passed"
