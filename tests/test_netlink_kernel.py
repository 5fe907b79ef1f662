"""Kernel tier: the one namespace helper, and the two Netlink implementations agreeing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import MakePod
from vmnet_hook.errors import PodNotFound
from vmnet_hook.host.linkdump import LinkDump
from vmnet_hook.host.netlink import Netlink, Pyroute2Netlink
from vmnet_hook.host.netns import HOST_NETNS, run_in_netns

pytestmark = pytest.mark.kernel


def netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_run_in_netns_runs_there_and_hands_back_the_result(make_pod: MakePod) -> None:
    pod = make_pod()
    inside = run_in_netns(pod.netns_path, lambda: netns_inode("/proc/thread-self/ns/net"))
    assert inside == netns_inode(pod.netns_path) != netns_inode(HOST_NETNS)
    assert netns_inode("/proc/thread-self/ns/net") == netns_inode(HOST_NETNS)  # we never left


def test_run_in_netns_raises_works_exception_here(make_pod: MakePod) -> None:
    pod = make_pod()

    def fail() -> None:
        raise KeyError("from inside")

    with pytest.raises(KeyError, match="from inside"):
        run_in_netns(pod.netns_path, fail)


def test_run_in_netns_never_creates_the_namespace(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-netns"
    with pytest.raises(PodNotFound) as caught:
        run_in_netns(str(missing), lambda: None)
    assert str(caught.value) == (
        f"cannot enter network namespace {missing}: No such file or directory"
    )
    assert not missing.exists()


@pytest.mark.parametrize("reader", [LinkDump(), Pyroute2Netlink()], ids=["linkdump", "pyroute2"])
def test_both_readers_see_the_same_links_and_nsids(make_pod: MakePod, reader: Netlink) -> None:
    pod = make_pod("eth0")
    reference = Pyroute2Netlink()
    with reader.netns(pod.netns_path) as inside, reference.netns(pod.netns_path) as expected:
        assert sorted(inside.links(), key=lambda k: k.index) == sorted(
            expected.links(), key=lambda k: k.index
        )
        assert inside.nsid_of(HOST_NETNS) == expected.nsid_of(HOST_NETNS) is not None
        eth0 = inside.link_by_name("eth0")
        assert eth0 is not None and eth0.kind == "veth"
    with reader.host() as host:
        veth = host.link_by_index(eth0.peer_index or 0)
        assert veth is not None and veth.name == pod.host_veth
        assert host.link_by_name(pod.host_veth) == veth
