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

missing=()
for package in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$package")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
candidates_known() {
  local package
  for package in "$@"; do
    # no pipe into grep -q: with pipefail its early exit would fail apt-cache
    [[ "$(apt-cache policy "$package" 2>/dev/null)" == *"Candidate: "[!\(]* ]] || return 1
  done
}
if ! candidates_known "${missing[@]}"; then
  printf 'setup-runtimes: apt-get update\n'
  apt-get update -qq >/dev/null
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\n# tests/setup-runtimes.sh: no daemon starts while it installs\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
fi
printf 'setup-runtimes: apt-get install %s\n' "${missing[*]}"
if ! output="$(apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1)"; then
  printf '%s\n' "$output" >&2
  exit 1
fi
