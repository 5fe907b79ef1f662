"""Kernel tier: where ``status`` and ``status --prune`` look (issue 11, rules 1, 6, 10).

A state dir anyone but root could change is refused by the CLI as by the hook: what a
record there names (an altname, a pid) is never acted on. With the config's state_dir
moved or the config broken after a domain started, the pointer prepare left in the
default state dir still leads status to the binding, and prune removes the pointer with
the binding. These tests use the real default state dir only under their own UUID, and
prune only that UUID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from tests import test_status
from tests.conftest import MakePod, RunHook
from tests.test_hook_faults import NOBODY, Vm, altnames, hook, vm_on
from tests.test_state import GUEST, UUID
from tests.test_status import FakeVirsh
from vmnet_hook.cli.main import cli
from vmnet_hook.hook import place
from vmnet_hook.host.state import DomainState, StateStore

pytestmark = pytest.mark.kernel
fake_virsh = test_status.fake_virsh  # the fixture, shared


def row(vm: Vm, host_veth: str) -> str:
    return f"vm1  52:54:00:12:34:56  l2  {vm.placeholder} -> {host_veth}  ok"


@pytest.mark.parametrize(
    ("owner", "mode", "why"),
    [(NOBODY, 0o700, f"owned by uid {NOBODY}, not root"),
     (0, 0o777, "writable by group or others (mode 0777)")],
)  # fmt: skip
def test_status_and_prune_refuse_a_state_dir_anyone_but_root_could_change(
    make_pod: MakePod,
    run_hook: RunHook,
    hook_env: dict[str, str],
    fake_virsh: FakeVirsh,
    owner: int,
    mode: int,
    why: str,
) -> None:
    """A real binding, then its state dir handed to nobody (or opened to all): whoever
    can write there could plant a record naming any altname or pid. Prune touches
    nothing; once the dir is root's again, the same prune releases it."""
    pod = make_pod()
    vm = vm_on(pod)
    assert run_hook("vm1", "prepare", "begin", "-", xml=vm.xml).returncode == 0
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    fake_virsh("echo")  # libvirt runs nothing: the binding is stale
    refused = (f"state directory {state_dir} is {why}: only root's configuration is "
               f"trusted; chown root: {state_dir}; chmod go-w {state_dir}; not read")  # fmt: skip
    try:
        os.chown(state_dir, owner, owner)
        state_dir.chmod(mode)
        shown = CliRunner().invoke(cli, ["status"])
        assert (shown.exit_code, shown.output) == (1, refused + "\n")
        pruned = CliRunner().invoke(cli, ["status", "--prune"])
        assert (pruned.exit_code, pruned.output) == (1, f"vmnet-hook: not pruned: {refused}\n")
        assert altnames(pod.host_veth) == [vm.placeholder]
        assert (state_dir / f"{vm.uuid}.json").exists()
    finally:
        os.chown(state_dir, 0, 0)
        state_dir.chmod(0o700)
    pruned = CliRunner().invoke(cli, ["status", "--prune"])
    assert (pruned.exit_code, pruned.output) == (0, (
        f"pruned domain 'vm1' ({vm.uuid}): not running in libvirt; released 1 l2 binding(s)\n"))  # fmt: skip
    assert altnames(pod.host_veth) == []


@pytest.fixture
def moved(
    hook_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """hook_env without VMNET_HOOK_STATE_DIR, its config naming tmp_path/moved-state: the
    hook keeps its state there and a pointer in the default state dir."""
    config = tmp_path / "config"
    config.write_text(f"[vmnet-hook]\nstate_dir = {tmp_path / 'moved-state'}\n")
    monkeypatch.delenv("VMNET_HOOK_STATE_DIR")
    monkeypatch.setenv("VMNET_HOOK_CONFIG", str(config))
    return dict(os.environ)


@pytest.mark.parametrize("config_now", ["another state_dir", "a FIFO"])
def test_a_pointer_leads_status_and_prune_to_a_state_dir_the_config_no_longer_names(
    make_pod: MakePod, moved: dict[str, str], tmp_path: Path, fake_virsh: FakeVirsh,
    config_now: str,
) -> None:  # fmt: skip
    pod = make_pod()
    vm = vm_on(pod)
    config, state_dir = tmp_path / "config", tmp_path / "moved-state"
    try:
        assert hook(moved, "prepare", "begin", xml=vm.xml).returncode == 0
        assert place.read_pointer(vm.uuid) == str(state_dir)
        config.unlink()
        if config_now == "a FIFO":
            os.mkfifo(config)
        else:
            config.write_text(f"[vmnet-hook]\nstate_dir = {tmp_path / 'elsewhere'}\n")
        fake_virsh("echo")
        shown = CliRunner().invoke(cli, ["status", vm.uuid])
        assert row(vm, pod.host_veth) + "  stale\n" in shown.output
        assert shown.exit_code == 1
        if config_now == "a FIFO":
            dirs = f"the state directories /run/vmnet-hook, {state_dir}"
            assert f"; status reads {dirs}\n" in shown.output
        pruned = CliRunner().invoke(cli, ["status", "--prune", vm.uuid])
        assert pruned.output.endswith(f"pruned domain 'vm1' ({vm.uuid}): not running in "
                                      "libvirt; released 1 l2 binding(s)\n")  # fmt: skip
        assert altnames(pod.host_veth) == []
        assert not (state_dir / f"{vm.uuid}.json").exists()
        assert not os.path.lexists(place.pointer_path(vm.uuid))
    finally:
        hook(moved, "release", "end", xml=vm.xml)
        place.remove_pointer(vm.uuid)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_a_record_planted_by_another_user_is_not_believed(
    hook_env: dict[str, str], fake_virsh: FakeVirsh
) -> None:
    """A root-owned state dir that was open to others for a while: a record owned by
    nobody naming a live process's pid and start time is unreadable, and prune leaves
    that process alone."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
        store = StateStore(str(state_dir))
        record = replace(GUEST, dnsmasq_pid=victim.pid,
                         dnsmasq_started=psutil.Process(victim.pid).create_time())  # fmt: skip
        store.save(UUID, DomainState("planted", (), (record,)))
        os.chown(store.path(UUID), NOBODY, NOBODY)
        fake_virsh("echo")
        pruned = CliRunner().invoke(cli, ["status", "--prune"])
        assert (pruned.exit_code, pruned.output) == (1, (
            f"vmnet-hook: not pruned: state file {store.path(UUID)} is unreadable (owned by uid "
            f"{NOBODY}, not root: only a file root alone can write is read): if no running "
            f"domain has UUID {UUID}, remove it; `vmnet-hook status` lists it\n"))  # fmt: skip
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_lock_file_another_user_owns_is_refused_at_once(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    """Its owner could hold it for ever, and every start would wait to its deadline."""
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    state_dir.mkdir(mode=0o700)
    (state_dir / ".lock").touch(mode=0o600)
    os.chown(state_dir / ".lock", NOBODY, NOBODY)
    pod = make_pod()
    vm = vm_on(pod)
    done = run_hook("vm1", "prepare", "begin", "-", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"vmnet-hook: lock file {state_dir}/.lock is owned by uid {NOBODY}, "
                           "not root: only root's is used; remove it\n")  # fmt: skip
    assert altnames(pod.host_veth) == []


def test_a_pointer_that_cannot_be_removed_is_named_and_the_binding_still_released(
    make_pod: MakePod, moved: dict[str, str], tmp_path: Path
) -> None:
    pod = make_pod()
    vm = vm_on(pod)
    pointer = place.pointer_path(vm.uuid)
    try:
        assert hook(moved, "prepare", "begin", xml=vm.xml).returncode == 0
        subprocess.run(["chattr", "+i", pointer], check=True)
        try:
            done = hook(moved, "release", "end", xml=vm.xml)
        finally:
            subprocess.run(["chattr", "-i", pointer], check=True)
        assert (done.returncode, done.stdout) == (0, "")
        assert done.stderr == (
            f"vmnet-hook: state directory /run/vmnet-hook is not writable (Operation not "
            f"permitted); {pointer} stays: check its owner, mode and attributes (lsattr), or "
            "set state_dir to another directory\n"
        )
        assert altnames(pod.host_veth) == []
        assert not (tmp_path / "moved-state" / f"{vm.uuid}.json").exists()
    finally:
        place.remove_pointer(vm.uuid)


def test_a_release_of_a_record_in_the_default_dir_keeps_the_pointer_to_another(
    make_pod: MakePod, moved: dict[str, str], tmp_path: Path
) -> None:
    """A record left in /run/vmnet-hook (state_dir was changed since) and a new one where
    the pointer leads: releasing the first keeps the pointer, so the second is still
    found, by the next release end or by status --prune."""
    first, second = make_pod(), make_pod()
    vm = vm_on(second)
    earlier = vm_on(first)
    old = replace(earlier, xml=earlier.xml.replace(earlier.uuid, vm.uuid), uuid=vm.uuid)
    default = StateStore("/run/vmnet-hook")
    try:
        old_env = {**moved, "VMNET_HOOK_STATE_DIR": "/run/vmnet-hook"}
        assert hook(old_env, "prepare", "begin", xml=old.xml).returncode == 0
        assert hook(moved, "prepare", "begin", xml=vm.xml).returncode == 0
        assert os.path.exists(default.path(vm.uuid)) and os.path.exists(
            place.pointer_path(vm.uuid)
        )
        assert hook(moved, "release", "end", xml=vm.xml).returncode == 0  # the default dir's
        assert place.read_pointer(vm.uuid) == str(tmp_path / "moved-state")
        assert hook(moved, "release", "end", xml=vm.xml).returncode == 0  # then the other
        assert altnames(first.host_veth) == [] and altnames(second.host_veth) == []
        assert not os.path.lexists(place.pointer_path(vm.uuid))
    finally:
        hook(moved, "release", "end", xml=vm.xml)
        hook({**moved, "VMNET_HOOK_STATE_DIR": "/run/vmnet-hook"}, "release", "end", xml=vm.xml)
        place.remove_pointer(vm.uuid)


def test_status_of_a_record_naming_a_fifo_for_its_pod_does_not_wait(
    hook_env: dict[str, str], fake_virsh: FakeVirsh, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "fifo")  # opened for reading, it would wait for a writer
    store = StateStore(hook_env["VMNET_HOOK_STATE_DIR"])
    store.save(
        UUID, DomainState("odd", (), (replace(GUEST, netns_paths=(str(tmp_path / "fifo"),)),))
    )
    fake_virsh(f"echo {UUID}")
    shown = subprocess.run([sys.executable, "-m", "vmnet_hook.cli.main", "status"], text=True,
                           capture_output=True, timeout=20, check=False)  # fmt: skip
    assert shown.returncode == 1 and "odd  52:54:00:00:00:02  masquerade" in shown.stdout


def test_records_left_in_the_default_dir_still_hold_their_pod_nics(
    make_pod: MakePod, moved: dict[str, str], tmp_path: Path
) -> None:
    """state_dir moved while a domain ran: its record in /run/vmnet-hook still holds its
    pod NIC against a domain started under the new config, and an unreadable file there
    still stops every claim."""
    pod = make_pod()
    first, second = vm_on(pod), vm_on(pod)
    old_env = {**moved, "VMNET_HOOK_STATE_DIR": "/run/vmnet-hook"}
    odd = Path("/run/vmnet-hook") / f"{second.uuid.replace('-', '0', 1)}.json"
    try:
        assert hook(old_env, "prepare", "begin", xml=first.xml).returncode == 0
        done = hook(moved, "prepare", "begin", xml=second.xml)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (f"vmnet-hook: domain 'vm1', interface 52:54:00:12:34:56: pod "
                               f"NIC {pod.host_veth} is already used by running domain "
                               "'vm1'\n")  # fmt: skip
        assert altnames(pod.host_veth) == [first.placeholder]
        assert hook(old_env, "release", "end", xml=first.xml).returncode == 0
        os.mkfifo(odd)
        done = hook(moved, "prepare", "begin", xml=second.xml)
        assert (
            done.returncode == 1
            and f"cannot tell who holds its pod NICs: state file {odd}" in done.stderr
        )
        assert altnames(pod.host_veth) == []
    finally:
        odd.unlink(missing_ok=True)
        hook(old_env, "release", "end", xml=first.xml)
        hook(moved, "release", "end", xml=second.xml)
        place.remove_pointer(second.uuid)
