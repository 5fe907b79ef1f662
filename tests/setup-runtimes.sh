#!/usr/bin/env bash
# What the runtimes tier (pytest -m runtimes) needs, as root on Debian: Debian's own
# dockerd, containerd, runc, CNI plugins and busybox-static (the pods' image is made from
# it). apt-get update runs only when apt knows no candidate for a missing package; running
# this again changes nothing. No daemon is started here, and none may start at install
# time (the tier starts its own, on sockets of its own): when the host has no
# /usr/sbin/policy-rc.d, one that refuses every start is put there for the install and
# removed after.
set -euo pipefail

PACKAGES=(
  docker.io                   # dockerd, and /usr/bin/docker, the client matching it
  containerd                  # containerd and ctr
  runc                        # the OCI runtime both use
  containernetworking-plugins # ptp, bridge, host-local, loopback (in /usr/lib/cni)
  busybox-static              # the pods' image
)

# shellcheck source=tests/apt.sh
source "$(dirname "$0")/apt.sh"
[ -z "$(missing_packages "${PACKAGES[@]}")" ] && exit 0

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\n# tests/setup-runtimes.sh: no daemon starts while it installs\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
fi
apt_install setup-runtimes "${PACKAGES[@]}"
