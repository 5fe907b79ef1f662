#!/usr/bin/env bash
# What the guest tier (pytest -m guest) needs beyond tests/setup-system.sh, as root on
# Debian: busybox-static (the guest's userland) and dnsmasq-base (the self-test's DHCP
# server). apt-get update runs only when a package is missing and apt cannot find it;
# running this again changes nothing. The guest's kernel is fetched by tests/guest/image.py
# (apt-get download, never installed) on first use.
set -euo pipefail

PACKAGES=(
  busybox-static # /bin/busybox, copied into the guest's initramfs
  dnsmasq-base   # tests/test_guest_boot.py answers the guest's DHCP with it
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
  for package in "${missing[@]}"; do
    # no pipe into grep -q: with pipefail its early exit would fail apt-cache
    [[ "$(apt-cache policy "$package" 2>/dev/null)" == *"Candidate: "[!\(]* ]] || return 1
  done
}
if ! candidates_known; then
  printf 'setup-guest: apt-get update\n'
  apt-get update -qq >/dev/null
fi
printf 'setup-guest: apt-get install %s\n' "${missing[*]}"
if ! output="$(apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1)"; then
  printf '%s\n' "$output" >&2
  exit 1
fi
