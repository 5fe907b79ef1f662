"""Debian's containerd, on a socket and root of its own, making pods with ``ctr run --cni``
the way the CRI plugin makes them: a sandbox container that gets the pod's network from a
CNI plugin, and an app container joined to its network namespace, both in kubelet's pod
cgroup (the layout of the systemd or of the cgroupfs driver, as asked).

ctr looks for plugins only in /opt/cni/bin and reads the first network in /etc/cni/net.d:
both exist only while ``ctr run --cni`` runs (``cni_for_ctr``). ctr runs no CNI DEL when a
container goes, so host-local keeps its leases in a directory of ours that goes with the
daemon, and libcni's cached results are removed with it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from tests.guest import podnets as pn
from tests.runtimes import host
from tests.runtimes.image import oci_archive, rootfs_tar

CTR_NAMESPACE = "vmnet-test"
IMAGE = "docker.io/vmnet-test/busybox:1"
CNI_PLUGINS = ("ptp", "bridge", "host-local", "loopback")
DEBIAN_CNI_DIR, CNI_BIN_DIR, CNI_CONF_DIR = "/usr/lib/cni", "/opt/cni/bin", "/etc/cni/net.d"
CNI_LOCK = "/run/lock/vmnet-test-cni.lock"  # left in place: removing a lock file races
CNI_CACHE_DIR = "/var/lib/cni"  # libcni's cache of each ADD's result, which no DEL removes
Plugin = Literal["ptp", "bridge"]
Layout = Literal["systemd", "cgroupfs"]


@dataclass
class Containerd:
    """One containerd of the tier's own; ``pod()`` makes a pod, ``close()`` undoes it all."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def state(self) -> str:
        return f"/run/vmnet-test-containerd-{self.tag}"

    @property
    def root(self) -> str:
        return f"/var/lib/vmnet-test-containerd-{self.tag}"

    @property
    def address(self) -> str:
        return f"{self.state}/containerd.sock"

    def ctr(self, *args: str, stdin: bytes | None = None, timeout: float = 60) -> str:
        argv = ["ctr", "-a", self.address, "-n", CTR_NAMESPACE, *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise pn.PodnetError(f"ctr {' '.join(args[:3])}: {done.stderr.decode().strip()}")
        return done.stdout.decode()

    def start(self) -> None:
        self._cni_cache()
        self.stack.callback(self._remove_files)
        self.stack.callback(host.kill_processes_mentioning, self.address)
        os.makedirs(self.state, exist_ok=True)
        config = f"{self.state}/config.toml"
        with open(config, "w", encoding="ascii") as file:
            file.write(
                f'version = 2\nroot = "{self.root}"\nstate = "{self.state}/state"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{self.address}"\n'
                f'[ttrpc]\n  address = "{self.address}.ttrpc"\n'
                '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
            )
        self.proc = host.start_daemon(["containerd", "--config", config], f"{self.state}/log")
        self.stack.callback(self._stop)
        host.wait_until(self._answers, f"containerd on {self.address}")
        self.ctr("images", "import", "-", stdin=oci_archive(rootfs_tar(), IMAGE))

    def _cni_cache(self) -> None:
        """On close: libcni's cached results of our networks, which no DEL removes."""
        existed = os.path.isdir(CNI_CACHE_DIR)
        self.stack.callback(_remove_cni_cache, "vmnet-test-", self.tag, existed)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise pn.PodnetError(f"containerd exited; see {self.state}/log")
        try:
            self.ctr("version", timeout=5)
        except (pn.PodnetError, subprocess.TimeoutExpired):
            return False
        return True

    def _stop(self) -> None:
        with contextlib.suppress(pn.PodnetError, subprocess.TimeoutExpired):
            for container in self.ctr("containers", "list", "-q").split():
                self._remove_container(container)
        if self.proc is not None:
            host.stop_daemon(self.proc)

    def _remove_files(self) -> None:
        host.unmount_below(self.root, self.state)
        for path in (self.root, self.state):
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        self.stack.close()

    def network(self, plugin: Plugin) -> CniNetwork:
        net = CniNetwork(self, plugin, secrets.token_hex(4))
        if plugin == "bridge":
            self.stack.callback(pn.quietly, "ip", "link", "del", net.bridge)
        return net

    def _remove_container(self, container: str) -> None:
        with contextlib.suppress(pn.PodnetError, subprocess.TimeoutExpired):
            self.ctr("tasks", "kill", "-s", "SIGKILL", container)
        with contextlib.suppress(pn.PodnetError, subprocess.TimeoutExpired):
            self.ctr("tasks", "delete", "-f", container)
        with contextlib.suppress(pn.PodnetError, subprocess.TimeoutExpired):
            self.ctr("containers", "delete", container)


@dataclass
class CniNetwork:
    """A CNI network of ``plugin`` (ptp: routed, in 198.51.100.128/26; bridge: bridged, on
    ``vtcni…`` in 203.0.113.64/26); ``pod()`` makes a pod on it."""

    daemon: Containerd
    plugin: Plugin
    tag: str

    @property
    def name(self) -> str:
        return f"vmnet-test-{self.plugin}-{self.daemon.tag}{self.tag}"

    @property
    def bridge(self) -> str:
        return f"vtcni{self.tag}"

    @property
    def kind(self) -> pn.Kind:
        return "routed" if self.plugin == "ptp" else "bridged"

    def conflist(self) -> dict[str, object]:
        subnet = host.PTP_RANGE if self.plugin == "ptp" else host.CNI_BRIDGE_RANGE
        ipam = {"type": "host-local", "dataDir": f"{self.daemon.state}/ipam",
                "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}  # fmt: skip
        plugin: dict[str, object] = {"type": self.plugin, "ipMasq": False, "ipam": ipam}
        if self.plugin == "bridge":
            plugin.update(bridge=self.bridge, isGateway=True)
        return {"cniVersion": "1.0.0", "name": self.name, "plugins": [plugin]}

    def pod(self, layout: Layout, stack: contextlib.ExitStack) -> host.RuntimePod:
        """A pod as the CRI plugin makes one, its cgroups in ``layout``; ``stack`` removes it."""
        namespace, name, uid = host.pod_names()
        pod_cgroup = _pod_cgroup(layout, uid)
        stack.enter_context(host.pod_log_dir(namespace, name, uid))
        stack.callback(host.remove_cgroups, pod_cgroup)
        workdir = f"{self.daemon.state}/pod-{uid}"
        os.makedirs(workdir)
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        resolv = f"{workdir}/resolv.conf"
        host.write_resolv_conf(resolv, namespace)
        sandbox_id, app_id = secrets.token_hex(32), secrets.token_hex(32)
        stack.callback(self.daemon._remove_container, sandbox_id)
        with cni_for_ctr(self.conflist()):
            self._run(sandbox_id, layout, pod_cgroup, resolv, "--cni")
        sandbox_pid = self._pid(sandbox_id)
        stack.callback(self.daemon._remove_container, app_id)
        self._run(app_id, layout, pod_cgroup, resolv, "--with-ns",
                  f"network:/proc/{sandbox_pid}/ns/net")  # fmt: skip
        net = host.pinned_net(self.kind, sandbox_pid, resolv, stack)
        return host.RuntimePod(f"containerd-{self.plugin}", namespace, name, uid, sandbox_id,
                               app_id, sandbox_pid, self._pid(app_id), net)  # fmt: skip

    def _run(self, container: str, layout: Layout, pod_cgroup: str, resolv: str,
             *network: str) -> None:  # fmt: skip
        self.daemon.ctr(
            "run", "-d", *network, "--cgroup", f"{pod_cgroup}/{_container_cgroup(layout, container)}",
            "--mount", f"type=bind,src={resolv},dst=/etc/resolv.conf,options=rbind:ro",
            IMAGE, container, "sleep", str(host.LIFETIME),
        )  # fmt: skip

    def _pid(self, container: str) -> int:
        for line in self.daemon.ctr("tasks", "list").splitlines()[1:]:
            words = line.split()
            if words[0] == container:
                return int(words[1])
        raise pn.PodnetError(f"ctr: no task {container}")


def _pod_cgroup(layout: Layout, uid: str) -> str:
    """kubelet's cgroup for a best-effort (systemd) or burstable (cgroupfs) pod."""
    if layout == "systemd":
        under = uid.replace("-", "_")
        return f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice"
    return f"/kubepods/burstable/pod{uid}"


def _container_cgroup(layout: Layout, container: str) -> str:
    return f"cri-containerd-{container}.scope" if layout == "systemd" else container


@contextlib.contextmanager
def cni_for_ctr(conflist: dict[str, object]) -> Iterator[None]:
    """While ``ctr run --cni`` runs the CNI ADD: Debian's plugins linked into /opt/cni/bin
    and ``conflist`` the only network of ours in /etc/cni/net.d (ctr takes the first one
    there), then all of it removed again, with the directories made for it. A lock
    serialises this with another session of the tier."""
    with open(CNI_LOCK, "a", encoding="ascii") as lock, contextlib.ExitStack() as made:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for directory in (CNI_BIN_DIR, CNI_CONF_DIR):
            for new in _makedirs(directory):  # shallowest first: removed last
                made.callback(_rmdir_if_empty, new)
        for plugin in CNI_PLUGINS:
            link = f"{CNI_BIN_DIR}/{plugin}"
            if not os.path.lexists(link):
                os.symlink(f"{DEBIAN_CNI_DIR}/{plugin}", link)
                made.callback(os.unlink, link)
        conf = f"{CNI_CONF_DIR}/00-vmnet-test.conflist"
        made.callback(os.unlink, conf)
        with open(conf, "w", encoding="ascii") as file:
            json.dump(conflist, file)
        yield


def _makedirs(directory: str) -> list[str]:
    """Make ``directory`` and its missing parents; those made, deepest last."""
    missing: list[str] = []
    path = directory
    while not os.path.isdir(path):
        missing.insert(0, path)
        path = os.path.dirname(path)
    for made in missing:
        os.mkdir(made)
    return missing


def _remove_cni_cache(prefix: str, daemon_tag: str, existed: bool) -> None:
    """libcni's files for networks ``prefix…-<daemon_tag>…``; the cache directory itself
    when this tier made it and nothing else is left in it."""
    for directory, _subdirs, files in os.walk(CNI_CACHE_DIR):
        for name in files:
            if name.startswith(prefix) and f"-{daemon_tag}" in name:
                with contextlib.suppress(OSError):
                    os.unlink(f"{directory}/{name}")
    if not existed:
        for directory, _subdirs, _files in sorted(
            os.walk(CNI_CACHE_DIR), key=lambda w: -len(w[0])
        ):
            _rmdir_if_empty(directory)


def _rmdir_if_empty(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(directory)
