"""Kernel tier: only root's configuration is trusted, whatever the path passes through
(issue 11, rule 6). Every directory on the way to the config file or the state directory,
the directories of the symbolic links followed, and the links themselves are judged: a
0777 directory that is not sticky, a link owned by nobody, a state directory reached
through a link in such a directory, a dangling config link. Each asserts the one line and
that nothing is bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import MakePod
from tests.test_hook_faults import NOBODY, hook, nothing_left, vm_on

pytestmark = pytest.mark.kernel

TRUST = "only root's configuration is trusted"


@pytest.fixture
def config_env(hook_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**hook_env, "VMNET_HOOK_CONFIG": str(tmp_path / "config")}


def shared(directory: Path) -> Path:
    """A directory anyone may write to, and not sticky."""
    directory.mkdir()
    directory.chmod(0o777)
    return directory


def test_a_config_in_a_directory_anyone_may_write_to_is_refused(
    make_pod: MakePod, hook_env: dict[str, str], tmp_path: Path
) -> None:
    config = shared(tmp_path / "etc") / "config"
    config.write_text("[vmnet-hook]\nlog_level = debug\n")
    pod = make_pod()
    vm = vm_on(pod)
    done = hook({**hook_env, "VMNET_HOOK_CONFIG": str(config)}, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: config file {config}: {config.parent} on the way to it is a directory "
        f"others may write to (mode 0777, group 0): {TRUST}; chmod go-w {config.parent}, or "
        f"chmod +t {config.parent} to make it sticky\n"
    )
    nothing_left(pod, vm, Path(hook_env["VMNET_HOOK_STATE_DIR"]))


def test_a_config_link_owned_by_nobody_is_refused(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    real = tmp_path / "real-config"
    real.write_text("[vmnet-hook]\nlog_level = debug\n")
    link = tmp_path / "config"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(config_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: config file {link}: {link} on the way to it is a symbolic link owned by "
        f"uid {NOBODY}, not root: {TRUST}; chown -h root: {link}\n"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_a_config_link_in_a_directory_anyone_may_write_to_is_refused(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    """The link is root's, the file it names is root's: the directory holding the link
    lets anyone replace it."""
    real = tmp_path / "real-config"
    real.write_text("[vmnet-hook]\nlog_level = debug\n")
    hop = shared(tmp_path / "hop") / "config"
    hop.symlink_to(real)
    (tmp_path / "config").symlink_to(hop)
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(config_env, "prepare", "begin", xml=vm.xml)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"vmnet-hook: config file {tmp_path}/config: {hop.parent} on the way to it is a "
        "directory others may write to (mode 0777, group 0)"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_a_dangling_config_link_is_refused_not_taken_for_no_config(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "config").symlink_to(tmp_path / "gone" / "config")
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(config_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: config file {tmp_path}/config is a symbolic link to {tmp_path}/gone/"
        "config, which does not exist: point it at the config file, or remove it\n"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_a_state_dir_reached_through_a_directory_anyone_may_write_to_is_refused(
    make_pod: MakePod, hook_env: dict[str, str], tmp_path: Path
) -> None:
    real = tmp_path / "real-state"
    real.mkdir(mode=0o700)
    link = shared(tmp_path / "run") / "state"
    link.symlink_to(real)
    pod = make_pod()
    vm = vm_on(pod)
    done = hook({**hook_env, "VMNET_HOOK_STATE_DIR": str(link)}, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: state directory {link}: {link.parent} on the way to it is a directory "
        f"others may write to (mode 0777, group 0): {TRUST}; chmod go-w {link.parent}, or "
        f"chmod +t {link.parent} to make it sticky\n"
    )
    nothing_left(pod, vm, real)
    assert os.listdir(real) == []
