"""The line the hook leaves when its deadline runs out: what it was waiting for (the
host-wide lock and who holds it, as the kernel's /proc/locks says), what is left bound and
how to clear it. Run from the deadline's signal handler: small local reads only, and the
gate's second alarm ends the process should one of them hang. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from types import FrameType
from typing import Any

from vmnet_hook import MAX_STATE_BYTES, files
from vmnet_hook.hook import gate

LOCKS = "/proc/locks"
MAX_READ = 64 * 1024


def line(clock: gate.deadline, frame: FrameType | None) -> str:
    head = f"domain {clock.domain!r}: gave up after {clock.seconds:g}s ({clock.which()})"
    doing = clock.doing or waiting_for_lock(frame)
    parts = [f"{head} {doing}" if doing else head, left_bound(clock)]
    with contextlib.suppress(Exception):
        import syslog

        syslog.openlog("vmnet-hook", syslog.LOG_PID, syslog.LOG_DAEMON)
        from vmnet_hook.text import printable

        syslog.syslog(syslog.LOG_ERR, printable("; ".join(parts)))
    return "; ".join(parts)


def waiting_for_lock(frame: FrameType | None) -> str:
    """When the signal interrupted the host-wide lock's flock (the one wait for a lock the
    hook has; the kernel forgets the waiter as the signal interrupts it), that lock and
    who holds it, from /proc/locks and what the holder wrote in it; else ""."""
    state = sys.modules.get("vmnet_hook.host.state")
    store = frame.f_locals.get("self") if frame is not None else None
    if state is None or frame is None or frame.f_code.co_name != "lock":
        return ""
    if not isinstance(store, state.StateStore):
        return ""
    lock = os.path.join(store.state_dir, ".lock")
    try:
        info = os.stat(lock)
    except OSError:
        return f"while waiting for the host-wide lock {lock}"
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    pids = [pid for pid in _flock_holders(key) if pid != "0"]  # 0: not in our namespace
    holder = f"pid {', '.join(pids)}" if pids else "a process in another PID namespace"
    said = (_read(lock) or "").strip()
    if said:
        holder += f" ({said.splitlines()[0][:200]})"
    return f"while waiting for the host-wide lock {lock}, held by {holder}"


def _flock_holders(key: str, locks: str = LOCKS) -> list[str]:
    """The pids holding a flock on MAJ:MIN:INODE ``key``, from /proc/locks, read a line at
    a time (a busy host has thousands): ``1: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0
    EOF``; a waiter's line has ``->`` after the number and is not a holder."""
    holders = []
    with contextlib.suppress(OSError), open(locks, "rb") as lines:
        for fields in (line.split() for line in lines):
            if len(fields) >= 6 and fields[1] == b"FLOCK" and fields[5] == key.encode():
                holders.append(fields[4].decode("ascii", "replace"))
    return holders


def left_bound(clock: gate.deadline) -> str:
    recorded = _recorded(clock.state_file) if clock.state_file else []
    if not recorded:
        return "nothing is bound"
    later = "next start" if clock.releasing else "next release end"
    return (
        f"may be left bound: {', '.join(recorded)} (as {clock.state_file} records); "
        f"`vmnet-hook status --prune` or the domain's {later} clears it"
    )


def _recorded(path: str) -> list[str]:
    """What the state file at ``path`` records, one short phrase each; [] when there is
    none, and a phrase naming the file when it cannot be read."""
    try:
        found = files.read_regular(path, MAX_STATE_BYTES)
    except (OSError, files.NotReadable):
        return [f"whatever {path} records (it cannot be read now)"]
    if found is None:
        return []
    try:
        text = found[0].decode("utf-8")
        state: dict[str, Any] = json.loads(text)
        bound = [f"altname {b['placeholder']} of {b['host_veth']}" for b in state["bindings"]]
        guests = [f"pod side of {g['nic']['mac']} ({g['nic']['placeholder']})"
                  for g in state.get("guests", [])]  # fmt: skip
        return bound + guests
    except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
        return [f"whatever {path} records"]


def _read(path: str) -> str | None:
    """A small local file (vmnet_hook.files: never a link, never blocking on a FIFO)."""
    try:
        found = files.read_regular(path, MAX_READ)
    except (OSError, files.NotReadable):
        return None
    return found[0].decode("utf-8", "replace") if found is not None else None
