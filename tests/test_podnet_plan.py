"""The pod side's plan, nft table and dnsmasq command line: pure, from made-up facts."""

from __future__ import annotations

import ipaddress

import pytest

from vmnet_hook.core.annotation import PortRange, parse_pod_ports
from vmnet_hook.errors import AnnotationError, PodNetError
from vmnet_hook.podnet import dhcp, nft
from vmnet_hook.podnet.plan import (
    Dns,
    PodFacts,
    Wanted,
    gateway_mac,
    owner_tag,
    parse_owner,
    plan,
)

UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
CIDR = ipaddress.IPv4Network("10.0.2.0/24")
DNS = Dns(
    ("198.51.100.53",), ("pod.svc.cluster.local", "cluster.local"), "/proc/7/root/etc/resolv.conf"
)
Iface, Net = ipaddress.IPv4Interface, ipaddress.IPv4Network


def facts(**changes: object) -> PodFacts:
    base: dict[str, object] = {
        "pod_dev": "eth0", "pod_ip": Iface("198.51.100.7/32"), "mtu": 1450,
        "addresses": (Iface("198.51.100.7/32"), Iface("127.0.0.1/8")),
        "routes": (Net("0.0.0.0/0"), Net("169.254.1.1/32")), "held": (),
    }  # fmt: skip
    return PodFacts(**{**base, **changes})  # type: ignore[arg-type]


def want(mac: str = "52:54:00:12:34:56", ports: str = "") -> Wanted:
    return Wanted(mac, "vn3f9a0c1d2e4b", "eth0", parse_pod_ports(ports) if ports else ())


def test_first_nic_gets_the_first_free_slash_30_and_the_default_route() -> None:
    (nic,) = plan(UUID, [want()], {"52:54:00:12:34:56": facts()}, {"52:54:00:12:34:56": DNS}, CIDR)
    assert (nic.subnet, nic.gateway, nic.guest) == ("10.0.2.0/30", "10.0.2.1", "10.0.2.2")
    assert (nic.pod_ip, nic.mtu, nic.default_route) == ("198.51.100.7", 1450, True)
    assert nic.pod_end.startswith("vg") and len(nic.pod_end) <= 15
    assert parse_owner(nic.owner) == {"uuid": UUID, "mac": nic.mac, "dev": "eth0"}


def test_slash_30s_held_by_other_domains_and_earlier_nics_are_skipped() -> None:
    macs = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    held = facts(held=(Net("10.0.2.0/30"),))
    nics = plan(
        UUID, [want(m) for m in macs], dict.fromkeys(macs, held), dict.fromkeys(macs, DNS), CIDR
    )
    assert [n.subnet for n in nics] == ["10.0.2.4/30", "10.0.2.8/30"]
    assert [n.default_route for n in nics] == [True, False]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"addresses": (Iface("10.0.2.9/24"),)}, "overlaps the pod's address 10.0.2.9/24"),
        ({"routes": (Net("10.0.0.0/8"),)}, "overlaps the pod's route to 10.0.0.0/8"),
    ],
)
def test_a_vm_cidr_the_pod_uses_is_refused_naming_both(
    changes: dict[str, object], named: str
) -> None:
    with pytest.raises(PodNetError, match=f"vm_cidr 10.0.2.0/24 {named}"):
        plan(
            UUID,
            [want()],
            {"52:54:00:12:34:56": facts(**changes)},
            {"52:54:00:12:34:56": DNS},
            CIDR,
        )


def test_a_full_vm_cidr_and_a_pod_nic_without_ipv4_are_refused() -> None:
    full = facts(held=(Net("10.0.2.0/30"),))
    with pytest.raises(PodNetError, match=r"no free /30 left in vm_cidr 10\.0\.2\.0/30"):
        plan(
            UUID,
            [want()],
            {"52:54:00:12:34:56": full},
            {"52:54:00:12:34:56": DNS},
            Net("10.0.2.0/30"),
        )
    with pytest.raises(PodNetError, match="no IPv4 address to masquerade as"):
        plan(
            UUID,
            [want()],
            {"52:54:00:12:34:56": facts(pod_ip=None)},
            {"52:54:00:12:34:56": DNS},
            CIDR,
        )


@pytest.mark.parametrize("mac", ["52:54:00:12:34:56", "00:16:3e:00:00:01", "fe:ff:ff:ff:ff:ff"])
def test_the_gateway_mac_is_unicast_local_and_never_the_guests(mac: str) -> None:
    first = int(gateway_mac(mac)[:2], 16)
    assert gateway_mac(mac) != mac and first & 0x01 == 0 and first & 0x02
    assert gateway_mac(mac)[2:] == mac[2:]


def test_nft_table_keeps_pod_ports_and_loops_back() -> None:
    (nic,) = plan(UUID, [want(ports="tcp/9091 udp/53 tcp/8000-8100")],
                  {"52:54:00:12:34:56": facts()}, {"52:54:00:12:34:56": DNS}, CIDR)  # fmt: skip
    script = nft.ruleset(nic)
    assert f"table ip {nic.table} {{" in script and f'comment "{nic.owner}"' in script
    assert "ip daddr 198.51.100.7 tcp dport != { 9091, 8000-8100 } dnat to 10.0.2.2" in script
    assert "ip daddr 198.51.100.7 udp dport != { 53 } dnat to 10.0.2.2" in script
    assert "ip saddr 10.0.2.2 ip daddr 10.0.2.2 snat to 198.51.100.7" in script
    assert "icmp" not in script.split("chain postrouting")[0]  # ICMP to the pod stays there


def test_dnsmasq_answers_only_the_guest_with_the_pods_dns() -> None:
    nics = plan(UUID, [want("52:54:00:00:00:01"), want("52:54:00:00:00:02")],
                dict.fromkeys(["52:54:00:00:00:01", "52:54:00:00:00:02"], facts()),
                dict.fromkeys(["52:54:00:00:00:01", "52:54:00:00:00:02"], DNS), CIDR)  # fmt: skip
    first, second = (dhcp.argv(nic, "/run/vmnet-hook") for nic in nics)
    assert "--dhcp-host=52:54:00:00:00:01,10.0.2.2,infinite" in first
    assert "--dhcp-ignore=tag:!known" in first and "--dhcp-broadcast" in first
    assert "--dhcp-option=option:router,10.0.2.1" in first and "--dhcp-option=3" in second
    assert "--dhcp-option=option:dns-server,198.51.100.53" in first
    assert "--dhcp-option=option:domain-search,pod.svc.cluster.local,cluster.local" in first
    assert "--dhcp-option=option:mtu,1450" in first and "--port=0" in first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp/9091", (PortRange("tcp", 9091, 9091),)),
        (
            "tcp/9091, udp/53  tcp/8000-8100",
            (PortRange("tcp", 9091, 9091), PortRange("udp", 53, 53), PortRange("tcp", 8000, 8100)),
        ),
    ],
)
def test_pod_ports_parse(text: str, expected: tuple[PortRange, ...]) -> None:
    assert parse_pod_ports(text) == expected


@pytest.mark.parametrize(
    "text", ["tcp/0", "sctp/80", "tcp/9-8", "tcp/65536", "tcp", "80", "tcp/\uff18\uff10"]
)
def test_bad_pod_ports_name_the_item_and_the_form(text: str) -> None:
    with pytest.raises(AnnotationError, match="is not PROTO/PORT or PROTO/FIRST-LAST"):
        parse_pod_ports(text)


def test_owner_tags_are_recognised_and_others_are_not() -> None:
    assert parse_owner(owner_tag(UUID, "52:54:00:12:34:56", "eth0"))["dev"] == "eth0"  # type: ignore[index]
    assert parse_owner("calico veth") is None and parse_owner("") is None
