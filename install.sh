#!/usr/bin/env bash
# Install vmnet-hook as libvirt's qemu hook, from the checkout this script sits in.
#
#   sudo ./install.sh              install, or update an earlier install (idempotent)
#   sudo ./install.sh --uninstall  put back what was there before
#
# libvirt itself is not its business: on a host without it, scripts/setup-libvirt.sh
# installs libvirt and QEMU from Debian and starts them (for the demo and the tests).
#
# What it does:
#   - apt-installs python3 and python3-venv when they are missing;
#   - makes a dedicated virtual environment, PREFIX (default /opt/vmnet-hook), and
#     pip-installs this checkout (not editable) with its dependencies into it;
#   - installs hooks/qemu as HOOKS_DIR/qemu (default /etc/libvirt/hooks) with its first
#     line set to the environment's interpreter: libvirt runs hooks with a minimal PATH
#     and no virtualenv. A HOOKS_DIR/qemu that is not ours is never touched: then the hook
#     goes to HOOKS_DIR/qemu.d/vmnet-hook, and libvirt >= 6.5 runs both;
#   - makes CONFIG_DIR (default /etc/vmnet-hook); no config file is needed;
#   - links BIN_DIR/vmnet-hook (default /usr/local/sbin) to the environment's command,
#     unless something else already has that name;
#   - sends SIGHUP to a running libvirtd, which looks for hooks only when it starts or
#     reloads (only when HOOKS_DIR is libvirt's own, /etc/libvirt/hooks): the one whose
#     pid file is /run/libvirtd.pid (or virtqemud.pid) in this mount and PID namespace,
#     never another one seen in /proc (a container with the host's PID namespace sees
#     the host's libvirtd there).
# What it made, and a backup of anything it moved aside, is recorded under PREFIX so that
# --uninstall can put back exactly what was there.
#
# Environment: PREFIX, HOOKS_DIR, CONFIG_DIR, BIN_DIR, PYTHON (the interpreter the
# environment is made from; default /usr/bin/python3).
set -euo pipefail

readonly MARKER="# vmnet-hook: installed by install.sh; remove with install.sh --uninstall"
readonly LIBVIRT_HOOKS_DIR=/etc/libvirt/hooks
readonly DEPENDENCIES=(python3 python3-venv)

PREFIX=${PREFIX:-/opt/vmnet-hook}
HOOKS_DIR=${HOOKS_DIR:-$LIBVIRT_HOOKS_DIR}
CONFIG_DIR=${CONFIG_DIR:-/etc/vmnet-hook}
BIN_DIR=${BIN_DIR:-/usr/local/sbin}
PYTHON=${PYTHON:-/usr/bin/python3}
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
RECORD="$PREFIX/vmnet-hook-install"  # created, moved, backup/: what --uninstall undoes
MAIN_HOOK="$HOOKS_DIR/qemu"
DROPIN_HOOK="$HOOKS_DIR/qemu.d/vmnet-hook"

# What this run made only to put elsewhere (a build copy, a hook file before its rename):
# removed on every exit, so that a failed or interrupted run leaves none of it, above all
# no stray executable in qemu.d/, where libvirt would run it as a second hook.
STAGED=()

remove_staged() {
  if [ "${#STAGED[@]}" -gt 0 ]; then
    rm -rf -- "${STAGED[@]}"
  fi
}

say() { printf 'install.sh: %s\n' "$*"; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: install.sh [--uninstall]
  Installs vmnet-hook from $SOURCE as libvirt's qemu hook.
  --uninstall     remove the hook and $PREFIX, and put back what install.sh moved
  (libvirt itself: scripts/setup-libvirt.sh)
Environment: PREFIX=$PREFIX HOOKS_DIR=$HOOKS_DIR CONFIG_DIR=$CONFIG_DIR BIN_DIR=$BIN_DIR
  PYTHON=$PYTHON
EOF
}

is_ours() { [ -f "$1" ] && grep -qxF "$MARKER" "$1"; }

# Paths must be absolute: they are written into the hook and the record.
absolute() {
  case $2 in
    /*) ;;
    *) die "$1=$2 must be an absolute path" ;;
  esac
}

# --- apt -----------------------------------------------------------------------------

# python3 -m venv needs ensurepip, which Debian ships apart, in python3-venv.
ensure_python() {
  if "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    return
  fi
  if [ "$PYTHON" != /usr/bin/python3 ] || ! command -v apt-get >/dev/null; then
    die "$PYTHON cannot make a virtual environment (no venv/ensurepip module)"
  fi
  say "apt-get install ${DEPENDENCIES[*]} (python3 -m venv needs them)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${DEPENDENCIES[@]}" >/dev/null
  "$PYTHON" -c 'import ensurepip, venv' || die "$PYTHON still cannot make a virtual environment"
}

# network='masquerade' runs dnsmasq and nft in the pod; 'l2' needs neither, so their
# absence is said, not fatal.
ensure_masquerade_tools() {
  local missing=()
  PATH="$PATH:/usr/sbin:/sbin" command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
  PATH="$PATH:/usr/sbin:/sbin" command -v nft >/dev/null || missing+=(nftables)
  [ "${#missing[@]}" -eq 0 ] && return
  if command -v apt-get >/dev/null && {
    say "apt-get install ${missing[*]} (network='masquerade' needs them)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }; then
    return
  fi
  say "warning: ${missing[*]} could not be installed: network='masquerade' is unavailable" \
    "until they are (network='l2' works without them; vmnet-hook doctor checks)"
}

# --- the record of what install.sh made and moved ----------------------------------

record_created() { printf '%s\n' "$1" >>"$RECORD/created"; }

# mkdir -p, recording each directory that did not exist (in the record, once it exists).
make_dir() {
  local path=$1 missing=()
  while [ ! -d "$path" ]; do
    missing=("$path" "${missing[@]}")
    path=$(dirname "$path")
  done
  for path in "${missing[@]}"; do
    mkdir -m 0755 "$path"
    record_created "$path"
  done
}

# Move a file that is in our way to the backup, to be put back by --uninstall.
move_aside() {
  local path=$1 backup
  mkdir -p "$RECORD/backup"
  backup=$(mktemp -u "$RECORD/backup/$(basename "$path").XXXXXX")
  mv -- "$path" "$backup"
  printf '%s\t%s\n' "$path" "$backup" >>"$RECORD/moved"
  say "moved $path (not ours) aside to $backup; --uninstall puts it back"
}

# --- install -------------------------------------------------------------------------

make_venv() {
  if [ -e "$PREFIX" ] && [ ! -d "$RECORD" ] && [ -n "$(ls -A "$PREFIX" 2>/dev/null)" ]; then
    die "$PREFIX exists and was not made by install.sh; remove it or choose another PREFIX"
  fi
  if [ ! -d "$RECORD" ]; then  # the record first: an interrupted run can be run again
    local parent parents=()
    parent=$(dirname "$PREFIX")
    while [ ! -d "$parent" ]; do
      parents=("$parent" "${parents[@]}")
      parent=$(dirname "$parent")
    done
    mkdir -p "$RECORD"
    for parent in "${parents[@]}"; do
      record_created "$parent"
    done
  fi
  if [ -x "$PREFIX/bin/python3" ] && "$PREFIX/bin/python3" -c '' 2>/dev/null; then
    say "virtual environment $PREFIX: already there"
    return
  fi
  local made=made
  if [ -e "$PREFIX/pyvenv.cfg" ]; then  # broken (Python upgraded?): remake, keep the record
    find "$PREFIX" -mindepth 1 -maxdepth 1 ! -name "$(basename "$RECORD")" -exec rm -rf -- {} +
    made=remade
  fi
  "$PYTHON" -m venv "$PREFIX"
  say "virtual environment $PREFIX: $made with $("$PREFIX/bin/python3" -V)"
}

install_package() {
  # Build from a copy: an in-tree build would leave build/ in the checkout, and a stale
  # build/lib can put deleted modules into the wheel.
  local copy version
  copy=$(mktemp -d)
  STAGED+=("$copy")
  tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C "$copy" -xf -
  # pip always reinstalls from a directory, so the checkout's code replaces the old copy.
  if ! "$PREFIX/bin/python3" -m pip install --quiet --disable-pip-version-check --no-input \
    "$copy"; then
    die "pip could not install vmnet-hook from $SOURCE into $PREFIX"
  fi
  # The hook imports these only when it has work: check them now, not at a VM's start.
  "$PREFIX/bin/python3" -c 'import vmnet_hook.hook.handlers, pyroute2, psutil' \
    || die "the package installed in $PREFIX does not import"
  version=$("$PREFIX/bin/python3" -c 'import vmnet_hook; print(vmnet_hook.__version__)')
  say "package vmnet-hook $version: installed into $PREFIX from $SOURCE"
}

# hooks/qemu with the environment's interpreter on its first line and our marker after it.
hook_text() {
  printf '#!%s\n%s\n' "$PREFIX/bin/python3" "$MARKER"
  tail -n +2 "$SOURCE/hooks/qemu"
}

# Where the hook goes: where an earlier install put it, else qemu unless that is taken.
hook_target() {
  if is_ours "$MAIN_HOOK"; then
    printf '%s\n' "$MAIN_HOOK"
  elif is_ours "$DROPIN_HOOK" || [ -e "$MAIN_HOOK" ] || [ -L "$MAIN_HOOK" ]; then
    printf '%s\n' "$DROPIN_HOOK"
  else
    printf '%s\n' "$MAIN_HOOK"
  fi
}

install_hook() {
  local target text staged
  target=$(hook_target)
  text=$(hook_text)
  if [ "$target" = "$DROPIN_HOOK" ] && ! is_ours "$MAIN_HOOK"; then
    say "$MAIN_HOOK is another program's hook: left as it is"
  fi
  make_dir "$(dirname "$target")"
  if is_ours "$target" && [ "$(cat "$target")" = "$text" ] && [ -x "$target" ]; then
    say "hook $target: up to date"
  else
    if { [ -e "$target" ] || [ -L "$target" ]; } && ! is_ours "$target"; then
      move_aside "$target"
    fi
    staged=$(mktemp "$(dirname "$target")/.vmnet-hook.XXXXXX")
    STAGED+=("$staged")
    printf '%s\n' "$text" >"$staged"
    chmod 0755 "$staged"
    mv -f -- "$staged" "$target"
    if [ "$target" = "$DROPIN_HOOK" ]; then
      say "hook $target: installed (libvirt >= 6.5 runs it after $MAIN_HOOK)"
    else
      say "hook $target: installed"
    fi
  fi
  # Never two copies: libvirt would run the hook twice.
  if [ "$target" = "$MAIN_HOOK" ] && is_ours "$DROPIN_HOOK"; then
    rm -f -- "$DROPIN_HOOK"
    say "removed the older copy $DROPIN_HOOK"
  fi
}

install_config_dir() {
  if [ -d "$CONFIG_DIR" ]; then
    say "config directory $CONFIG_DIR: already there"
  else
    make_dir "$CONFIG_DIR"
    say "config directory $CONFIG_DIR: made (no config file: the defaults apply)"
  fi
}

# The command on root's PATH, as a link into the environment; a foreign one is left alone.
link_command() {
  local link="$BIN_DIR/vmnet-hook" target="$PREFIX/bin/vmnet-hook"
  if [ "$(readlink "$link" 2>/dev/null)" = "$target" ]; then
    say "command $link: already there"
  elif [ -e "$link" ] || [ -L "$link" ]; then
    say "command $link: another program's; use $target"
  else
    make_dir "$BIN_DIR"
    ln -s "$target" "$link"
    say "command $link: linked to $target"
  fi
}

unlink_command() {
  local link="$BIN_DIR/vmnet-hook"
  if [ "$(readlink "$link" 2>/dev/null)" = "$PREFIX/bin/vmnet-hook" ]; then
    rm -f -- "$link"
    say "removed command $link"
  fi
}

# --- libvirtd ------------------------------------------------------------------------

# The daemon that runs qemu hooks from this root: libvirtd, or virtqemud where the daemons
# are split. Only the one named by its pid file under this root, and only when it shares
# this script's mount and PID namespaces: in a container that sees the host's processes
# (hostPID), the host's libvirtd is in /proc too, and must not be sent our SIGHUP.
daemon_pid() {
  local pidfile pid name
  for pidfile in /run/libvirtd.pid /run/virtqemud.pid; do
    pid=$({ tr -dc 0-9 <"$pidfile"; } 2>/dev/null || true)
    if [ -n "$pid" ] && { read -r name <"/proc/$pid/comm"; } 2>/dev/null \
      && [ "$name" = "$(basename "$pidfile" .pid)" ] && in_our_namespaces "$pid"; then
      printf '%s %s\n' "$name" "$pid"
      return
    fi
  done
}

in_our_namespaces() {
  local ns
  for ns in mnt pid; do
    [ "$(readlink "/proc/$1/ns/$ns" 2>/dev/null)" = "$(readlink /proc/self/ns/$ns)" ] || return 1
  done
}

reload_libvirtd() {
  local name pid
  if [ "$HOOKS_DIR" != "$LIBVIRT_HOOKS_DIR" ]; then
    say "libvirtd: not signalled (HOOKS_DIR is not $LIBVIRT_HOOKS_DIR)"
    return
  fi
  read -r name pid < <(daemon_pid) || true
  if [ -z "${pid:-}" ]; then
    say "libvirtd: not running here (no live /run/libvirtd.pid in this mount and PID" \
      "namespace); it finds the hook when it starts"
  elif kill -HUP "$pid"; then
    # For `vmnet-hook doctor`: this file's time against the hook's says it rescanned since.
    if [ -d "$RECORD" ]; then
      printf '%s\n' "$pid" >"$RECORD/libvirtd-hup"
    fi
    say "$name (pid $pid): sent SIGHUP so that it rescans $HOOKS_DIR"
  else
    die "could not send SIGHUP to $name (pid $pid)"
  fi
}

install() {
  ensure_python
  ensure_masquerade_tools
  make_venv
  install_package
  install_hook
  install_config_dir
  link_command
  reload_libvirtd
  say "done"
}

# --- uninstall -----------------------------------------------------------------------

uninstall() {
  local hook path backup
  for hook in "$MAIN_HOOK" "$DROPIN_HOOK"; do
    if is_ours "$hook"; then
      rm -f -- "$hook"
      say "removed hook $hook"
    fi
  done
  unlink_command
  if [ ! -d "$RECORD" ]; then
    if [ -e "$PREFIX" ]; then
      die "$PREFIX was not made by install.sh: left as it is"
    fi
    say "nothing installed in $PREFIX"
    reload_libvirtd
    return
  fi
  if [ -f "$RECORD/moved" ]; then
    while IFS=$'\t' read -r path backup; do
      if [ -e "$path" ] || [ -L "$path" ]; then
        say "$path exists again: its backup $backup is kept"
        continue
      fi
      mkdir -p "$(dirname "$path")"
      mv -- "$backup" "$path"
      say "put back $path"
    done <"$RECORD/moved"
  fi
  if [ -n "$(ls -A "$RECORD/backup" 2>/dev/null)" ]; then
    die "backups left in $RECORD/backup: $PREFIX is kept until they are dealt with"
  fi
  local created=()
  if [ -f "$RECORD/created" ]; then
    mapfile -t created < <(sort -r -u "$RECORD/created")  # deepest first
  fi
  rm -rf -- "$PREFIX"
  say "removed virtual environment $PREFIX"
  # Only when empty: what others put there since is kept.
  for path in "${created[@]}"; do
    if rmdir -- "$path" 2>/dev/null; then
      say "removed directory $path"
    elif [ -d "$path" ]; then
      say "kept directory $path: it is not empty"
    fi
  done
  reload_libvirtd
  say "done"
}

main() {
  local action=install
  case "${1:-}" in
    "") ;;
    --uninstall) action=uninstall ;;
    -h | --help)
      usage
      return 0
      ;;
    *)
      usage >&2
      return 2
      ;;
  esac
  if [ "$#" -gt 1 ]; then
    usage >&2
    return 2
  fi
  [ "$(id -u)" = 0 ] || die "run as root: it writes $PREFIX, $HOOKS_DIR and $CONFIG_DIR"
  absolute PREFIX "$PREFIX"
  absolute HOOKS_DIR "$HOOKS_DIR"
  absolute CONFIG_DIR "$CONFIG_DIR"
  absolute BIN_DIR "$BIN_DIR"
  BIN_DIR=${BIN_DIR%/}
  PREFIX=${PREFIX%/}
  HOOKS_DIR=${HOOKS_DIR%/}
  CONFIG_DIR=${CONFIG_DIR%/}
  RECORD="$PREFIX/vmnet-hook-install"
  MAIN_HOOK="$HOOKS_DIR/qemu"
  DROPIN_HOOK="$HOOKS_DIR/qemu.d/vmnet-hook"
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  trap remove_staged EXIT
  "$action"
}

main "$@"
