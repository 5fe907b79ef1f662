"""`vmnet-hook demo`, run as a user would: what it shows, and that it leaves nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_libvirt import installed_hook

__all__ = ["installed_hook"]

DEMO = [sys.executable, "-c", "from vmnet_hook.cli.main import main; main()", "demo"]
POD_SIDE = [
    r"link vg[0-9a-f]{12} 10\.0\.2\.1/30, the guest's gateway",
    r"nft table ip vmnet_[0-9a-f]{12}: DNAT to the guest",
    r"dnsmasq pid \d+, answering only the guest's MAC",
    r"the pod is as it was found: links, addresses, routes",
]


def leftovers() -> tuple[list[str], list[str], list[str], list[str]]:
    """Demo links and namespaces, demo cgroups, and demo domains still there."""
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    cgroups = subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "2", "-name", "vmnet-demo-*"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    domains = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return (
        [link["ifname"] for link in links if link["ifname"].startswith("vmv")],
        [name for name in netns if name.startswith("vmnet-demo-")],
        cgroups,
        [name for name in domains if name.startswith("vmnet-demo-")],
    )


def placeholder_of(output: str) -> str:
    found = re.search(r'<source dev="(vn[0-9a-f]{12})"', output)
    assert found, output
    return found.group(1)


def assert_shows(output: str, patterns: list[str]) -> None:
    for pattern in patterns:
        assert re.search(pattern, output), f"{pattern!r} not in:\n{output}"


@pytest.mark.kernel
def test_demo_without_libvirt_shows_the_pod_side_and_leaves_nothing() -> None:
    before = leftovers()
    shown = subprocess.run([*DEMO, "--no-libvirt"], capture_output=True, text=True, timeout=120)
    assert (shown.returncode, shown.stderr) == (0, ""), shown.stdout
    placeholder = placeholder_of(shown.stdout)
    assert_shows(shown.stdout, [f'host-dev="{placeholder}"', *POD_SIDE])
    assert shown.stdout.rstrip().endswith("bindings are gone.")
    assert leftovers() == before
    assert not os.path.exists(f"/sys/class/net/{placeholder}")


@pytest.mark.guest
def test_demo_boots_a_guest_on_the_pods_network(installed_hook: Path) -> None:
    shown = subprocess.run(DEMO, capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    pod_ip = re.search(r"pod +(203\.0\.113\.\d+)/24", shown.stdout)
    assert pod_ip, shown.stdout
    assert_shows(shown.stdout, [
        rf"its macvtap: macvtap\d+@{placeholder_of(shown.stdout)}, on the guest's own link",
        r"address 10\.0\.2\.2/30  gateway 10\.0\.2\.1 ",
        r"DNS 203\.0\.113\.53  search demo\.svc\.cluster\.local,",
        r"ping      reply in [\d.]+ ms",
        rf"answered 'peer'; the peer saw it come from {pod_ip.group(1)} \(the pod's IP\)",
        r"tcp/8080  answered 'guest', by the guest",
        *POD_SIDE,
    ])  # fmt: skip
    assert leftovers() == ([], [], [], [])


@pytest.mark.libvirt
def test_without_a_guest_image_the_demo_wires_a_diskless_domain(installed_hook: Path) -> None:
    env = {**os.environ, "VMNET_HOOK_GUEST_BUSYBOX": "/nonexistent/busybox"}
    shown = subprocess.run(DEMO, capture_output=True, text=True, timeout=300, env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "no guest image" in line]
    assert lines == [
        "  no guest image (/nonexistent/busybox is missing: apt-get install busybox-static):"
        " starting a diskless domain to show its wiring."
    ]
    assert_shows(shown.stdout, [rf"its macvtap: macvtap\d+@{placeholder_of(shown.stdout)}",
                                *POD_SIDE])  # fmt: skip
    assert "The guest's lease" not in shown.stdout
    assert leftovers() == ([], [], [], [])


@pytest.mark.guest
def test_ctrl_c_during_the_demo_still_cleans_up(installed_hook: Path) -> None:
    demo = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    for line in demo.stdout:  # interrupt while the guest boots
        if "the hook made:" in line:
            os.kill(demo.pid, signal.SIGINT)
            break
    rest = demo.communicate(timeout=120)[0]
    assert demo.returncode != 0
    assert "bindings are gone." in rest
    assert leftovers() == ([], [], [], [])
