"""Pure tier: status marks stale what libvirt does not run, lists unreadable state files,
and --prune releases only what is stale and unchanged. libvirt is a seam here: a set of
UUIDs, or a real ``virsh`` executable of the test's own on PATH."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeNetlink, veth
from vmnet_hook.cli import status
from vmnet_hook.cli.libvirt import LibvirtUnknown, virsh_running
from vmnet_hook.cli.prune import prune
from vmnet_hook.host.netlink import Netlink, PodNetlink
from vmnet_hook.host.state import Binding, DomainState, StateStore

RUNNING = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
GONE = "00000000-0000-4000-8000-000000000000"
FakeVirsh = Callable[[str], None]


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(str(tmp_path / "state"))


@pytest.fixture
def netlink() -> FakeNetlink:
    return FakeNetlink(veth(10, "vethA", "vnaaaa"), veth(11, "vethB", "vnbbbb"))


def two_domains(store: StateStore) -> None:
    store.save(RUNNING, DomainState("vm1", (Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10),)))
    store.save(GONE, DomainState("vm0", (Binding("52:54:00:00:00:02", "vnbbbb", "vethB", 11),)))


def running(*uuids: str) -> Callable[[], frozenset[str]]:
    return lambda: frozenset(uuids)


def unknown() -> frozenset[str]:
    raise LibvirtUnknown("virsh is not installed")


def fake(netlink: FakeNetlink) -> tuple[Netlink, PodNetlink]:
    return netlink, netlink  # type: ignore[return-value]  # no pod side in these states


def no_pod_side(_records: object) -> list[str]:
    raise AssertionError("these domains have no pod side")


def test_a_binding_whose_domain_libvirt_does_not_run_is_stale(
    store: StateStore, netlink: FakeNetlink
) -> None:
    two_domains(store)
    found = status.report([store], fake(netlink), running(RUNNING), None)
    assert [(row.domain, row.state, row.stale) for row in found.rows] == [
        ("vm0", "ok", True), ("vm1", "ok", False)]  # fmt: skip
    assert found.failed
    assert status.to_lines(found) == [
        "vm0  52:54:00:00:00:02  l2  vnbbbb -> vethB  ok  stale",
        "vm1  52:54:00:00:00:01  l2  vnaaaa -> vethA  ok",
    ]
    assert status.notes(found) == [
        "not running in libvirt, still holding pod NICs: 'vm0'; `vmnet-hook status --prune` "
        "releases them"
    ]
    assert [(r["domain"], r["running"], r["stale"]) for r in status.to_json(found)] == [
        ("vm0", False, True), ("vm1", True, False)]  # fmt: skip


def test_when_libvirt_cannot_be_asked_nothing_is_stale(
    store: StateStore, netlink: FakeNetlink
) -> None:
    two_domains(store)
    found = status.report([store], fake(netlink), unknown, None)
    assert [(row.running, row.stale) for row in found.rows] == [(None, False), (None, False)]
    assert not found.failed
    assert status.notes(found) == [
        "cannot ask libvirt which domains run (virsh is not installed): nothing is marked stale"
    ]


def test_an_unreadable_state_file_is_a_row_and_fails_status(
    store: StateStore, netlink: FakeNetlink
) -> None:
    two_domains(store)
    Path(store.path(GONE)).write_text('{"domain": "vm0", "bindings": [], "extra": 1}')
    found = status.report([store], fake(netlink), running(RUNNING), "vm1")
    assert found.failed and len(found.rows) == 1
    assert status.to_lines(found)[1:] == [
        f"{store.path(GONE)}  unreadable (unexpected field extra): if no running domain has "
        f"UUID {GONE}, remove it; `vmnet-hook status` lists it"
    ]
    assert status.to_json(found)[1:] == [
        {"state": "unreadable", "path": store.path(GONE), "uuid": GONE,
         "problem": "unexpected field extra", "fix": status.to_json(found)[1]["fix"]}]  # fmt: skip


def test_prune_releases_only_the_domains_libvirt_does_not_run(
    store: StateStore, netlink: FakeNetlink
) -> None:
    two_domains(store)
    pruned = prune([store], netlink, no_pod_side, running(RUNNING))
    assert pruned.done == [f"pruned domain 'vm0' ({GONE}): not running in libvirt; "
                           "released 1 l2 binding(s)"]  # fmt: skip
    assert pruned.problems == []
    assert netlink.host_links[11].altnames == () and netlink.host_links[10].altnames == ("vnaaaa",)
    assert store.load(GONE) is None and store.load(RUNNING) is not None
    assert prune([store], netlink, no_pod_side, running(RUNNING)).done == []


def test_prune_of_a_record_naming_a_running_domains_altname_leaves_it_and_says_so(
    store: StateStore, netlink: FakeNetlink
) -> None:
    """Two records on one NIC come only from a fault: the stale one goes, the running
    domain keeps its altname, and the line is a note, not a failure."""
    store.save(RUNNING, DomainState("vm1", (Binding("52:54:00:00:00:01", "vnbbbb", "vethB", 11),)))
    store.save(GONE, DomainState("vm0", (Binding("52:54:00:00:00:02", "vnbbbb", "vethB", 11),)))
    pruned = prune([store], netlink, no_pod_side, running(RUNNING))
    assert pruned.problems == [] and len(pruned.notes) == 1 and "'vm0'" in pruned.notes[0]
    assert pruned.done == [f"pruned domain 'vm0' ({GONE}): not running in libvirt; "
                           "released 1 l2 binding(s)"]  # fmt: skip
    assert netlink.host_links[11].altnames == ("vnbbbb",) and store.load(GONE) is None


def test_prune_does_nothing_when_libvirt_cannot_be_asked(
    store: StateStore, netlink: FakeNetlink
) -> None:
    two_domains(store)
    with pytest.raises(LibvirtUnknown):
        prune([store], netlink, no_pod_side, unknown)
    assert sorted(store.all()) == sorted([RUNNING, GONE])
    assert netlink.host_links[11].altnames == ("vnbbbb",)


def test_prune_never_touches_an_unreadable_file(store: StateStore, netlink: FakeNetlink) -> None:
    two_domains(store)
    Path(store.path(GONE)).write_text("{")
    pruned = prune([store], netlink, no_pod_side, running(RUNNING))
    assert pruned.done == []
    assert pruned.problems == [f"not pruned: state file {store.path(GONE)} is unreadable "
                               "(not JSON: Expecting property name enclosed in double quotes: "
                               f"line 1 column 2 (char 1)): if no running domain has UUID "
                               f"{GONE}, remove it; `vmnet-hook status` lists it"]  # fmt: skip
    assert Path(store.path(GONE)).read_text() == "{"


def test_one_directory_that_cannot_be_locked_does_not_keep_the_others_stale_domains(
    store: StateStore, netlink: FakeNetlink, tmp_path: Path
) -> None:
    broken = StateStore(str(tmp_path / "broken"))
    broken.save(RUNNING.replace("6", "7", 1), DomainState("vm8", ()))  # stale too
    os.mkdir(os.path.join(broken.state_dir, ".lock"))  # no hook can lock this one
    two_domains(store)
    pruned = prune([broken, store], netlink, no_pod_side, running(RUNNING))
    assert pruned.done == [f"pruned domain 'vm0' ({GONE}): not running in libvirt; "
                           "released 1 l2 binding(s)"]  # fmt: skip
    assert pruned.problems == [f"not pruned: lock file {broken.state_dir}/.lock is a "
                               "directory, not the regular file vmnet-hook makes: remove it "
                               "(no hook holds the lock while it is there)"]  # fmt: skip


def test_prune_leaves_a_domain_that_started_while_libvirt_was_asked(
    store: StateStore, netlink: FakeNetlink
) -> None:
    """vm0 starts again between the scan and the answer: its new record is not pruned."""
    two_domains(store)

    def restarted_meanwhile() -> frozenset[str]:
        store.save(GONE, DomainState("vm0", store.load(GONE).bindings))  # type: ignore[union-attr]
        return frozenset({RUNNING})

    pruned = prune([store], netlink, no_pod_side, restarted_meanwhile)
    assert pruned.done == []
    assert pruned.problems == [f"domain 'vm0' ({GONE}): its state changed while libvirt was "
                               "asked; not pruned"]  # fmt: skip
    assert netlink.host_links[11].altnames == ("vnbbbb",) and store.load(GONE) is not None


@pytest.fixture
def fake_virsh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVirsh]:
    """A real ``virsh`` executable, first on PATH, whose body the test writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def write(body: str) -> None:
        script = bin_dir / "virsh"
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)

    yield write


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (f'[ "$*" = "-c qemu:///system list --uuid" ] && printf "{RUNNING}\\n{GONE}\\n\\n"',
         frozenset({RUNNING, GONE})),
        ("echo", frozenset()),
        ("echo 'error: failed to connect to the hypervisor' >&2; exit 1",
         "virsh -c qemu:///system: error: failed to connect to the hypervisor"),
        ("exit 3", "virsh -c qemu:///system: exit status 3"),
        ("printf 'Id Name\\n\\033[2J'", "virsh printed 'Id', not a domain UUID"),
        ("printf '\\033[2J' >&2; exit 1", "virsh -c qemu:///system: \\x1b[2J"),
        ("exec sleep 5", "virsh -c qemu:///system gave no answer in 0.5s"),
    ],
)  # fmt: skip
def test_virsh_is_asked_and_any_doubt_is_unknown(
    fake_virsh: FakeVirsh, body: str, answer: frozenset[str] | str
) -> None:
    fake_virsh(body)
    if isinstance(answer, frozenset):
        assert virsh_running("qemu:///system", timeout=0.5) == answer
        return
    with pytest.raises(LibvirtUnknown) as caught:
        virsh_running("qemu:///system", timeout=0.5)
    assert str(caught.value) == answer


def test_no_virsh_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LibvirtUnknown) as caught:
        virsh_running("qemu:///system")
    assert str(caught.value) == "virsh is not installed"


def test_a_name_with_a_newline_or_tab_stays_on_its_own_row(
    store: StateStore, netlink: FakeNetlink
) -> None:
    """A domain named to look like a second row (or to shift the columns) shows escaped."""
    store.save(RUNNING, DomainState("vm1\nvm0  52:54:00:00:00:09\tl2",
                                    (Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10),)))  # fmt: skip
    found = status.report([store], fake(netlink), running(RUNNING), None)
    assert status.to_lines(found) == [
        "vm1\\x0avm0  52:54:00:00:00:09\\x09l2  52:54:00:00:00:01  l2  vnaaaa -> vethA  ok"
    ]
