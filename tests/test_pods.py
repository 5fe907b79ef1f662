"""Kernel tier: finding pods, and listing them, on real namespaces, veths and cgroups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakePod
from vmnet_hook.cli.pods import PodEntry, list_pods
from vmnet_hook.config import Config
from vmnet_hook.core.annotation import parse_selector
from vmnet_hook.demo import sandbox
from vmnet_hook.demo.sandbox import PodLayout
from vmnet_hook.errors import VmnetError
from vmnet_hook.host.netlink import Pyroute2Netlink
from vmnet_hook.host.resolve import Resolver

pytestmark = pytest.mark.kernel

DRIVERS_AND_RUNTIMES = [
    (driver, runtime) for driver in ("systemd", "cgroupfs")
    for runtime in ("containerd", "crio", "docker")
]  # fmt: skip


@pytest.fixture
def new_pod(make_pod: MakePod) -> MakePod:
    """make_pod, returning once every container process has entered the pod's netns.

    sandbox.make_pod returns as soon as ``nsenter`` is started, a moment before it joins
    the namespace; a lookup in that moment sees the host's netns."""

    def make(pod_dev: str = "eth0", **options: object) -> sandbox.Pod:
        pod = make_pod(pod_dev, **options)
        if not options.get("host_network"):
            for pid in pod.pids:
                wait_for_netns(pid)
        return pod

    return make


def wait_for_netns(pid: int) -> None:
    host = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + 10
    while os.stat(f"/proc/{pid}/ns/net").st_ino == host:
        assert time.monotonic() < deadline, f"process {pid} never entered its pod's netns"
        time.sleep(0.005)


@pytest.fixture
def pod_log_dir(tmp_path: Path) -> str:
    path = tmp_path / "pods"
    path.mkdir()
    return str(path)


@pytest.fixture
def resolver(pod_log_dir: str) -> Resolver:
    return Resolver(Config(pod_log_dir=pod_log_dir), Pyroute2Netlink())


@pytest.fixture
def v1_cgroup_root() -> Iterator[str]:
    """A private directory in a real cgroup v1 hierarchy (pids), for this test's pods."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [f[1] for f in map(str.split, mounts) if f[2] == "cgroup" and "pids" in f[3]]
    if not points:
        pytest.skip("no cgroup v1 pids hierarchy on this host")
    root = f"{points[0]}/{sandbox.random_name('vmnt-test-')}"
    os.mkdir(root)
    yield root
    for directory, _subdirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        os.rmdir(directory)


def veth_of(resolver: Resolver, kind: str, value: str, pod_dev: str = "eth0") -> str:
    return resolver.host_veth(parse_selector(kind, value), pod_dev).name


def refusal(resolver: Resolver, kind: str, value: str) -> str:
    with pytest.raises(VmnetError) as refused:
        resolver.host_veth(parse_selector(kind, value), "eth0")
    return str(refused.value)


def pod_ifindex(pod: sandbox.Pod, pod_dev: str = "eth0") -> int:
    shown = subprocess.run(["nsenter", f"--net=/proc/{pod.pids[0]}/ns/net", "ip", "-j", "link",
                            "show", pod_dev], capture_output=True, text=True, check=True)  # fmt: skip
    return int(json.loads(shown.stdout)[0]["ifindex"])


def kill(pod: sandbox.Pod) -> None:
    """End the pod's container processes (we started them), leaving its cgroups behind."""
    for pid in pod.pids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.mark.parametrize(("driver", "runtime"), DRIVERS_AND_RUNTIMES)
def test_every_selector_finds_the_pod_for_each_driver_and_runtime(
    cgroup_root: str, new_pod: MakePod, pod_log_dir: str, resolver: Resolver,
    driver: str, runtime: str,
) -> None:  # fmt: skip
    pods = [
        new_pod(layout=PodLayout(driver, runtime, qos), cgroup_root=cgroup_root,
                pod_log_dir=pod_log_dir, containers=2)
        for qos in sandbox.QOS_CLASSES
    ]  # fmt: skip
    for pod in pods:
        assert veth_of(resolver, "pod", f"default/{pod.name}") == pod.host_veth
        assert veth_of(resolver, "pod-uid", pod.uid) == pod.host_veth
        assert veth_of(resolver, "container", pod.container_ids[1]) == pod.host_veth
        assert veth_of(resolver, "container", pod.container_ids[0][:12]) == pod.host_veth
        assert veth_of(resolver, "pid", str(pod.pids[1])) == pod.host_veth
        assert veth_of(resolver, "netns", pod.name) == pod.host_veth


def test_the_right_veth_among_pods_that_all_have_eth0_at_ifindex_2(
    cgroup_root: str, new_pod: MakePod, pod_log_dir: str, resolver: Resolver
) -> None:
    pods = [new_pod(cgroup_root=cgroup_root, pod_log_dir=pod_log_dir) for _ in range(6)]
    for pod in pods:
        sandbox.unpin(pod)  # as on a node: the namespace lives through its processes only
    assert {pod_ifindex(pod) for pod in pods} == {2}
    for pod in reversed(pods):
        assert veth_of(resolver, "pod-uid", pod.uid) == pod.host_veth
        assert veth_of(resolver, "pod", f"default/{pod.name}") == pod.host_veth
        assert veth_of(resolver, "container", pod.container_ids[0][:16]) == pod.host_veth


def test_crio_conmon_in_the_host_netns_is_dropped(
    cgroup_root: str, new_pod: MakePod, resolver: Resolver
) -> None:
    crio = new_pod(layout=PodLayout("systemd", "crio", "burstable"), cgroup_root=cgroup_root)
    assert crio.host_pids  # conmon: in the pod's cgroup, the host's netns
    assert veth_of(resolver, "pod-uid", crio.uid) == crio.host_veth


def test_a_pod_whose_processes_all_exited_says_so(
    cgroup_root: str, new_pod: MakePod, pod_log_dir: str, resolver: Resolver
) -> None:
    layout = PodLayout("systemd", "crio", "besteffort")
    pod = new_pod(layout=layout, cgroup_root=cgroup_root, pod_log_dir=pod_log_dir)
    kill(pod)  # conmon lives on, in the host's netns: still not "the host network"
    assert refusal(resolver, "pod", f"default/{pod.name}") == (
        f"pod=default/{pod.name} (uid {pod.uid}): no running process found (its cgroup "
        f"{cgroup_root}/{layout.pod_dir(pod.uid)} is empty); is the pod running on this host?"
    )
    assert refusal(resolver, "container", pod.container_ids[0]) == (
        f"container={pod.container_ids[0]}: no running process found (its cgroup "
        f"{cgroup_root}/{layout.pod_dir(pod.uid)}/{layout.container_dir(pod.container_ids[0])}"
        " is empty); has the container exited?"
    )


def test_two_pods_with_one_name_in_two_namespaces(
    cgroup_root: str, new_pod: MakePod, pod_log_dir: str, resolver: Resolver
) -> None:
    name = sandbox.random_name("web-")
    prod = new_pod(cgroup_root=cgroup_root, pod_log_dir=pod_log_dir, namespace="prod",
                   name=name)  # fmt: skip
    sandbox.unpin(prod)  # the sandbox pins a netns under the pod's name: free it
    dev = new_pod(cgroup_root=cgroup_root, pod_log_dir=pod_log_dir, namespace="dev", name=name)
    assert veth_of(resolver, "pod", f"prod/{name}") == prod.host_veth
    assert veth_of(resolver, "pod", f"dev/{name}") == dev.host_veth
    assert refusal(resolver, "pod", f"test/{name}") == (
        f"pod=test/{name}: no such pod on this host (no test_{name}_<uid> directory in "
        f"{pod_log_dir})"
    )


def test_a_container_prefix_shared_by_two_containers_lists_both(
    cgroup_root: str, new_pod: MakePod, resolver: Resolver
) -> None:
    shared = sandbox.random_name("", 12)
    one = new_pod(cgroup_root=cgroup_root, container_ids=[shared + "1" * 52])
    two = new_pod(layout=PodLayout("cgroupfs", "docker"), cgroup_root=cgroup_root,
                  container_ids=[shared + "2" * 52])  # fmt: skip
    assert refusal(resolver, "container", shared) == (
        f"container={shared} matches 2 containers: {shared + '1' * 52}, {shared + '2' * 52}; "
        "give more digits"
    )
    assert veth_of(resolver, "container", shared + "1") == one.host_veth
    assert veth_of(resolver, "container", shared + "2") == two.host_veth


def test_a_pod_only_in_a_cgroup_v1_hierarchy_is_found(
    v1_cgroup_root: str, cgroup_root: str, new_pod: MakePod, resolver: Resolver
) -> None:
    new_pod(cgroup_root=cgroup_root)  # a kubepods cgroup in cgroup2 too, without this pod
    for driver in ("cgroupfs", "systemd"):
        pod = new_pod(layout=PodLayout(driver, "containerd"), cgroup_root=v1_cgroup_root)
        assert veth_of(resolver, "pod-uid", pod.uid) == pod.host_veth
        assert veth_of(resolver, "container", pod.container_ids[0][:12]) == pod.host_veth


def test_a_host_network_pod_is_refused_saying_so(
    cgroup_root: str, new_pod: MakePod, resolver: Resolver
) -> None:
    pod = new_pod(cgroup_root=cgroup_root, containers=2, host_network=True)
    assert refusal(resolver, "pod-uid", pod.uid) == (
        f"pod-uid={pod.uid} uses the host network (its processes are in the host's network "
        "namespace); only a pod with its own network namespace has a NIC to give"
    )


def test_a_pod_spanning_two_netns_is_refused_naming_both(
    cgroup_root: str, new_pod: MakePod, resolver: Resolver
) -> None:
    layout = PodLayout()
    pod = new_pod(layout=layout, cgroup_root=cgroup_root)
    stray = new_pod(cgroup_root=cgroup_root)
    container = layout.container_dir(pod.container_ids[0])
    Path(cgroup_root, layout.pod_dir(pod.uid), container, "cgroup.procs").write_text(
        str(stray.pids[0])
    )
    inodes = sorted((os.stat(f"/proc/{p.pids[0]}/ns/net").st_ino, p.pids[0]) for p in (pod, stray))
    listed = "; ".join(f"net:[{ino}] (pids {pid})" for ino, pid in inodes)
    assert refusal(resolver, "pod-uid", pod.uid) == (
        f"pod-uid={pod.uid} spans 2 network namespaces: {listed}; refused, not guessed"
    )


def test_no_such_pod_or_process(cgroup_root: str, new_pod: MakePod, resolver: Resolver) -> None:
    new_pod(cgroup_root=cgroup_root)
    uid = "00000000-0000-4000-8000-000000000000"
    assert refusal(resolver, "pod-uid", uid).startswith(
        f"pod-uid={uid}: no such pod on this host (no cgroup for it under "
    )
    assert refusal(resolver, "container", "0123456789ab") == (
        "container=0123456789ab: no such container on this host"
    )
    assert refusal(resolver, "pid", "4194304") == "pid=4194304: no such process on this host"


# --- vmnet-hook pods ---------------------------------------------------------------------


def entry_of(entries: list[PodEntry], pod: sandbox.Pod) -> PodEntry:
    (found,) = [e for e in entries if any(ref.uid == pod.uid for ref in e.pods)]
    return found


def test_pods_lists_each_pod_with_its_checked_host_veth(
    cgroup_root: str, new_pod: MakePod, pod_log_dir: str
) -> None:
    pods = [
        new_pod(layout=PodLayout(driver, runtime), cgroup_root=cgroup_root,
                pod_log_dir=pod_log_dir, containers=2)
        for driver, runtime in DRIVERS_AND_RUNTIMES
    ]  # fmt: skip
    subprocess.run(["ip", "-n", pods[0].name, "link", "add", "net1", "type", "veth", "peer",
                    "name", "net1p"], check=True)  # fmt: skip
    entries = list_pods(Config(pod_log_dir=pod_log_dir))
    for pod in pods:
        entry = entry_of(entries, pod)
        assert [(ref.namespace, ref.name) for ref in entry.pods] == [("default", pod.name)]
        assert entry.containers == tuple(sorted(pod.container_ids))
        assert entry.pinned_as == pod.name
        eth0 = [nic for nic in entry.nics if nic.name == "eth0"]
        assert [(nic.host_veth, nic.problem) for nic in eth0] == [(pod.host_veth, None)]
    (net1,) = [nic for nic in entry_of(entries, pods[0]).nics if nic.name == "net1"]
    assert (net1.host_veth, net1.problem) == (
        None,
        "net1 in the pod has its veth peer inside the pod itself",
    )


def test_pods_command_prints_a_table_and_json(
    cgroup_root: str, new_pod: MakePod, pod_log_dir: str
) -> None:
    pod = new_pod(cgroup_root=cgroup_root, pod_log_dir=pod_log_dir)
    sandbox.unpin(pod)
    env = {**os.environ, "VMNET_HOOK_POD_LOG_DIR": pod_log_dir, "VMNET_HOOK_CONFIG": "/none"}
    command = [sys.executable, "-c", "from vmnet_hook.cli.main import main; main()", "pods"]
    table = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    (line,) = [line for line in table.stdout.splitlines() if pod.uid in line]
    assert line.split() == [
        f"default/{pod.name}", pod.uid, f"net:[{os.stat(pod.netns_path).st_ino}]",
        pod.container_ids[0][:12], "eth0", "-", pod.host_veth,
    ]  # fmt: skip
    as_json = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True,
                             check=True)  # fmt: skip
    (record,) = [r for r in json.loads(as_json.stdout) if r["pods"][:1] and
                 r["pods"][0]["uid"] == pod.uid]  # fmt: skip
    assert record["pids"] == pod.pids
    assert record["nics"] == [{"name": "eth0", "ifindex": 2, "kind": "veth",
                               "host_veth": pod.host_veth,
                               "host_ifindex": record["nics"][0]["host_ifindex"],
                               "problem": None, "guest": None}]  # fmt: skip
