"""Fakes for pure-logic tests only: an in-memory rtnetlink. The kernel tiers use the real one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from vmnet_hook.errors import BindError
from vmnet_hook.host.netlink import Link


class FakeSession:
    def __init__(self, links: dict[int, Link], fail_on: set[str], fail_after: set[str]) -> None:
        self.links_by_index = links
        self.fail_on = fail_on
        self.fail_after = fail_after

    def link_by_name(self, name: str) -> Link | None:
        found = [k for k in self.links_by_index.values() if name == k.name or name in k.altnames]
        return found[0] if found else None

    def link_by_index(self, index: int) -> Link | None:
        return self.links_by_index.get(index)

    def links(self) -> list[Link]:
        return list(self.links_by_index.values())

    def nsid_of(self, netns_path: str) -> int | None:
        return 0

    def add_altname(self, index: int, altname: str) -> None:
        if altname in self.fail_on or self.link_by_name(altname) is not None:
            raise BindError(
                f"cannot bind altname {altname} on ifindex {index}: (17, 'File exists')"
            )
        link = self.links_by_index[index]
        self.links_by_index[index] = dataclasses.replace(link, altnames=(*link.altnames, altname))
        if altname in self.fail_after:  # the kernel did it, but the call did not return
            raise KeyboardInterrupt

    def del_altname(self, index: int, altname: str) -> None:
        link = self.links_by_index[index]
        kept = tuple(a for a in link.altnames if a != altname)
        self.links_by_index[index] = dataclasses.replace(link, altnames=kept)


class FakeNetlink:
    """Host links only; ``fail_on`` names altnames whose binding the 'kernel' refuses,
    ``fail_after`` those whose binding is interrupted after the kernel made it."""

    def __init__(
        self, *links: Link, fail_on: set[str] | None = None, fail_after: set[str] | None = None
    ) -> None:
        self.host_links = {link.index: link for link in links}
        self.fail_on = fail_on or set()
        self.fail_after = fail_after or set()

    @contextmanager
    def host(self) -> Iterator[FakeSession]:
        yield FakeSession(self.host_links, self.fail_on, self.fail_after)

    @contextmanager
    def netns(self, path: str) -> Iterator[FakeSession]:
        raise AssertionError("pure tests do not resolve pods")
        yield  # pragma: no cover


def veth(index: int, name: str, *altnames: str) -> Link:
    return Link(index, name, "veth", peer_index=2, peer_nsid=0, altnames=altnames)


def upper(
    index: int, name: str, lower: int, kind: str = "macvtap", nsid: int | None = None
) -> Link:
    """A macvtap (or macvlan...) on ifindex ``lower``; ``nsid`` when the lower link is in
    another namespace (IFLA_LINK_NETNSID), whose ifindex says nothing about ours."""
    return Link(index, name, kind, peer_index=lower, peer_nsid=nsid, altnames=())
