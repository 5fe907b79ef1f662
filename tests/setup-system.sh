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

# shellcheck source=tests/apt.sh
source tests/apt.sh
apt_install setup-system "${PACKAGES[@]}"

bash scripts/setup-libvirt.sh
bash tests/setup-guest.sh
bash tests/setup-runtimes.sh
bash tests/setup-daemonset.sh
bash install.sh
