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

from vmnet_hook.errors import BindError, PodNetError, ReadError
from vmnet_hook.host.netns import run_in_netns

NSID_NOT_ASSIGNED = 0xFFFFFFFF
RTN_UNICAST, RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT = 1, 6, 7, 8


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "veth", "macvlan", ... None for physical NICs
    peer_index: int | None  # IFLA_LINK
    peer_nsid: int | None  # IFLA_LINK_NETNSID, None when the peer is in the same netns
    altnames: tuple[str, ...]
    alias: str | None = None  # IFLA_IFALIAS
    mtu: int = 0
    master: int | None = None  # IFLA_MASTER: the bridge (or bond) this link is a port of


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


class PodSession(NetlinkSession, Protocol):
    """What building a masqueraded NIC's pod side needs besides reading links."""

    def ipv4_addresses(self) -> list[tuple[int, str]]: ...
    def ipv4_routes(self) -> list[tuple[str, int | None]]: ...
    def add_veth(
        self, name: str, peer: str, peer_netns_fd: int, peer_mac: str, mtu: int
    ) -> None: ...
    def set_link(
        self, index: int, *, up: bool | None = None, alias: str | None = None
    ) -> None: ...
    def add_address(self, index: int, address: str, prefixlen: int) -> None: ...
    def del_link(self, index: int) -> None: ...


class PodNetlink(Protocol):
    """``Netlink`` whose sessions can also make links, addresses and read routes."""

    def host(self) -> AbstractContextManager[PodSession]: ...
    def netns(self, path: str) -> AbstractContextManager[PodSession]: ...


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

    def ipv4_addresses(self) -> list[tuple[int, str]]:
        """(ifindex, "address/prefixlen") of every IPv4 address."""
        return [
            (int(msg["index"]), f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            for msg in self._ipr.addr("dump", family=socket.AF_INET)
        ]

    def ipv4_routes(self) -> list[tuple[str, int | None]]:
        """("destination/prefixlen", output ifindex) of every IPv4 route in every table
        (pyroute2 dumps them all unless given a table)."""
        routes = []
        for msg in self._ipr.route("dump", family=socket.AF_INET):
            if msg["type"] not in (RTN_UNICAST, RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT):
                continue  # local, broadcast and multicast routes follow the addresses
            dst = msg.get_attr("RTA_DST") or "0.0.0.0"
            routes.append((f"{dst}/{msg['dst_len']}", msg.get_attr("RTA_OIF")))
        return routes

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, peer_mac: str, mtu: int) -> None:
        peer_spec = {"ifname": peer, "net_ns_fd": peer_netns_fd, "address": peer_mac, "mtu": mtu}
        self._write(f"create veth pair {name}/{peer}", "link", "add", ifname=name,
                    kind="veth", mtu=mtu, peer=peer_spec)  # fmt: skip

    def set_link(self, index: int, *, up: bool | None = None, alias: str | None = None) -> None:
        changes: dict[str, Any] = {}
        if up is not None:
            changes["state"] = "up" if up else "down"
        if alias is not None:
            changes["ifalias"] = alias
        self._write(f"set link {index}", "link", "set", index=index, **changes)

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        self._write(f"add {address}/{prefixlen} to link {index}", "addr", "add",
                    index=index, address=address, prefixlen=prefixlen)  # fmt: skip

    def del_link(self, index: int) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.link("del", index=index)
        except NetlinkError as error:
            if error.code != errno.ENODEV:
                raise PodNetError(f"cannot delete link {index}: {error}") from None

    def _write(self, what: str, method: str, command: str, **spec: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            getattr(self._ipr, method)(command, **spec)
        except NetlinkError as error:
            raise PodNetError(f"cannot {what}: {error}") from None

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
        alias=msg.get_attr("IFLA_IFALIAS"),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        master=msg.get_attr("IFLA_MASTER"),
    )
