"""Kernel tier: a masqueraded NIC's state directory turned read-only under it (issue 11,
rule 7). The pod-side files (dnsmasq's pid and lease files, its log) live there too: a
release or reconnect that cannot touch them logs one line naming the directory, as for
the record itself, never "internal error"; the record stays until the directory is
writable, and the next release then leaves the pod as it was found."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import RunHook
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_podnet_kernel import UUID, domain
from tests.test_state_kernel import READ_ONLY, mount

__all__ = ["mount", "podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel


IMMUTABLE = (
    "is not writable (Operation not permitted): check its owner, mode and "
    "attributes (lsattr), or set state_dir to another directory"
)


@contextmanager
def frozen(state_dir: Path, how: str) -> Iterator[str]:
    """``state_dir`` read-only (a read-only bind mount over it: dnsmasq keeps its lease
    file open, so the tmpfs itself cannot be remounted) or immutable (chattr +i) for the
    block; the line's text for that fault."""
    if how == "read-only":
        subprocess.run(["mount", "--bind", str(state_dir), str(state_dir)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state_dir)], check=True)
    else:
        subprocess.run(["chattr", "+i", str(state_dir)], check=True)
    try:
        yield READ_ONLY if how == "read-only" else IMMUTABLE
    finally:
        if how == "read-only":
            subprocess.run(["umount", str(state_dir)], check=True)
        else:
            subprocess.run(["chattr", "-i", str(state_dir)], check=True)


@pytest.mark.parametrize("how", ["read-only", "immutable"])
def test_a_release_on_a_frozen_directory_undoes_the_pod_side_and_keeps_the_record(
    podnets: pn.Podnets, run_hook: RunHook, mount: Path, syslog_lines: list[str], how: str
) -> None:
    """Release end exits 0 (libvirt ignores anything else) and logs, for each of the
    dnsmasq's pid and lease files, the directory and what is wrong with it."""
    pod = podnets.routed().pod()
    before = pn.snapshot(pod.netns)
    state_dir = mount / "state"
    env = {"VMNET_HOOK_STATE_DIR": str(state_dir)}
    xml, source = domain(pod)
    record = state_dir / f"{UUID}.json"
    try:
        assert run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env).returncode == 0
        (pid_file,) = state_dir.glob("*.pid")
        with frozen(state_dir, how) as why:
            done = run_hook("vm1", "release", "end", "-", xml=xml, env=env)
            assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
            stays = why.replace(")", f"); {pid_file} stays", 1)
            logged = [line for line in syslog_lines if "release vm1" in line]
            assert logged[0].endswith(f"release vm1: state directory {state_dir} {stays}")
            assert len(logged) == 2 and "internal error" not in "".join(syslog_lines)
            assert pn.snapshot(pod.netns) == before  # guest link, nft table, dnsmasq: gone
            assert not Path(f"/sys/class/net/{source}").exists()
            assert record.exists() and pid_file.exists()
            refused = run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env)
            assert refused.returncode == 1 and str(state_dir) in refused.stderr
            assert pn.snapshot(pod.netns) == before
    finally:
        run_hook("vm1", "release", "end", "-", xml=xml, env=env)
    assert pn.snapshot(pod.netns) == before
    assert os.listdir(state_dir) == [".lock"]


def test_a_reconnect_that_cannot_replace_the_pid_file_says_why_and_leaves_the_vm_alone(
    podnets: pn.Podnets, run_hook: RunHook, mount: Path, syslog_lines: list[str]
) -> None:
    """libvirtd restarted, the guest's DHCP server died meanwhile, and its pid file is
    immutable: reconnect must not fail (libvirt would kill the VM); it logs what stands in
    the way, and starts the server again once the file can go."""
    pod = podnets.routed().pod()
    state_dir = mount / "state"
    env = {"VMNET_HOOK_STATE_DIR": str(state_dir)}
    xml, _source = domain(pod)
    try:
        assert run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env).returncode == 0
        (pid_file,) = state_dir.glob("*.pid")
        os.kill(int(pid_file.read_text()), 9)
        subprocess.run(["chattr", "+i", str(pid_file)], check=True)
        try:
            done = run_hook("vm1", "reconnect", "begin", "-", xml=xml, env=env)
        finally:
            subprocess.run(["chattr", "-i", str(pid_file)], check=True)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert "dnsmasq" not in pn.snapshot(pod.netns)["processes"]
        said = f"reconnect vm1 52:54:00:12:34:56: state directory {state_dir} {IMMUTABLE}"
        assert any(line.endswith(said) for line in syslog_lines), "\n".join(syslog_lines)
        assert "internal error" not in "".join(syslog_lines)
        done = run_hook("vm1", "reconnect", "begin", "-", xml=xml, env=env)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert "dnsmasq" in pn.snapshot(pod.netns)["processes"]
    finally:
        run_hook("vm1", "release", "end", "-", xml=xml, env=env)


def test_a_start_whose_last_runs_leftovers_cannot_be_undone_is_refused_and_keeps_them(
    podnets: pn.Podnets, run_hook: RunHook, mount: Path
) -> None:
    """The domain's record is still there (libvirt never ran its release end) and one of
    its files cannot go: a new record in its place would forget it, so the start fails
    naming it, and the record stays for the next release."""
    pod = podnets.routed().pod()
    before = pn.snapshot(pod.netns)
    state_dir = mount / "state"
    env = {"VMNET_HOOK_STATE_DIR": str(state_dir)}
    xml, _source = domain(pod)
    record = state_dir / f"{UUID}.json"
    try:
        assert run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env).returncode == 0
        (pid_file,) = state_dir.glob("*.pid")
        subprocess.run(["chattr", "+i", str(pid_file)], check=True)
        try:
            again = run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env)
        finally:
            subprocess.run(["chattr", "-i", str(pid_file)], check=True)
        assert (again.returncode, again.stdout) == (1, "")
        stays = IMMUTABLE.replace(")", f"); {pid_file} stays", 1)
        assert again.stderr == (
            "vmnet-hook: what this domain's last run left cannot be undone, so it does not "
            f"start: state directory {state_dir} {stays}\n"
        )
        assert record.exists() and pn.snapshot(pod.netns) == before
    finally:
        run_hook("vm1", "release", "end", "-", xml=xml, env=env)
    assert os.listdir(state_dir) == [".lock"]


def test_a_tool_still_running_at_the_deadline_ends_with_the_hook(
    podnets: pn.Podnets, run_hook: RunHook, tmp_path: Path
) -> None:
    """An nft that takes 3 s (a stand-in first on PATH), a deadline of 1 s: the hook gives
    up, and its nft does not go on to act after it (as after release end had looked)."""
    pod = podnets.routed().pod()
    bin_dir, acted = tmp_path / "bin", tmp_path / "nft-acted"
    bin_dir.mkdir()
    (bin_dir / "nft").write_text(f"#!/bin/sh\nsleep 3\ntouch {acted}\n")
    (bin_dir / "nft").chmod(0o755)
    xml, _source = domain(pod)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "VMNET_HOOK_DEADLINE_SECONDS": "1"}
    try:
        done = run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env)
        assert done.returncode == 1 and "gave up after 1s (deadline_seconds)" in done.stderr
        time.sleep(3.5)
        assert not acted.exists()
    finally:
        run_hook("vm1", "release", "end", "-", xml=xml)
