"""`vmnet-hook demo`, run as a user would: what it shows, and that it leaves nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

DEMO = [sys.executable, "-c", "from vmnet_hook.cli.main import main; main()", "demo"]


def leftovers() -> tuple[list[str], list[str], list[str]]:
    """Demo pods' host veths, demo cgroups, and demo domains still there."""
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    cgroups = subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "2", "-name", "vmnet-demo-*"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    domains = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    return (
        [link["ifname"] for link in links if link["ifname"].startswith("vmv")],
        cgroups,
        [name for name in domains if name.startswith("vmnet-demo-")],
    )


def host_end(output: str) -> str:
    found = re.search(r"host end +(vmv[0-9a-f]+)", output)
    assert found, output
    return found.group(1)


@pytest.mark.kernel
def test_demo_without_libvirt_shows_the_rewrite_and_leaves_nothing() -> None:
    before = leftovers()
    shown = subprocess.run([*DEMO, "--no-libvirt"], capture_output=True, text=True, timeout=120)
    assert (shown.returncode, shown.stderr) == (0, "")
    veth = host_end(shown.stdout)
    assert f'<source dev="{veth}" mode="bridge"/>' in shown.stdout
    assert re.search(r"kernel: altname vn[0-9a-f]{12} on the pod's host veth", shown.stdout)
    assert shown.stdout.rstrip().endswith("bindings are gone.")
    assert leftovers() == before


@pytest.mark.libvirt
def test_demo_starts_a_vm_on_the_pods_veth() -> None:
    shown = subprocess.run(DEMO, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    veth = host_end(shown.stdout)
    assert re.search(rf"its macvtap: macvtap\d+@{veth}\n", shown.stdout), shown.stdout
    assert "`virsh destroy`: altname removed." in shown.stdout
    assert leftovers() == ([], [], [])


@pytest.mark.libvirt
def test_ctrl_c_during_the_demo_still_cleans_up() -> None:
    demo = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:  # interrupt just as it turns to libvirt
        lines.append(line)
        if "`release end` removed it again" in line:
            os.kill(demo.pid, signal.SIGINT)
            break
    rest = demo.communicate(timeout=120)[0]
    assert demo.returncode != 0
    assert "bindings are gone." in rest
    assert leftovers() == ([], [], [])
