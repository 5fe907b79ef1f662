#!/usr/bin/env bash
# Sourced by the tests' set-up scripts: the one way they install Debian packages.

# The packages among "$@" that are not installed, one per line.
missing_packages() {
  local package
  for package in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
      printf '%s\n' "$package"
    fi
  done
}

# Whether apt knows a candidate for every package in "$@" (else its lists need an update).
candidates_known() {
  local package
  for package in "$@"; do
    # no pipe into grep -q: with pipefail its early exit would fail apt-cache
    [[ "$(apt-cache policy "$package" 2>/dev/null)" == *"Candidate: "[!\(]* ]] || return 1
  done
}

# apt_update_for LABEL PACKAGE...: apt-get update, only when apt knows no candidate for one.
apt_update_for() {
  local label=$1
  shift
  if ! candidates_known "$@"; then
    printf '%s: apt-get update\n' "$label"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  fi
}

# apt_install LABEL PACKAGE...: install those not installed yet; running it again does nothing.
apt_install() {
  local label=$1 output
  shift
  local missing
  mapfile -t missing < <(missing_packages "$@")
  [ "${#missing[@]}" -eq 0 ] && return 0
  apt_update_for "$label" "${missing[@]}"
  printf '%s: apt-get install %s\n' "$label" "${missing[*]}"
  if ! output="$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" 2>&1)"; then
    printf '%s\n' "$output" >&2
    return 1
  fi
}
