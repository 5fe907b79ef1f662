"""The runtimes tier (``pytest -m runtimes``): pods made by real container runtimes and CNI
plugins from Debian, as kubelet asks for them, each with kubelet's log directory:

- ``docker``: dockerd as cri-dockerd drives it (sandbox ``k8s_POD_…`` with kubelet's pod
  cgroup as ``--cgroup-parent``, cgroupfs driver; app container in its network), bridged
  on dockerd's bridge ``vtdk…`` (203.0.113.128/25);
- ``containerd-ptp``: ``ctr run --cni`` with the ``ptp`` plugin, routed (198.51.100.128/26),
  cgroups in the systemd driver's layout (``…-pod<uid>.slice/cri-containerd-<id>.scope``);
- ``containerd-bridge``: the ``bridge`` plugin, bridged on ``vtcni…`` (203.0.113.64/26),
  cgroups in the cgroupfs driver's layout (``kubepods/burstable/pod<uid>/<id>``).

The ``runtime_pods`` fixture (module scope) starts the daemons and makes two pods per
runtime (a pod and a peer); everything it made or changed on the host is undone at
teardown, pass or fail: containers, daemons and their shims, mounts and data roots,
cgroups, log directories, CNI files, bridges, iptables rules and the forwarding sysctls.
Needs root and ``tests/setup-runtimes.sh``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.runtimes import host
from tests.runtimes.containerd import Containerd
from tests.runtimes.docker import DOCKER, DOCKERD, Dockerd
from tests.runtimes.host import WORK_ROOT, RuntimePod

__all__ = ["BRIDGED", "RUNTIMES", "RuntimePod", "RuntimePods", "runtime_pods"]

RUNTIMES = ("docker", "containerd-ptp", "containerd-bridge")
BRIDGED = ("docker", "containerd-bridge")


class RuntimePods(dict[str, tuple[RuntimePod, RuntimePod]]):
    """Runtime name to (pod, peer); ``uplink_guard`` names the nft table that keeps the
    tier's traffic off the uplink."""

    def __init__(self, pods: dict[str, tuple[RuntimePod, RuntimePod]], uplink_guard: str) -> None:
        super().__init__(pods)
        self.uplink_guard = uplink_guard


def _missing_tools() -> list[str]:
    tools = [DOCKER, DOCKERD, "containerd", "ctr", "runc", "/usr/lib/cni/ptp", "/bin/busybox"]
    return [tool for tool in tools if shutil.which(tool) is None and not os.path.exists(tool)]


@pytest.fixture(scope="module")
def runtime_pods(podnet_guard: str) -> Iterator[RuntimePods]:
    """For each of RUNTIMES, a pod and its peer (same runtime, same network)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if missing := _missing_tools():
        pytest.skip(f"{', '.join(missing)} missing: run tests/setup-runtimes.sh")
    with contextlib.ExitStack() as stack:
        stack.enter_context(host.forwarding_restored())
        guard = stack.enter_context(host.uplink_guard())
        os.makedirs(WORK_ROOT, exist_ok=True)
        stack.callback(host.rmdir_if_empty, WORK_ROOT)
        dockerd = Dockerd()
        stack.callback(dockerd.close)
        dockerd.start()
        containerd = Containerd()
        stack.callback(containerd.close)
        containerd.start()
        stack.enter_context(host.forward_accepted(f"vmnet-test-runtimes:{secrets.token_hex(4)}"))
        ptp, bridge = containerd.network("ptp"), containerd.network("bridge")
        yield RuntimePods(
            {
                "docker": (dockerd.pod(stack), dockerd.pod(stack)),
                "containerd-ptp": (ptp.pod("systemd", stack), ptp.pod("systemd", stack)),
                "containerd-bridge": (
                    bridge.pod("cgroupfs", stack),
                    bridge.pod("cgroupfs", stack),
                ),
            },
            guard,
        )
