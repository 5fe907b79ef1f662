"""Debian's dockerd, on a socket, data root and bridge of its own, making pods the way
cri-dockerd makes them for kubelet: a sandbox container ``k8s_POD_<name>_<ns>_<uid>_0``
whose cgroup parent is kubelet's pod cgroup (cgroupfs driver,
``/kubepods/besteffort/pod<uid>``), and an app container in its network namespace."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.guest import podnets as pn
from tests.runtimes import host
from tests.runtimes.image import rootfs_tar

DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker is newer than its daemon
DOCKERD = "/usr/sbin/dockerd"
IMAGE = "vmnet-test/busybox:1"
GATEWAY = "203.0.113.129"


@dataclass
class Dockerd:
    """One dockerd of the tier's own; ``pod()`` makes a pod, ``close()`` undoes it all."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bridge(self) -> str:
        return f"vtdk{self.tag}"

    @property
    def socket(self) -> str:
        return f"/run/vmnet-test-docker-{self.tag}.sock"

    @property
    def data_root(self) -> str:
        return f"/var/lib/vmnet-test-docker-{self.tag}"

    @property
    def exec_root(self) -> str:
        return f"/run/vmnet-test-docker-{self.tag}"

    def docker(self, *args: str, stdin: bytes | None = None, timeout: float = 60) -> str:
        argv = [DOCKER, "-H", f"unix://{self.socket}", *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise pn.PodnetError(f"docker {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout.decode()

    def start(self) -> None:
        """The bridge (dockerd's --bridge takes a ready one), then dockerd, then the image."""
        self.stack.callback(pn.quietly, "ip", "link", "del", self.bridge)
        pn.ip("link", "add", self.bridge, "type", "bridge")
        pn.ip("addr", "add", f"{GATEWAY}/25", "dev", self.bridge)
        pn.ip("link", "set", self.bridge, "up")
        iptables = host.IptablesRestore(self.bridge, host.DOCKER_RANGE)
        iptables.record()
        self.stack.callback(lambda: iptables.restore(set()))
        self.stack.callback(self._remove_files)
        self.stack.callback(host.kill_processes_mentioning, self.exec_root)
        os.makedirs(self.exec_root, exist_ok=True)
        self.proc = host.start_daemon([
            DOCKERD, "-H", f"unix://{self.socket}", "--data-root", self.data_root,
            "--exec-root", self.exec_root, "--pidfile", f"{self.exec_root}.pid",
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--bridge", self.bridge,
        ], f"{self.exec_root}/dockerd.log")  # fmt: skip
        self.stack.callback(self._stop)
        host.wait_until(self._answers, f"dockerd on {self.socket}")
        self.docker("import", "-", IMAGE, stdin=rootfs_tar())

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise pn.PodnetError(f"dockerd exited: {self._log_tail()}")
        try:
            self.docker("version", timeout=5)
        except (pn.PodnetError, subprocess.TimeoutExpired):
            return False
        return True

    def _log_tail(self) -> str:
        with open(f"{self.exec_root}/dockerd.log", encoding="utf-8", errors="replace") as log:
            return "".join(log.readlines()[-10:])

    def _stop(self) -> None:
        with contextlib.suppress(pn.PodnetError, subprocess.TimeoutExpired):
            ids = self.docker("ps", "-aq").split()
            if ids:
                self.docker("rm", "-f", *ids)
        if self.proc is not None:
            host.stop_daemon(self.proc)

    def _remove_files(self) -> None:
        host.unmount_below(self.data_root, self.exec_root)
        for path in (self.data_root, self.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.socket, f"{self.exec_root}.pid"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def close(self) -> None:
        self.stack.close()

    def pod(self, stack: contextlib.ExitStack) -> host.RuntimePod:
        """A pod as cri-dockerd makes one; ``stack`` removes it."""
        namespace, name, uid = host.pod_names()
        parent = f"/kubepods/besteffort/pod{uid}"
        stack.enter_context(host.pod_log_dir(namespace, name, uid))
        stack.callback(host.remove_cgroups, parent)
        workdir = stack.enter_context(_tempdir(f"{self.exec_root}/pod-{uid}"))
        resolv = f"{workdir}/resolv.conf"
        host.write_resolv_conf(resolv, namespace)
        servers, search = host._resolv(resolv)
        dns = [arg for s in servers for arg in ("--dns", s)]
        dns += [arg for s in search for arg in ("--dns-search", s)]
        sandbox = f"k8s_POD_{name}_{namespace}_{uid}_0"
        stack.callback(self._remove_container, sandbox)
        sandbox_id = self.docker("run", "-d", "--name", sandbox, "--cgroup-parent", parent,
                                 *dns, IMAGE, "sleep", str(host.LIFETIME)).strip()  # fmt: skip
        app = f"k8s_app_{name}_{namespace}_{uid}_0"
        stack.callback(self._remove_container, app)
        app_id = self.docker("run", "-d", "--name", app, "--network", f"container:{sandbox_id}",
                             "--cgroup-parent", parent, IMAGE, "sleep", str(host.LIFETIME)).strip()  # fmt: skip
        sandbox_pid, app_pid = (int(self.docker("inspect", "-f", "{{.State.Pid}}", c))
                                for c in (sandbox_id, app_id))  # fmt: skip
        net = host.pinned_net("bridged", sandbox_pid, resolv, stack)
        return host.RuntimePod("docker", namespace, name, uid, sandbox_id, app_id,
                               sandbox_pid, app_pid, net)  # fmt: skip

    def _remove_container(self, name: str) -> None:
        with contextlib.suppress(pn.PodnetError, subprocess.TimeoutExpired):
            self.docker("rm", "-f", name)


@contextlib.contextmanager
def _tempdir(path: str) -> Iterator[str]:
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
