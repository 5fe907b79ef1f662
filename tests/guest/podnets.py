"""Real pod networks for the guest tests: what CNI plugins leave on a node, made of kernel
objects with random names, and always torn down.

Three kinds of network, each a ``Network`` whose ``pod()`` / ``pods(n)`` add pods:

- ``routed`` (Calico's Felix): pod ``eth0`` holds a /32 from 198.51.100.0/24, default
  via 169.254.1.1 onlink; the host veth has a /32 route to the pod, proxy ARP and
  forwarding on (per link: the host's global ``ip_forward`` is not touched).
- ``bridged`` (CNI ``bridge`` plugin, docker0): host bridge ``vtbr…`` holds
  203.0.113.1/24, each pod's host veth is a port, pods 203.0.113.N/24.
- ``macvlan``: pods' ``eth0`` are bridge-mode macvlans of a host link ``vtdm…`` (an
  ``ifb``, which drops all it is sent: this kernel has no ``dummy``), 198.51.100.N/24.

Every host link is named ``vt`` + kind + hex, so that the ``guard`` nft table can drop
whatever is forwarded between a ``vt*`` link and any other. Each pod has a long-lived
process in its netns and in a mount namespace of its own where ``/etc/resolv.conf`` is
the pod's file. ``snapshot`` records what a VM's start and destroy must leave as found.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

Kind = Literal["routed", "bridged", "macvlan"]
KINDS: tuple[Kind, ...] = ("routed", "bridged", "macvlan")
LIFETIME = 900  # seconds a pod process or listener lives at most, should teardown never come
ROUTED_GATEWAY = "169.254.1.1"
GUARD_PREFIX = "vmnet_test_guard_"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class PodnetError(RuntimeError):
    """A command that builds or probes a test network failed."""


def run(argv: list[str], *, timeout: float = 10, stdin: str | None = None) -> str:
    """Run ``argv``; its stdout, or PodnetError naming the command and its stderr."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise PodnetError(f"{_shown(argv)}: no answer in {timeout} s") from error
    if done.returncode != 0:
        raise PodnetError(f"{_shown(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _shown(argv: list[str]) -> str:
    return " ".join("<script>" if "\n" in arg else arg for arg in argv)


def ip(*args: str) -> str:
    return run(["ip", *args])


def quietly(*argv: str) -> None:
    """Teardown: run ``argv``, whatever it answers (what is already gone is fine)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(argv, capture_output=True, timeout=10, check=False)


def link_name(kind: str = "") -> str:
    """A host link name the guard recognises: ``vt`` + kind + 8 hex digits."""
    return f"vt{kind}{secrets.token_hex(4)}"


def write_sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w", encoding="ascii") as knob:
        knob.write(value)


def in_netns(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


# -- pods and networks --------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """One pod: its netns, its NIC, and a process in both its netns and own mount ns."""

    kind: Kind
    netns: str
    ip: str
    prefixlen: int
    gateway: str
    host_veth: str | None  # None for macvlan
    pid: int
    resolv_conf: str  # the pod's file on the host; the pod process sees it at /etc
    dns_servers: tuple[str, ...]
    dns_search: tuple[str, ...]
    workdir: str
    eth0: str = "eth0"
    stack: contextlib.ExitStack = field(
        default_factory=contextlib.ExitStack, repr=False, compare=False
    )

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def mac(self) -> str:
        return ip("-n", self.netns, "-br", "link", "show", self.eth0).split()[2]

    def close(self) -> None:
        """Remove the pod: processes, host link, netns, files. Idempotent."""
        self.stack.close()


@dataclass
class Network:
    """A pod network; ``pod()`` adds a pod, ``close()`` removes it all (idempotent)."""

    kind: Kind
    subnet: str  # e.g. "198.51.100.0/24"
    gateway: str
    host_link: str | None  # the bridge or the macvlan parent; None for routed
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    pods_made: list[Pod] = field(default_factory=list, repr=False)
    names: list[str] = field(default_factory=list)  # every host link and netns it made

    def pod(self, netns: str | None = None) -> Pod:
        """A new pod; ``netns`` names its namespace (as a pod re-created under a pinned
        name would have), a random name otherwise."""
        pod = _make_pod(self, netns)
        self.pods_made.append(pod)
        self.stack.callback(pod.close)
        return pod

    def pods(self, count: int) -> list[Pod]:
        return [self.pod() for _ in range(count)]

    def close(self) -> None:
        self.stack.close()


@contextlib.contextmanager
def network(kind: Kind) -> Iterator[Network]:
    """A network of ``kind``; everything it and its pods made is gone on exit."""
    net = _open_network(kind)
    try:
        yield net
    finally:
        net.close()


def routed_network() -> contextlib.AbstractContextManager[Network]:
    return network("routed")


def bridged_network() -> contextlib.AbstractContextManager[Network]:
    return network("bridged")


def macvlan_network() -> contextlib.AbstractContextManager[Network]:
    return network("macvlan")


def _open_network(kind: Kind) -> Network:
    if kind == "routed":
        net = Network(kind, "198.51.100.0/24", ROUTED_GATEWAY, None)
    elif kind == "bridged":
        net = Network(kind, "203.0.113.0/24", "203.0.113.1", link_name("br"))
    else:
        net = Network(kind, "198.51.100.0/24", "198.51.100.1", link_name("dm"))
    try:
        _plumb_network(net)
    except BaseException:
        net.close()
        raise
    return net


def _plumb_network(net: Network) -> None:
    if net.kind != "macvlan":
        net.stack.enter_context(forward_accept(f"vmnet-test:{secrets.token_hex(4)}"))
    if net.host_link is None:
        return
    net.names.append(net.host_link)
    net.stack.callback(quietly, "ip", "link", "del", net.host_link)
    if net.kind == "bridged":
        ip("link", "add", net.host_link, "type", "bridge")
        ip("addr", "add", f"{net.gateway}/24", "dev", net.host_link)
    else:
        ip("link", "add", net.host_link, "type", "ifb")
    ip("link", "set", net.host_link, "up")


def _make_pod(net: Network, netns: str | None = None) -> Pod:
    stack = contextlib.ExitStack()
    try:
        return _build_pod(net, stack, netns or f"vtns-{secrets.token_hex(4)}")
    except BaseException:
        stack.close()
        raise


def _build_pod(net: Network, stack: contextlib.ExitStack, netns: str) -> Pod:
    workdir = tempfile.mkdtemp(prefix=f"vmnet-{netns}-")
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    stack.callback(quietly, "ip", "netns", "del", netns)
    net.names.append(netns)
    ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    host_veth, address, prefixlen = _PLUMBERS[net.kind](net, netns, stack)
    servers = ("198.51.100.53", "203.0.113.53")
    search = (f"pod-{secrets.token_hex(4)}.svc.cluster.local", "cluster.local")
    resolv = f"{workdir}/resolv.conf"
    with open(resolv, "w", encoding="ascii") as file:
        file.write("".join(f"nameserver {s}\n" for s in servers) + f"search {' '.join(search)}\n")
    pid = _start_pod_process(netns, resolv, stack)
    return Pod(net.kind, netns, address, prefixlen, net.gateway, host_veth, pid, resolv,
               servers, search, workdir, stack=stack)  # fmt: skip


Plumber = Callable[[Network, str, contextlib.ExitStack], tuple[str | None, str, int]]


def _veth_into(net: Network, netns: str, stack: contextlib.ExitStack) -> str:
    host_veth = link_name()
    net.names.append(host_veth)
    stack.callback(quietly, "ip", "link", "del", host_veth)
    ip("link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    return host_veth


def _plumb_routed(net: Network, netns: str, stack: contextlib.ExitStack) -> tuple[str, str, int]:
    host_veth = _veth_into(net, netns, stack)
    ip("link", "set", host_veth, "up")
    write_sysctl(f"net/ipv4/conf/{host_veth}/forwarding", "1")
    write_sysctl(f"net/ipv4/conf/{host_veth}/proxy_arp", "1")
    write_sysctl(f"net/ipv4/neigh/{host_veth}/proxy_delay", "0")
    address = _claim_host_route(host_veth)
    ip("-n", netns, "addr", "add", f"{address}/32", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "route", "add", "default", "via", ROUTED_GATEWAY, "dev", "eth0", "onlink")
    return host_veth, address, 32


def _claim_host_route(host_veth: str) -> str:
    """A 198.51.100.N no other routed pod on this host has: the /32 route claims it."""
    for host in random.sample(range(2, 251), 248):
        address = f"198.51.100.{host}"
        try:
            ip("route", "add", f"{address}/32", "dev", host_veth)
        except PodnetError as error:
            if "File exists" in str(error):
                continue
            raise
        return address
    raise PodnetError("no free address left in 198.51.100.0/24 for a routed pod")


def _plumb_bridged(net: Network, netns: str, stack: contextlib.ExitStack) -> tuple[str, str, int]:
    assert net.host_link is not None
    host_veth = _veth_into(net, netns, stack)
    ip("link", "set", host_veth, "master", net.host_link, "up")
    address = _next_address(net, "203.0.113")
    ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "route", "add", "default", "via", net.gateway, "dev", "eth0")
    return host_veth, address, 24


def _plumb_macvlan(net: Network, netns: str, stack: contextlib.ExitStack) -> tuple[None, str, int]:
    assert net.host_link is not None
    link = ["link", net.host_link, "name", "eth0", "netns", netns]
    ip("link", "add", *link, "type", "macvlan", "mode", "bridge")
    address = _next_address(net, "198.51.100")
    ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "route", "add", "default", "via", net.gateway, "dev", "eth0")
    return None, address, 24


def _next_address(net: Network, prefix: str) -> str:
    """.2, .3, ... : the network's own segment, so only its own pods count."""
    return f"{prefix}.{len(net.pods_made) + 2}"


_PLUMBERS: dict[Kind, Plumber] = {
    "routed": _plumb_routed, "bridged": _plumb_bridged, "macvlan": _plumb_macvlan,
}  # fmt: skip


def _start_pod_process(netns: str, resolv: str, stack: contextlib.ExitStack) -> int:
    """``sleep`` in the pod's netns and a private mount ns where resolv.conf is ``resolv``;
    returns once the bind mount is in place (the shell has exec'd sleep)."""
    script = 'mount --bind "$1" /etc/resolv.conf && exec sleep "$2"'
    argv = in_netns(netns, "unshare", "--mount", "--propagation", "private",
                    "sh", "-c", script, "pod", resolv, str(LIFETIME))  # fmt: skip
    proc = spawn(argv, stack)
    deadline = time.monotonic() + 5
    while _cmdline(proc.pid)[:1] != ["sleep"]:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise PodnetError(f"pod process in {netns} did not start: {_stderr(proc)}")
        time.sleep(0.005)
    return proc.pid


def spawn(argv: list[str], stack: contextlib.ExitStack) -> subprocess.Popen[bytes]:
    """A background process that ``stack`` kills and reaps."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    stack.callback(_kill, proc)
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None or proc.stderr is None:
        return "still starting"
    return proc.stderr.read().decode(errors="replace").strip()


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


# -- the guard and iptables accept rules ----------------------------------------------------


def guard_ruleset(table: str) -> str:
    return f"""table inet {table} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "vt*" oifname != "vt*" counter drop
        iifname != "vt*" oifname "vt*" counter drop
    }}
}}
"""


@contextlib.contextmanager
def guard() -> Iterator[str]:
    """An nft table dropping all forwarded between ``vt*`` links and others; yields its
    name (``vmnet_test_guard_`` + hex: one per session, so sessions don't undo each other)."""
    table = GUARD_PREFIX + secrets.token_hex(4)
    run(["nft", "-f", "-"], stdin=guard_ruleset(table))
    try:
        yield table
    finally:
        quietly("nft", "delete", "table", "inet", table)


def iptables_backends() -> list[str]:
    """The iptables commands whose filter table exists here (a FORWARD chain packets cross)."""
    found = []
    if shutil.which("iptables-nft") and _succeeds(
        "nft", "list", "chain", "ip", "filter", "FORWARD"
    ):
        found.append("iptables-nft")
    if shutil.which("iptables-legacy") and _legacy_filter_loaded():
        found.append("iptables-legacy")
    return found


def _legacy_filter_loaded() -> bool:
    try:
        with open("/proc/net/ip_tables_names", encoding="ascii") as names:
            return "filter" in names.read().split()
    except OSError:
        return False


def _succeeds(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0


@contextlib.contextmanager
def forward_accept(comment: str) -> Iterator[list[list[str]]]:
    """ACCEPT ``-i vt+ -o vt+`` first in FORWARD (and DOCKER-USER when it exists), in each
    iptables backend in use; yields the rules added, removed on exit."""
    spec = ["-i", "vt+", "-o", "vt+", "-m", "comment", "--comment", comment, "-j", "ACCEPT"]
    added: list[list[str]] = []
    try:
        for command in iptables_backends():
            for chain in ("FORWARD", "DOCKER-USER"):
                if chain == "FORWARD" or _succeeds(command, "-w", "-S", chain):
                    run([command, "-w", "-I", chain, "1", *spec])
                    added.append([command, "-w", "-D", chain, *spec])
        yield added
    finally:
        for rule in reversed(added):
            quietly(*rule)


# -- services in pods -----------------------------------------------------------------------

_SERVER = """
import signal, socket, sys
proto, port, text, log, lifetime = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4], int(sys.argv[5])
signal.alarm(lifetime)
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(64)
open(log, "a").close()
def note(peer):
    with open(log, "a") as f:
        f.write(peer[0] + "\\n")
while True:
    if proto == "udp":
        data, peer = s.recvfrom(65535)
        note(peer)
        s.sendto(text, peer)
        continue
    c, peer = s.accept()
    note(peer)
    c.settimeout(5)
    try:
        c.sendall(text)
    except OSError:
        pass
    c.close()
"""

_CLIENT = """
import socket, sys
proto, address, port, text, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(), float(sys.argv[5])
try:
    if proto == "tcp":
        s = socket.create_connection((address, port), timeout=timeout)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        sys.stdout.write(b"".join(chunks).decode())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.sendto(text, (address, port))
        sys.stdout.write(s.recv(65535).decode())
except OSError as error:
    sys.exit("%s %s:%d: %s" % (proto, address, port, error))
"""

_PING = """
import os, socket, struct, sys, time
address, timeout = sys.argv[1], float(sys.argv[2])
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
ident, payload = os.getpid() & 0xFFFF, b"vmnet-podnet"  # an even length, for the checksum
body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload
packet = struct.pack("!BBHHH", 8, 0, checksum(body), ident, 1) + payload
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
deadline, sent = time.monotonic() + timeout, 0.0
while (left := deadline - time.monotonic()) > 0:
    if time.monotonic() - sent > 0.5:
        s.sendto(packet, (address, 0))
        sent = time.monotonic()
    s.settimeout(min(left, 0.5))
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    header = (data[0] & 0x0F) * 4
    kind, _code, _sum, got = struct.unpack("!BBHH", data[header:header + 6])
    if peer[0] == address and kind == 0 and got == ident:
        print(data[8])
        sys.exit(0)
sys.exit("no echo reply from %s in %s s" % (address, timeout))
"""


@dataclass(frozen=True)
class Listener:
    pod: Pod
    proto: Literal["tcp", "udp"]
    port: int
    log: str
    pid: int


def serve_tcp(pod: Pod, port: int, text: str) -> Listener:
    """A TCP server in ``pod``'s netns answering every connection with ``text``; lives
    until the pod goes (or LIFETIME)."""
    return _serve(pod, "tcp", port, text)


def serve_udp(pod: Pod, port: int, text: str) -> Listener:
    """A UDP server in ``pod``'s netns answering every datagram with ``text``."""
    return _serve(pod, "udp", port, text)


def _serve(pod: Pod, proto: Literal["tcp", "udp"], port: int, text: str) -> Listener:
    log = f"{pod.workdir}/{proto}-{port}.seen"
    argv = in_netns(pod.netns, PYTHON, "-c", _SERVER, proto, str(port), text, log, str(LIFETIME))
    proc = spawn(argv, pod.stack)
    deadline = time.monotonic() + 5
    while not os.path.exists(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise PodnetError(f"{proto}/{port} server in {pod.netns}: {_stderr(proc)}")
        time.sleep(0.005)
    return Listener(pod, proto, port, log, proc.pid)


def seen(listener: Listener) -> list[str]:
    """The peer address of each connection or datagram ``listener`` answered, in order."""
    with open(listener.log, encoding="ascii") as log:
        return log.read().split()


def connect_tcp(pod: Pod, address: str, port: int, timeout: float = 3) -> str:
    """From ``pod``'s netns: connect, read to EOF, return the text. PodnetError if refused
    or silent within ``timeout``."""
    return _client(pod, "tcp", address, port, "", timeout)


def send_udp(pod: Pod, address: str, port: int, text: str = "ping", timeout: float = 3) -> str:
    """From ``pod``'s netns: send ``text`` in one datagram, return the answer."""
    return _client(pod, "udp", address, port, text, timeout)


def _client(pod: Pod, proto: str, address: str, port: int, text: str, timeout: float) -> str:
    argv = in_netns(pod.netns, PYTHON, "-c", _CLIENT, proto, address, str(port), text,
                    str(timeout))  # fmt: skip
    return run(argv, timeout=timeout + 5)


def ping(pod: Pod, address: str, timeout: float = 3) -> int:
    """One ICMP echo from ``pod``'s netns; the reply's TTL (64 on a segment, 63 after one
    router). PodnetError when no reply comes within ``timeout``."""
    return int(run(in_netns(pod.netns, PYTHON, "-c", _PING, address, str(timeout)),
                   timeout=timeout + 5))  # fmt: skip


def in_pod(pod: Pod, *argv: str, timeout: float = 10) -> str:
    """Run a command in ``pod``'s netns; its stdout."""
    return run(in_netns(pod.netns, *argv), timeout=timeout)


# -- snapshot ---------------------------------------------------------------------------------

_SYSCTLS = "cd /proc/sys/net/ipv4 && grep -H . ip_forward conf/*/forwarding conf/*/send_redirects"
_VOLATILE = [
    (re.compile(r"\b(\w+_timer)\s+[\d.]+"), r"\1 -"),  # bridge and bridge port timers
    (re.compile(r"\b(valid_lft|preferred_lft|expires)\s+\d+sec\b"), r"\1 -"),
    (re.compile(r"\b(used|age)\s+[\d/]+"), r"\1 -"),
    (re.compile(r"\bcounter packets \d+ bytes \d+"), "counter"),
    (re.compile(r"\bpackets \d+ bytes \d+"), "packets - bytes -"),
    (re.compile(r"\bexpires \S+"), "expires -"),
    # IPv6 DAD ends a second or two after a link is up: flags go, a local route comes
    (re.compile(r" (tentative|optimistic)\b"), ""),
    (re.compile(r"^local fe80::\S+ dev \S+ table local .*\n", re.MULTILINE), ""),
]


def snapshot(netns: str) -> dict[str, str]:
    """What a VM's start and destroy must leave as found in ``netns``, one readable string
    per part, volatile counters and timers blanked."""
    inside = ["ip", "-n", netns]
    parts = {
        "links": run([*inside, "-d", "link", "show"]),
        "addresses": run([*inside, "addr", "show"]),
        "routes": run([*inside, "route", "show", "table", "all"]),  # IPv4 and IPv6
        "rules": run([*inside, "rule", "show"]),
        "rules6": run([*inside, "-6", "rule", "show"]),
        "neighbours": run([*inside, "neigh", "show", "nud", "permanent"]),
        "proxy_neighbours": run([*inside, "neigh", "show", "proxy"]),
        "sysctls": run(in_netns(netns, "sh", "-c", _SYSCTLS)),
        "nftables": run(in_netns(netns, "nft", "list", "ruleset")),
    }
    parts["processes"] = processes_in(f"/run/netns/{netns}")
    return {name: _steady(text) for name, text in parts.items()}


def _steady(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def processes_in(netns_path: str) -> str:
    """``PID cmdline`` of each process whose network namespace is ``netns_path``."""
    target = os.stat(netns_path)
    lines = []
    for entry in sorted(filter(str.isdigit, os.listdir("/proc")), key=int):
        try:
            found = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a zombie (whose namespaces are gone with it)
        if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            lines.append(f"{entry} {' '.join(_cmdline(int(entry)))}")
    return "\n".join(lines) + "\n"


# -- pytest fixtures (import them into a test module, or name this module in pytest_plugins)


@pytest.fixture(scope="session")
def podnet_guard() -> Iterator[str]:
    """The session's guard table name; present for every test that builds networks."""
    with guard() as table:
        yield table


@dataclass
class Podnets:
    """A test's networks: ``podnets.routed()`` etc., all removed when the test ends."""

    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def network(self, kind: Kind) -> Network:
        return self.stack.enter_context(network(kind))

    def routed(self) -> Network:
        return self.network("routed")

    def bridged(self) -> Network:
        return self.network("bridged")

    def macvlan(self) -> Network:
        return self.network("macvlan")


@pytest.fixture
def podnets(podnet_guard: str) -> Iterator[Podnets]:
    nets = Podnets()
    with nets.stack:
        yield nets
