#!/usr/bin/env bash
# The libvirtd DaemonSet container's entry point (deploy/libvirtd/daemonset.yaml): run
# virtlogd and libvirtd, whose qemu hook is vmnet-hook (installed in the image), until
# stopped; then stop every running domain so that the hook's `release end` leaves each
# pod as it found it, and only then stop libvirtd.
#
# On SIGTERM (the pod is deleted or updated): `virsh shutdown` every running domain, wait
# up to SHUTDOWN_TIMEOUT seconds for them to power off, `virsh destroy` the rest (libvirt
# runs the hook's `release end` for each), then stop libvirtd and virtlogd. Without this,
# QEMU and the hook's dnsmasq would die with the container and nothing would undo their
# side of the pods. Keep the pod's terminationGracePeriodSeconds above SHUTDOWN_TIMEOUT.
#
# If libvirtd or virtlogd exits by itself, so does this script (non-zero): the container
# restarts, and the new libvirtd finds the dead domains in /run/libvirt (a hostPath) and
# runs their `release end`.
#
# Environment: SHUTDOWN_TIMEOUT (seconds, default 60), LIBVIRT_URI (default qemu:///system).
# shellcheck disable=SC2317 # stop() and what it calls run from the trap
set -euo pipefail

SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-60}
LIBVIRT_URI=${LIBVIRT_URI:-qemu:///system}
LIBVIRTD_PID=
VIRTLOGD_PID=

say() { printf 'entrypoint.sh: %s\n' "$*"; }
die() {
  printf 'entrypoint.sh: error: %s\n' "$*" >&2
  exit 1
}

virsh_() { virsh --quiet -c "$LIBVIRT_URI" "$@"; }

# The names of the running (or paused) domains, one per line.
active_domains() { virsh_ list --name 2>/dev/null | sed '/^$/d'; }

start() {
  mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt
  virtlogd &
  VIRTLOGD_PID=$!
  libvirtd &
  LIBVIRTD_PID=$!
  local waited=0
  until virsh_ version >/dev/null 2>&1; do
    kill -0 "$LIBVIRTD_PID" 2>/dev/null || die "libvirtd exited while starting: see its lines above"
    [ "$waited" -lt 600 ] || die "libvirtd does not answer on $LIBVIRT_URI after 60 s"
    sleep 0.1
    waited=$((waited + 1))
  done
  say "libvirtd (pid $LIBVIRTD_PID) and virtlogd (pid $VIRTLOGD_PID) running; $LIBVIRT_URI answers"
  # What the readiness probe checks, once in the log for whoever reads it.
  vmnet-hook doctor || say "vmnet-hook doctor found problems (above): the pod stays unready"
}

stop_domains() {
  local domain deadline
  mapfile -t domains < <(active_domains)
  if [ "${#domains[@]}" -eq 0 ]; then
    say "no running domain"
    return
  fi
  for domain in "${domains[@]}"; do
    virsh_ shutdown "$domain" >/dev/null 2>&1 || true
    say "domain $domain: shutdown requested"
  done
  deadline=$((SECONDS + SHUTDOWN_TIMEOUT))
  while [ -n "$(active_domains)" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 1
  done
  mapfile -t domains < <(active_domains)
  for domain in "${domains[@]}"; do
    if virsh_ destroy "$domain" >/dev/null 2>&1; then
      say "domain $domain: destroyed (not off after ${SHUTDOWN_TIMEOUT} s)"
    fi
  done
  mapfile -t domains < <(active_domains)
  if [ "${#domains[@]}" -gt 0 ]; then
    say "warning: still running after destroy: ${domains[*]}"
  else
    say "every domain is off; the hook released their pods"
  fi
}

stop() {
  trap - TERM INT
  say "stopping: domains first, then libvirtd"
  stop_domains
  kill -TERM "$LIBVIRTD_PID" 2>/dev/null || true
  wait "$LIBVIRTD_PID" || true
  kill -TERM "$VIRTLOGD_PID" 2>/dev/null || true
  wait "$VIRTLOGD_PID" || true
  say "stopped"
  exit 0
}

main() {
  case $SHUTDOWN_TIMEOUT in
    '' | *[!0-9]*) die "SHUTDOWN_TIMEOUT=$SHUTDOWN_TIMEOUT must be a number of seconds" ;;
  esac
  trap stop TERM INT
  start
  local status=0
  wait -n "$LIBVIRTD_PID" "$VIRTLOGD_PID" || status=$?
  die "libvirtd or virtlogd exited (status $status): restarting the container"
}

main "$@"
