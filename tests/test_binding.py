"""Pure tier: binding is all or nothing, refuses taken names, and release tolerates loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeNetlink, veth
from vmnet_hook.core import binding
from vmnet_hook.core.annotation import Claim, Domain, Selector
from vmnet_hook.errors import BindError, Failures
from vmnet_hook.host.netlink import Link
from vmnet_hook.host.procfs import NetnsId
from vmnet_hook.host.resolve import HostVeth
from vmnet_hook.host.state import DomainState, StateStore

UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"


def claim(index: int, placeholder: str) -> Claim:
    return Claim(index, f"52:54:00:00:00:0{index}", Selector("pid", "1"), "eth0", placeholder)


def domain(*claims: Claim) -> Domain:
    return Domain("vm1", UUID, claims)


def host_veth(link: Link) -> HostVeth:
    return HostVeth(link.name, link.index, "eth0", NetnsId(4, 1))


def altnames(netlink: FakeNetlink) -> dict[str, tuple[str, ...]]:
    return {link.name: link.altnames for link in netlink.host_links.values()}


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(str(tmp_path / "state"))


def test_binds_every_placeholder_and_records_it(store: StateStore) -> None:
    links = veth(10, "vethA"), veth(11, "vethB")
    netlink = FakeNetlink(*links)
    vm = domain(claim(1, "vnaaaa"), claim(2, "vnbbbb"))
    bindings = binding.plan(
        vm, {c.mac: host_veth(k) for c, k in zip(vm.claims, links, strict=True)}
    )
    binding.bind_all(vm, bindings, netlink, store)
    assert altnames(netlink) == {"vethA": ("vnaaaa",), "vethB": ("vnbbbb",)}
    assert store.load(UUID) == DomainState("vm1", bindings)


def test_one_failure_unbinds_the_others_and_forgets_the_domain(store: StateStore) -> None:
    links = veth(10, "vethA"), veth(11, "vethB")
    netlink = FakeNetlink(*links, fail_on={"vnbbbb"})
    vm = domain(claim(1, "vnaaaa"), claim(2, "vnbbbb"))
    bindings = binding.plan(
        vm, {c.mac: host_veth(k) for c, k in zip(vm.claims, links, strict=True)}
    )
    with pytest.raises(BindError, match="cannot bind altname vnbbbb"):
        binding.bind_all(vm, bindings, netlink, store)
    assert altnames(netlink) == {"vethA": (), "vethB": ()}
    assert store.load(UUID) is None


def test_an_interruption_after_the_kernel_bound_still_unbinds_everything(
    store: StateStore,
) -> None:
    links = veth(10, "vethA"), veth(11, "vethB")
    netlink = FakeNetlink(*links, fail_after={"vnbbbb"})
    vm = domain(claim(1, "vnaaaa"), claim(2, "vnbbbb"))
    bindings = binding.plan(
        vm, {c.mac: host_veth(k) for c, k in zip(vm.claims, links, strict=True)}
    )
    with pytest.raises(KeyboardInterrupt):
        binding.bind_all(vm, bindings, netlink, store)
    assert altnames(netlink) == {"vethA": (), "vethB": ()}
    assert store.load(UUID) is None


def test_an_unreadable_state_file_blocks_every_claim_until_it_is_removed(
    store: StateStore,
) -> None:
    """It may record who holds this very NIC: claims fail closed, naming the file."""
    netlink = FakeNetlink(veth(10, "vethA"))
    Path(store.state_dir).mkdir()
    other = "11111111-1111-4111-8111-111111111111"
    Path(store.path(other)).write_text("{truncated")
    vm = domain(claim(1, "vnaaaa"))
    bindings = binding.plan(vm, {vm.claims[0].mac: host_veth(veth(10, "vethA"))})
    with pytest.raises(Failures) as caught:
        binding.bind_all(vm, bindings, netlink, store)
    assert str(caught.value) == (
        f"domain 'vm1': cannot tell who holds its pod NICs: state file {store.path(other)} is "
        "unreadable (not JSON: Expecting property name enclosed in double quotes: line 1 "
        f"column 2 (char 1)): if no running domain has UUID {other}, remove it; "
        "`vmnet-hook status` lists it"
    )
    assert altnames(netlink) == {"vethA": ()}
    assert store.load(UUID) is None
    Path(store.path(other)).unlink()
    binding.bind_all(vm, bindings, netlink, store)
    assert altnames(netlink) == {"vethA": ("vnaaaa",)}


def test_a_placeholder_that_names_another_link_is_refused_before_anything_binds(
    store: StateStore,
) -> None:
    netlink = FakeNetlink(veth(10, "vethA"), veth(3, "eth1"))
    vm = domain(claim(1, "vnaaaa"), claim(2, "eth1"))
    target = host_veth(netlink.host_links[10])
    with pytest.raises(Failures) as caught:
        binding.bind_all(vm, binding.plan(vm, {c.mac: target for c in vm.claims}), netlink, store)
    assert str(caught.value) == (
        "domain 'vm1', interface 52:54:00:00:00:02: placeholder <source dev='eth1'> is already "
        "a name of host link eth1 (ifindex 3); choose a name no link has"
    )
    assert altnames(netlink)["vethA"] == ()
    assert store.load(UUID) is None


def test_source_dev_already_naming_the_veth_binds_nothing_but_holds_the_nic(
    store: StateStore,
) -> None:
    netlink = FakeNetlink(veth(10, "vethA"))
    restored = domain(claim(1, "vethA"))  # as after a migrate or restore filter
    target = {restored.claims[0].mac: host_veth(netlink.host_links[10])}
    binding.bind_all(restored, binding.plan(restored, target), netlink, store)
    assert altnames(netlink) == {"vethA": ()}
    other = Domain("vm0", "00000000-0000-4000-8000-000000000000", (claim(1, "vnzzzz"),))
    with pytest.raises(Failures, match="pod NIC vethA is already used by running domain 'vm1'"):
        binding.bind_all(other, binding.plan(other, target), netlink, store)
    assert binding.release(UUID, netlink, store) == []
    assert altnames(netlink) == {"vethA": ()}


def test_a_pod_nic_already_used_by_another_domain_is_refused(store: StateStore) -> None:
    netlink = FakeNetlink(veth(10, "vethA"))
    other = Domain("vm0", "00000000-0000-4000-8000-000000000000", (claim(1, "vnzzzz"),))
    target = {claim(1, "").mac: host_veth(netlink.host_links[10])}
    binding.bind_all(other, binding.plan(other, target), netlink, store)
    vm = domain(claim(1, "vnaaaa"))
    with pytest.raises(Failures, match="pod NIC vethA is already used by running domain 'vm0'"):
        binding.bind_all(vm, binding.plan(vm, target), netlink, store)


def test_release_removes_only_what_is_still_ours_and_tolerates_gone_links(
    store: StateStore,
) -> None:
    netlink = FakeNetlink(veth(10, "vethA"), veth(11, "vethB"))
    vm = domain(claim(1, "vnaaaa"), claim(2, "vnbbbb"))
    veths = {vm.claims[0].mac: host_veth(netlink.host_links[10]),
             vm.claims[1].mac: host_veth(netlink.host_links[11])}  # fmt: skip
    binding.bind_all(vm, binding.plan(vm, veths), netlink, store)
    del netlink.host_links[11]  # the pod went away first
    assert binding.release(UUID, netlink, store) == []
    assert altnames(netlink) == {"vethA": ()}
    assert store.load(UUID) is None
    assert binding.release(UUID, netlink, store) == []  # idempotent


def test_status_marks_bindings_whose_veth_went_away(store: StateStore) -> None:
    from vmnet_hook.cli.status import statuses

    netlink = FakeNetlink(veth(10, "vethA"), veth(11, "vethB"))
    vm = domain(claim(1, "vnaaaa"), claim(2, "vnbbbb"))
    veths = {vm.claims[0].mac: host_veth(netlink.host_links[10]),
             vm.claims[1].mac: host_veth(netlink.host_links[11])}  # fmt: skip
    binding.bind_all(vm, binding.plan(vm, veths), netlink, store)
    del netlink.host_links[11]
    rows = [
        (s.domain, s.placeholder, s.host_veth, s.state, s.problem)
        for s in statuses(store.all(), netlink)
    ]
    assert rows == [
        ("vm1", "vnaaaa", "vethA", "ok", ""),
        ("vm1", "vnbbbb", "vethB", "broken", "vnbbbb names no link: the pod's veth is gone"),
    ]
    assert statuses(store.all(), netlink, "other-vm") == []
    assert len(statuses(store.all(), netlink, UUID)) == 2
