"""Kernel tier: the test pod networks of tests/guest/podnets.py are what they claim."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest import podnets as pn
from tests.guest.podnets import Kind, Network, Pod, Podnets, podnet_guard, podnets

__all__ = ["podnet_guard", "podnets"]  # fixtures, used by name
pytestmark = pytest.mark.kernel
REPO = Path(__file__).resolve().parent.parent


def host_counter(link: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{link}/statistics/{name}").read_text())


def two_pods_talk(a: Pod, b: Pod) -> None:
    """A reaches B by TCP and UDP, and B's listeners saw A's own address."""
    tcp = pn.serve_tcp(b, 8080, f"tcp from {b.netns}")
    udp = pn.serve_udp(b, 5353, f"udp from {b.netns}")
    assert pn.connect_tcp(a, b.ip, 8080) == f"tcp from {b.netns}"
    assert pn.send_udp(a, b.ip, 5353, "hello") == f"udp from {b.netns}"
    assert (pn.seen(tcp), pn.seen(udp)) == ([a.ip], [a.ip])


@pytest.mark.parametrize("kind", pn.KINDS)
def test_two_pods_reach_each_other(podnets: Podnets, kind: Kind) -> None:
    a, b = podnets.network(kind).pods(2)
    assert pn.ping(a, b.ip) == (63 if kind == "routed" else 64)  # one router, or none
    two_pods_talk(a, b)
    with pytest.raises(pn.PodnetError, match="refused"):
        pn.connect_tcp(a, b.ip, 8081)


def test_routed_traffic_goes_through_the_hosts_routing(podnets: Podnets) -> None:
    a, b = podnets.routed().pods(2)
    assert a.host_veth and b.host_veth
    assert f"dev {b.host_veth}" in pn.ip("route", "get", b.ip)
    assert (
        pn.in_pod(a, "ip", "route", "show")
        == f"default via {pn.ROUTED_GATEWAY} dev eth0 onlink \n"
    )
    received, sent = (
        host_counter(a.host_veth, "rx_packets"),
        host_counter(b.host_veth, "tx_packets"),
    )
    two_pods_talk(a, b)
    assert host_counter(a.host_veth, "rx_packets") > received
    assert host_counter(b.host_veth, "tx_packets") > sent
    knobs = [f"net/ipv4/conf/{a.host_veth}/forwarding", f"net/ipv4/conf/{a.host_veth}/proxy_arp",
             f"net/ipv4/neigh/{a.host_veth}/proxy_delay"]  # fmt: skip
    assert [Path(f"/proc/sys/{knob}").read_text() for knob in knobs] == ["1\n", "1\n", "0\n"]


def test_bridged_traffic_goes_through_the_bridge(podnets: Podnets) -> None:
    net = podnets.bridged()
    a, b = net.pods(2)
    assert a.host_veth and b.host_veth and net.host_link
    assert f"master {net.host_link}" in pn.ip("link", "show", b.host_veth)
    two_pods_talk(a, b)
    fdb = pn.run(["bridge", "fdb", "show", "br", net.host_link])
    assert f"{a.mac} dev {a.host_veth} master {net.host_link}" in fdb
    assert f"{b.mac} dev {b.host_veth} master {net.host_link}" in fdb
    assert pn.ping(a, net.gateway) == 64


def test_macvlan_pods_sit_on_the_parent(podnets: Podnets) -> None:
    net = podnets.macvlan()
    a, b = net.pods(2)
    assert net.host_link and a.host_veth is None
    details = pn.ip("-n", a.netns, "-d", "link", "show", "eth0")
    assert "macvlan mode bridge" in details
    parent = Path(f"/sys/class/net/{net.host_link}/ifindex").read_text().strip()
    assert f"eth0@if{parent}:" in details
    two_pods_talk(a, b)


@pytest.mark.parametrize("kind", pn.KINDS)
def test_pod_process_sees_its_own_resolv_conf(podnets: Podnets, kind: Kind) -> None:
    host_before = Path("/etc/resolv.conf").read_text()
    a, b = podnets.network(kind).pods(2)
    seen_by_a = Path(f"/proc/{a.pid}/root/etc/resolv.conf").read_text()
    assert seen_by_a == Path(a.resolv_conf).read_text()
    assert seen_by_a != Path(f"/proc/{b.pid}/root/etc/resolv.conf").read_text()
    assert seen_by_a.splitlines() == [
        *(f"nameserver {server}" for server in a.dns_servers), f"search {' '.join(a.dns_search)}"]  # fmt: skip
    assert os.stat(f"/proc/{a.pid}/ns/net").st_ino == os.stat(a.netns_path).st_ino
    assert os.stat(f"/proc/{a.pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
    assert Path("/etc/resolv.conf").read_text() == host_before


@pytest.mark.parametrize("kind", pn.KINDS)
def test_snapshot_is_stable_and_sees_changes(podnets: Podnets, kind: Kind) -> None:
    a, b = podnets.network(kind).pods(2)
    pn.serve_tcp(a, 8080, "x")
    pn.connect_tcp(b, a.ip, 8080)  # traffic moves counters and neighbours, not the snapshot
    before = pn.snapshot(a.netns)
    assert pn.snapshot(a.netns) == before
    assert a.ip in before["addresses"] and f"{a.pid} sleep" in before["processes"]
    # a new namespace's forwarding follows the host's defaults (dockerd turns them on)
    assert re.search(r"^conf/eth0/forwarding:[01]$", before["sysctls"], re.M)
    changes = {
        "routes": ["ip", "route", "add", "203.0.113.99/32", "dev", "eth0", "table", "7"],
        "sysctls": ["sysctl", "-qw", "net.ipv4.conf.eth0.send_redirects=0"],
        "nftables": ["nft", "add", "table", "inet", "vmnet_probe"],
        "proxy_neighbours": ["ip", "neigh", "add", "proxy", "198.51.100.99", "dev", "eth0"],
    }
    for part, command in changes.items():
        pn.in_pod(a, *command)
        after = pn.snapshot(a.netns)
        assert [name for name in after if after[name] != before[name]] == [part]
        before = after


def test_snapshot_ignores_ipv6_settling(podnets: Podnets) -> None:
    """DAD ends a second or so after a link is up (flags go, a local fe80 route comes):
    a snapshot taken just after the pod is built equals one taken after a VM's life."""
    (pod,) = podnets.routed().pods(1)
    fresh = pn.snapshot(pod.netns)
    deadline = time.monotonic() + 5
    while "tentative" in pn.ip("-n", pod.netns, "addr") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "tentative" not in pn.ip("-n", pod.netns, "addr")
    assert pn.snapshot(pod.netns) == fresh


def everything_named(net: Network) -> list[str]:
    links = [name for name in net.names if not name.startswith("vtns-")]
    netns = [name for name in net.names if name.startswith("vtns-")]
    return [f"link {name}" for name in links if Path(f"/sys/class/net/{name}").exists()] + [
        f"netns {name}" for name in netns if Path(f"/run/netns/{name}").exists()]  # fmt: skip


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", pn.KINDS)
def test_teardown_leaves_nothing_even_after_a_failure(kind: Kind) -> None:
    failing = pytest.raises(RuntimeError, match="the test failed")
    with failing, pn.guard() as table, pn.network(kind) as net:
        pods = net.pods(3)
        listeners = [pn.serve_tcp(pod, 80, "x") for pod in pods]
        pids = [pod.pid for pod in pods] + [listener.pid for listener in listeners]
        pn.quietly("ip", "netns", "del", pods[0].netns)  # some already gone: fine
        if pods[1].host_veth:
            pn.quietly("ip", "link", "del", pods[1].host_veth)
        pods[2].close()
        raise RuntimeError("the test failed")
    assert everything_named(net) == []
    assert [pid for pid in pids if alive(pid)] == []
    assert [path for pod in pods for path in [pod.workdir] if Path(path).exists()] == []
    assert table not in pn.run(["nft", "list", "tables"])
    assert "vmnet-test:" not in "".join(pn.run([cmd, "-S"]) for cmd in pn.iptables_backends())


def test_the_guard_drops_what_a_test_link_forwards_to_any_other(
    podnets: Podnets, podnet_guard: str
) -> None:
    """A non-vt link of this test's own (``gt…``, to a scratch namespace) with a /32 route:
    the host would forward between it and the pods; the guard drops both ways."""
    (pod,) = podnets.routed().pods(1)
    with outside_pod() as outside:
        dropped = guard_counters(podnet_guard)
        listener = pn.serve_udp(outside, 9999, "leaked")
        with pytest.raises(pn.PodnetError, match="timed out"):
            pn.send_udp(pod, outside.ip, 9999, timeout=0.5)
        with pytest.raises(pn.PodnetError, match="timed out"):
            pn.send_udp(outside, pod.ip, 9999, timeout=0.5)
        assert pn.seen(listener) == []
        counted = guard_counters(podnet_guard)
    assert [after - was >= 1 for after, was in zip(counted, dropped, strict=True)] == [True, True]


@contextlib.contextmanager
def outside_pod() -> Iterator[Pod]:
    """A scratch namespace at 198.51.100.254 behind a host link ``gt…`` (not ``vt*``)."""
    netns, link = f"vtns-{os.urandom(4).hex()}", f"gt{os.urandom(4).hex()}"
    workdir = f"/tmp/vmnet-{netns}"
    pod = Pod("routed", netns, "198.51.100.254", 32, "", link, 0, "", (), (), workdir)
    try:
        os.makedirs(workdir)
        pn.ip("netns", "add", netns)
        pn.ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        pn.ip("link", "set", link, "up")
        pn.write_sysctl(f"net/ipv4/conf/{link}/forwarding", "1")
        pn.write_sysctl(f"net/ipv4/conf/{link}/proxy_arp", "1")
        pn.write_sysctl(f"net/ipv4/neigh/{link}/proxy_delay", "0")
        pn.ip("route", "add", "198.51.100.254/32", "dev", link)
        pn.ip("-n", netns, "addr", "add", "198.51.100.254/32", "dev", "eth0")
        pn.ip("-n", netns, "link", "set", "eth0", "up")
        pn.ip("-n", netns, "route", "add", "default", "dev", "eth0")
        yield pod
    finally:
        pod.close()
        pn.quietly("ip", "link", "del", link)
        pn.quietly("ip", "netns", "del", netns)
        shutil.rmtree(workdir, ignore_errors=True)


def guard_counters(table: str) -> list[int]:
    ruleset = pn.run(["nft", "list", "table", "inet", table])
    return [
        int(line.split("packets ")[1].split()[0])
        for line in ruleset.splitlines()
        if "drop" in line
    ]


FORWARD_ACCEPT_PROBE = """
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from tests.guest.podnets import forward_accept
def rules():
    return {cmd: subprocess.run([cmd, "-S"], capture_output=True, text=True).stdout for cmd in ("iptables-nft", "iptables-legacy")}
with forward_accept("vmnet-test:probe") as added:
    inside = rules()
print(json.dumps({"added": added, "inside": inside, "after": rules()}))
"""


def test_forward_accept_rules_come_and_go_in_every_backend_in_use() -> None:
    """In a scratch namespace whose FORWARD policy is DROP in both backends, with a
    DOCKER-USER chain in the nft one, as docker leaves it: rules added, then removed."""
    scratch = f"vtns-{os.urandom(4).hex()}"
    pn.ip("netns", "add", scratch)
    try:
        setup = [["iptables-nft", "-P", "FORWARD", "DROP"], ["iptables-nft", "-N", "DOCKER-USER"],
                 ["iptables-legacy", "-P", "FORWARD", "DROP"]]  # fmt: skip
        for command in setup:
            pn.run(pn.in_netns(scratch, *command))
        probe = pn.run(pn.in_netns(scratch, sys.executable, "-c", FORWARD_ACCEPT_PROBE, str(REPO)))
    finally:
        subprocess.run(["ip", "netns", "del", scratch], check=False)
    report = json.loads(probe)
    inside = {backend: rules.replace('"', "") for backend, rules in report["inside"].items()}
    rule = "-A {} -i vt+ -o vt+ -m comment --comment vmnet-test:probe -j ACCEPT"
    assert rule.format("FORWARD") in inside["iptables-legacy"]
    assert rule.format("FORWARD") in inside["iptables-nft"]
    assert rule.format("DOCKER-USER") in inside["iptables-nft"]
    assert len(report["added"]) == 3
    assert "vmnet-test" not in "".join(report["after"].values())
