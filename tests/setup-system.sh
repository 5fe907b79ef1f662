#!/usr/bin/env bash
# What the test tiers need from the system, as root on Debian: packages (apt-get update and
# install only when one is missing), then virtlogd and libvirtd running (there is no
# systemd) and answering on qemu:///system. Quiet when everything is already there.
set -euo pipefail

PACKAGES=(
  iproute2              # ip netns, veth, macvtap, altnames
  util-linux            # nsenter
  libvirt-daemon-system # libvirtd, virtlogd
  libvirt-daemon-driver-qemu
  libvirt-clients # virsh
  qemu-system-x86
  python3-venv # install.sh's virtual environment
  shellcheck   # tests/test_install.py lints install.sh
)
WAIT_SECONDS=${WAIT_SECONDS:-60}

say() { printf 'setup-system: %s\n' "$*"; }

missing=()
for package in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Without systemd a package's start of its service may fail; we start them below.
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A daemon runs when a process has that exact name (comm); its pid file may be stale.
running() {
  local comm name
  for comm in /proc/[0-9]*/comm; do
    if { read -r name <"$comm"; } 2>/dev/null && [ "$name" = "$1" ]; then
      return 0
    fi
  done
  return 1
}

# Without udev, /dev/kvm stays root-only. libvirt probes QEMU's capabilities as root (KVM:
# yes) but checks KVM for the qemu user (KVM: no), so it finds its cache stale and probes
# again on every lookup: `virsh define` takes ~45s. udev's rule on Debian, GROUP="kvm"
# with the group allowed in, makes both agree.
if [ -c /dev/kvm ] && getent group kvm >/dev/null \
  && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ] && [ "$(stat -c %a /dev/kvm)" != 666 ]; then
  say "chgrp kvm /dev/kvm; chmod 0660 /dev/kvm (as udev would; libvirt re-probes QEMU otherwise)"
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

for daemon in virtlogd libvirtd; do
  if ! running "$daemon"; then
    say "starting $daemon -d"
    "$daemon" -d
  fi
done

deadline=$((SECONDS + WAIT_SECONDS))
until timeout 10 virsh -c qemu:///system version >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "virsh -c qemu:///system version does not answer after ${WAIT_SECONDS}s:" >&2
    timeout 10 virsh -c qemu:///system version >&2 || true
    exit 1
  fi
  sleep 0.5
done
