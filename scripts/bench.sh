#!/usr/bin/env bash
# Throughput benchmark (`make bench`): the bare veth path, roamsec and
# wireguard-go side by side on the network-namespace test bed, as root.
# Installs what it needs (iperf3, wireguard-tools for wg, iproute2), builds
# the binaries into $BIN (a temporary directory unless set) and runs
# test/bench, which prints the table (arguments are passed on, e.g.
# -paths a,c -duration 10s -runs 3 -json). Everything runs in namespaces
# test/bench creates and tears down, also on error and Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: needs root (network namespaces)" >&2
	exit 1
fi

need_pkgs=()
want() { # want COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}
want iperf3 iperf3
want wg wireguard-tools
want ip iproute2
want ss iproute2
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "bench: apt-get install ${need_pkgs[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
command -v go >/dev/null 2>&1 || bash scripts/deps.sh

if [ -z "${BIN:-}" ]; then
	BIN=$(mktemp -d /tmp/roamsec-bench-bin.XXXXXX)
	trap 'rm -rf "$BIN"' EXIT
fi
export BIN
mkdir -p "$BIN"

# wireguard-go from the module in go.mod. The roamsec daemons are built by
# test/bench itself (go build -o $BIN/ ./cmd/gateway ./cmd/roadwarrior), so
# that a build failure shows in the table as "roamsec: not available (...)"
# while the other paths still run.
echo "bench: go build -o $BIN/wireguard-go golang.zx2c4.com/wireguard" >&2
go build -o "$BIN/wireguard-go" golang.zx2c4.com/wireguard

# Not exec: the EXIT trap removes $BIN afterwards. SIGINT reaches test/bench
# (same process group), which tears the bed down and exits.
go build -o "$BIN/bench" ./test/bench
"$BIN/bench" -bin "$BIN" "$@"
