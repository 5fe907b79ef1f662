"""``vmnet-hook pods``: every pod network namespace on this host, its NICs, their host veths.

The whole host is the subject here, so it is read once, never once per pod:

- /proc: one ``stat`` of ``ns/net`` per process, and one read of ``cgroup`` for each process
  outside the host's namespace (its pod UID and container id);
- kubelet's log directories, once, for each UID's ``namespace/name``;
- netlink: one dump of the host's links and one ``RTM_GETNSID`` per pod from a single host
  socket, then one dump inside each pod namespace from a single worker thread that steps
  from namespace to namespace (the process itself never leaves the host's);
- each NIC is then checked at both ends by ``resolve.host_end`` itself, over snapshots of
  those dumps, so a NIC listed as usable is one ``resolve`` would hand to a VM.

The dumps are read with a small read-only rtnetlink reader of their own: pyroute2 decodes
every attribute of every link (about 0.5 ms a link here) and needs a thread per namespace,
which put 1,000 pods at 4 s. This reader only reads; binding stays with pyroute2.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from vmnet_hook.config import Config
from vmnet_hook.errors import BindError, VmnetError
from vmnet_hook.host.netlink import HOST_NETNS, NSID_NOT_ASSIGNED, Link, enter_netns, setns
from vmnet_hook.host.pods import (
    CgroupPlace,
    NetnsId,
    PodNetns,
    ProcFs,
    is_pod_uid,
    normal_uid,
    pinned_netns,
    place_of,
)
from vmnet_hook.host.resolve import host_end


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
    names = pod_names(config.pod_log_dir)
    paths = {netns: _path_of(found, proc) for netns, found in seen.items()}
    inside = dump_in_each(list(paths.values()))
    host = _host_snapshot(list(paths.values()))
    entries = [
        _entry(netns, found, paths[netns], names, host, inside[paths[netns]])
        for netns, found in seen.items()
    ]
    return sorted(entries, key=_sort_key)


def to_table(entries: list[PodEntry]) -> str:
    """One line per NIC (or per namespace without one), in aligned columns."""
    header = ("POD", "UID", "NETNS", "CONTAINERS", "NIC", "HOST VETH")
    rows = [row for entry in entries for row in _rows(entry)]
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


def pod_names(pod_log_dir: str) -> dict[str, tuple[str, str]]:
    """UID to ``(namespace, name)``, from kubelet's ``<namespace>_<name>_<uid>`` dirs."""
    names: dict[str, tuple[str, str]] = {}
    try:
        with os.scandir(pod_log_dir) as entries:
            for entry in entries:
                parts = entry.name.split("_")
                if len(parts) == 3 and is_pod_uid(parts[2]) and entry.is_dir():
                    names[normal_uid(parts[2])] = (parts[0], parts[1])
    except OSError:
        pass  # no kubelet here: pods are listed by UID alone
    return names


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
    except OSError:
        return
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
    host: _Session,
    inside: _Dump,
) -> PodEntry:
    uids = sorted({place.pod_uid for place in found.places if place.pod_uid})
    pods = tuple(PodRef(uid, *names.get(uid, (None, None))) for uid in uids)
    containers = sorted({place.container_id for place in found.places if place.container_id})
    pod = PodNetns(path, netns, tuple(sorted(found.pids)))
    pinned_as = os.path.basename(found.pinned.path) if found.pinned else None
    snapshots = _Snapshots(host, {path: _Session(inside.links, {HOST_NETNS: inside.host_nsid})})
    nics = tuple(_nic(pod, link, snapshots) for link in inside.links if link.name != "lo")
    return PodEntry(
        netns, path, pinned_as, pods, tuple(containers), pod.pids, nics, inside.problem
    )


def _nic(pod: PodNetns, link: Link, snapshots: _Snapshots) -> PodNic:
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
        yield (pod, uid, netns, containers, "-", entry.problem or "no NIC but lo")
    for nic in entry.nics:
        host_veth = nic.host_veth or f"refused: {nic.problem}"
        yield (pod, uid, netns, containers, nic.name, host_veth)


def _sort_key(entry: PodEntry) -> tuple[int, str, str, int]:
    if not entry.pods:
        return (2, entry.pinned_as or "", "", entry.netns.ino)
    first = entry.pods[0]
    named = 0 if first.name else 1
    return (named, first.namespace or first.uid, first.name or "", entry.netns.ino)


# --- snapshots: the Netlink seam, served from dumps already taken -------------------------


class _Session:
    """A read-only ``NetlinkSession`` over links dumped earlier."""

    def __init__(self, links: tuple[Link, ...], nsids: dict[str, int | None]) -> None:
        self._links = links
        self._by_index = {link.index: link for link in links}
        self._by_name = {name: link for link in links for name in (link.name, *link.altnames)}
        self._nsids = nsids

    def link_by_name(self, name: str) -> Link | None:
        return self._by_name.get(name)

    def link_by_index(self, index: int) -> Link | None:
        return self._by_index.get(index)

    def links(self) -> list[Link]:
        return list(self._links)

    def nsid_of(self, netns_path: str) -> int | None:
        return self._nsids.get(netns_path)

    def add_altname(self, index: int, altname: str) -> None:
        raise BindError("a pod listing binds nothing")

    def del_altname(self, index: int, altname: str) -> None:
        raise BindError("a pod listing binds nothing")


class _Snapshots:
    """The ``Netlink`` seam over snapshots: the host's, and one per pod namespace path."""

    def __init__(self, host: _Session, pods: dict[str, _Session]) -> None:
        self._host = host
        self._pods = pods

    @contextmanager
    def host(self) -> Iterator[_Session]:
        yield self._host

    @contextmanager
    def netns(self, path: str) -> Iterator[_Session]:
        yield self._pods[path]


# --- a read-only rtnetlink reader ------------------------------------------------------

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTA = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK, RTM_NEWNSID, RTM_GETNSID = 16, 18, 88, 90
IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_EXT_MASK = 3, 5, 18, 29
IFLA_LINK_NETNSID, IFLA_PROP_LIST, IFLA_ALT_IFNAME, IFLA_INFO_KIND = 37, 52, 53, 1
NETNSA_NSID, NETNSA_FD = 1, 3
RTEXT_FILTER_SKIP_STATS = 1 << 3
NLA_TYPE_MASK = 0x3FFF
RECV_BYTES = 1 << 17
_sequence = itertools.count(1)


@dataclass(frozen=True)
class _Dump:
    links: tuple[Link, ...]
    host_nsid: int | None  # the host's namespace as numbered inside this one
    problem: str | None = None


def dump_in_each(paths: list[str]) -> dict[str, _Dump]:
    """Links in each namespace, and the host's nsid there, from one worker thread."""
    dumps: dict[str, _Dump] = {}
    failure: list[BaseException] = []

    def step_through() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException as error:
            failure.append(error)
            return
        try:
            for path in paths:
                dumps[path] = _dump_inside(path, home)
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)
        finally:
            setns(home)  # the thread ends here, but leaves at home all the same
            os.close(home)

    worker = threading.Thread(target=step_through, name="vmnet-pods", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return dumps


def _dump_inside(path: str, home: int) -> _Dump:
    try:
        enter_netns(path)
        with _rtnl_socket() as sock:
            return _Dump(tuple(_dump_links(sock)), _nsid_of(sock, home))
    except OSError as error:
        return _Dump((), None, f"cannot read the namespace {path}: {error.strerror}")


def _host_snapshot(paths: list[str]) -> _Session:
    with _rtnl_socket() as sock:
        links = tuple(_dump_links(sock))
        nsids: dict[str, int | None] = {}
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                nsids[path] = _nsid_of(sock, fd)
            finally:
                os.close(fd)
    return _Session(links, nsids)


def _rtnl_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    sock.bind((0, 0))
    return sock


def _dump_links(sock: socket.socket) -> Iterator[Link]:
    request = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr_u32(
        IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS
    )
    for kind, data, start, end in _exchange(sock, RTM_GETLINK, NLM_F_DUMP, request):
        if kind == RTM_NEWLINK:
            yield _link(data, start, end)


def _nsid_of(sock: socket.socket, netns_fd: int) -> int | None:
    request = b"\0\0\0\0" + _attr_u32(NETNSA_FD, netns_fd)  # rtgenmsg, padded
    for kind, data, start, end in _exchange(sock, RTM_GETNSID, 0, request):
        if kind == RTM_NEWNSID:
            for attr, at, _ in _attrs(data, start + 4, end):
                if attr == NETNSA_NSID:
                    nsid = int(_U32.unpack_from(data, at)[0])
                    return None if nsid == NSID_NOT_ASSIGNED else nsid
    return None


def _exchange(
    sock: socket.socket, kind: int, flags: int, body: bytes
) -> Iterator[tuple[int, bytes, int, int]]:
    """Send one request; yield each answer as (type, buffer, payload start, end)."""
    sequence = next(_sequence) & 0xFFFFFFFF
    header = _NLMSG.pack(_NLMSG.size + len(body), kind, flags | NLM_F_REQUEST, sequence, 0)
    sock.send(header + body)
    while True:
        data = sock.recv(RECV_BYTES)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, answer, _flags, answered, _port = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size:
                raise OSError(71, "malformed netlink answer")  # EPROTO
            if answered == sequence:
                if answer == NLMSG_DONE:
                    return
                if answer == NLMSG_ERROR:
                    error = _S32.unpack_from(data, offset + _NLMSG.size)[0]
                    if error:
                        raise OSError(-error, os.strerror(-error))
                    return
                yield answer, data, offset + _NLMSG.size, offset + length
                if not flags & NLM_F_DUMP:
                    return
            offset += (length + 3) & ~3


def _link(data: bytes, start: int, end: int) -> Link:
    index = _IFINFO.unpack_from(data, start)[2]
    name, kind, peer_index, peer_nsid = "", None, None, None
    altnames: list[str] = []
    for attr, at, until in _attrs(data, start + _IFINFO.size, end):
        if attr == IFLA_IFNAME:
            name = _text(data, at, until)
        elif attr == IFLA_LINK:
            peer_index = int(_U32.unpack_from(data, at)[0])
        elif attr == IFLA_LINK_NETNSID:
            peer_nsid = int(_S32.unpack_from(data, at)[0])
        elif attr == IFLA_LINKINFO:
            kind = next(_texts(data, at, until, IFLA_INFO_KIND), None)
        elif attr == IFLA_PROP_LIST:
            altnames += _texts(data, at, until, IFLA_ALT_IFNAME)
    return Link(int(index), name, kind, peer_index, peer_nsid, tuple(altnames))


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Each attribute as (type, payload start, payload end)."""
    while start + _RTA.size <= end:
        length, attr = _RTA.unpack_from(data, start)
        if length < _RTA.size:
            return
        yield attr & NLA_TYPE_MASK, start + _RTA.size, start + length
        start += (length + 3) & ~3


def _texts(data: bytes, start: int, end: int, wanted: int) -> Iterator[str]:
    """The string attributes of type ``wanted`` nested in ``data[start:end]``."""
    return (
        _text(data, at, until) for attr, at, until in _attrs(data, start, end) if attr == wanted
    )


def _attr_u32(attr: int, value: int) -> bytes:
    return _RTA.pack(_RTA.size + 4, attr) + _U32.pack(value)


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].split(b"\0", 1)[0].decode("utf-8", "replace")
