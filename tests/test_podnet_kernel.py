"""The masquerade pod side on real kernel objects, driven through hooks/qemu as libvirt
runs it: what it makes, who may hold a pod NIC, and a start that fails half-way leaving
the pod and the host exactly as they were."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, HOOK, RunHook
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets

__all__ = ["podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel
UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"


def domain(
    pod: pn.Pod, *, uuid: str = UUID, mac: str = "52:54:00:12:34:56", name: str = "vm1"
) -> tuple[str, str]:
    """one-nic.xml in masquerade on ``pod``, with a placeholder of its own."""
    source = f"vn{secrets.token_hex(6)}"
    xml = (DATA / "one-nic.xml").read_text()
    xml = xml.replace('network="l2" ', "").replace('netns="NETNS"', f'pid="{pod.pid}"')
    xml = xml.replace("vn3f9a0c1d2e4b", source).replace(UUID, uuid)
    xml = xml.replace("<name>vm1</name>", f"<name>{name}</name>")
    return xml.replace("52:54:00:12:34:56", mac), source


@pytest.fixture
def released(run_hook: RunHook) -> Iterator[list[str]]:
    """XMLs appended here get their ``release end`` at teardown, pass or fail: a test that
    fails half-way must not leave a dnsmasq or a guest link behind."""
    xmls: list[str] = []
    yield xmls
    for xml in reversed(xmls):
        run_hook("vm", "release", "end", "-", xml=xml)


def fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_hook_without(
    programs: Sequence[str], hook_env: dict[str, str], *args: str, xml: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """hooks/qemu as ``run_hook`` runs it, in a mount namespace of its own where each of
    ``programs`` (absolute paths) is covered by /dev/null: truly not installed, whatever
    directories the hook searches."""
    script = "".join(f"mount --bind /dev/null {shlex.quote(p)} && " for p in programs)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{script}exec "$@"',
         "sh", sys.executable, str(HOOK), *args], input=xml, capture_output=True, text=True,
        env={**hook_env, **(env or {})}, timeout=60, check=False,
    )  # fmt: skip


def in_pod(pod: pn.Pod, *argv: str) -> str:
    return pn.in_pod(pod, *argv)


def test_prepare_builds_the_pod_side_and_release_leaves_the_pod_as_found(
    podnets: pn.Podnets, run_hook: RunHook, hook_env: dict[str, str], released: list[str]
) -> None:
    pod = podnets.routed().pod()
    before = pn.snapshot(pod.netns)
    xml, source = domain(pod)
    released.append(xml)
    done = run_hook("vm1", "prepare", "begin", "-", xml=xml)
    assert done.returncode == 0, done.stderr
    assert f'<source dev="{source}" mode="bridge"/>' in done.stdout
    assert f'host-dev="{source}"' in done.stdout
    links = in_pod(pod, "ip", "-o", "-4", "addr", "show")
    assert "10.0.2.1/30" in links and f"{pod.ip}/32" in links
    assert 'comment "vmnet-hook uuid=' in in_pod(pod, "nft", "list", "ruleset")
    assert "dnsmasq" in pn.snapshot(pod.netns)["processes"]
    assert Path(f"/sys/class/net/{source}").exists()
    done = run_hook("vm1", "release", "end", "-", xml=xml)
    assert done.returncode == 0, done.stderr
    assert pn.snapshot(pod.netns) == before
    assert not Path(f"/sys/class/net/{source}").exists()
    assert os.listdir(hook_env["VMNET_HOOK_STATE_DIR"]) == [".lock"]


@pytest.mark.parametrize("second_mode", ["masquerade", "l2"])
def test_a_pod_nic_that_carries_a_guest_is_refused_to_a_second_domain(
    second_mode: str, podnets: pn.Podnets, run_hook: RunHook, released: list[str]
) -> None:
    pod = podnets.routed().pod()
    first, _source = domain(pod)
    released.append(first)
    assert run_hook("vm1", "prepare", "begin", "-", xml=first).returncode == 0
    other_uuid = "0d7a2f34-5b61-4c8e-9a1d-2e3f4a5b6c7d"
    second, source = domain(pod, uuid=other_uuid, mac="52:54:00:00:00:02", name="vm2")
    released.append(second)
    if second_mode == "l2":
        second = second.replace("<vmnet:interface ", '<vmnet:interface network="l2" ')
    done = run_hook("vm2", "prepare", "begin", "-", xml=second)
    assert done.returncode == 1
    named = pod.host_veth if second_mode == "l2" else "eth0"  # l2 names the pod's host veth
    assert "already" in done.stderr and str(named) in done.stderr, done.stderr
    assert done.stderr.startswith("vmnet-hook: domain 'vm2', interface 52:54:00:00:00:02: ")
    assert len(done.stderr.splitlines()) == 1
    assert not Path(f"/sys/class/net/{source}").exists()
    assert run_hook("vm1", "release", "end", "-", xml=first).returncode == 0


@pytest.mark.parametrize(
    ("tools", "said"),
    [
        ({"dnsmasq": "echo 'dnsmasq: failed to create listening socket' >&2; exit 2\n"},
         "did not start: dnsmasq: failed to create listening socket"),
        ({"nft": 'if [ "$1" = -f ]; then echo "Error: Could not process rule" >&2; exit 1; fi\n'
                 'exec /usr/sbin/nft "$@"\n'},
         "Could not process rule"),
        ({"dnsmasq": None}, "dnsmasq is not installed: apt-get install dnsmasq-base"),
    ],
)  # fmt: skip
def test_a_start_that_fails_half_way_leaves_nothing(
    tools: dict[str, str | None],
    said: str,
    podnets: pn.Podnets,
    run_hook: RunHook,
    hook_env: dict[str, str],
    tmp_path: Path,
    released: list[str],
) -> None:
    pod = podnets.routed().pod()
    before = pn.snapshot(pod.netns)
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, real in (("nft", "/usr/sbin/nft"), ("dnsmasq", "/usr/sbin/dnsmasq")):
        script = tools.get(name, f'exec {real} "$@"\n')
        if script is not None:
            fake_tool(fakes, name, script)
    xml, source = domain(pod)
    missing = [f"/usr/sbin/{name}" for name, script in tools.items() if script is None]
    env = {"PATH": f"{fakes}:/usr/bin:/bin"}  # the hook also searches /usr/sbin: hidden
    done = run_hook_without(missing, hook_env, "vm1", "prepare", "begin", "-", xml=xml, env=env)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert (
        line.startswith("vmnet-hook: domain 'vm1', interface 52:54:00:12:34:56: ") and said in line
    )
    assert pn.snapshot(pod.netns) == before
    assert not Path(f"/sys/class/net/{source}").exists()
    assert os.listdir(hook_env["VMNET_HOOK_STATE_DIR"]) == [".lock"]


def test_reconnect_starts_a_killed_dhcp_server_again_and_status_says_ok(
    podnets: pn.Podnets, run_hook: RunHook, hook_env: dict[str, str], released: list[str]
) -> None:
    """What a libvirtd restart does to a guest whose dnsmasq died: reconnect begin mends
    it, and status then shows a live server with a new pid."""
    pod = podnets.routed().pod()
    xml, _source = domain(pod)
    released.append(xml)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    (before,) = _status_rows(hook_env)
    os.kill(int(before["dhcp_pid"]), 9)
    for _ in range(50):  # a zombie counts as gone; wait for the kill to land
        if not _status_rows(hook_env)[0]["dhcp_alive"]:
            break
        time.sleep(0.1)
    done = run_hook("vm1", "reconnect", "begin", "-", xml=xml)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    (mended,) = _status_rows(hook_env)
    assert (mended["state"], mended["problem"]) == ("ok", "")
    assert mended["dhcp_alive"] and mended["dhcp_pid"] != before["dhcp_pid"]


def _status_rows(hook_env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "vmnet_hook.cli.main", "status", "--json"], capture_output=True,
        text=True, env={**hook_env, "PATH": f"/nonexistent:{os.environ['PATH']}"},
        timeout=60, check=False,
    )  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows
