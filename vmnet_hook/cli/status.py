"""``vmnet-hook status``: what each running domain holds, from state, checked live: ``l2``
bindings against the host's links, ``masquerade`` pod sides against their pods; which of
them belong to a domain libvirt does not run (stale); which state files cannot be read."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vmnet_hook.cli.libvirt import LibvirtUnknown, RunningDomains
from vmnet_hook.errors import ConfigError, VmnetError
from vmnet_hook.host.netlink import Netlink, NetlinkSession, PodNetlink
from vmnet_hook.host.state import Binding, DomainState, StateStore, UnreadableState
from vmnet_hook.podnet import health
from vmnet_hook.text import printable

States = dict[str, DomainState]


@dataclass(frozen=True)
class BindingStatus:
    domain: str
    uuid: str
    mac: str
    placeholder: str
    host_veth: str
    ifindex: int
    problem: str  # empty when placeholder -> veth -> pod netns all hold
    network: str = "l2"
    running: bool | None = None  # whether libvirt runs the domain; None: not known

    @property
    def state(self) -> str:
        return "broken" if self.problem else "ok"

    @property
    def stale(self) -> bool:
        return self.running is False


@dataclass(frozen=True)
class GuestStatus:
    """A masqueraded NIC: its link, its /30, its DHCP server and nft table, checked live."""

    domain: str
    uuid: str
    mac: str
    placeholder: str  # the host end of the guest's link
    pod_end: str
    pod_dev: str
    subnet: str
    guest: str
    gateway: str
    pod_ip: str
    dhcp_pid: int | None
    dhcp_alive: bool
    nft_table: str
    problem: str  # every missing piece, "; "-separated; empty when whole
    network: str = "masquerade"
    running: bool | None = None  # whether libvirt runs the domain; None: not known

    @property
    def state(self) -> str:
        return "broken" if self.problem else "ok"

    @property
    def stale(self) -> bool:
        return self.running is False


Row = BindingStatus | GuestStatus


@dataclass(frozen=True)
class Report:
    rows: list[Row]
    unreadable: tuple[UnreadableState, ...]
    libvirt_unknown: str  # why libvirt could not be asked; empty when it answered
    refused: tuple[str, ...] = ()  # state dirs and pointers not read, and why

    @property
    def failed(self) -> bool:
        rows = any(row.problem or row.stale for row in self.rows)
        return bool(self.unreadable or self.refused) or rows


@dataclass(frozen=True)
class Places:
    """Where domains' state may be: the stores to read, and the places refused."""

    stores: tuple[StateStore, ...]
    refused: tuple[str, ...]  # one line each: a state dir or pointer not read, and why
    config_error: str  # why the config could not be loaded; empty when it was


def places(config_path: str, environ: Mapping[str, str] = os.environ) -> Places:
    """The configured state dir (with a broken config, release end's: VMNET_HOOK_STATE_DIR's,
    else the default) and, unless VMNET_HOOK_STATE_DIR sets one for tests and manual runs,
    the default state dir and every state dir a pointer there names: domains started under
    an earlier config keep their state where it was. A directory anyone but root could
    change is refused, as the hook refuses it: what it records could name any pid or link."""
    from vmnet_hook import config
    from vmnet_hook.hook import gate, place

    primary, config_error = state_dir(config_path, environ)
    candidates, refused = [primary], list[str]()
    if not environ.get(gate.STATE_DIR_VARIABLE):
        pointed, refused = place.pointed_dirs()
        candidates += [gate.DEFAULT_STATE_DIR, *pointed]
    stores = []
    for directory in dict.fromkeys(candidates):
        try:
            config.check_state_dir(directory)
        except ConfigError as error:
            refused.append(f"{error}; not read")
            continue
        stores.append(StateStore(directory))
    return Places(tuple(stores), tuple(refused), config_error)


def state_dir(config_path: str, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(the configured state dir, ""); with a broken config, as release end does, (the one
    VMNET_HOOK_STATE_DIR names, else the default; the config's error): what is bound is
    listed and pruned while the config is being fixed."""
    from vmnet_hook import config
    from vmnet_hook.hook.place import defaults

    try:
        return config.load(config_path, environ).state_dir, ""
    except VmnetError as error:
        return defaults(environ).state_dir, str(error)


def report(
    stores: Sequence[StateStore],
    netlinks: tuple[Netlink, PodNetlink],
    running_domains: RunningDomains,
    domain: str | None,
    refused: Sequence[str] = (),
) -> Report:
    """The state files first, then libvirt (when there is any): a file already there
    belongs to a domain that was active when it was written, so it is stale only if
    libvirt no longer runs it."""
    scans = [store.scan() for store in stores]
    running: frozenset[str] | None = frozenset()
    unknown = ""
    try:
        running = running_domains() if any(scan.states for scan in scans) else running
    except LibvirtUnknown as error:
        running, unknown = None, str(error)
    rows: list[Row] = []
    for scan in scans:
        rows += statuses(scan.states, netlinks[0], domain, running)
        rows += guest_statuses(scan.states, netlinks[1], domain, running)
    unreadable = tuple(error for scan in scans for error in scan.unreadable)
    return Report(rows, unreadable, unknown, tuple(refused))


def guest_statuses(
    states: States,
    netlink: PodNetlink,
    domain: str | None = None,
    running: frozenset[str] | None = None,
) -> list[GuestStatus]:
    """Every recorded masqueraded NIC (of ``domain``, by name or UUID, when given)."""
    rows = []
    for uuid, state in states.items():
        for record in state.guests if domain in (None, uuid, state.domain) else ():
            nic = record.nic
            try:  # one row that cannot be read live is that row's problem, not the listing's
                found = health.check(record, netlink)
                alive, problem = found.dhcp_alive, "; ".join(found.problems)
            except VmnetError as error:
                alive, problem = False, f"cannot be checked: {error}"
            rows.append(GuestStatus(
                state.domain, uuid, nic.mac, nic.placeholder, nic.pod_end, nic.pod_dev,
                nic.subnet, nic.guest, nic.gateway, nic.pod_ip, record.dnsmasq_pid,
                alive, nic.table, problem, running=None if running is None else uuid in running,
            ))  # fmt: skip
    return rows


def statuses(
    states: States,
    netlink: Netlink,
    domain: str | None = None,
    running: frozenset[str] | None = None,
) -> list[BindingStatus]:
    """Every recorded binding (of ``domain``, by name or UUID, when given), checked live."""
    recorded = [
        (uuid, state.domain, binding)
        for uuid, state in states.items()
        if domain in (None, uuid, state.domain)
        for binding in state.bindings
    ]
    if not recorded:
        return []
    try:
        with netlink.host() as host:
            problems = [_checked(host, b) for _uuid, _name, b in recorded]
    except VmnetError as error:
        problems = [f"cannot be checked: {error}"] * len(recorded)
    return [
        BindingStatus(
            name,
            uuid,
            b.mac,
            b.placeholder,
            b.host_veth,
            b.ifindex,
            problem,
            running=None if running is None else uuid in running,
        )
        for (uuid, name, b), problem in zip(recorded, problems, strict=True)
    ]


def _checked(host: NetlinkSession, binding: Binding) -> str:
    """The binding's problem; one that cannot be read live is that row's alone."""
    try:
        return _problem(host, binding)
    except VmnetError as error:
        return f"cannot be checked: {error}"


def _problem(host: NetlinkSession, binding: Binding) -> str:
    link = host.link_by_name(binding.placeholder)
    if link is None:
        return f"{binding.placeholder} names no link: the pod's veth is gone"
    if link.index != binding.ifindex:
        return (
            f"{binding.placeholder} now names {link.name} (ifindex {link.index}), "
            "not the bound veth"
        )
    if link.kind != "veth" or link.peer_nsid is None:
        return f"{link.name} no longer has its other end in a pod's namespace"
    return ""


def to_json(found: Report) -> list[dict[str, Any]]:
    rows = [{**vars(row), "state": row.state, "stale": row.stale} for row in found.rows]
    return (
        rows
        + [
            {
                "state": "unreadable",
                "path": e.path,
                "uuid": e.uuid or None,
                "problem": e.reason,
                "fix": e.fix,
            }
            for e in found.unreadable
        ]
        + [{"state": "refused", "problem": line} for line in found.refused]
    )


def to_lines(found: Report) -> list[str]:
    """One line per row and per unreadable file."""
    lines = [_line(row) + (f": {row.problem}" if row.problem else "") for row in found.rows]
    lines += [f"{e.path}  unreadable ({e.reason}): {e.fix}" for e in found.unreadable]
    return lines + list(found.refused)


def notes(found: Report) -> list[str]:
    """What the rows cannot say: libvirt was not asked, or how to clear stale ones."""
    if found.libvirt_unknown:
        return [f"cannot ask libvirt which domains run ({found.libvirt_unknown}): "
                "nothing is marked stale"]  # fmt: skip
    stale = sorted({row.domain for row in found.rows if row.stale})
    if not stale:
        return []
    return [f"not running in libvirt, still holding pod NICs: {', '.join(map(repr, stale))}; "
            "`vmnet-hook status --prune` releases them"]  # fmt: skip


def _line(row: Row) -> str:
    """One row; the domain's name (free text from its XML) with its control characters,
    newlines and tabs too, shown escaped: no name makes a line or a column of its own."""
    stale = "  stale" if row.stale else ""
    row = replace(row, domain=printable(row.domain))
    if isinstance(row, BindingStatus):
        return (
            f"{row.domain}  {row.mac}  l2  {row.placeholder} -> {row.host_veth}  "
            f"{row.state}{stale}"
        )
    dhcp = f"dhcp pid {row.dhcp_pid}" if row.dhcp_alive else "dhcp gone"
    return (
        f"{row.domain}  {row.mac}  masquerade  {row.placeholder} -> {row.pod_end} "
        f"({row.pod_dev} {row.pod_ip})  {row.subnet} guest {row.guest}  {dhcp}  "
        f"nft {row.nft_table}  {row.state}{stale}"
    )
