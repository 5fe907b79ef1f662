#!/usr/bin/env bash
# Download every wheel that install.sh needs into DEST, so that a node installs vmnet-hook
# with no package index (deploy/node-install.sh points pip at them). The image build runs it
# (deploy/Containerfile); it needs an index and pip, the nodes need neither.
#
#   deploy/fetch-wheels.sh DEST [PYTHON_VERSION...]     (default: 3.11 3.12 3.13)
#
# lxml ships one wheel per Python version: list every version the nodes' python3 may have
# (Debian 12: 3.11, Ubuntu 24.04: 3.12, Debian 13: 3.13). Environment: PIP (default
# "python3 -m pip"), PLATFORM (default manylinux_2_28_<machine>: glibc >= 2.28 on the nodes).
set -euo pipefail

say() { printf 'fetch-wheels.sh: %s\n' "$*"; }
die() {
  printf 'fetch-wheels.sh: error: %s\n' "$*" >&2
  exit 1
}

[ "$#" -ge 1 ] || die "usage: fetch-wheels.sh DEST [PYTHON_VERSION...]"
DEST=$1
shift
VERSIONS=("$@")
[ "${#VERSIONS[@]}" -gt 0 ] || VERSIONS=(3.11 3.12 3.13)
read -r -a PIP <<<"${PIP:-python3 -m pip}"
PLATFORM=${PLATFORM:-manylinux_2_28_$(uname -m)}
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
mkdir -p "$DEST"

# The project's own wheel, built from a copy (a build in the checkout leaves build/ there),
# only to let pip read its dependencies: install.sh builds the package itself on the node.
tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
  --exclude=./wheels --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$work" -xf -
"${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$work/dist" "$work" \
  || die "could not build vmnet-hook from $SOURCE"
project_wheel=("$work"/dist/vmnet_hook-*.whl)

for version in "${VERSIONS[@]}"; do
  # setuptools and wheel: the build backend install.sh's pip needs, offline, on the node.
  "${PIP[@]}" download --quiet --dest "$DEST" --only-binary=:all: --implementation cp \
    --python-version "$version" --platform "$PLATFORM" "${project_wheel[0]}" setuptools wheel \
    || die "could not download the wheels for Python $version ($PLATFORM)"
  say "wheels for Python $version ($PLATFORM): in $DEST"
done
rm -f -- "$DEST"/vmnet_hook-*.whl
