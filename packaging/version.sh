# Sourced by scripts/deb.sh and scripts/docker.sh (bash): the version both
# stamp into the binaries, and the build timestamp.
#
# In:  VERSION (optional override), SOURCE_DATE_EPOCH (optional); the
#      current directory is the repository root; log() is defined.
# Out: VERSION (e.g. 0.1.0-dev+git20260101.aa25964, or 1.2.3 at tag v1.2.3),
#      SOURCE_DATE_EPOCH (exported; default the last commit's time),
#      commit (short hash or "unknown"), in_git (1 or 0).
in_git=0
git rev-parse --git-dir >/dev/null 2>&1 && in_git=1
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	if [ $in_git = 1 ]; then SOURCE_DATE_EPOCH=$(git log -1 --format=%ct); else SOURCE_DATE_EPOCH=$(date +%s); fi
fi
export SOURCE_DATE_EPOCH
commit=unknown
[ $in_git = 1 ] && commit=$(git rev-parse --short=7 HEAD)
if [ -z "${VERSION:-}" ]; then
	tag=""
	[ $in_git = 1 ] && tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null || true)
	if [ -n "$tag" ]; then
		VERSION=${tag#v}
	else
		VERSION=$(sed -n 's/^var Version = "\(.*\)"$/\1/p' internal/version/version.go)
		[ -n "$VERSION" ] || { log "no Version in internal/version/version.go"; exit 1; }
		if [ $in_git = 1 ]; then
			VERSION="$VERSION+git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$commit"
		fi
	fi
fi
case "$VERSION" in
[0-9]*) ;;
*) log "version $VERSION must start with a digit"; exit 2 ;;
esac
