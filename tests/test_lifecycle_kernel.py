"""Kernel tier: every lifecycle step, several NICs, crashes, deadlines and concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import HOOK, MakePod, RunHook, domain_xml
from tests.test_hook_kernel import PLACEHOLDER, UUID, altnames
from vmnet_hook.demo import sandbox

pytestmark = pytest.mark.kernel


def two_nic_xml(first: sandbox.Pod, second: str) -> str:
    return domain_xml("two-nics.xml", NETNS1=first.name, NETNS2=second)


@pytest.mark.parametrize("operation", ["migrate", "restore"])
def test_migrate_and_restore_begin_print_the_xml_for_this_host_and_bind_nothing(
    make_pod: MakePod, run_hook: RunHook, operation: str
) -> None:
    pod = make_pod()
    filtered = run_hook("vm1", operation, "begin", "-", xml=domain_xml(NETNS=pod.name))
    assert (filtered.returncode, filtered.stderr) == (0, "")
    assert f'<source dev="{pod.host_veth}" mode="bridge"/>' in filtered.stdout
    assert altnames(pod.host_veth) == []

    prepared = run_hook("vm1", "prepare", "begin", "-", xml=filtered.stdout)
    assert (prepared.returncode, prepared.stderr) == (0, "")
    assert altnames(pod.host_veth) == []  # <source dev> already names the veth


def test_restore_begin_with_the_pod_missing_here_fails_clearly(run_hook: RunHook) -> None:
    filtered = run_hook("vm1", "restore", "begin", "-", xml=domain_xml(NETNS="vmnt-gone"))
    assert filtered.returncode == 1
    assert filtered.stdout == ""
    assert "netns=vmnt-gone: no namespace /run/netns/vmnt-gone" in filtered.stderr


@pytest.mark.parametrize("operation", ["reconnect", "attach"])
def test_reconnect_and_attach_never_fail(
    make_pod: MakePod, run_hook: RunHook, operation: str
) -> None:
    pod = make_pod()
    xml = domain_xml(NETNS=pod.name)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    sandbox.remove_pod(pod)  # the pod vanished under a running VM
    checked = run_hook("vm1", operation, "begin", "-", xml=xml)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    broken = run_hook("vm1", operation, "begin", "-", xml=xml.replace("<uuid>", "<uuid>x"))
    assert (broken.returncode, broken.stdout) == (0, "")


def test_two_nics_from_two_pods_bind_together(make_pod: MakePod, run_hook: RunHook) -> None:
    first, second = make_pod(), make_pod()
    xml = two_nic_xml(first, second.name)
    prepared = run_hook("vm2", "prepare", "begin", "-", xml=xml)
    assert prepared.returncode == 0, prepared.stderr
    assert (altnames(first.host_veth), altnames(second.host_veth)) == (
        ["vn000000000001"], ["vn000000000002"])  # fmt: skip
    assert run_hook("vm2", "release", "end", "-", xml=xml).returncode == 0
    assert (altnames(first.host_veth), altnames(second.host_veth)) == ([], [])


def test_one_nic_failing_leaves_none_bound(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    first = make_pod()
    prepared = run_hook("vm2", "prepare", "begin", "-", xml=two_nic_xml(first, "vmnt-gone"))
    assert prepared.returncode == 1
    assert prepared.stderr.splitlines() == [
        "vmnet-hook: domain 'vm2', interface 52:54:00:00:00:02: netns=vmnt-gone: "
        "no namespace /run/netns/vmnt-gone (see `ip netns list`)"
    ]
    assert altnames(first.host_veth) == []
    assert not Path(hook_env["VMNET_HOOK_STATE_DIR"]).exists()


def test_a_second_domain_with_the_same_placeholder_fails_clearly(
    make_pod: MakePod, run_hook: RunHook
) -> None:
    first, second = make_pod(), make_pod()
    xml = domain_xml(NETNS=first.name)
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml).returncode == 0
    other = domain_xml(NETNS=second.name).replace(UUID, str(uuidlib.uuid4()))
    refused = run_hook("vmB", "prepare", "begin", "-", xml=other.replace(">vm1<", ">vmB<"))
    assert refused.returncode == 1
    assert f"placeholder <source dev='{PLACEHOLDER}'> is already a name of host link " \
        f"{first.host_veth}" in refused.stderr  # fmt: skip
    assert (altnames(first.host_veth), altnames(second.host_veth)) == ([PLACEHOLDER], [])


def test_one_pod_nic_claimed_by_two_domains_fails_clearly(
    make_pod: MakePod, run_hook: RunHook
) -> None:
    pod = make_pod()
    assert run_hook("vm1", "prepare", "begin", "-", xml=domain_xml(NETNS=pod.name)).returncode == 0
    other = domain_xml(NETNS=pod.name).replace(UUID, str(uuidlib.uuid4()))
    refused = run_hook(
        "vmB", "prepare", "begin", "-", xml=other.replace(PLACEHOLDER, "vnbbbbbbbbbbbb")
    )
    assert refused.returncode == 1
    assert f"pod NIC {pod.host_veth} is already used by running domain 'vm1'" in refused.stderr
    assert altnames(pod.host_veth) == [PLACEHOLDER]


def test_two_domains_starting_at_once_on_one_pod_nic_get_it_once(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    pod = make_pod()
    xmls = [
        domain_xml(NETNS=pod.name).replace(UUID, str(uuidlib.uuid4())).replace(PLACEHOLDER, name)
        for name in ("vnaaaaaaaaaaaa", "vnbbbbbbbbbbbb")
    ]

    def step(operation: str, subop: str, xml: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(HOOK), "vm", operation, subop, "-"],
                              input=xml, text=True, capture_output=True, env=hook_env,
                              timeout=120)  # fmt: skip

    for _round in range(10):
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda xml: step("prepare", "begin", xml), xmls))
        assert sorted(r.returncode for r in results) == [0, 1]
        refused = next(r for r in results if r.returncode == 1)
        assert f"pod NIC {pod.host_veth} is already used by running domain 'vm1'" in refused.stderr
        assert len(altnames(pod.host_veth)) == 1
        for xml in xmls:
            assert step("release", "end", xml).returncode == 0
        assert altnames(pod.host_veth) == []


CRASH_AFTER_FIRST_BIND = """
import os, signal, sys
from vmnet_hook.host import netlink
real = netlink.Pyroute2Session.add_altname
def add_then_die(self, index, altname):
    real(self, index, altname)
    os.kill(os.getpid(), signal.SIGKILL)
netlink.Pyroute2Session.add_altname = add_then_die
from vmnet_hook.hook.gate import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_in_the_middle_of_prepare_is_cleaned_up_by_release(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    first, second = make_pod(), make_pod()
    xml = two_nic_xml(first, second.name)
    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_FIRST_BIND, "vm2", "prepare",
                              "begin", "-"], input=xml, text=True, capture_output=True,
                             env=hook_env, timeout=60)  # fmt: skip
    assert crashed.returncode == -9
    assert altnames(first.host_veth) == ["vn000000000001"]  # left behind by the crash
    released = run_hook("vm2", "release", "end", "-", xml=xml)
    assert released.returncode == 0
    assert (altnames(first.host_veth), altnames(second.host_veth)) == ([], [])
    assert list(Path(hook_env["VMNET_HOOK_STATE_DIR"]).glob("*.json")) == []


def test_kill_9_in_the_middle_of_prepare_is_cleaned_up_by_the_next_prepare(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    first, second = make_pod(), make_pod()
    xml = two_nic_xml(first, second.name)
    subprocess.run([sys.executable, "-c", CRASH_AFTER_FIRST_BIND, "vm2", "prepare", "begin", "-"],
                   input=xml, text=True, capture_output=True, env=hook_env, timeout=60)  # fmt: skip
    prepared = run_hook("vm2", "prepare", "begin", "-", xml=xml)
    assert (prepared.returncode, prepared.stderr) == (0, "")
    assert (altnames(first.host_veth), altnames(second.host_veth)) == (
        ["vn000000000001"], ["vn000000000002"])  # fmt: skip


def test_the_deadline_turns_a_hang_into_one_clear_line(
    tmp_path: Path, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    proc_root = tmp_path / "proc"
    (proc_root / "self").mkdir(parents=True)
    os.mkfifo(proc_root / "self" / "mounts")  # opening it blocks forever
    xml = domain_xml().replace('netns="NETNS"', 'pod-uid="3f9a0c1d-2e4b-4c5d-8e6f-7a8b9c0d1e2f"')
    env = {"VMNET_HOOK_PROC_ROOT": str(proc_root), "VMNET_HOOK_DEADLINE_SECONDS": "1"}
    hung = run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env)
    assert hung.returncode == 1
    assert hung.stderr == (
        "vmnet-hook: domain 'vm1': gave up after 1s (deadline_seconds); nothing is bound\n"
    )
    assert not Path(hook_env["VMNET_HOOK_STATE_DIR"]).exists()


HANG_AFTER_FIRST_BIND = CRASH_AFTER_FIRST_BIND.replace(
    "os.kill(os.getpid(), signal.SIGKILL)", "__import__('time').sleep(30)"
)


@pytest.mark.parametrize("name", ["vm2", "v" * 100_000])  # a state file over 64 KiB too
def test_a_deadline_in_the_middle_of_binding_is_undone_by_release_end(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str], name: str
) -> None:
    first, second = make_pod(), make_pod()
    xml = two_nic_xml(first, second.name).replace("<name>vm2</name>", f"<name>{name}</name>")
    hung = subprocess.run([sys.executable, "-c", HANG_AFTER_FIRST_BIND, name, "prepare", "begin",
                           "-"], input=xml, text=True, capture_output=True, timeout=60,
                          env={**hook_env, "VMNET_HOOK_DEADLINE_SECONDS": "1"})  # fmt: skip
    assert (hung.returncode, hung.stdout) == (1, "")
    assert hung.stderr.startswith(
        f"vmnet-hook: domain {name!r}: gave up after 1s (deadline_seconds); may be left bound: "
        "altname vn000000000001 of "
    )
    assert hung.stderr.endswith(
        "`vmnet-hook status --prune` or the domain's next release end clears it\n"
    )
    assert altnames(first.host_veth) == ["vn000000000001"]
    assert run_hook("vm2", "release", "end", "-", xml=xml).returncode == 0  # libvirt runs it
    assert (altnames(first.host_veth), altnames(second.host_veth)) == ([], [])


def test_twenty_concurrent_prepares_each_bind_their_own_pod(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    pods = [make_pod() for _ in range(20)]
    xmls = [
        domain_xml(NETNS=pod.name)
        .replace(UUID, str(uuidlib.uuid4()))
        .replace(PLACEHOLDER, f"vnconc{index:08d}")
        for index, pod in enumerate(pods)
    ]

    def hook(step: tuple[str, str], xml: str) -> int:
        return subprocess.run([sys.executable, str(HOOK), "vm", *step, "-"], input=xml, text=True,
                              capture_output=True, env=hook_env, timeout=120).returncode  # fmt: skip

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(hook, [("prepare", "begin")] * 20, xmls)) == [0] * 20
        assert [altnames(pod.host_veth) for pod in pods] == [
            [f"vnconc{index:08d}"] for index in range(20)
        ]
        assert list(pool.map(hook, [("release", "end")] * 20, xmls)) == [0] * 20
    assert [altnames(pod.host_veth) for pod in pods] == [[]] * 20
    assert list(Path(hook_env["VMNET_HOOK_STATE_DIR"]).glob("*.json")) == []


HOSTILE = {
    "billion laughs": '<!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><domain>&b; urn:vmnet-hook:1</domain>',
    "external entity": '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/shadow">]><domain>&x; urn:vmnet-hook:1</domain>',
    "two selectors": domain_xml().replace('netns="NETNS"', 'netns="a" pid="1"'),
    "netns outside netns_dir": domain_xml(NETNS="../../proc/1/ns/net"),
    "NUL in a name": domain_xml(NETNS="a&#0;b"),
    "200-character dev": domain_xml(NETNS="p").replace('dev="eth0"', f'dev="{"e" * 200}"'),
    "long placeholder": domain_xml(NETNS="p").replace(PLACEHOLDER, "vn0123456789abcdef"),
    "unknown attribute": domain_xml(NETNS="p").replace('dev="eth0"', 'dev="eth0" bridge="br0"'),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_one_line_and_changes_nothing(
    case: str, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    before = (sorted(os.listdir("/run/netns")), _all_altnames())
    refused = run_hook("vm1", "prepare", "begin", "-", xml=HOSTILE[case])
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and refused.stderr.startswith("vmnet-hook: ")
    assert "Traceback" not in refused.stderr
    assert (sorted(os.listdir("/run/netns")), _all_altnames()) == before
    assert not Path(hook_env["VMNET_HOOK_STATE_DIR"]).exists()


def _all_altnames() -> list[str]:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    return sorted(name for link in links for name in link.get("altnames", []))
