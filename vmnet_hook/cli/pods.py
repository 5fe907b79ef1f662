"""``vmnet-hook pods``: every pod network namespace on this host, its NICs, their host veths.

The whole host is the subject here, so it is read once, never once per pod:

- /proc: one ``stat`` of ``ns/net`` per process, and one read of ``cgroup`` for each process
  outside the host's namespace (its pod UID and container id);
- kubelet's log directories, once, for each UID's ``namespace/name``;
- netlink: one dump of the host's links and one ``RTM_GETNSID`` per pod from a single host
  socket, then one dump inside each pod namespace, through ``host.linkdump``'s fast
  read-only reader (the process itself never leaves the host's namespace);
- each NIC is then checked at both ends by ``resolve.host_end`` itself, over snapshots of
  those dumps, so a NIC listed as usable is one ``resolve`` would hand to a VM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from vmnet_hook.config import Config
from vmnet_hook.errors import ConfigError, PodNotFound, VmnetError
from vmnet_hook.host.kubelet import names_by_uid
from vmnet_hook.host.linkdump import LinkDump, Snapshot, Snapshots
from vmnet_hook.host.netlink import Link
from vmnet_hook.host.netns import HOST_NETNS
from vmnet_hook.host.pods import CgroupPlace, PodNetns, pinned_netns, place_of
from vmnet_hook.host.procfs import NetnsId, ProcFs
from vmnet_hook.host.resolve import host_end
from vmnet_hook.podnet.plan import parse_owner
from vmnet_hook.text import printable


@dataclass(frozen=True)
class PodRef:
    uid: str
    namespace: str | None  # from kubelet's log directory, when there is one
    name: str | None


@dataclass(frozen=True)
class PodNic:
    name: str
    ifindex: int
    kind: str | None
    host_veth: str | None  # the checked host end, or None with ``problem`` saying why
    host_ifindex: int | None
    problem: str | None
    guest: str | None = None  # the UUID of the domain whose masqueraded NIC this NIC carries


@dataclass(frozen=True)
class PodEntry:
    netns: NetnsId
    path: str  # opens the namespace: its pin under netns_dir, or /proc/PID/ns/net
    pinned_as: str | None
    pods: tuple[PodRef, ...]
    containers: tuple[str, ...]
    pids: tuple[int, ...]
    nics: tuple[PodNic, ...]
    problem: str | None = None  # the namespace could not be read


def list_pods(config: Config, proc: ProcFs | None = None) -> list[PodEntry]:
    """Every network namespace on this host other than the host's, pod or not, with its NICs."""
    proc = proc or ProcFs(config.proc_root)
    seen = _namespaces(proc, config.netns_dir)
    names = names_by_uid(config.pod_log_dir)
    paths = {netns: _path_of(found, proc) for netns, found in seen.items()}
    reader = LinkDump()
    with reader.host() as host:
        host_links = Snapshot.of(host, paths.values())
    entries = []
    for netns, found in seen.items():
        inside, problem = _read_inside(reader, paths[netns])
        snapshots = Snapshots(host_links, {paths[netns]: inside})
        entries.append(_entry(netns, found, paths[netns], names, snapshots, problem))
    return sorted(entries, key=_sort_key)


def _read_inside(reader: LinkDump, path: str) -> tuple[Snapshot, str | None]:
    """The namespace's links and the host's nsid there, or why they cannot be read."""
    try:
        with reader.netns(path) as inside:
            return Snapshot.of(inside, [HOST_NETNS]), None
    except OSError as error:
        return Snapshot((), {}), f"cannot read the namespace {path}: {error.strerror}"
    except PodNotFound as error:
        return Snapshot((), {}), str(error)


def to_table(entries: list[PodEntry]) -> str:
    """One line per NIC (or per namespace without one), in aligned columns."""
    header = ("POD", "UID", "NETNS", "CONTAINERS", "NIC", "GUEST", "HOST VETH")
    rows = [tuple(map(printable, row)) for entry in entries for row in _rows(entry)]
    if not rows:
        return "no pod network namespace on this host"
    table = [header, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(header) - 1)]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def to_json(entries: list[PodEntry]) -> str:
    records = []
    for entry in entries:
        record = asdict(entry)
        record["netns"] = {"inode": entry.netns.ino, "dev": entry.netns.dev}
        records.append(record)
    return json.dumps(records, indent=2)


@dataclass
class _Seen:
    pids: list[int] = field(default_factory=list)
    places: list[CgroupPlace] = field(default_factory=list)
    pinned: PodNetns | None = None


def _namespaces(proc: ProcFs, netns_dir: str) -> dict[NetnsId, _Seen]:
    host = proc.host_netns()
    seen: dict[NetnsId, _Seen] = {}
    for pid in proc.pids():
        netns = proc.netns_of(pid)
        if netns is not None and netns != host:
            found = seen.setdefault(netns, _Seen())
            found.pids.append(pid)
            found.places.append(place_of(proc.cgroup_of(pid)))
    for pinned in _pinned(netns_dir, proc):
        seen.setdefault(pinned.netns, _Seen()).pinned = pinned
    return seen


def _pinned(netns_dir: str, proc: ProcFs) -> Iterator[PodNetns]:
    try:
        with os.scandir(netns_dir) as entries:
            names = [entry.name for entry in entries]
    except FileNotFoundError:
        return  # nothing pinned on this host
    except OSError as error:
        raise ConfigError(
            f"config key netns_dir: cannot list {netns_dir} ({error.strerror or error}): set "
            "netns_dir to where `ip netns` pins namespaces (/run/netns)"
        ) from None
    for name in sorted(names):
        try:
            yield pinned_netns(netns_dir, name, proc)
        except VmnetError:
            continue  # not a pin, or the host's own namespace


def _path_of(found: _Seen, proc: ProcFs) -> str:
    if found.pinned is not None:
        return found.pinned.path
    return f"{proc.root}/{min(found.pids)}/ns/net"


def _entry(
    netns: NetnsId,
    found: _Seen,
    path: str,
    names: dict[str, tuple[str, str]],
    snapshots: Snapshots,
    problem: str | None,
) -> PodEntry:
    uids = sorted({place.pod_uid for place in found.places if place.pod_uid})
    pods = tuple(PodRef(uid, *names.get(uid, (None, None))) for uid in uids)
    containers = sorted({place.container_id for place in found.places if place.container_id})
    pod = PodNetns(path, netns, tuple(sorted(found.pids)))
    pinned_as = os.path.basename(found.pinned.path) if found.pinned else None
    with snapshots.netns(path) as inside:
        links = inside.links()
    owners = [owner for link in links if (owner := parse_owner(link.alias or ""))]
    guests = {owner["dev"]: owner["uuid"] for owner in owners}
    nics = tuple(
        replace(_nic(pod, link, snapshots), guest=guests.get(link.name))
        for link in links
        if link.name != "lo" and not parse_owner(link.alias or "")  # guest links are ours
    )
    return PodEntry(netns, path, pinned_as, pods, tuple(containers), pod.pids, nics, problem)


def _nic(pod: PodNetns, link: Link, snapshots: Snapshots) -> PodNic:
    """``link`` checked at both ends, exactly as ``resolve`` checks a pod NIC."""
    try:
        veth = host_end(pod, link.name, snapshots)
    except VmnetError as refused:
        return PodNic(link.name, link.index, link.kind, None, None, str(refused))
    return PodNic(link.name, link.index, link.kind, veth.name, veth.index, None)


def _rows(entry: PodEntry) -> Iterator[tuple[str, ...]]:
    pod = ", ".join(f"{p.namespace}/{p.name}" if p.name else "?" for p in entry.pods) or "-"
    uid = ", ".join(p.uid for p in entry.pods) or "-"
    netns = f"{entry.netns}" + (f" {entry.pinned_as}" if entry.pinned_as else "")
    containers = ",".join(c[:12] for c in entry.containers) or "-"
    if entry.problem or not entry.nics:
        yield (pod, uid, netns, containers, "-", "-", entry.problem or "no NIC but lo")
    for nic in entry.nics:
        host_veth = nic.host_veth or f"refused: {nic.problem}"
        yield (pod, uid, netns, containers, nic.name, nic.guest or "-", host_veth)


def _sort_key(entry: PodEntry) -> tuple[int, str, str, int]:
    if not entry.pods:
        return (2, entry.pinned_as or "", "", entry.netns.ino)
    first = entry.pods[0]
    named = 0 if first.name else 1
    return (named, first.namespace or first.uid, first.name or "", entry.netns.ino)
