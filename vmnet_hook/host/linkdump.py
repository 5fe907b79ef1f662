"""A fast, read-only rtnetlink reader behind the ``Netlink`` interface, and snapshots.

``vmnet-hook pods`` reads every namespace on the host: pyroute2 decodes every attribute
of every link (about 0.5 ms a link here), which put 1,000 pods at 4 s. ``LinkDump`` asks
for links without statistics and decodes only what ``Link`` holds. It only reads; binding
stays with pyroute2. A session in a pod's namespace is a socket opened there by
``netns.run_in_netns``, as for pyroute2.

``Snapshot`` answers the ``NetlinkSession`` reads from a dump already taken, so that one
dump per namespace serves every check made in it (``Snapshots`` is the ``Netlink`` seam
over them).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

from vmnet_hook.errors import BindError
from vmnet_hook.host.netlink import NSID_NOT_ASSIGNED, Link
from vmnet_hook.host.netns import run_in_netns


class DumpSession:
    """A read-only ``NetlinkSession`` over one NETLINK_ROUTE socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def links(self) -> list[Link]:
        return list(_dump_links(self._sock))

    def link_by_name(self, name: str) -> Link | None:
        return next((k for k in self.links() if name in (k.name, *k.altnames)), None)

    def link_by_index(self, index: int) -> Link | None:
        return next((link for link in self.links() if link.index == index), None)

    def nsid_of(self, netns_path: str) -> int | None:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _nsid_of(self._sock, fd)
        finally:
            os.close(fd)

    def add_altname(self, index: int, altname: str) -> None:
        raise BindError("the link dumper only reads: bind with Pyroute2Netlink")

    def del_altname(self, index: int, altname: str) -> None:
        raise BindError("the link dumper only reads: unbind with Pyroute2Netlink")


class LinkDump:
    """The ``Netlink`` seam, read-only, over raw sockets: for reading many namespaces."""

    def host(self) -> AbstractContextManager[DumpSession]:
        return self._session(_rtnl_socket())

    def netns(self, path: str) -> AbstractContextManager[DumpSession]:
        return self._session(run_in_netns(path, _rtnl_socket))  # opened there, read here

    @staticmethod
    @contextmanager
    def _session(sock: socket.socket) -> Iterator[DumpSession]:
        with sock:
            yield DumpSession(sock)


class Snapshot:
    """A read-only ``NetlinkSession`` over links dumped earlier."""

    def __init__(self, links: Iterable[Link], nsids: dict[str, int | None]) -> None:
        self._links = tuple(links)
        self._by_index = {link.index: link for link in self._links}
        self._by_name = {name: k for k in self._links for name in (k.name, *k.altnames)}
        self._nsids = nsids

    @classmethod
    def of(cls, session: DumpSession, netns_paths: Iterable[str]) -> Snapshot:
        """The session's links, and the nsids of those paths that still open."""
        nsids: dict[str, int | None] = {}
        for path in netns_paths:
            try:
                nsids[path] = session.nsid_of(path)
            except OSError:  # gone since it was listed
                continue
        return cls(session.links(), nsids)

    def link_by_name(self, name: str) -> Link | None:
        return self._by_name.get(name)

    def link_by_index(self, index: int) -> Link | None:
        return self._by_index.get(index)

    def links(self) -> list[Link]:
        return list(self._links)

    def nsid_of(self, netns_path: str) -> int | None:
        return self._nsids.get(netns_path)

    def add_altname(self, index: int, altname: str) -> None:
        raise BindError("a snapshot of links binds nothing: bind with Pyroute2Netlink")

    def del_altname(self, index: int, altname: str) -> None:
        raise BindError("a snapshot of links binds nothing: unbind with Pyroute2Netlink")


class Snapshots:
    """The ``Netlink`` seam over snapshots: the host's, and one per namespace path."""

    def __init__(self, host: Snapshot, namespaces: dict[str, Snapshot]) -> None:
        self._host = host
        self._namespaces = namespaces

    @contextmanager
    def host(self) -> Iterator[Snapshot]:
        yield self._host

    @contextmanager
    def netns(self, path: str) -> Iterator[Snapshot]:
        yield self._namespaces[path]


# --- the wire format -------------------------------------------------------------------

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
IFLA_MTU, IFLA_MASTER, IFLA_IFALIAS = 4, 10, 20
NETNSA_NSID, NETNSA_FD = 1, 3
RTEXT_FILTER_SKIP_STATS = 1 << 3
NLA_TYPE_MASK = 0x3FFF
RECV_BYTES = 1 << 17
_sequence = itertools.count(1)


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
    name, kind, peer_index, peer_nsid, alias, master, mtu = "", None, None, None, None, None, 0
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
        elif attr == IFLA_IFALIAS:
            alias = _text(data, at, until)
        elif attr in (IFLA_MTU, IFLA_MASTER):
            value = int(_U32.unpack_from(data, at)[0])
            mtu, master = (value, master) if attr == IFLA_MTU else (mtu, value)
    return Link(int(index), name, kind, peer_index, peer_nsid, tuple(altnames), alias, mtu, master)


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
