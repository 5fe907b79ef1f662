#!/usr/bin/env bash
# libvirt and QEMU for the demo and the tests, as root on Debian (not part of the install:
# install.sh installs only the hook, for a host whose libvirt is already set up):
#   - apt-installs libvirt-daemon-system and qemu-system-x86 (and what the demo and the
#     tests call: iproute2, libvirt-clients; busybox-static, the demo guest's userland)
#     when one is missing;
#   - gives /dev/kvm to group kvm, as udev would;
#   - starts virtlogd and libvirtd when they are not running (systemctl where systemd
#     runs, else `-d`), and waits until `virsh -c qemu:///system version` answers.
# Idempotent: on a host that has it all, it only checks.
set -euo pipefail

readonly PACKAGES=(iproute2 libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 busybox-static)

say() { printf 'setup-libvirt: %s\n' "$*"; }
die() {
  printf 'setup-libvirt: error: %s\n' "$*" >&2
  exit 1
}

apt_install_missing() {
  local package missing=()
  for package in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
      missing+=("$package")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Without udev, /dev/kvm stays root-only. libvirt probes QEMU's capabilities as root
# (KVM: yes) but checks KVM as the qemu user (KVM: no), finds its cache stale and probes
# again on every call: `virsh define` takes ~45s. udev's Debian rule makes both agree.
kvm_to_group_kvm() {
  if [ -c /dev/kvm ] && getent group kvm >/dev/null \
    && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ] && [ "$(stat -c %a /dev/kvm)" != 666 ]; then
    say "chgrp kvm /dev/kvm; chmod 0660 /dev/kvm (as udev would; libvirt re-probes QEMU otherwise)"
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
  fi
}

# Whether a process called $1 runs (no pgrep: procps is not on every Debian).
running() {
  local comm name
  for comm in /proc/[0-9]*/comm; do
    if { read -r name <"$comm"; } 2>/dev/null && [ "$name" = "$1" ]; then
      return 0
    fi
  done
  return 1
}

start_daemons() {
  local daemon
  for daemon in virtlogd libvirtd; do
    if ! running "$daemon"; then
      say "starting $daemon"
      if [ -d /run/systemd/system ]; then
        systemctl start "$daemon"
      else
        "$daemon" -d
      fi
    fi
  done
  local deadline=$((SECONDS + 60))
  until timeout 10 virsh -c qemu:///system version >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "libvirtd does not answer on qemu:///system after 60s"
    sleep 0.5
  done
  say "libvirtd answers on qemu:///system"
}

main() {
  if [ "$#" -gt 0 ]; then
    printf 'usage: setup-libvirt.sh   (as root; no arguments)\n' >&2
    return 2
  fi
  [ "$(id -u)" = 0 ] || die "run as root: it installs packages and starts daemons"
  apt_install_missing "${PACKAGES[@]}"
  kvm_to_group_kvm
  start_daemons
}

main "$@"
