"""Pure tier: binding is all or nothing, refuses taken names, and release tolerates loss."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.fakes import FakeNetlink, upper, veth
from vmnet_hook.core import binding
from vmnet_hook.core.annotation import Claim, Domain, Selector
from vmnet_hook.errors import BindError, Failures
from vmnet_hook.host.netlink import Link
from vmnet_hook.host.procfs import NetnsId
from vmnet_hook.host.resolve import HostVeth
from vmnet_hook.host.state import Binding, DomainState, StateStore
from vmnet_hook.podnet.plan import Dns, GuestNic
from vmnet_hook.podnet.record import GuestRecord, Note

UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"


def claim(index: int, placeholder: str) -> Claim:
    return Claim(index, f"52:54:00:00:00:0{index}", Selector("pid", "1"), "eth0", placeholder)


def domain(*claims: Claim) -> Domain:
    return Domain("vm1", UUID, claims)


def host_veth(link: Link) -> HostVeth:
    """The host end of eth0 in a pod of its own (one pod per host veth)."""
    return HostVeth(link.name, link.index, "eth0", NetnsId(4, 1000 + link.index))


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
    netlink = FakeNetlink(veth(10, "vethA"), veth(11, "vethB"), veth(3, "eth1"))
    vm = domain(claim(1, "vnaaaa"), claim(2, "eth1"))
    veths = {vm.claims[0].mac: host_veth(netlink.host_links[10]),
             vm.claims[1].mac: host_veth(netlink.host_links[11])}  # fmt: skip
    with pytest.raises(Failures) as caught:
        binding.bind_all(vm, binding.plan(vm, veths), netlink, store)
    assert str(caught.value) == (
        "domain 'vm1', interface 52:54:00:00:00:02: placeholder <source dev='eth1'> is already "
        "a name of host link eth1 (ifindex 3); choose a name no link has"
    )
    assert altnames(netlink)["vethA"] == altnames(netlink)["vethB"] == ()
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


@pytest.mark.parametrize("kind", ["macvtap", "macvlan", "ipvtap"])
def test_a_guest_link_on_the_host_veth_is_refused_naming_it(store: StateStore, kind: str) -> None:
    """Rule 3: whoever made it (a domain without the annotation, lost state), the kernel
    shows the veth in use; the restore case (source dev already the veth) included."""
    netlink = FakeNetlink(veth(10, "vethA"), veth(11, "vethB"), upper(20, "macvtap3", 10, kind))
    vm = domain(claim(1, "vnaaaa"), claim(2, "vethB"))
    veths = {vm.claims[0].mac: host_veth(netlink.host_links[10]),
             vm.claims[1].mac: host_veth(netlink.host_links[11])}  # fmt: skip
    with pytest.raises(Failures) as caught:
        binding.bind_all(vm, binding.plan(vm, veths), netlink, store)
    assert str(caught.value) == (
        f"domain 'vm1', interface 52:54:00:00:00:01: host veth vethA already carries macvtap3 "
        f"({kind}, ifindex 20); a second guest on one pod NIC is refused: stop the domain that "
        "uses it, or delete a leftover with `ip link del macvtap3`"
    )
    assert altnames(netlink)["vethA"] == altnames(netlink)["vethB"] == ()
    assert store.load(UUID) is None
    restored = domain(claim(1, "vethA"))
    with pytest.raises(Failures, match="host veth vethA already carries macvtap3"):
        binding.bind_all(restored, binding.plan(restored, {restored.claims[0].mac: veths[
            vm.claims[0].mac]}), netlink, store)  # fmt: skip


def test_links_stacked_elsewhere_do_not_count(store: StateStore) -> None:
    """A macvlan whose lower link is in another namespace, a vlan on the veth, a macvtap on
    another veth: none of them holds vethA."""
    netlink = FakeNetlink(veth(10, "vethA"), veth(11, "vethB"), upper(20, "mvt0", 10, nsid=3),
                          upper(21, "vl0", 10, "vlan"), upper(22, "mvt1", 11))  # fmt: skip
    vm = domain(claim(1, "vnaaaa"))
    binding.bind_all(vm, binding.plan(vm, {vm.claims[0].mac: host_veth(netlink.host_links[10])}),
                     netlink, store)  # fmt: skip
    assert altnames(netlink)["vethA"] == ("vnaaaa",)


def test_two_nics_of_one_domain_never_claim_one_pod_nic(store: StateStore) -> None:
    """By host veth (an altname of eth0 as pod_dev resolves to the same veth), and by the
    pod's namespace and NIC across modes (the masqueraded claim's pod given by ``pods``)."""
    netlink = FakeNetlink(veth(10, "vethA"))
    target = host_veth(netlink.host_links[10])
    by_altname = Claim(2, "52:54:00:00:00:02", Selector("pod-uid", "u"), "eth0-long-altname",
                       "vnbbbb")  # fmt: skip
    vm = domain(claim(1, "vnaaaa"), by_altname)
    with pytest.raises(Failures) as caught:
        binding.plan(vm, {c.mac: target for c in vm.claims})
    assert str(caught.value) == (
        "domain 'vm1', interface 52:54:00:00:00:02: pod NIC eth0 of net:[1010] (host veth "
        "vethA) is also claimed by interface 52:54:00:00:00:01; one pod NIC serves one "
        "domain NIC"
    )
    masqueraded = Claim(2, "52:54:00:00:00:02", Selector("netns", "p"), "eth0", "vnbbbb",
                        "masquerade")  # fmt: skip
    mixed = domain(claim(1, "vnaaaa"), masqueraded)
    with pytest.raises(Failures, match="pod NIC eth0 of net:\\[1010\\] is also claimed by "
                       "interface 52:54:00:00:00:01"):  # fmt: skip
        binding.plan(mixed, {mixed.claims[0].mac: target}, {masqueraded.mac: target.pod_netns})
    other_pod = binding.plan(mixed, {mixed.claims[0].mac: target},
                             {masqueraded.mac: NetnsId(4, 7)})  # fmt: skip
    assert [b.mac for b in other_pod] == [mixed.claims[0].mac]
    assert altnames(netlink)["vethA"] == () and store.load(UUID) is None


def test_own_leftover_altname_on_exactly_its_veth_is_adopted_and_released(
    store: StateStore,
) -> None:
    """Rule 4: the domain bound, its state was lost; the next prepare adopts the altname."""
    netlink = FakeNetlink(veth(10, "vethA", "vnaaaa"))
    vm = domain(claim(1, "vnaaaa"))
    bindings = binding.plan(vm, {vm.claims[0].mac: host_veth(netlink.host_links[10])})
    binding.bind_all(vm, bindings, netlink, store)
    assert store.load(UUID) == DomainState("vm1", bindings)
    assert altnames(netlink) == {"vethA": ("vnaaaa",)}
    assert binding.release(UUID, netlink, store) == []
    assert altnames(netlink) == {"vethA": ()}


def test_own_placeholder_on_another_link_or_recorded_by_another_domain_is_refused(
    store: StateStore,
) -> None:
    netlink = FakeNetlink(veth(10, "vethA"), veth(11, "vethB", "vnaaaa"))
    vm = domain(claim(1, "vnaaaa"))
    veths = {vm.claims[0].mac: host_veth(netlink.host_links[10])}
    with pytest.raises(
        Failures, match=re.escape("already a name of host link vethB (ifindex 11); choose")
    ):
        binding.bind_all(vm, binding.plan(vm, veths), netlink, store)
    assert altnames(netlink) == {"vethA": (), "vethB": ("vnaaaa",)}
    other = Domain("vm0", "00000000-0000-4000-8000-000000000000", (claim(1, "vnaaaa"),))
    binding.bind_all(other, binding.plan(other, {other.claims[0].mac: host_veth(
        netlink.host_links[11])}), netlink, store)  # fmt: skip
    vm_on_b = {vm.claims[0].mac: host_veth(netlink.host_links[11])}
    with pytest.raises(Failures, match="pod NIC vethB is already used by running domain 'vm0'"):
        binding.bind_all(vm, binding.plan(vm, vm_on_b), netlink, store)
    assert store.load(UUID) is None


OTHER_UUID = "11111111-1111-4111-8111-111111111111"


def guest(domain_uuid: str) -> GuestRecord:
    nic = GuestNic(domain_uuid, "52:54:00:00:00:02", "vnbbbb", "eth0", "vgbbbb", "vmnet_bbbb",
                   "10.0.2.0/30", "10.0.2.1", "10.0.2.2", "52:54:00:00:00:03",
                   "198.51.100.7", 1500, True, (), Dns((), (), "x"))  # fmt: skip
    return GuestRecord(nic, 4, 4026533, ("/proc/1/ns/net",), "0", "/run/x.pid", "/run/x.leases")


def test_release_leaves_an_altname_another_record_names_on_the_same_link(
    store: StateStore,
) -> None:
    netlink = FakeNetlink(veth(10, "vethA", "vnaaaa"))
    held = Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10, "net:[1010]", "eth0")
    store.save(OTHER_UUID, DomainState("vm-other", (held,)))
    store.save(UUID, DomainState("vm1", (held,)))
    (said,) = binding.release(UUID, netlink, store)
    assert isinstance(said, Note) and "also recorded by domain 'vm-other'" in said
    assert altnames(netlink) == {"vethA": ("vnaaaa",)}
    assert store.load(UUID) is None and store.load(OTHER_UUID) is not None


@pytest.mark.parametrize(
    ("said", "kept"), [([], False), ([Note("left alone")], False), (["cannot"], True)]
)
def test_release_keeps_the_record_only_for_what_it_failed_to_undo(
    said: list[str], kept: bool, store: StateStore
) -> None:
    """A record of another domain's NIC is not undone; a Note does not keep the record."""
    stranger, own = guest(OTHER_UUID), guest(UUID)
    store.save(UUID, DomainState("vm1", (), (stranger, own)))
    asked: list[list[GuestRecord]] = []

    def disconnect(records: Sequence[GuestRecord]) -> list[str]:
        asked.append(list(records))
        return said

    problems = binding.release(UUID, FakeNetlink(), store, disconnect)
    assert asked == [[own]]
    assert problems[0] == (
        f"guest 52:54:00:00:00:02: its record names domain {OTHER_UUID}, not {UUID}: "
        "nothing of it undone"
    )
    assert problems[1:] == said
    assert (store.load(UUID) is not None) == kept
