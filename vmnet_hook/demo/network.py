"""The demo's pod network: a pod and its peer on a bridge, made of kernel objects.

What the CNI ``bridge`` plugin leaves on a node, except that the bridge sits in a network
namespace of the demo's own (the "node"), with no other link and forwarding off: nothing
the pods or the guest send can leave this machine, and the host's firewall is not in the
way. The pod is what the hook finds: a sandbox pod (a process in a kubelet-shaped cgroup,
its namespace unpinned) whose process sees the pod's own ``/etc/resolv.conf``. Names are
random; everything is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vmnet_hook.demo import sandbox
from vmnet_hook.errors import DemoError
from vmnet_hook.host.netns import run_in_netns

SUBNET = "203.0.113"
GATEWAY = f"{SUBNET}.1"
BRIDGE = "br0"  # in the node's namespace: the name is private to it
DNS_SERVERS = (f"{SUBNET}.53",)
DNS_SEARCH = ("demo.svc.cluster.local", "svc.cluster.local", "cluster.local")
# The pod process: its own mount namespace, where /etc/resolv.conf is the pod's file.
POD_SCRIPT = 'mount --bind "$1" /etc/resolv.conf && exec sleep infinity'


@dataclass(frozen=True)
class PodNetwork:
    node: str  # the pinned namespace holding the bridge
    pod: sandbox.Pod
    peer: sandbox.Pod
    pod_ip: str
    peer_ip: str

    @property
    def pod_pid(self) -> int:
        return self.pod.pids[0]


@contextlib.contextmanager
def pod_network(cgroup_root: str) -> Iterator[PodNetwork]:
    """The node, the pod (in ``cgroup_root``, unpinned) and the peer; all gone on exit."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(_workdir())
        node = sandbox.random_name("vmnet-demo-node-")
        stack.callback(_quietly, "ip", "netns", "delete", node)
        _make_node(node)
        pod_ip, peer_ip = (f"{SUBNET}.{host}" for host in random.sample(range(2, 50), 2))
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", POD_SCRIPT,
                   "pod", _resolv_conf(workdir)]  # fmt: skip
        pod = stack.enter_context(sandbox.pod_context(
            cgroup_root=cgroup_root, command=command, name=sandbox.random_name("vmnet-demo-pod-")
        ))  # fmt: skip
        peer = stack.enter_context(
            sandbox.pod_context(name=sandbox.random_name("vmnet-demo-peer-"))
        )
        for each, address in ((pod, pod_ip), (peer, peer_ip)):
            _attach(node, each, address)
        _wait_for_exec(pod.pids[0], "sleep")
        sandbox.unpin(pod)  # like a real pod: reachable only through its processes
        yield PodNetwork(node, pod, peer, pod_ip, peer_ip)


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    path = f"/run/{sandbox.random_name('vmnet-demo-')}"
    os.mkdir(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _make_node(node: str) -> None:
    _ip("netns", "add", node)
    _ip("-n", node, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", node, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _ip("-n", node, "link", "set", BRIDGE, "up")


def _resolv_conf(workdir: str) -> str:
    path = f"{workdir}/resolv.conf"
    with open(path, "w", encoding="ascii") as resolv:
        resolv.write("".join(f"nameserver {server}\n" for server in DNS_SERVERS))
        resolv.write(f"search {' '.join(DNS_SEARCH)}\n")
    return path


def _attach(node: str, pod: sandbox.Pod, address: str) -> None:
    """Move the pod's host veth into the node, onto the bridge; address the pod's eth0."""
    _ip("link", "set", pod.host_veth, "netns", node)
    _ip("-n", node, "link", "set", pod.host_veth, "master", BRIDGE, "up")
    _ip("-n", pod.name, "link", "set", "lo", "up")
    _ip("-n", pod.name, "addr", "add", f"{address}/24", "dev", pod.pod_dev)
    _ip("-n", pod.name, "route", "add", "default", "via", GATEWAY)


def _wait_for_exec(pid: int, program: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
                if comm.read().strip() == program:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"the pod process {pid} did not start {program} (is unshare here?)")
        time.sleep(0.01)


# -- traffic --------------------------------------------------------------------------------


@dataclass
class Listener:
    """A TCP server in a pod's namespace: answers each connection with ``text`` and notes
    the address each came from (what the pod saw)."""

    sock: socket.socket
    text: bytes
    seen: list[str] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, address = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.seen.append(address[0])
                with contextlib.suppress(OSError):
                    conn.sendall(self.text)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@contextlib.contextmanager
def listening(pod: sandbox.Pod, port: int, text: str) -> Iterator[Listener]:
    """A ``Listener`` on ``port`` of every address of ``pod`` (a pinned pod)."""
    sock = run_in_netns(pod.netns_path, lambda: socket.create_server(("0.0.0.0", port)))
    listener = Listener(sock, f"{text}\n".encode())
    threading.Thread(target=listener.serve, name="vmnet-demo-listener", daemon=True).start()
    try:
        yield listener
    finally:
        listener.close()


def connect(pod: sandbox.Pod, address: str, port: int, timeout: float = 10) -> str:
    """From ``pod``'s namespace: connect, read to EOF; retried while refused, until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return run_in_netns(pod.netns_path, lambda: _read_all(address, port))
        except OSError as error:
            if time.monotonic() > deadline:
                raise DemoError(f"tcp {address}:{port} from the peer: {error}") from error
            time.sleep(0.2)


def _read_all(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=3) as conn:
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


# -- what the pod holds ---------------------------------------------------------------------

SYSCTLS = ("ip_forward", "conf/*/forwarding", "conf/*/send_redirects")


def in_pod(pid: int, *argv: str) -> str:
    """Run ``argv`` in the network namespace of process ``pid``; its stdout."""
    done = subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    if done.returncode != 0:
        raise DemoError(f"{' '.join(argv)} in the pod: {done.stderr.strip()}")
    return done.stdout


def snapshot(pid: int) -> dict[str, str]:
    """What a VM's start and destroy must leave as found in the pod (IPv4, steady parts)."""
    parts: dict[str, Callable[[], str]] = {
        "links": lambda: _links(in_pod(pid, "ip", "-j", "link", "show")),
        "addresses": lambda: in_pod(pid, "ip", "-4", "-o", "addr", "show"),
        "routes": lambda: in_pod(pid, "ip", "-4", "route", "show", "table", "all"),
        "rules": lambda: in_pod(pid, "ip", "-4", "rule", "show"),
        "neighbours": lambda: in_pod(pid, "ip", "neigh", "show", "nud", "permanent"),
        "proxy neighbours": lambda: in_pod(pid, "ip", "neigh", "show", "proxy"),
        "sysctls": lambda: in_pod(
            pid, "sh", "-c", f"cd /proc/sys/net/ipv4 && grep -H . {' '.join(SYSCTLS)}"
        ),
        "nft ruleset": lambda: in_pod(pid, "nft", "list", "ruleset"),
        "processes": lambda: " ".join(processes_in(pid)),
    }
    return {name: read() for name, read in parts.items()}


def _links(dump: str) -> str:
    links = json.loads(dump)
    return "\n".join(
        f"{link['ifname']} {','.join(sorted(link['flags']))} mtu {link['mtu']} "
        f"{link.get('address', '')} {link.get('master', '')}"
        for link in links
    )


def processes_in(pid: int) -> list[str]:
    """``PID:comm`` of each live process in the network namespace of process ``pid``."""
    target = os.stat(f"/proc/{pid}/ns/net")
    found = []
    for entry in sorted(filter(str.isdigit, os.listdir("/proc")), key=int):
        try:
            inode = os.stat(f"/proc/{entry}/ns/net")
            with open(f"/proc/{entry}/comm", encoding="utf-8") as comm:
                name = comm.read().strip()
        except OSError:
            continue  # gone, or a zombie (its namespaces are gone with it)
        if (inode.st_dev, inode.st_ino) == (target.st_dev, target.st_ino):
            found.append(f"{entry}:{name}")
    return found


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise DemoError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _quietly(*argv: str) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(argv, capture_output=True, timeout=30, check=False)
