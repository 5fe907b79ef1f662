"""The seam for netlink: a small interface and its one pyroute2 implementation.

pyroute2 is imported here only, and only when a session is opened: the hook's
nothing-to-do path never pays for it. A session in a pod's namespace is a socket opened
there by ``netns.run_in_netns`` and used from the calling thread. ``linkdump`` serves
the same interface, read-only, for listing every pod at once.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from vmnet_hook.errors import BindError, ReadError
from vmnet_hook.host.netns import run_in_netns

NSID_NOT_ASSIGNED = 0xFFFFFFFF


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "veth", "macvlan", ... None for physical NICs
    peer_index: int | None  # IFLA_LINK
    peer_nsid: int | None  # IFLA_LINK_NETNSID, None when the peer is in the same netns
    altnames: tuple[str, ...]


class NetlinkSession(Protocol):
    """rtnetlink in one network namespace."""

    def link_by_name(self, name: str) -> Link | None: ...
    def link_by_index(self, index: int) -> Link | None: ...
    def links(self) -> list[Link]: ...
    def nsid_of(self, netns_path: str) -> int | None: ...
    def add_altname(self, index: int, altname: str) -> None: ...
    def del_altname(self, index: int, altname: str) -> None: ...


class Netlink(Protocol):
    """Opens sessions: in the host's namespace, or in the namespace at a path."""

    def host(self) -> AbstractContextManager[NetlinkSession]: ...
    def netns(self, path: str) -> AbstractContextManager[NetlinkSession]: ...


class Pyroute2Session:
    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def link_by_name(self, name: str) -> Link | None:
        return self._get(ifname=name) if len(name) <= 15 else self._get(altname=name)

    def link_by_index(self, index: int) -> Link | None:
        return self._get(index=index)

    def links(self) -> list[Link]:
        return [_link(msg) for msg in self._ipr.link("dump")]

    def nsid_of(self, netns_path: str) -> int | None:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            answer = self._ipr.get_netnsid(fd=fd)
        finally:
            os.close(fd)
        nsid = answer.get("nsid") if answer else None
        return None if nsid is None or nsid == NSID_NOT_ASSIGNED else int(nsid)

    def add_altname(self, index: int, altname: str) -> None:
        self._change("property_add", index, altname)

    def del_altname(self, index: int, altname: str) -> None:
        self._change("property_del", index, altname)

    def _change(self, command: str, index: int, altname: str) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.link(command, index=index, altname=altname)
        except NetlinkError as error:
            verb = "bind" if command == "property_add" else "unbind"
            raise BindError(
                f"cannot {verb} altname {altname} on ifindex {index}: {error}; "
                "`vmnet-hook doctor` checks that this kernel binds altnames"
            ) from None

    def _get(self, **query: Any) -> Link | None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return _link(self._ipr.link("get", **query)[0])
        except NetlinkError as error:
            if error.code == errno.ENODEV:
                return None
            raise ReadError(
                f"netlink: cannot read link {query}: {error}; run the hook as root, as "
                "libvirtd does"
            ) from None


class Pyroute2Netlink:
    @contextmanager
    def host(self) -> Iterator[Pyroute2Session]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            yield Pyroute2Session(ipr)

    @contextmanager
    def netns(self, path: str) -> Iterator[Pyroute2Session]:
        from pyroute2 import IPRoute

        sock = run_in_netns(path, _route_socket)  # opened there, used from here
        with IPRoute(fileno=sock.detach()) as ipr:
            yield Pyroute2Session(ipr)


def _route_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)


def _link(msg: Any) -> Link:
    props = msg.get_attr("IFLA_PROP_LIST")
    altnames = tuple(props.get_attrs("IFLA_ALT_IFNAME")) if props else ()
    peer_nsid = msg.get_attr("IFLA_LINK_NETNSID")
    return Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        peer_index=msg.get_attr("IFLA_LINK"),
        peer_nsid=None if peer_nsid is None else int(peer_nsid),
        altnames=altnames,
    )
