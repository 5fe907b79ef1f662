#!/usr/bin/env bash
# Placeholder: installs Debian packages the tiers need and starts virtlogd/libvirtd.
set -euo pipefail
