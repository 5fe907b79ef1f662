"""The guest tier proves itself, with no vmnet-hook involved: a real guest on a macvtap over
one end of a veth pair gets its lease from dnsmasq at the other end (in a namespace of the
test's own), pings it and talks TCP both ways; afterwards nothing of it is left."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.guest import BootGuest, direct_interface_xml, random_mac
from tests.guest.vm import virsh

pytestmark = pytest.mark.guest

SERVER = "203.0.113.1"
GUEST = "203.0.113.2"
DNS = ("198.51.100.53", "203.0.113.53")
SEARCH = ("pod.local", "svc.local")
MTU = "1400"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Segment:
    """A veth pair: ``host_dev`` in the host's namespace (no address, no forwarding) and
    ``ns_dev`` (203.0.113.1/24) in the test's namespace ``netns``."""

    netns: str = field(default_factory=lambda: "vmnt-gt-" + secrets.token_hex(4))
    host_dev: str = field(default_factory=lambda: "vt" + secrets.token_hex(4))
    ns_dev: str = field(default_factory=lambda: "vp" + secrets.token_hex(4))

    def create(self) -> None:
        ip("netns", "add", self.netns)
        ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev,
           "netns", self.netns)  # fmt: skip
        self._guard_host_end()
        ip("link", "set", self.host_dev, "up")
        ip("-n", self.netns, "link", "set", "lo", "up")
        ip("-n", self.netns, "addr", "add", f"{SERVER}/24", "dev", self.ns_dev)
        ip("-n", self.netns, "link", "set", self.ns_dev, "up")

    def _guard_host_end(self) -> None:
        """The host's end takes no part: nothing routed or forwarded from it, no IPv6."""
        for setting, value in (
            (f"ipv4/conf/{self.host_dev}/forwarding", "0"),
            (f"ipv4/conf/{self.host_dev}/arp_ignore", "8"),
            (f"ipv6/conf/{self.host_dev}/disable_ipv6", "1"),
        ):
            Path("/proc/sys/net", setting).write_text(value)

    def remove(self) -> None:
        ip("link", "del", self.host_dev, check=False)
        ip("netns", "del", self.netns, check=False)


@pytest.fixture
def segment() -> Iterator[Segment]:
    made = Segment()
    try:
        made.create()
        yield made
    finally:
        made.remove()


class Dnsmasq:
    """dnsmasq in ``segment``'s namespace answering only ``mac``; a child of this process
    (PID 1 here reaps no orphans), stopped and reaped by ``stop``."""

    def __init__(self, segment: Segment, mac: str, log: Path) -> None:
        self.log = log
        command = [
            "ip", "netns", "exec", segment.netns, "dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--port=0", "--no-resolv", "--no-hosts",
            "--leasefile-ro", "--pid-file", "--log-facility=-", "--log-dhcp",
            f"--interface={segment.ns_dev}", "--bind-interfaces",
            f"--dhcp-range={SERVER},static,255.255.255.0", f"--dhcp-host={mac},{GUEST},infinite",
            f"--dhcp-option=option:router,{SERVER}",
            f"--dhcp-option=option:dns-server,{','.join(DNS)}",
            f"--dhcp-option=option:domain-search,{','.join(SEARCH)}",
            f"--dhcp-option=option:mtu,{MTU}",
        ]  # fmt: skip
        with log.open("wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Callable[[Segment, str], Dnsmasq]]:
    started: list[Dnsmasq] = []

    def start(segment: Segment, mac: str) -> Dnsmasq:
        server = Dnsmasq(segment, mac, tmp_path / f"dnsmasq-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def tcp_peer(netns: str, script: str) -> subprocess.Popen[str]:
    """A Python one-shot TCP peer in ``netns``; it prints ``ready`` once it can be used."""
    peer = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert peer.stdout is not None
    assert peer.stdout.readline().strip() == "ready", peer.communicate(timeout=10)[0]
    return peer


ECHO_SERVER = f"""
import socket
server = socket.create_server(("{SERVER}", 7070))
server.settimeout(30)
print("ready", flush=True)
connection, address = server.accept()
line = connection.makefile().readline().strip()
connection.sendall(f"pong {{line}} from {{address[0]}}\\n".encode())
connection.close()
"""

CLIENT = f"""
import socket, time
print("ready", flush=True)
for attempt in range(50):
    try:
        connection = socket.create_connection(("{GUEST}", 7071), timeout=5)
        break
    except OSError:
        time.sleep(0.1)
connection.sendall(b"hello guest\\n")
connection.close()
"""


def test_guest_boots_leases_and_talks(
    boot_guest: BootGuest,
    segment: Segment,
    dnsmasq: Callable[[Segment, str], Dnsmasq],
    record_property: Callable[[str, object], None],
) -> None:
    began = time.monotonic()
    mac = random_mac()
    server = dnsmasq(segment, mac)
    guest = boot_guest([direct_interface_xml(mac, segment.host_dev)])
    assert guest.started_at is not None
    lease = guest.wait_for_lease("eth0", timeout=60)
    to_lease = time.monotonic() - guest.started_at

    assert lease["ip"] == GUEST, (lease, server.output())
    assert lease["mask"] == "24"
    assert lease["router"] == SERVER
    assert lease["dns"] == ",".join(DNS)
    assert lease["search"] == ",".join(SEARCH)
    assert lease["mtu"] == MTU
    assert lease["serverid"] == SERVER
    uppers = [p.name for p in Path("/sys/class/net", segment.host_dev).glob("upper_*")]
    assert [u.startswith("upper_macvtap") for u in uppers] == [True], uppers
    assert f"default via {SERVER} dev eth0" in guest.check("ip route")

    status, output = guest.run(f"ping -c1 -W2 {SERVER}")
    assert status == 0, output

    peer = tcp_peer(segment.netns, ECHO_SERVER)
    reply = guest.check(f"echo ping | nc -w 5 {SERVER} 7070")
    assert reply.strip() == f"pong ping from {GUEST}", reply
    assert peer.wait(timeout=10) == 0

    guest.check("nc -l -p 7071 >/tmp/received 2>&1 </dev/null &")
    peer = tcp_peer(segment.netns, CLIENT)
    assert peer.wait(timeout=30) == 0, peer.communicate()[0]
    deadline = time.monotonic() + 5
    while (received := guest.check("cat /tmp/received")) != "hello guest\n":
        assert time.monotonic() < deadline, received
        time.sleep(0.1)

    guest.remove()
    server.stop()
    segment.remove()
    assert virsh("domstate", guest.name, check=False).returncode != 0
    assert not guest.workdir.exists()
    assert not Path("/sys/class/net", segment.host_dev).exists()
    assert not any(
        Path(link, "address").read_text().strip() == mac
        for link in Path("/sys/class/net").iterdir()
    ), "the macvtap outlived its domain"
    assert segment.netns not in os.listdir("/run/netns")
    assert not Path(f"/proc/{server.process.pid}").exists()

    total = time.monotonic() - began
    record_property("boot_to_first_lease_seconds", round(to_lease, 2))
    record_property("self_test_seconds", round(total, 2))
    print(f"guest: first LEASE {to_lease:.2f} s after virsh start; self-test {total:.2f} s")
