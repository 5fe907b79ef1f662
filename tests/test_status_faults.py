"""status under odd state files and failing reads (issue 11, rules 2 and 8): a file that
records what no hook writes (a 300-character placeholder with control characters, a
negative ifindex, a relative pid file) is listed as unreadable, naming the field, beside
the real bindings; a row whose live state cannot be read is that row's problem alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests import test_status
from tests.conftest import MakePod, RunHook, domain_xml
from tests.fakes import FakeNetlink, FakeSession, veth
from tests.test_hook_kernel import PLACEHOLDER, UUID
from tests.test_status import RUNNING, FakeVirsh, fake, running
from vmnet_hook.cli import status
from vmnet_hook.cli.main import cli
from vmnet_hook.demo import sandbox
from vmnet_hook.errors import ReadError
from vmnet_hook.host.netlink import Link
from vmnet_hook.host.state import Binding, DomainState, StateStore

fake_virsh = test_status.fake_virsh
ODD = "11111111-2222-4333-8444-555555555555"
BINDING = {"mac": "52:54:00:00:00:09", "placeholder": "vnodd", "host_veth": "vethodd",
           "ifindex": 7, "pod_netns": "net:[1]", "pod_dev": "eth0"}  # fmt: skip


def odd_file(state_dir: Path, **changes: Any) -> Path:
    path = state_dir / f"{ODD}.json"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "domain": "odd", "guests": [],
                                "bindings": [{**BINDING, **changes}]}))  # fmt: skip
    return path


@pytest.mark.kernel
def test_a_placeholder_no_kernel_takes_is_an_unreadable_file_beside_the_real_rows(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str], fake_virsh: FakeVirsh
) -> None:
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    xml = domain_xml(NETNS=pod.name).replace(PLACEHOLDER, placeholder)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    try:
        state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
        path = odd_file(state_dir, placeholder="\x1b[2J" + "v" * 300)
        fake_virsh(f"echo {UUID}; echo {ODD}")
        shown = CliRunner().invoke(cli, ["status"])
        assert (shown.exit_code, shown.output) == (1, (
            f"vm1  52:54:00:12:34:56  l2  {placeholder} -> {pod.host_veth}  ok\n"
            f"{path}  unreadable (bindings[0].placeholder is not a link name): if no running "
            f"domain has UUID {ODD}, remove it; `vmnet-hook status` lists it\n"))  # fmt: skip
    finally:
        run_hook("vm1", "release", "end", "-", xml=xml)


@pytest.mark.parametrize(
    ("changes", "where"),
    [({"placeholder": "a/b"}, "bindings[0].placeholder is not a link name"),
     ({"host_veth": ".."}, "bindings[0].host_veth is not a link name"),
     ({"host_veth": "veth\u0085x"}, "bindings[0].host_veth is not a link name"),
     ({"pod_dev": "eth 0"}, "bindings[0].pod_dev is not a link name"),
     ({"placeholder": "é" * 8}, "bindings[0].placeholder is not a link name"),
     ({"ifindex": 0}, "bindings[0].ifindex is not an interface index"),
     ({"ifindex": 1 << 31}, "bindings[0].ifindex is not an interface index"),
     ({"mac": "52:54:00:00:00"}, "bindings[0].mac is not a MAC address")],
)  # fmt: skip
def test_what_no_hook_writes_makes_the_file_unreadable(
    tmp_path: Path, changes: dict[str, Any], where: str
) -> None:
    store = StateStore(str(tmp_path / "state"))
    odd_file(tmp_path / "state", **changes)
    (unreadable,) = store.scan().unreadable
    assert unreadable.reason == where


def test_a_row_whose_live_state_cannot_be_read_is_broken_alone(tmp_path: Path) -> None:
    """The kernel refuses one lookup: that row says so, the others are checked."""

    class OneFails(FakeSession):
        def link_by_name(self, name: str) -> Link | None:
            if name == "vnbbbb":
                raise ReadError("cannot read link vnbbbb: Invalid argument")
            return super().link_by_name(name)

    class Fails(FakeNetlink):
        @contextmanager
        def host(self) -> Iterator[FakeSession]:
            yield OneFails(self.host_links, self.fail_on, self.fail_after)

    store = StateStore(str(tmp_path / "state"))
    store.save(RUNNING, DomainState("vm1", (
        Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10),
        Binding("52:54:00:00:00:02", "vnbbbb", "vethB", 11))))  # fmt: skip
    netlink = Fails(veth(10, "vethA", "vnaaaa"), veth(11, "vethB", "vnbbbb"))
    found = status.report([store], fake(netlink), running(RUNNING), None)
    assert [row.problem for row in found.rows] == [
        "", "cannot be checked: cannot read link vnbbbb: Invalid argument"]  # fmt: skip
    assert found.failed


@pytest.mark.parametrize("body", [f"exec yes {RUNNING}", f"exec yes {RUNNING} >&2"])
def test_a_virsh_that_never_stops_printing_is_cut_short(
    fake_virsh: FakeVirsh, tmp_path: Path, body: str
) -> None:
    """Read up to 4 MiB, then killed: libvirt cannot be asked, and nothing is stale."""
    import time

    from vmnet_hook.cli.libvirt import MAX_OUTPUT_BYTES, LibvirtUnknown, virsh_running

    fake_virsh(body)
    started = time.monotonic()
    with pytest.raises(LibvirtUnknown) as caught:
        virsh_running("qemu:///system")
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"virsh -c qemu:///system printed more than {MAX_OUTPUT_BYTES} bytes")  # fmt: skip
    store = StateStore(str(tmp_path / "state"))
    store.save(RUNNING, DomainState("vm1", (Binding("52:54:00:00:00:01", "vnaaaa", "vethA", 10),)))
    found = status.report([store], fake(FakeNetlink(veth(10, "vethA", "vnaaaa"))),
                          lambda: virsh_running("qemu:///system"), None)  # fmt: skip
    assert found.libvirt_unknown and not any(row.stale for row in found.rows)
