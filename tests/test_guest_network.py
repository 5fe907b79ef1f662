"""A real guest on its pod's network, through the installed hook and a plain ``virsh start``:
routed (Calico-like), bridged (CNI bridge / docker0) and macvlan pods, each with a peer.
What is asserted is what the guest and the peer see, and the pod as it was afterwards."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.guest import BootGuest, Guest, direct_interface_xml, random_mac
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_libvirt import installed_hook

__all__ = ["installed_hook", "podnet_guard", "podnets"]

pytestmark = pytest.mark.guest
GUEST_TCP, GUEST_UDP, POD_TCP, PEER_TCP = 8080, 5300, 9091, 7070
STATE_DIR = Path("/run/vmnet-hook")


@dataclass(frozen=True)
class Scene:
    pod: pn.Pod
    peer: pn.Pod
    guest: Guest
    placeholder: str
    before: dict[str, str]


def annotation(mac: str, pod: pn.Pod, **extra: str) -> str:
    attributes = " ".join(f'{key}="{value}"' for key, value in extra.items())
    return (
        '<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">'
        f'<vmnet:interface mac="{mac}" pid="{pod.pid}" dev="eth0" {attributes}/>'
        "</vmnet:interfaces>"
    )


def placeholder() -> str:
    return f"vn{secrets.token_hex(6)}"


@pytest.fixture
def scene(
    request: pytest.FixtureRequest, podnets: pn.Podnets, boot_guest: BootGuest,
    installed_hook: Path,
) -> Iterator[Scene]:  # fmt: skip
    """A pod and its peer on a network of the kind asked for, listeners in place, the
    pod's snapshot taken, and a guest started on it in masquerade."""
    pod, peer = podnets.network(request.param).pods(2)
    pn.serve_tcp(pod, POD_TCP, "pod")
    pn.serve_udp(pod, POD_TCP, "pod-udp")
    before = pn.snapshot(pod.netns)
    mac, source = random_mac(), placeholder()
    metadata = annotation(mac, pod, **{"pod-ports": f"tcp/{POD_TCP} udp/{POD_TCP}"})
    guest = boot_guest([direct_interface_xml(mac, source)], metadata_xml=metadata)
    yield Scene(pod, peer, guest, source, before)


def serve_in_guest(guest: Guest) -> None:
    """Answer 'guest' on TCP, for ever, in the background (busybox nc has no UDP: UDP is
    proven by the guest's own count of datagrams to a closed port, below)."""
    guest.check(f"(while true; do echo guest | nc -l -p {GUEST_TCP}; done) >/dev/null 2>&1 &")


def udp_no_ports(guest: Guest) -> int:
    """The guest kernel's count of UDP datagrams that found no socket (Udp: NoPorts)."""
    header, values = guest.check("grep '^Udp:' /proc/net/snmp").splitlines()[:2]
    return int(dict(zip(header.split(), values.split(), strict=True))["NoPorts"])


def assert_udp_reaches_guest(scene: Scene) -> None:
    """A datagram to the pod's IP lands in the guest: its kernel counts it (nothing
    answers it, so the peer sees no reply)."""
    before = udp_no_ports(scene.guest)
    with pytest.raises(pn.PodnetError):
        pn.send_udp(scene.peer, scene.pod.ip, GUEST_UDP, timeout=1)
    assert udp_no_ports(scene.guest) == before + 1


def assert_reach(scene: Scene) -> None:
    pod, peer, guest = scene.pod, scene.peer, scene.guest
    guest.check(f"ping -c1 -W3 {peer.ip}")
    listener = pn.serve_tcp(peer, PEER_TCP, "peer")
    assert guest.check(f"echo hi | nc -w 3 {peer.ip} {PEER_TCP}").strip() == "peer"
    assert pn.seen(listener)[-1] == pod.ip  # the guest leaves as the pod's IP
    assert pn.connect_tcp(peer, pod.ip, GUEST_TCP).strip() == "guest"
    assert_udp_reaches_guest(scene)
    assert pn.connect_tcp(peer, pod.ip, POD_TCP).strip() == "pod"  # pod-ports stay
    assert pn.send_udp(peer, pod.ip, POD_TCP).strip() == "pod-udp"
    assert guest.check(f"echo hi | nc -w 3 {pod.ip} {GUEST_TCP}").strip() == "guest"


@pytest.mark.parametrize("scene", ["routed", "bridged", "macvlan"], indirect=True)
def test_guest_gets_the_pods_network_and_the_pod_is_left_as_found(scene: Scene) -> None:
    pod, guest = scene.pod, scene.guest
    lease = guest.wait_for_lease("eth0")
    assert (lease["ip"], lease["mask"], lease["router"]) == ("10.0.2.2", "30", "10.0.2.1")
    assert lease["dns"].split(",") == list(pod.dns_servers)
    assert lease["search"].split(",") == list(pod.dns_search)
    serve_in_guest(guest)
    assert_reach(scene)
    pn.ip("-n", pod.netns, "neigh", "flush", "all")
    assert_reach(scene)
    guest.destroy()
    assert pn.snapshot(pod.netns) == scene.before
    assert not Path(f"/sys/class/net/{scene.placeholder}").exists()
    assert not list(STATE_DIR.glob(f"{guest.uuid}*"))


@pytest.mark.parametrize("scene", ["routed"], indirect=True)
def test_a_foreign_mac_on_the_guests_link_gets_no_offer(scene: Scene) -> None:
    guest = scene.guest
    guest.wait_for_lease("eth0")
    status, output = guest.run(
        "ip link set eth0 down; ip link set eth0 address 52:54:00:de:ad:01; ip link set eth0 up;"
        " udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true", timeout=30,
    )  # fmt: skip
    assert status != 0, output


@pytest.mark.parametrize("kind", ["bridged", "macvlan"])
def test_l2_is_refused_with_the_hooks_line(
    kind: pn.Kind, podnets: pn.Podnets, boot_guest: BootGuest, installed_hook: Path
) -> None:
    pod = podnets.network(kind).pod()
    before = pn.snapshot(pod.netns)
    mac, source = random_mac(), placeholder()
    guest = boot_guest([direct_interface_xml(mac, source)],
                       metadata_xml=annotation(mac, pod, network="l2"), start=False)  # fmt: skip
    started = guest.start(check=False)
    assert started.returncode != 0
    reason = f"is a port of bridge {podnets_bridge(pod)}" if kind == "bridged" else "not a veth"
    assert f"vmnet-hook: domain '{guest.name}', interface {mac}:" in started.stderr
    assert reason in started.stderr, started.stderr
    assert pn.snapshot(pod.netns) == before


def podnets_bridge(pod: pn.Pod) -> str:
    master = subprocess.run(["ip", "-o", "link", "show", str(pod.host_veth)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return master.split(" master ")[1].split()[0]
