#!/usr/bin/env bash
# The DaemonSet container's entry point (deploy/daemonset.yaml): install vmnet-hook on the
# node, stay up, and uninstall when the pod stops.
#
#   node-install.sh run         install, then wait; SIGTERM (pod deleted) uninstalls
#   node-install.sh install     install, or update an earlier install, and exit
#   node-install.sh uninstall   uninstall and exit
#
# The hook runs on the host, under the host's libvirtd, so its virtual environment must be
# made from the host's python3 and live on the host's disk: a venv inside the container
# would not exist for libvirtd. So this script copies the checkout it sits in (with the
# wheels the image carries, deploy/fetch-wheels.sh) to STAGE, a hostPath directory mounted
# at the same path in the container, then runs that copy's install.sh in the host's
# namespaces (HOST_EXEC), with pip limited to those wheels: nodes need no package index.
#
# Environment:
#   STAGE              where the checkout is copied; the same path on the host and in the
#                      container (default /var/lib/vmnet-hook)
#   HOST_EXEC          the command prefix that runs a command on the host (default: nsenter
#                      into PID 1's namespaces, which needs hostPID and privileged); set it
#                      empty to run on this machine, as the tests do
#   UNINSTALL_ON_STOP  true (default): `run` uninstalls on SIGTERM; false: the hook stays
#   PREFIX, HOOKS_DIR, CONFIG_DIR, PYTHON: handed to install.sh (see its header)
set -euo pipefail

readonly HOST_PATH=/usr/sbin:/usr/bin:/sbin:/bin
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STAGE=${STAGE:-/var/lib/vmnet-hook}
UNINSTALL_ON_STOP=${UNINSTALL_ON_STOP:-true}
if [ "${HOST_EXEC+set}" = set ]; then
  read -r -a HOST_EXEC <<<"$HOST_EXEC"
else
  HOST_EXEC=(nsenter --target 1 --mount --uts --ipc --net --pid --)
fi
STAGED="$STAGE/source"

say() { printf 'node-install.sh: %s\n' "$*"; }
die() {
  printf 'node-install.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: node-install.sh run|install|uninstall
  run         install, then wait; SIGTERM uninstalls (UNINSTALL_ON_STOP=$UNINSTALL_ON_STOP)
  install     install vmnet-hook on the host, or update it
  uninstall   remove it from the host
Environment: STAGE=$STAGE HOST_EXEC=${HOST_EXEC[*]}
EOF
}

# Copy the checkout to STAGE/source, whole or not at all: install.sh runs from there on
# the host, and --uninstall needs it after this container is gone.
stage() {
  local next
  [ -d "$SOURCE/wheels" ] || die "$SOURCE/wheels is missing: build the image with deploy/Containerfile"
  mkdir -p "$STAGE"
  next=$(mktemp -d "$STAGE/.source.XXXXXX")
  tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=__pycache__ -cf - . \
    | tar -C "$next" -xf -
  chmod 0755 "$next"
  rm -rf -- "$STAGED"
  mv -- "$next" "$STAGED"
  say "copied $SOURCE to $STAGED on the host"
}

# install.sh on the host: a clean environment (not the container's), pip offline.
host_install_sh() {
  local settings=(PATH="$HOST_PATH" PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1
    PIP_FIND_LINKS="$STAGED/wheels" PIP_DISABLE_PIP_VERSION_CHECK=1)
  local name
  for name in PREFIX HOOKS_DIR CONFIG_DIR PYTHON; do
    if [ -n "${!name:-}" ]; then
      settings+=("$name=${!name}")
    fi
  done
  "${HOST_EXEC[@]}" env -i "${settings[@]}" bash "$STAGED/install.sh" "$@"
}

install() {
  stage
  host_install_sh || die "install.sh failed on the host: see its lines above"
  say "installed"
}

uninstall() {
  [ -f "$STAGED/install.sh" ] || stage
  host_install_sh --uninstall || die "install.sh --uninstall failed on the host: see above"
  rm -rf -- "$STAGED"
  say "removed $STAGED"
  if "${HOST_EXEC[@]}" rmdir -- "$STAGE" 2>/dev/null; then # on the host: not a mount there
    say "removed $STAGE"
  fi
  say "uninstalled"
}

run() {
  install
  trap stop TERM INT
  if [ "$UNINSTALL_ON_STOP" = true ]; then
    say "waiting; stopping this pod uninstalls vmnet-hook from the host"
  else
    say "waiting; stopping this pod leaves vmnet-hook installed (UNINSTALL_ON_STOP=false)"
  fi
  while :; do
    sleep infinity &
    wait "$!" || true # a trapped signal ends the wait, then its trap runs
  done
}

stop() {
  local sleepers
  sleepers=$(jobs -p)
  if [ -n "$sleepers" ]; then # a sleep left behind would hold the container's stdout
    # shellcheck disable=SC2086 # one pid per word
    kill $sleepers 2>/dev/null || true
  fi
  if [ "$UNINSTALL_ON_STOP" = true ]; then
    say "stopping: uninstalling"
    uninstall
  fi
  exit 0
}

main() {
  case "${1:-}" in
    run | install | uninstall) ;;
    -h | --help)
      usage
      return 0
      ;;
    *)
      usage >&2
      return 2
      ;;
  esac
  [ "$#" -eq 1 ] || {
    usage >&2
    return 2
  }
  case $STAGE in
    /*) ;;
    *) die "STAGE=$STAGE must be an absolute path: it is the same path on the host" ;;
  esac
  [ "$(id -u)" = 0 ] || die "run as root: it installs on the host"
  "$1"
}

main "$@"
