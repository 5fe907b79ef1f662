#!/usr/bin/env bash
# What the test tiers need from the system, as root on Debian: the test-only packages
# (apt-get update and install only when one is missing), then libvirt and QEMU installed,
# virtlogd and libvirtd running and answering on qemu:///system (scripts/setup-libvirt.sh),
# and the hook installed (install.sh), as the README's first command does.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  util-linux   # nsenter
  python3-venv # install.sh's virtual environment
  shellcheck   # tests/test_install.py lints install.sh
)

missing=()
for package in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'setup-system: apt-get install %s\n' "${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/setup-libvirt.sh
bash tests/setup-guest.sh
bash tests/setup-daemonset.sh
bash install.sh
