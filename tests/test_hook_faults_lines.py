"""Kernel tier: lines that name what is wrong, not a neighbour of it (issue 11, rules 7
and 8). A ``.lock`` that is a symbolic link, a directory, a socket or a FIFO in a good
state directory is named as the lock file; nothing is bound. status and --prune with a
broken config read the state dir release would, and say why."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import test_status
from tests.conftest import MakePod
from tests.test_hook_faults import hook, nothing_left, vm_on
from tests.test_status import FakeVirsh
from vmnet_hook.cli.main import cli

pytestmark = pytest.mark.kernel
fake_virsh = test_status.fake_virsh


def make_lock(lock: Path, kind: str) -> None:
    if kind == "symlink":
        lock.symlink_to("/etc/hostname")
    elif kind == "directory":
        lock.mkdir()
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        with socket.socket(socket.AF_UNIX) as bound:
            bound.bind(str(lock))


@pytest.mark.parametrize(
    ("kind", "said"),
    [("symlink", "a symbolic link"), ("directory", "a directory"),
     ("socket", "a socket"), ("fifo", "a FIFO")],
)  # fmt: skip
def test_a_lock_that_is_not_a_regular_file_is_named(
    make_pod: MakePod, hook_env: dict[str, str], kind: str, said: str
) -> None:
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    state_dir.mkdir(mode=0o700)
    make_lock(state_dir / ".lock", kind)
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(hook_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: lock file {state_dir}/.lock is {said}, not the regular file vmnet-hook "
        "makes: remove it (no hook holds the lock while it is there)\n"
    )
    nothing_left(pod, vm, state_dir)


@pytest.mark.parametrize("prune", [False, True])
def test_status_with_a_broken_config_reads_the_state_dir_release_would(
    hook_env: dict[str, str], tmp_path: Path, fake_virsh: FakeVirsh, prune: bool
) -> None:
    config = tmp_path / "config"
    os.mkfifo(config)
    fake_virsh("echo")
    state_dir = hook_env["VMNET_HOOK_STATE_DIR"]
    shown = CliRunner().invoke(cli, ["status", *(["--prune"] if prune else [])],
                               env={"VMNET_HOOK_CONFIG": str(config)})  # fmt: skip
    assert shown.exit_code == 1
    assert shown.output == (
        f"vmnet-hook: config file {config} is not a regular file but a FIFO: only a regular "
        f"file of at most 65536 bytes is read; status reads the state directory {state_dir}\n"
        + ("nothing to prune\n" if prune else "no bindings\n")
    )
