"""The line the hook leaves when its deadline runs out: what it was waiting for (the
host-wide lock and who holds it, as the kernel's /proc/locks says), what is left bound and
how to clear it. Run from the deadline's signal handler: small local reads only, and the
gate's second alarm ends the process should one of them hang. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from vmnet_hook.hook import gate

LOCKS = "/proc/locks"
MAX_READ = 64 * 1024


def line(clock: gate.deadline) -> str:
    head = f"domain {clock.domain!r}: gave up after {clock.seconds:g}s (deadline_seconds)"
    doing = clock.doing or waiting_for_lock(clock.state_dir)
    parts = [f"{head} {doing}" if doing else head, left_bound(clock)]
    with contextlib.suppress(Exception):
        import syslog

        syslog.openlog("vmnet-hook", syslog.LOG_PID, syslog.LOG_DAEMON)
        from vmnet_hook.text import printable

        syslog.syslog(syslog.LOG_ERR, printable("; ".join(parts)))
    return "; ".join(parts)


def waiting_for_lock(state_dir: str) -> str:
    """What this process waits for when it waits for a flock (it takes none but the state
    dir's lock): the lock and who holds it; else ""."""
    waiting, holders = _flocks(_read(LOCKS) or "")
    if waiting is None:
        return ""
    lock = os.path.join(state_dir, ".lock") if state_dir else "in the state dir"
    pids = holders.get(waiting, [])
    said = (_read(os.path.join(state_dir, ".lock")) or "").strip() if state_dir else ""
    holder = f"pid {', '.join(pids)}" if pids else "a process in another PID namespace"
    if said:
        holder += f" ({said.splitlines()[0][:200]})"
    return f"while waiting for the host-wide lock {lock}, held by {holder}"


def _flocks(text: str) -> tuple[str | None, dict[str, list[str]]]:
    """(the device:inode this process waits to flock, or None; holders' pids by
    device:inode). /proc/locks: ``1: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF``, a
    waiter's line with ``->`` after the number."""
    mine, waiting = str(os.getpid()), None
    holders: dict[str, list[str]] = {}
    for fields in (entry.split() for entry in text.splitlines()):
        blocked = len(fields) > 1 and fields[1] == "->"
        fields = fields[1:] if blocked else fields
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        pid, key = fields[4], fields[5]
        if blocked and pid == mine:
            waiting = key
        elif not blocked:
            holders.setdefault(key, []).append(pid)
    return waiting, holders


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
    text = _read(path)
    if text is None:
        return []
    try:
        state: dict[str, Any] = json.loads(text)
        bound = [f"altname {b['placeholder']} of {b['host_veth']}" for b in state["bindings"]]
        guests = [f"pod side of {g['nic']['mac']} ({g['nic']['placeholder']})"
                  for g in state.get("guests", [])]  # fmt: skip
        return bound + guests
    except (ValueError, KeyError, TypeError):
        return [f"whatever {path} records"]


def _read(path: str) -> str | None:
    """A small local file, never following a link nor blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, MAX_READ).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
