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

# shellcheck source=tests/apt.sh
source "$(dirname "$0")/apt.sh"
# guestimage.py asks apt which kernel linux-image-cloud-amd64 depends on, then downloads it.
apt_update_for setup-guest linux-image-cloud-amd64
apt_install setup-guest "${PACKAGES[@]}"
