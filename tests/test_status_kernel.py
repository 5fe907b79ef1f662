"""Kernel tier: a real l2 binding made by hooks/qemu, its domain not running in libvirt
(a ``virsh`` of the test's own on PATH says which run): status marks it stale, and
``status --prune`` undoes it as release end would."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import test_status
from tests.conftest import MakePod, RunHook, domain_xml
from tests.test_hook_kernel import PLACEHOLDER, UUID, altnames
from tests.test_status import FakeVirsh
from vmnet_hook.cli.main import cli
from vmnet_hook.demo import sandbox

pytestmark = pytest.mark.kernel
fake_virsh = test_status.fake_virsh  # the fixture, shared


def test_a_binding_of_a_domain_libvirt_does_not_run_is_stale_and_pruned(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str], fake_virsh: FakeVirsh
) -> None:
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    xml = domain_xml(NETNS=pod.name).replace(PLACEHOLDER, placeholder)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    record = Path(hook_env["VMNET_HOOK_STATE_DIR"], f"{UUID}.json")
    line = f"vm1  52:54:00:12:34:56  l2  {placeholder} -> {pod.host_veth}  ok"
    runner = CliRunner()

    fake_virsh(f"echo {UUID}")  # running: not stale, and never pruned
    shown = runner.invoke(cli, ["status"])
    assert (shown.exit_code, shown.output) == (0, line + "\n")
    kept = runner.invoke(cli, ["status", "--prune"])
    assert (kept.exit_code, kept.output) == (0, "nothing to prune\n")
    assert altnames(pod.host_veth) == [placeholder] and record.exists()

    fake_virsh("echo")  # libvirt runs nothing now: the binding was left behind
    shown = runner.invoke(cli, ["status"])
    assert (shown.exit_code, shown.output) == (1, (
        f"{line}  stale\nvmnet-hook: not running in libvirt, still holding pod NICs: 'vm1'; "
        "`vmnet-hook status --prune` releases them\n"))  # fmt: skip
    pruned = runner.invoke(cli, ["status", "--prune"])
    assert (pruned.exit_code, pruned.output) == (0, (
        f"pruned domain 'vm1' ({UUID}): not running in libvirt; released 1 l2 binding(s)\n"))  # fmt: skip
    assert altnames(pod.host_veth) == [] and not record.exists()
    assert runner.invoke(cli, ["status"]).output == "no bindings\n"


def test_nothing_is_stale_or_pruned_when_libvirt_cannot_be_asked(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str], fake_virsh: FakeVirsh
) -> None:
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    xml = domain_xml(NETNS=pod.name).replace(PLACEHOLDER, placeholder)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    fake_virsh("echo 'error: failed to connect to the hypervisor' >&2; exit 1")
    why = "virsh -c qemu:///system: error: failed to connect to the hypervisor"
    shown = CliRunner().invoke(cli, ["status"])
    assert (shown.exit_code, shown.output) == (0, (
        f"vm1  52:54:00:12:34:56  l2  {placeholder} -> {pod.host_veth}  ok\n"
        f"vmnet-hook: cannot ask libvirt which domains run ({why}): nothing is marked stale\n"))  # fmt: skip
    pruned = CliRunner().invoke(cli, ["status", "--prune"])
    assert (pruned.exit_code, pruned.output) == (1, (
        f"vmnet-hook: cannot ask libvirt which domains run ({why}): nothing pruned\n"))  # fmt: skip
    assert altnames(pod.host_veth) == [placeholder]
    run_hook("vm1", "release", "end", "-", xml=xml)
    assert altnames(pod.host_veth) == []


def test_status_lists_an_unreadable_state_file_and_fails(
    hook_env: dict[str, str], fake_virsh: FakeVirsh
) -> None:
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    state_dir.mkdir(mode=0o700)
    (state_dir / f"{UUID}.json").symlink_to("/etc/hostname")
    fake_virsh("echo")
    shown = CliRunner().invoke(cli, ["status"])
    assert (shown.exit_code, shown.output) == (1, (
        f"{state_dir}/{UUID}.json  unreadable (not a regular file but a symbolic link): if no "
        f"running domain has UUID {UUID}, remove it; `vmnet-hook status` lists it\n"))  # fmt: skip
    pruned = CliRunner().invoke(cli, ["status", "--prune"])
    assert pruned.exit_code == 1 and "vmnet-hook: not pruned: state file" in pruned.output
    assert (state_dir / f"{UUID}.json").is_symlink()
