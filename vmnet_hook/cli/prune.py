"""``vmnet-hook status --prune``: release what domains that libvirt does not run still
hold, exactly as their ``release end`` would have. Never on a guess: not when libvirt
cannot be asked, not a file that cannot be read, not a file rewritten meanwhile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vmnet_hook.cli.libvirt import RunningDomains
from vmnet_hook.core import binding
from vmnet_hook.errors import VmnetError
from vmnet_hook.hook.place import forget_pointer
from vmnet_hook.host.netlink import Netlink
from vmnet_hook.host.state import DomainState, Scan, StateStore
from vmnet_hook.podnet.record import GuestRecord

Disconnect = Callable[[Sequence[GuestRecord]], list[str]]


@dataclass
class Pruned:
    done: list[str] = field(default_factory=list)  # one line per domain released
    problems: list[str] = field(default_factory=list)  # what stays, and why
    notes: list[str] = field(default_factory=list)  # pieces left alone as another's


def prune(
    stores: Sequence[StateStore],
    netlink: Netlink,
    disconnect: Disconnect,
    running_domains: RunningDomains,
    domain: str | None = None,
) -> Pruned:
    """The state files are read before libvirt is asked (a file written after that is a
    starting domain's), and each is released under its store's lock only if it is still
    the very file read. libvirt is asked outside the locks: a hook waiting for a lock
    may hold the domain libvirt would have to report. LibvirtUnknown: nothing is done."""
    scans = [(store, store.scan()) for store in stores]
    running = running_domains()
    pruned = Pruned()
    for store, scan in scans:
        pruned.problems += [f"not pruned: {error}" for error in scan.unreadable]
        stale = {
            uuid: state
            for uuid, state in scan.states.items()
            if uuid not in running and domain in (None, uuid, state.domain)
        }
        try:  # one failing directory does not keep the others' stale domains
            if stale:
                _prune_stale(store, scan, stale, (netlink, disconnect), pruned)
        except VmnetError as error:
            pruned.problems.append(f"not pruned: {error}")
    return pruned


def _prune_stale(
    store: StateStore,
    scan: Scan,
    stale: dict[str, DomainState],
    undo: tuple[Netlink, Disconnect],
    pruned: Pruned,
) -> None:
    with store.lock():
        for uuid, state in stale.items():
            if store.stamp(uuid) != scan.stamps[uuid]:
                pruned.problems.append(f"{_who(uuid, state)}: its state changed while "
                                       "libvirt was asked; not pruned")  # fmt: skip
                continue
            _release(uuid, state, store, *undo, pruned)


def _release(
    uuid: str,
    state: DomainState,
    store: StateStore,
    netlink: Netlink,
    disconnect: Disconnect,
    pruned: Pruned,
) -> None:
    try:
        problems = binding.release(uuid, netlink, store, disconnect)
    except VmnetError as error:
        problems = str(error).splitlines()
    failures = binding.failed(problems)
    who = _who(uuid, state)
    pruned.problems += [f"{who}: {problem}" for problem in failures]
    pruned.notes += [f"{who}: {note}" for note in problems if note not in failures]
    if failures:
        return
    forget_pointer(uuid, store.state_dir)
    pieces = [f"{len(state.bindings)} l2 binding(s)"] if state.bindings else []
    pieces += [f"{len(state.guests)} pod side(s)"] if state.guests else []
    held = " and ".join(pieces) or "its record"
    pruned.done.append(f"pruned {_who(uuid, state)}: not running in libvirt; released {held}")


def _who(uuid: str, state: DomainState) -> str:
    return f"domain {state.domain!r} ({uuid})"
