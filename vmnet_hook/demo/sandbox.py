"""Throwaway pods made of real kernel objects, for the demo, the tests and the benches.

A pod here is what a CNI plugin and a container runtime leave on a node: a network
namespace holding ``eth0``, the veth peer of a host link, and processes inside that
namespace, placed in a kubelet-shaped cgroup. Every name is random, and ``remove``
tolerates what is already gone, so a failed test never leaves a half-built pod behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from vmnet_hook.host.mounts import cgroup_mounts
from vmnet_hook.host.netns import enter_netns

RUNTIME_SCOPES = {"containerd": "cri-containerd-{}.scope", "crio": "crio-{}.scope",
                  "docker": "docker-{}.scope"}  # fmt: skip
QOS_CLASSES = ("besteffort", "burstable", "guaranteed")


@dataclass(frozen=True)
class PodLayout:
    """Where a pod's processes sit in the cgroup tree, as kubelet and a runtime put them."""

    driver: str = "systemd"  # or "cgroupfs"
    runtime: str = "containerd"  # or "crio", "docker"
    qos: str = "besteffort"

    def pod_dir(self, uid: str) -> str:
        if self.driver == "cgroupfs":
            qos = "" if self.qos == "guaranteed" else f"/{self.qos}"
            return f"kubepods{qos}/pod{uid}"
        under = uid.replace("-", "_")
        if self.qos == "guaranteed":
            return f"kubepods.slice/kubepods-pod{under}.slice"
        return f"kubepods.slice/kubepods-{self.qos}.slice/kubepods-{self.qos}-pod{under}.slice"

    def container_dir(self, container_id: str) -> str:
        if self.driver == "cgroupfs":
            return container_id
        return RUNTIME_SCOPES[self.runtime].format(container_id)


@dataclass
class Pod:
    name: str  # also the pinned netns name under /run/netns, while pinned
    host_veth: str
    pod_dev: str
    uid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    namespace: str = "default"
    container_ids: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    host_pids: list[int] = field(default_factory=list)  # e.g. CRI-O's conmon
    cgroup_dirs: list[str] = field(default_factory=list)
    log_dir: str | None = None
    pinned: bool = True
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}" if self.pinned else f"/proc/{self.pids[0]}/ns/net"


def random_name(prefix: str, length: int = 8) -> str:
    return prefix + secrets.token_hex(length // 2)


def cgroup2_mount() -> str:
    """Where this host mounts cgroup v2 (``/sys/fs/cgroup`` or ``.../unified``)."""
    for kind, point in cgroup_mounts("/proc"):
        if kind == "cgroup2":
            return point
    raise RuntimeError("no cgroup2 mount on this host")


def make_pod(
    pod_dev: str = "eth0",
    *,
    containers: int = 1,
    layout: PodLayout | None = None,
    cgroup_root: str | None = None,
    pod_log_dir: str | None = None,
    namespace: str = "default",
    name: str | None = None,
    container_ids: Sequence[str] = (),
    host_network: bool = False,
    command: Sequence[str] = ("sleep", "infinity"),
) -> Pod:
    """Build a pod: netns + veth pair + one sleeping process per container.

    With ``cgroup_root`` the processes go into ``layout``'s cgroup directories below it; with
    ``pod_log_dir`` kubelet's ``<namespace>_<name>_<uid>`` directory is made too.
    ``container_ids`` gives the first containers' ids (random otherwise); a
    ``host_network`` pod's processes run in the host's netns (its own is made, unused).
    ``command`` is what each container runs (it should not exit).
    """
    pod = Pod(name or random_name("vmnt-"), random_name("vmv", 10), pod_dev, namespace=namespace)
    try:
        _plug(pod)
        for index in range(containers):
            given = index < len(container_ids)
            container_id = container_ids[index] if given else secrets.token_hex(32)
            pod.container_ids.append(container_id)
            group = _container_cgroup(pod, container_id, layout, cgroup_root)
            pod.pids.append(_spawn(pod, group, in_pod=not host_network, command=command))
        if layout is not None and layout.runtime == "crio" and cgroup_root is not None:
            conmon = f"{cgroup_root}/{layout.pod_dir(pod.uid)}/crio-conmon-{pod.container_ids[0]}"
            pod.host_pids.append(_spawn(pod, _mkdir(pod, f"{conmon}.scope"), in_pod=False))
        if pod_log_dir is not None:
            pod.log_dir = f"{pod_log_dir}/{namespace}_{pod.name}_{pod.uid}"
            os.makedirs(pod.log_dir)
    except BaseException:
        remove_pod(pod)
        raise
    return pod


def _plug(pod: Pod) -> None:
    """The pod's pinned netns, and the veth pair between it and the host, both up."""
    _ip("netns", "add", pod.name)
    _ip("link", "add", pod.host_veth, "type", "veth", "peer", "name", pod.pod_dev,
        "netns", pod.name)  # fmt: skip
    _ip("link", "set", pod.host_veth, "up")
    _ip("-n", pod.name, "link", "set", pod.pod_dev, "up")


def unpin(pod: Pod) -> None:
    """Drop the /run/netns pin: the namespace lives on through the pod's processes only,
    as on a node where the runtime does not pin it."""
    _ip("netns", "delete", pod.name)
    pod.pinned = False


def remove_pod(pod: Pod) -> None:
    """Tear everything down; what is already gone is fine."""
    for proc in pod._procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    for directory in reversed(pod.cgroup_dirs):
        _rmdir_when_empty(directory)
    if pod.log_dir:
        with contextlib.suppress(OSError):
            os.rmdir(pod.log_dir)
    subprocess.run(["ip", "link", "del", pod.host_veth], capture_output=True, check=False)
    if pod.pinned:
        subprocess.run(["ip", "netns", "delete", pod.name], capture_output=True, check=False)


@contextlib.contextmanager
def pod_context(pod_dev: str = "eth0", **options: object) -> Iterator[Pod]:
    pod = make_pod(pod_dev, **options)  # type: ignore[arg-type]
    try:
        yield pod
    finally:
        remove_pod(pod)


def _container_cgroup(
    pod: Pod, container_id: str, layout: PodLayout | None, cgroup_root: str | None
) -> str | None:
    if cgroup_root is None:
        return None
    layout = layout or PodLayout()
    return _mkdir(
        pod, f"{cgroup_root}/{layout.pod_dir(pod.uid)}/{layout.container_dir(container_id)}"
    )


def _mkdir(pod: Pod, path: str) -> str:
    """Make ``path`` and record each directory created, to remove them deepest first."""
    missing: list[str] = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for directory in reversed(missing):
        os.mkdir(directory)
        pod.cgroup_dirs.append(directory)
    return path


def _spawn(
    pod: Pod, cgroup: str | None, *, in_pod: bool, command: Sequence[str] = ("sleep", "infinity")
) -> int:
    """A long-lived process (``command``), already in its cgroup and namespace when this
    returns: the child joins both before exec, and Popen returns only after the exec
    succeeded."""
    netns = f"/run/netns/{pod.name}" if in_pod else None

    def enter_cgroup_and_netns() -> None:
        if cgroup is not None:
            with open(f"{cgroup}/cgroup.procs", "w", encoding="ascii") as procs:
                procs.write(str(os.getpid()))
        if netns is not None:
            enter_netns(netns)

    proc = subprocess.Popen(
        list(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=enter_cgroup_and_netns, start_new_session=True,
    )  # fmt: skip
    pod._procs.append(proc)
    return proc.pid


def _rmdir_when_empty(directory: str) -> None:
    for _ in range(50):  # a killed process leaves its cgroup a moment after wait()
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
