"""Kernel tier: hooks/qemu against real pods (netns, veth, processes), as libvirt runs it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakePod, RunHook, domain_xml
from vmnet_hook.demo import sandbox

pytestmark = pytest.mark.kernel
PLACEHOLDER = "vn3f9a0c1d2e4b"
UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"


def altnames(link: str) -> list[str]:
    shown = json.loads(subprocess.run(["ip", "-j", "link", "show", link], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    return list(shown[0].get("altnames", []))


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def test_prepare_prints_the_rewrite_and_binds_release_unbinds(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    pod = make_pod()
    xml = domain_xml(NETNS=pod.name)
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml)
    assert (prepared.returncode, prepared.stderr) == (0, "")
    assert f'<source dev="{pod.host_veth}" mode="bridge"/>' in prepared.stdout
    assert f'host-dev="{pod.host_veth}"' in prepared.stdout
    assert altnames(pod.host_veth) == [PLACEHOLDER]
    assert Path(hook_env["VMNET_HOOK_STATE_DIR"], f"{UUID}.json").exists()

    released = run_hook("vm1", "release", "end", "-", xml=xml)
    assert (released.returncode, released.stdout, released.stderr) == (0, "", "")
    assert altnames(pod.host_veth) == []
    assert not Path(hook_env["VMNET_HOOK_STATE_DIR"], f"{UUID}.json").exists()


def test_the_right_veth_among_pods_that_all_have_eth0_at_ifindex_2(
    make_pod: MakePod, run_hook: RunHook
) -> None:
    pods = [make_pod() for _ in range(6)]
    for pod in pods:
        sandbox.unpin(pod)
    target = pods[3]
    xml = domain_xml().replace('netns="NETNS"', f'pid="{target.pids[0]}"')
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml)
    assert prepared.returncode == 0, prepared.stderr
    assert f'<source dev="{target.host_veth}"' in prepared.stdout
    assert [altnames(pod.host_veth) for pod in pods] == [
        [PLACEHOLDER] if pod is target else [] for pod in pods
    ]
    run_hook("vm1", "release", "end", "-", xml=xml)


@pytest.fixture
def macvlan_pod() -> Iterator[tuple[str, str]]:
    """A pod whose eth0 is a macvlan on a host link: IFLA_LINK points at the host."""
    netns, parent = sandbox.random_name("vmnt-"), sandbox.random_name("vmvp", 10)
    ip("netns", "add", netns)
    try:
        ip("link", "add", parent, "type", "veth", "peer", "name", parent + "x")
        ip("link", "add", "mv" + parent[4:], "link", parent, "type", "macvlan", "mode", "bridge")
        ip("link", "set", "mv" + parent[4:], "netns", netns, "name", "eth0")
        yield netns, parent
    finally:
        subprocess.run(["ip", "link", "del", parent], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def test_a_macvlan_eth0_is_refused_not_resolved_to_its_host_link(
    macvlan_pod: tuple[str, str], run_hook: RunHook
) -> None:
    netns, parent = macvlan_pod
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=domain_xml(NETNS=netns))
    assert prepared.returncode == 1
    assert prepared.stdout == ""
    assert prepared.stderr == (
        "vmnet-hook: domain 'vm1', interface 52:54:00:12:34:56: eth0 in the pod is a macvlan "
        "link, not a veth; only veth-backed pod NICs can be handed to a VM\n"
    )
    assert altnames(parent) == []


def test_a_veth_whose_peer_is_in_a_third_namespace_is_refused(
    make_pod: MakePod, run_hook: RunHook
) -> None:
    pod, third = make_pod(), make_pod()
    ip(
        "-n",
        pod.name,
        "link",
        "add",
        "eth1",
        "type",
        "veth",
        "peer",
        "name",
        "x1",
        "netns",
        third.name,
    )
    xml = domain_xml(NETNS=pod.name).replace('dev="eth0"', 'dev="eth1"')
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml)
    assert prepared.returncode == 1
    assert "eth1's veth peer is in another network namespace" in prepared.stderr
    assert "refused rather than guessed" in prepared.stderr


def test_a_placeholder_naming_another_host_link_is_refused(
    make_pod: MakePod, run_hook: RunHook
) -> None:
    pod, other = make_pod(), make_pod()
    xml = domain_xml(NETNS=pod.name).replace(PLACEHOLDER, other.host_veth)
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml)
    assert prepared.returncode == 1
    assert f"placeholder <source dev='{other.host_veth}'> is already a name of host link" in (
        prepared.stderr
    )
    assert altnames(pod.host_veth) == [] and altnames(other.host_veth) == []


def test_a_missing_pod_fails_with_one_line_and_creates_no_namespace(
    run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    name = sandbox.random_name("vmnt-typo-")
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=domain_xml(NETNS=name))
    assert prepared.returncode == 1
    assert prepared.stderr == (
        f"vmnet-hook: domain 'vm1', interface 52:54:00:12:34:56: netns={name}: "
        f"no namespace /run/netns/{name} (see `ip netns list`)\n"
    )
    assert not Path("/run/netns", name).exists()
    assert not Path(hook_env["VMNET_HOOK_STATE_DIR"]).exists()


def test_a_missing_nic_in_the_pod_lists_the_nics_it_has(
    make_pod: MakePod, run_hook: RunHook
) -> None:
    pod = make_pod()
    xml = domain_xml(NETNS=pod.name).replace('dev="eth0"', 'dev="net1"')
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml)
    assert prepared.returncode == 1
    assert "has no NIC 'net1'; it has: eth0, lo" in prepared.stderr


def test_release_after_the_pod_is_gone_succeeds_and_forgets_the_domain(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    pod = make_pod()
    xml = domain_xml(NETNS=pod.name)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    sandbox.remove_pod(pod)
    assert not link_exists(pod.host_veth)
    released = run_hook("vm1", "release", "end", "-", xml=xml)
    assert (released.returncode, released.stderr) == (0, "")
    assert not Path(hook_env["VMNET_HOOK_STATE_DIR"], f"{UUID}.json").exists()


def test_one_syslog_line_per_decision_and_steps_at_debug(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    from vmnet_hook.config import load
    from vmnet_hook.hook.handlers import HookCall, System, run

    pod = make_pod()
    config = load(hook_env["VMNET_HOOK_CONFIG"], environ=hook_env)
    lines: list[tuple[str, str]] = []
    system = System(config, log=lambda level, message: lines.append((level, message)))
    xml = domain_xml(NETNS=pod.name).encode()
    run(HookCall("vm1", "prepare", "begin", xml, config), system)
    run(HookCall("vm1", "release", "end", xml, config), system)
    assert [line for line in lines if line[0] != "debug"] == [
        ("info", f"prepare domain=vm1 mac=52:54:00:12:34:56 network=l2 pod=netns={pod.name} "
                 f"dev=eth0 source_dev={pod.host_veth}: bound {PLACEHOLDER}"),
        ("info", "release vm1: bindings and pod-side pieces removed"),
    ]  # fmt: skip
    steps = [message for level, message in lines if level == "debug"]
    assert steps[0] == f"vm1 52:54:00:12:34:56: resolving netns={pod.name} dev eth0"
    assert f"host veth {pod.host_veth}" in steps[1] and "both ends checked" in steps[1]
