"""Pure tier: `annotate` writes what the hook accepts, and updates rather than duplicates."""

from __future__ import annotations

import pytest

from vmnet_hook.core.annotate import annotate
from vmnet_hook.core.annotation import Selector, parse_domain, parse_xml, placeholder_for
from vmnet_hook.core.rewrite import to_text
from vmnet_hook.errors import AnnotationError

UUID = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
PLAIN = f"""<domain type='qemu'>
  <name>vm1</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>64</memory>
  <devices>
    <interface type='network'><mac address='52:54:00:00:00:09'/><source network='default'/></interface>
    <interface type='direct'><mac address='52:54:00:12:34:56'/><source dev='eth9' mode='vepa'/></interface>
  </devices>
</domain>"""
POD = Selector("pod", "default/virt-launcher-vm1-x7k2p")


def claims(xml: str) -> list[tuple[str, str, str, str]]:
    domain = parse_domain(parse_xml(xml.encode()))
    return [(c.mac, str(c.selector), c.pod_dev, c.placeholder) for c in domain.claims]


def test_annotates_the_one_direct_interface_keeping_its_mode() -> None:
    text = to_text(annotate(parse_xml(PLAIN.encode()), POD, "eth0"))
    placeholder = placeholder_for(UUID, "52:54:00:12:34:56")
    assert claims(text) == [("52:54:00:12:34:56", str(POD), "eth0", placeholder)]
    assert f'<source dev="{placeholder}" mode="vepa"/>' in text


def test_annotating_again_updates_instead_of_adding() -> None:
    once = annotate(parse_xml(PLAIN.encode()), POD, "eth0")
    twice = to_text(annotate(once, Selector("pid", "42"), "net1", "52:54:00:12:34:56"))
    assert claims(twice) == [
        ("52:54:00:12:34:56", "pid=42", "net1", placeholder_for(UUID, "52:54:00:12:34:56"))
    ]
    assert "pod=" not in twice


def test_a_new_mac_adds_a_direct_interface_in_bridge_mode() -> None:
    text = to_text(annotate(parse_xml(PLAIN.encode()), POD, "eth0", "52:54:00:AA:BB:CC"))
    placeholder = placeholder_for(UUID, "52:54:00:aa:bb:cc")
    assert claims(text) == [("52:54:00:aa:bb:cc", str(POD), "eth0", placeholder)]
    assert f'<source mode="bridge" dev="{placeholder}"/>' in text


def test_a_domain_without_uuid_or_nic_gets_both() -> None:
    bare = b"<domain type='qemu'><name>vm</name><memory>65536</memory></domain>"
    text = to_text(annotate(parse_xml(bare), POD, "eth0"))
    ((mac, selector, dev, placeholder),) = claims(text)
    uuid = parse_domain(parse_xml(text.encode())).uuid
    assert (selector, dev, placeholder) == (str(POD), "eth0", placeholder_for(uuid, mac))


def test_refuses_to_turn_a_non_direct_interface_into_a_pod_nic() -> None:
    with pytest.raises(AnnotationError, match="interface 52:54:00:00:00:09 is type='network'"):
        annotate(parse_xml(PLAIN.encode()), POD, "eth0", "52:54:00:00:00:09")


def test_network_and_pod_ports_are_written_only_when_given() -> None:
    default = parse_domain(annotate(parse_xml(PLAIN.encode()), POD, "eth0"))
    assert (default.claims[0].network, default.claims[0].pod_ports) == ("masquerade", ())
    assert 'network="m' not in to_text(annotate(parse_xml(PLAIN.encode()), POD, "eth0"))
    tree = annotate(parse_xml(PLAIN.encode()), POD, "eth0", network="masquerade",
                    pod_ports="tcp/9091 udp/53")  # fmt: skip
    (claim,) = parse_domain(tree).claims
    assert claim.network == "masquerade" and [str(p) for p in claim.pod_ports] == [
        "tcp/9091",
        "udp/53",
    ]
    l2 = parse_domain(annotate(parse_xml(PLAIN.encode()), POD, "eth0", network="l2"))
    assert l2.claims[0].network == "l2"


@pytest.mark.parametrize(
    ("network", "pod_ports", "message"),
    [
        ("l2", "tcp/9091", "pod-ports goes with network='masquerade' only"),
        ("masquerade", "tcp/99999", "pod-ports: 'tcp/99999' is not PROTO/PORT"),
        ("bridge", None, "network='bridge' is not one of masquerade, l2"),
    ],
)
def test_bad_network_or_pod_ports_are_refused(
    network: str, pod_ports: str | None, message: str
) -> None:
    with pytest.raises(AnnotationError, match=message):
        annotate(parse_xml(PLAIN.encode()), POD, "eth0", network=network, pod_ports=pod_ports)
