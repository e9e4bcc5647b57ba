#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need on a fresh
# Debian 12 machine (as root): Debian packages through apt-get, and Go from
# the Go module proxy when no Go >= the one go.mod names is on the machine.
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
want() { # want COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}
want tshark tshark
want iperf3 iperf3
want ping iputils-ping
want nft nftables
# test/e2e/outer_test.go: a NAT rebinding flushes the NAT's conntrack entries.
want conntrack conntrack
want ip iproute2
want curl curl
want unzip unzip
want gcc gcc
# test/vm: boots Debian's kernel (which has SCTP) in qemu; depmod indexes
# its modules. The kernel and busybox-static are fetched by the tests with
# apt-get download, never installed.
want qemu-system-x86_64 qemu-system-x86
want depmod kmod
# test/install builds a Debian root; test/docker and `make docker` build the
# image without a Docker engine.
want debootstrap debootstrap
# test/install's boot test runs that root under its own systemd.
want systemd-nspawn systemd-container
want buildah buildah
# test/freeradius: the AAA server of the EAP tests (test/e2e/eap_test.go),
# run with its own configuration directory in a namespace.
want freeradius freeradius
# internal/enroll and test/e2e: the one-time key Host's etcd backend is
# tested against a real etcd (issue 13).
want etcd etcd-server
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "deps: apt-get install ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# tshark asks whether non-root users may capture; answer no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Go: the version go.mod asks for, fetched as the official toolchain module
# from the Go module proxy (the one download source these machines reach).
gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
have_go() {
	local g
	for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
		[ -x "$g" ] || continue
		# GOTOOLCHAIN=local: report what is installed, do not switch.
		v=$(GOTOOLCHAIN=local "$g" env GOVERSION 2>/dev/null | sed 's/^go//')
		if [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$gover" "$v" | sort -V | head -1)" = "$gover" ]; then
			echo "$g"
			return 0
		fi
	done
	return 1
}
if ! have_go >/dev/null; then
	proxy=${GOPROXY:-https://proxy.golang.org}
	proxy=${proxy%%,*}
	latest=$(curl -fsSL "$proxy/golang.org/toolchain/@v/list" | grep -E "^v0\.0\.1-go${gover%.*}\.[0-9]+\.linux-amd64$" | sort -V | tail -1)
	[ -n "$latest" ] || { echo "deps: no Go ${gover%.*} toolchain on $proxy" >&2; exit 1; }
	echo "deps: installing Go $latest from $proxy into /usr/local/go"
	tmp=$(mktemp -d)
	curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/$latest.zip"
	unzip -q "$tmp/go.zip" -d "$tmp"
	rm -rf /usr/local/go
	mv "$tmp"/golang.org/toolchain@*/ /usr/local/go
	chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* 2>/dev/null || true
	rm -rf "$tmp"
fi
# strongSwan 5.9, the IKEv2 peer of test/e2e and test/strongswan.
bash scripts/deps-strongswan.sh
echo "deps: ok ($(have_go) $(GOTOOLCHAIN=local "$(have_go)" env GOVERSION))"
