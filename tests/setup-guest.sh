#!/usr/bin/env bash
# What the guest tier (pytest -m guest) needs beyond tests/setup-system.sh, as root on
# Debian: busybox-static (the guest's userland) and dnsmasq-base (the self-test's DHCP
# server). apt-get update runs only when apt knows no candidate for one of them or for
# linux-image-cloud-amd64; running this again changes nothing. The guest's kernel is fetched by vmnet_hook/demo/guestimage.py
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

export DEBIAN_FRONTEND=noninteractive
candidates_known() {
  local package
  for package in "$@"; do
    # no pipe into grep -q: with pipefail its early exit would fail apt-cache
    [[ "$(apt-cache policy "$package" 2>/dev/null)" == *"Candidate: "[!\(]* ]] || return 1
  done
}
# guestimage.py asks apt which kernel linux-image-cloud-amd64 depends on, then downloads it.
if ! candidates_known "${missing[@]}" linux-image-cloud-amd64; then
  printf 'setup-guest: apt-get update\n'
  apt-get update -qq >/dev/null
fi
[ "${#missing[@]}" -eq 0 ] && exit 0
printf 'setup-guest: apt-get install %s\n' "${missing[*]}"
if ! output="$(apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1)"; then
  printf '%s\n' "$output" >&2
  exit 1
fi
