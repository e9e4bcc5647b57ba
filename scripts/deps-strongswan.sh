#!/usr/bin/env bash
# Opt-in: installs strongSwan 5.9 for test/strongswan (charon as a test
# peer on the namespace test bed; its Install runs this script) and
# test/swanbench (strongSwan's failover, next to roamsec's test/failbench).
# As root, on Debian 12. The packages give charon-systemd with the
# userspace ESP backend kernel-libipsec (the kernel here has no ESP) and the
# AES-GCM, kdf and vici plugins; see /work/shared/notes/strongswan-peer.md. Nothing is started or
# enabled through systemd: test/strongswan runs its own charon per namespace.
# Idempotent: a second run installs nothing.
set -euo pipefail

# libcharon-extauth-plugins: eap-mschapv2 (test/e2e's EAP road warrior).
pkgs=(strongswan-swanctl charon-systemd libcharon-extra-plugins libcharon-extauth-plugins
	libstrongswan-extra-plugins libstrongswan-standard-plugins)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps-strongswan: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d 101: maintainer scripts may not start services (no-op
	# where no init system runs, as in containers).
	prc=/usr/sbin/policy-rc.d
	added=
	if [ ! -e "$prc" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$prc"
		chmod +x "$prc"
		added=1
	fi
	trap '[ -n "$added" ] && rm -f "$prc"' EXIT
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Stop and disable what the packages may have enabled; our own charons run
# in namespaces and must not meet a host-wide one.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	for u in strongswan.service strongswan-starter.service; do
		systemctl disable --now "$u" >/dev/null 2>&1 || true
	done
fi
for c in /usr/sbin/charon-systemd /usr/sbin/swanctl; do
	[ -x "$c" ] || { echo "deps-strongswan: $c missing after install" >&2; exit 1; }
done
echo "deps-strongswan: ok (charon-systemd $(dpkg-query -W -f='${Version}' charon-systemd))"
