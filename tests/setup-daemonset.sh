#!/usr/bin/env bash
# What the daemonset tier (pytest -m daemonset) needs beyond tests/setup-system.sh, as root
# on Debian: docker.io (the tier runs its own dockerd; /usr/bin/docker is its client) and
# mmdebstrap (the image's base, `mmdebstrap bookworm - | docker import - debian:12`, since
# no image registry is reachable). apt-get update runs only when apt knows no candidate for
# a missing package; running this again changes nothing.
set -euo pipefail

PACKAGES=(
  docker.io  # dockerd and /usr/bin/docker (/usr/local/bin/docker is too new for it)
  mmdebstrap # the debian:12 base image, made from Debian's mirror
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
  printf 'setup-daemonset: apt-get update\n'
  apt-get update -qq >/dev/null
fi
printf 'setup-daemonset: apt-get install %s\n' "${missing[*]}"
if ! output="$(apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1)"; then
  printf '%s\n' "$output" >&2
  exit 1
fi
