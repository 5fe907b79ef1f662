"""A masqueraded guest through the rest of a VM's life, with the installed hook and a real
guest: many NICs, libvirtd restarts and guest reboots, save and restore onto a re-created
pod, and what `status` and `pods` show of it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.guest import BootGuest, Guest, direct_interface_xml, random_mac
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.guest.vm import virsh
from tests.test_guest_network import GUEST_TCP, placeholder, serve_in_guest
from tests.test_libvirt import installed_hook, restart_libvirtd
from vmnet_hook.cli.main import cli

__all__ = ["installed_hook", "podnet_guard", "podnets"]

pytestmark = pytest.mark.guest
Start = Callable[..., tuple[Guest, list[str]]]


def interfaces(*nics: tuple[str, str, str]) -> str:
    """``(mac, selector, extra attributes)`` each, as the domain's annotation."""
    return (
        '<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">'
        + "".join(
            f'<vmnet:interface mac="{mac}" {selector} {extra}/>' for mac, selector, extra in nics
        )
        + "</vmnet:interfaces>"
    )


@pytest.fixture
def start(boot_guest: BootGuest, installed_hook: Path) -> Start:
    """Start a guest whose NICs are ``(selector, extra attributes)``; its MACs come back."""

    def boot(*nics: tuple[str, str]) -> tuple[Guest, list[str]]:
        macs = [random_mac() for _ in nics]
        sources = [direct_interface_xml(mac, placeholder()) for mac in macs]
        notes = interfaces(
            *((mac, sel, extra) for mac, (sel, extra) in zip(macs, nics, strict=True))
        )
        return boot_guest(sources, metadata_xml=notes), macs

    return boot


def status(*args: str) -> tuple[int, list[dict[str, Any]]]:
    done = CliRunner().invoke(cli, ["status", "--json", *args])
    return done.exit_code, json.loads(done.output)


def pods_json() -> list[dict[str, Any]]:
    return list(json.loads(CliRunner().invoke(cli, ["pods", "--json"]).output))


def restart_and_reconnect() -> None:
    """Restart libvirtd and wait for its `reconnect begin` of the running guest, which
    libvirtd runs in a thread of its own after it already answers: the hook's check takes
    the host-wide lock (its file's mtime moves) and lets it go."""
    lock = Path("/run/vmnet-hook/.lock")
    before = lock.stat().st_mtime_ns
    restart_libvirtd()
    wait_until(lambda: lock.stat().st_mtime_ns != before, 30, "libvirtd's reconnect begin")
    with lock.open("rb") as held:  # the hook lets it go last, after it saved what it mended
        fcntl.flock(held, fcntl.LOCK_EX)


def kill_dhcp(pid: int) -> None:
    """SIGKILL and wait until it is dead (a zombie: PID 1 here reaps nothing)."""
    os.kill(pid, signal.SIGKILL)

    def dead() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (FileNotFoundError, ProcessLookupError):
            return True

    wait_until(dead, 5, f"dnsmasq {pid} to die")


def wait_until(test: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not test():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        time.sleep(0.2)


def test_status_and_pods_show_the_guest_and_a_missing_dhcp_server(
    podnets: pn.Podnets, start: Start
) -> None:
    pod = podnets.routed().pod()
    guest, (mac,) = start((f'pid="{pod.pid}" dev="eth0"', ""))
    guest.wait_for_lease("eth0")
    code, rows = status(guest.name)
    assert code == 0 and len(rows) == 1
    row = rows[0]
    assert (row["network"], row["mac"], row["subnet"], row["guest"], row["pod_ip"]) == (
        "masquerade",
        mac,
        "10.0.2.0/30",
        "10.0.2.2",
        pod.ip,
    )
    assert row["dhcp_alive"] is True and row["state"] == "ok" and row["nft_table"]
    entry = next(e for e in pods_json() if e["pinned_as"] == pod.netns)
    nics = {nic["name"]: nic for nic in entry["nics"]}
    assert (
        set(nics) == {"eth0"} and nics["eth0"]["guest"] == guest.uuid
    )  # the guest's link is not a pod NIC
    kill_dhcp(int(row["dhcp_pid"]))
    code, rows = status(guest.name)
    assert code == 1 and rows[0]["state"] == "broken"
    assert f"dnsmasq for {row['pod_end']} is not running" in str(rows[0]["problem"])


def test_libvirtd_restart_mends_only_the_dhcp_server_and_a_rebooted_guest_gets_its_network(
    podnets: pn.Podnets, start: Start
) -> None:
    pod, peer = podnets.routed().pods(2)
    guest, _macs = start((f'pid="{pod.pid}" dev="eth0"', ""))
    guest.wait_for_lease("eth0")
    (before,) = status(guest.name)[1]
    restart_and_reconnect()  # reconnect begin: everything healthy, nothing touched
    (after,) = status(guest.name)[1]
    assert after["dhcp_pid"] == before["dhcp_pid"] and after["state"] == "ok"
    kill_dhcp(int(before["dhcp_pid"]))
    restart_and_reconnect()  # reconnect begin starts it again
    (mended,) = status(guest.name)[1]
    assert mended["state"] == "ok" and mended["dhcp_pid"] != before["dhcp_pid"]
    guest.check("(sleep 0.3; reboot -f) >/dev/null 2>&1 &")  # no hook runs: it asks DHCP again
    wait_until(lambda: len(guest.leases()) >= 2, 60, "a second lease after the reboot")
    assert guest.leases()[-1]["ip"] == "10.0.2.2"
    guest.check(f"ping -c1 -W3 {peer.ip}")


@pytest.mark.parametrize("how", ["save", "managedsave"])
def test_restore_onto_a_re_created_pod_keeps_the_lease_and_reaches_the_peer(
    how: str, podnets: pn.Podnets, start: Start, tmp_path: Path
) -> None:
    net = podnets.routed()
    pod, peer = net.pods(2)
    guest, _macs = start((f'netns="{pod.netns}" dev="eth0"', ""))
    guest.wait_for_lease("eth0")
    guest.check(f"ping -c1 -W3 {peer.ip}")
    image = Path("/var/lib/libvirt/qemu/save") / f"{guest.name}.vmnet-test"
    image.parent.mkdir(parents=True, exist_ok=True)
    guest.close()
    virsh("save", guest.name, str(image)) if how == "save" else virsh("managedsave", guest.name)
    assert status(guest.name)[1] == []  # release end undid the pod side
    pod.close()  # the pod is deleted and made again: new namespace, new veth, new IP
    again = net.pod(netns=pod.netns)
    assert again.ip != pod.ip or again.host_veth != pod.host_veth
    try:
        virsh("restore", str(image)) if how == "save" else virsh("start", guest.name)
    finally:
        image.unlink(missing_ok=True)
    wait_until(
        lambda: guest.run(f"ping -c1 -W1 {peer.ip}")[0] == 0,
        10,
        "the peer from the restored guest",
    )
    assert guest.leases() == []  # the restored QEMU's console is new: no lease was asked for
    (row,) = status(guest.name)[1]
    assert row["pod_ip"] == again.ip and row["subnet"] == "10.0.2.0/30" and row["state"] == "ok"
    serve_in_guest(guest)
    assert pn.connect_tcp(peer, again.ip, GUEST_TCP).strip() == "guest"


def second_nic(pod: pn.Pod, bridged: pn.Network, request: pytest.FixtureRequest) -> str:
    """Give ``pod`` a ``net1`` on ``bridged`` (as Multus would), at 203.0.113.250/24."""
    host_end = pn.link_name()
    request.addfinalizer(lambda: pn.quietly("ip", "link", "del", host_end))
    pn.ip("link", "add", host_end, "type", "veth", "peer", "name", "net1", "netns", pod.netns)
    pn.ip("link", "set", host_end, "master", str(bridged.host_link), "up")
    pn.ip("-n", pod.netns, "addr", "add", "203.0.113.250/24", "dev", "net1")
    pn.ip("-n", pod.netns, "link", "set", "net1", "up")
    return "203.0.113.250"


def answer_in_guest(guest: Guest, text: str) -> None:
    guest.check(f"(while true; do echo {text} | nc -l -p {GUEST_TCP}; done) >/dev/null 2>&1 &")


def rx_packets(guest: Guest, nic: str) -> int:
    return int(guest.check(f"cat /sys/class/net/{nic}/statistics/rx_packets"))


@pytest.fixture
def two_nic_pod(
    podnets: pn.Podnets, request: pytest.FixtureRequest
) -> tuple[pn.Pod, pn.Pod, pn.Pod, str]:
    """A routed pod with a peer, and its ``net1`` on a bridged network with a peer there:
    (pod, eth0's peer, net1's peer, net1's address)."""
    routed, bridged = podnets.routed(), podnets.bridged()
    pod, peer = routed.pods(2)
    return pod, peer, bridged.pod(), second_nic(pod, bridged, request)


def test_two_masqueraded_nics_on_eth0_and_net1_of_one_pod(
    two_nic_pod: tuple[pn.Pod, pn.Pod, pn.Pod, str], start: Start
) -> None:
    pod, peer, peer2, net1 = two_nic_pod
    guest, _macs = start((f'pid="{pod.pid}" dev="eth0"', ""), (f'pid="{pod.pid}" dev="net1"', ""))
    first, second = guest.wait_for_lease("eth0"), guest.wait_for_lease("eth1")
    assert (first["ip"], first["router"]) == ("10.0.2.2", "10.0.2.1")
    assert (second["ip"], second["router"]) == ("10.0.2.6", "")  # only the first gets a route
    assert "default via 10.0.2.1 dev eth0" in guest.check("ip route")
    answer_in_guest(guest, "guest")
    assert pn.connect_tcp(peer, pod.ip, GUEST_TCP).strip() == "guest"
    before = rx_packets(guest, "eth1")
    assert pn.connect_tcp(peer2, net1, GUEST_TCP).strip() == "guest"
    assert rx_packets(guest, "eth1") > before  # net1's traffic came in on the guest's eth1


def test_two_domains_on_two_nics_of_one_pod(
    two_nic_pod: tuple[pn.Pod, pn.Pod, pn.Pod, str], start: Start
) -> None:
    pod, peer, peer2, net1 = two_nic_pod
    one, _ = start((f'pid="{pod.pid}" dev="eth0"', ""))
    assert one.wait_for_lease("eth0")["ip"] == "10.0.2.2"
    two, _ = start((f'pid="{pod.pid}" dev="net1"', ""))
    assert (two.wait_for_lease("eth0")["ip"], two.leases()[0]["router"]) == (
        "10.0.2.6",
        "10.0.2.5",
    )
    answer_in_guest(one, "one")
    answer_in_guest(two, "two")
    assert pn.connect_tcp(peer, pod.ip, GUEST_TCP).strip() == "one"
    assert pn.connect_tcp(peer2, net1, GUEST_TCP).strip() == "two"


def test_one_l2_and_one_masqueraded_nic_in_one_domain(podnets: pn.Podnets, start: Start) -> None:
    routed = podnets.routed()
    l2_pod, masq_pod, peer = routed.pods(3)
    guest, _macs = start(
        (f'pid="{l2_pod.pid}" dev="eth0"', 'network="l2"'),
        (f'pid="{masq_pod.pid}" dev="eth0"', ""),
    )
    lease = guest.wait_for_lease("eth1")
    assert (lease["ip"], lease["router"]) == ("10.0.2.2", "10.0.2.1")
    guest.check(f"ping -c1 -W3 {peer.ip}")
    taps = pn.run(["ip", "-o", "link", "show", "type", "macvtap"])
    assert f"@{l2_pod.host_veth}:" in taps  # the l2 NIC's macvtap sits on its pod's own veth


def test_one_nic_refused_leaves_nothing_of_the_others(
    podnets: pn.Podnets, boot_guest: BootGuest, installed_hook: Path
) -> None:
    good = podnets.routed().pod()
    refused = podnets.bridged().pod()  # l2 on a bridge port is refused
    before = pn.snapshot(good.netns)
    macs = [random_mac(), random_mac()]
    sources = [placeholder(), placeholder()]
    notes = interfaces((macs[0], f'pid="{good.pid}" dev="eth0"', ""),
                       (macs[1], f'pid="{refused.pid}" dev="eth0"', 'network="l2"'))  # fmt: skip
    guest = boot_guest([direct_interface_xml(m, s) for m, s in zip(macs, sources, strict=True)],
                       metadata_xml=notes, start=False)  # fmt: skip
    started = guest.start(check=False)
    assert started.returncode != 0
    assert f"vmnet-hook: domain '{guest.name}', interface {macs[1]}:" in started.stderr
    assert "is a port of bridge" in started.stderr
    assert pn.snapshot(good.netns) == before
    assert not any(Path(f"/sys/class/net/{source}").exists() for source in sources)
