"""What the runtimes tier changes on the host, each piece undone by what made it: kubelet's
pod log directories, pods' cgroups, daemons and what they mount, the forwarding sysctls,
iptables rules, and an nft table that keeps the runtimes' traffic off the uplink."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.guest import podnets as pn

POD_LOG_DIR = "/var/log/pods"
# The tier's address ranges: dockerd's bridge, CNI ptp (routed), CNI bridge (bridged).
DOCKER_RANGE, PTP_RANGE, CNI_BRIDGE_RANGE = (
    "203.0.113.128/25",
    "198.51.100.128/26",
    "203.0.113.64/26",
)
RANGES = (DOCKER_RANGE, PTP_RANGE, CNI_BRIDGE_RANGE)
LIFETIME = pn.LIFETIME  # seconds a pod's containers live at most, should teardown never come
WORK_ROOT = "/run/vmnet-test-runtimes"  # pinned pods' work directories (listeners' logs)


@dataclass(frozen=True)
class RuntimePod:
    """A pod a runtime made: kubelet's names for it, its two containers, and ``net``, a
    ``podnets.Pod`` over the netns pinned with ``ip netns attach`` (so that podnets'
    listeners, clients and snapshots work on it)."""

    runtime: str
    namespace: str
    name: str
    uid: str
    sandbox_id: str
    app_id: str
    sandbox_pid: int
    app_pid: int
    net: pn.Pod

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_names() -> tuple[str, str, str]:
    """A random Kubernetes namespace, pod name and UID."""
    uid = "-".join(secrets.token_hex(n) for n in (4, 2, 2, 2, 6))
    return f"vt-{secrets.token_hex(3)}", f"web-{secrets.token_hex(3)}", uid


# -- kubelet's log directories --------------------------------------------------------------


@contextlib.contextmanager
def pod_log_dir(namespace: str, name: str, uid: str) -> Iterator[str]:
    """``/var/log/pods/<namespace>_<name>_<uid>/``; removed on exit, with /var/log/pods
    when this made it and it is empty."""
    made_root = not os.path.isdir(POD_LOG_DIR)
    path = f"{POD_LOG_DIR}/{namespace}_{name}_{uid}"
    os.makedirs(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        if made_root:
            with contextlib.suppress(OSError):
                os.rmdir(POD_LOG_DIR)


def rmdir_if_empty(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(directory)


# -- cgroups --------------------------------------------------------------------------------


def cgroup_mount_points() -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        fields = [line.split() for line in mounts]
    return [f[1] for f in fields if len(f) > 2 and f[2] in ("cgroup", "cgroup2")]


def remove_cgroups(relative: str) -> None:
    """Remove ``relative`` (e.g. ``kubepods/besteffort/pod<uid>``) and what is below it in
    every hierarchy, then each parent that is left empty (another pod's stays)."""
    parts = relative.strip("/").split("/")
    for mount in cgroup_mount_points():
        top = f"{mount}/{relative.strip('/')}"
        for directory, _subdirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        for depth in range(len(parts) - 1, 0, -1):
            with contextlib.suppress(OSError):
                os.rmdir(f"{mount}/{'/'.join(parts[:depth])}")


# -- daemons --------------------------------------------------------------------------------


def start_daemon(argv: list[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise pn.PodnetError(f"{what}: not ready after {timeout} s")
        time.sleep(0.1)


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaped either way."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_processes_mentioning(marker: str) -> None:
    """SIGKILL every live process whose command line holds ``marker`` (a daemon's own
    socket or root path: the shims it left)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                text = cmdline.read().decode(errors="replace")
        except OSError:
            continue
        if marker in text and int(entry) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)


def unmount_below(*roots: str) -> None:
    """Lazily unmount every mount at or below ``roots``, deepest first."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    below = [p for p in points if any(p == r or p.startswith(r + "/") for r in roots)]
    for point in sorted(set(below), key=len, reverse=True):
        pn.quietly("umount", "-l", point)


def other_processes_named(name: str, own: set[int]) -> list[int]:
    """Live processes called ``name`` (comm) that are not in ``own``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                text = stat.read()
            comm, state = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1]
            if comm == name and state.split()[0] != "Z" and int(entry) not in own:
                found.append(int(entry))
    return found


# -- forwarding sysctls ---------------------------------------------------------------------

FORWARDING = "/proc/sys/net/ipv4/conf"


def forwarding_values() -> dict[str, str]:
    values = {}
    for link in os.listdir(FORWARDING):
        with (
            contextlib.suppress(OSError),
            open(f"{FORWARDING}/{link}/forwarding", encoding="ascii") as knob,
        ):
            values[link] = knob.read().strip()
    return values


@contextlib.contextmanager
def forwarding_restored() -> Iterator[None]:
    """dockerd and the CNI plugins turn the host's ``ip_forward`` on, which sets every
    link's ``forwarding``. On exit, when it was off, it is turned off again and each link
    gets back its value: links that were there its value then, later links their value now
    (other tests' links keep what they set)."""
    before = forwarding_values()
    try:
        yield
    finally:
        if before.get("all") == "0" and forwarding_values().get("all") == "1":
            now = forwarding_values()
            pn.write_sysctl("net/ipv4/conf/all/forwarding", "0")
            for link, value in now.items():
                wanted = before.get(link, value) if link != "all" else "0"
                with contextlib.suppress(OSError):
                    pn.write_sysctl(f"net/ipv4/conf/{link}/forwarding", wanted)


# -- iptables: what dockerd adds, and the tier's accept rules --------------------------------


@dataclass
class IptablesRestore:
    """What dockerd adds to iptables (its chains, its rules for ``bridge`` and
    ``subnet``, FORWARD policy DROP) and never removes, removed after it stopped: the rules
    naming our bridge or subnet always; docker's chains and the policy only when no other
    dockerd runs."""

    bridge: str
    subnet: str
    before: dict[str, list[str]] = field(default_factory=dict)

    def record(self) -> None:
        self.before = {table: _rules(table) for table in ("filter", "nat")}

    def restore(self, own_pids: set[int]) -> None:
        alone = not other_processes_named("dockerd", own_pids)
        for table, before in self.before.items():
            new = [line for line in _rules(table) if line not in before]
            for line in reversed([n for n in new if n.startswith("-A ")]):
                if self.bridge in line or self.subnet in line or (alone and "DOCKER" in line):
                    pn.quietly("iptables", "-w", "-t", table, "-D", *shlex.split(line)[1:])
            for line in (n for n in new if n.startswith("-N ") and alone):
                pn.quietly("iptables", "-w", "-t", table, "-F", line.split()[1])
                pn.quietly("iptables", "-w", "-t", table, "-X", line.split()[1])
            for line in (n for n in new if n.startswith("-P ") and alone):
                old = next((b for b in before if b.startswith(line.rsplit(" ", 1)[0])), "")
                if old:
                    pn.quietly("iptables", "-w", "-t", table, *old.split())


def _rules(table: str) -> list[str]:
    done = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    return done.stdout.splitlines()


@contextlib.contextmanager
def forward_accepted(comment: str) -> Iterator[None]:
    """ACCEPT forwarding within each of the tier's ranges, first in FORWARD (and
    DOCKER-USER when it exists): dockerd's FORWARD policy DROP would drop the routed
    pods' traffic (CNI ptp) and the CNI bridge's bridged traffic."""
    added: list[list[str]] = []
    try:
        for command in pn.iptables_backends():
            for chain in ("FORWARD", "DOCKER-USER"):
                if chain != "FORWARD" and not pn._succeeds(command, "-w", "-S", chain):
                    continue
                for subnet in RANGES:
                    spec = ["-s", subnet, "-d", subnet, "-m", "comment", "--comment", comment,
                            "-j", "ACCEPT"]  # fmt: skip
                    pn.run([command, "-w", "-I", chain, "1", *spec])
                    added.append([command, "-w", "-D", chain, *spec])
        yield
    finally:
        for rule in reversed(added):
            pn.quietly(*rule)


# -- nothing forwarded to the uplink --------------------------------------------------------


def uplink() -> str:
    """The interface the host routes its uplink's range (192.0.2.0/24) through."""
    words = pn.ip("route", "get", "192.0.2.1").split()
    return words[words.index("dev") + 1]


UPLINK_GUARD_PREFIX = "vmnet_test_runtimes_"


def uplink_guard_drops(table: str) -> int:
    """Packets the uplink guard ``table`` dropped so far."""
    ruleset = json.loads(pn.run(["nft", "-j", "list", "table", "inet", table]))
    return sum(
        expr["counter"]["packets"]
        for item in ruleset["nftables"] if "rule" in item
        for expr in item["rule"]["expr"] if "counter" in expr
    )  # fmt: skip


def uplink_guard_ruleset(table: str, uplink_dev: str) -> str:
    ranges = ", ".join(RANGES)
    return f"""table inet {table} {{
    chain forward {{
        type filter hook forward priority filter - 20; policy accept;
        oifname "{uplink_dev}" ip saddr {{ {ranges} }} counter drop
        iifname "{uplink_dev}" ip daddr {{ {ranges} }} counter drop
    }}
}}
"""


@contextlib.contextmanager
def uplink_guard() -> Iterator[str]:
    """An nft table dropping whatever is forwarded between the tier's ranges and the
    uplink: the runtimes' links are ``veth…`` and their bridges' traffic is NATed by
    dockerd, which the ``vt*`` guard alone does not catch. Yields its name."""
    table = f"{UPLINK_GUARD_PREFIX}{secrets.token_hex(4)}"
    pn.run(["nft", "-f", "-"], stdin=uplink_guard_ruleset(table, uplink()))
    try:
        yield table
    finally:
        pn.quietly("nft", "delete", "table", "inet", table)


# -- pods' networks as podnets sees them ------------------------------------------------------


def pinned_net(
    runtime_kind: pn.Kind, pid: int, resolv_conf: str, stack: contextlib.ExitStack
) -> pn.Pod:
    """Pin ``pid``'s netns as ``vtns-…`` (detached when ``stack`` closes) and describe it as
    a ``podnets.Pod``: its address, gateway and host veth, read from the kernel."""
    netns = f"vtns-{secrets.token_hex(4)}"
    pn.ip("netns", "attach", netns, str(pid))
    stack.callback(pn.quietly, "ip", "netns", "del", netns)
    workdir = f"{WORK_ROOT}/{netns}"
    os.makedirs(workdir)
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    address, prefixlen = (
        pn.ip("-n", netns, "-4", "-o", "addr", "show", "eth0").split()[3].split("/")
    )
    gateway = pn.ip("-n", netns, "route", "show", "default").split()[2]
    servers, search = _resolv(resolv_conf)
    return pn.Pod(runtime_kind, netns, address, int(prefixlen), gateway, host_veth_of(netns),
                  pid, resolv_conf, servers, search, workdir, stack=stack)  # fmt: skip


def host_veth_of(netns: str) -> str:
    """The host end of ``eth0`` in ``netns``, by its peer's ifindex (never by name)."""
    (pod_link,) = json.loads(pn.ip("-j", "-n", netns, "link", "show", "eth0"))
    for link in json.loads(pn.ip("-j", "link", "show")):
        if link["ifindex"] == pod_link["link_index"]:
            return str(link["ifname"])
    raise pn.PodnetError(f"{netns}: no host link at eth0's peer index {pod_link['link_index']}")


def _resolv(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    servers: list[str] = []
    search: tuple[str, ...] = ()
    with open(path, encoding="ascii") as resolv:
        for words in (line.split() for line in resolv):
            if words[:1] == ["nameserver"]:
                servers.append(words[1])
            elif words[:1] == ["search"]:
                search = tuple(words[1:])
    return tuple(servers), search


def write_resolv_conf(path: str, namespace: str) -> None:
    """kubelet's resolv.conf for a pod in ``namespace`` (ClusterFirst)."""
    with open(path, "w", encoding="ascii") as resolv:
        resolv.write("nameserver 198.51.100.53\nnameserver 203.0.113.53\n"
                     f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n")  # fmt: skip
