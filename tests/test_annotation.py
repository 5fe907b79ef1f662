"""Pure tier: bad annotations and unsafe XML are refused with one line that says what to fix."""

from __future__ import annotations

import pytest

from vmnet_hook.core.annotation import parse_domain, parse_xml, placeholder_for
from vmnet_hook.errors import AnnotationError

DOMAIN = """<domain type='qemu'>
  <name>vm1</name>
  <uuid>6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6</uuid>
  <metadata><vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">{annotations}</vmnet:interfaces></metadata>
  <devices>
    <interface type='direct'><mac address='52:54:00:12:34:56'/><source dev='{placeholder}'/></interface>
    {more}
  </devices>
</domain>"""
GOOD = '<vmnet:interface mac="52:54:00:12:34:56" netns="pod1" dev="eth0"/>'


def parse(annotations: str = GOOD, placeholder: str = "vn3f9a0c1d2e4b", more: str = "") -> None:
    xml = DOMAIN.format(annotations=annotations, placeholder=placeholder, more=more)
    parse_domain(parse_xml(xml.encode()))


def test_a_good_annotation_becomes_one_claim() -> None:
    xml = DOMAIN.format(annotations=GOOD, placeholder="vn3f9a0c1d2e4b", more="")
    domain = parse_domain(parse_xml(xml.encode()))
    assert domain.name == "vm1"
    assert [(c.mac, str(c.selector), c.pod_dev, c.placeholder) for c in domain.claims] == [
        ("52:54:00:12:34:56", "netns=pod1", "eth0", "vn3f9a0c1d2e4b")
    ]


BAD_ANNOTATIONS = [
    ('<vmnet:interface netns="p" dev="eth0" colour="red"/>', "unknown attribute 'colour'"),
    (
        '<vmnet:interface netns="p" pid="1" dev="eth0"/>',
        "exactly one of pod, pod-uid, container, pid, netns (found: pid, netns)",
    ),
    (
        '<vmnet:interface dev="eth0"/>',
        "exactly one of pod, pod-uid, container, pid, netns (found: none)",
    ),
    (
        '<vmnet:interface netns="p" dev="eth0" mac="52:54:00:zz:34:56"/>',
        "mac='52:54:00:zz:34:56' is not a MAC address",
    ),
    (
        '<vmnet:interface netns="p" dev="eth0" mac="52:54:00:99:99:99"/>',
        "no <interface type='direct'> has MAC 52:54:00:99:99:99",
    ),
    (
        '<vmnet:interface netns="../../etc" dev="eth0"/>',
        "netns='../../etc' is not a name under netns_dir",
    ),
    ('<vmnet:interface netns=".." dev="eth0"/>', "netns='..' is not a name under netns_dir"),
    ('<vmnet:interface netns="a/b" dev="eth0"/>', "netns='a/b' is not a name under netns_dir"),
    ('<vmnet:interface netns="' + "n" * 300 + '" dev="eth0"/>', "is not a name under netns_dir"),
    (
        '<vmnet:interface netns="p" dev="eth0/../x"/>',
        "dev='eth0/../x' must name the NIC inside the pod",
    ),
    (
        '<vmnet:interface netns="p" dev="' + "e" * 200 + '"/>',
        "must name the NIC inside the pod (like eth0), 1-15 characters",
    ),
    ('<vmnet:interface netns="p" dev="eth&#0;"/>', "not well-formed"),
    ('<vmnet:interface pod="Default/Pod" dev="eth0"/>', "pod='Default/Pod' is not NAMESPACE/NAME"),
    ('<vmnet:interface pod="nopod" dev="eth0"/>', "pod='nopod' is not NAMESPACE/NAME"),
    ('<vmnet:interface pod-uid="1234" dev="eth0"/>', "pod-uid='1234' is not a UID"),
    (
        '<vmnet:interface container="abc" dev="eth0"/>',
        "container='abc' is not 12 to 64 hex digits",
    ),
    ('<vmnet:interface pid="0" dev="eth0"/>', "pid='0' is not a process id"),
    ('<vmnet:interface pid="-1" dev="eth0"/>', "pid='-1' is not a process id"),
    (GOOD + GOOD, "two <vmnet:interface> share one MAC"),
]


@pytest.mark.parametrize(("annotation", "message"), BAD_ANNOTATIONS)
def test_bad_annotation_is_one_clear_line(annotation: str, message: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse(annotation)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_mac_may_be_left_out_only_with_one_direct_interface() -> None:
    second = "<interface type='direct'><mac address='52:54:00:00:00:02'/><source dev='vnx'/></interface>"
    with pytest.raises(AnnotationError, match="has 2 <interface type='direct'>; add mac="):
        parse('<vmnet:interface netns="p" dev="eth0"/>', more=second)


@pytest.mark.parametrize("placeholder", ["vn0123456789abcd", "", "a/b", "x y"])
def test_placeholder_must_fit_libvirts_16_byte_name(placeholder: str) -> None:
    with pytest.raises(AnnotationError, match="must be a placeholder of 1-15 characters"):
        parse(placeholder=placeholder)


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b"<domain>&lol2;</domain>",
        b'<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/shadow">]><domain><name>&xxe;</name></domain>',
    ],
)
def test_dtds_and_entities_are_refused_without_expanding(xml: bytes) -> None:
    with pytest.raises(AnnotationError, match="carries a DTD or entity declarations; refused"):
        parse_xml(xml)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<domain><name>x</name>", "not well-formed"),
        (b"<network/>", "expected a <domain> document, got <network>"),
        (b"", "not well-formed"),
    ],
)
def test_broken_xml_is_refused(xml: bytes, message: str) -> None:
    with pytest.raises(AnnotationError, match=message):
        parse_xml(xml)


def test_placeholder_is_vn_and_twelve_hex_digits_stable_per_domain_and_mac() -> None:
    name = placeholder_for("6F1C2A9E-3B4D-4C5E-8F90-A1B2C3D4E5F6", "52:54:00:12:34:56")
    assert name == placeholder_for("6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6", "52:54:00:12:34:56")
    assert name != placeholder_for("6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6", "52:54:00:12:34:57")
    assert len(name) == 14 and name.startswith("vn") and int(name[2:], 16) >= 0


def test_a_static_pods_32_hex_uid_is_a_pod_uid() -> None:
    parse('<vmnet:interface pod-uid="0A1B2C3D4E5F60718293A4B5C6D7E8F9" dev="eth0"/>')


@pytest.mark.parametrize(
    ("annotation", "element"),
    [
        ('<vmnet:iface netns="p" dev="eth0"/>', "iface"),
        (
            '<vmnet:interface netns="p" dev="eth0"><vmnet:interface/></vmnet:interface>',
            "interface",
        ),
    ],
)
def test_a_misshapen_annotation_is_an_error_not_ignored(annotation: str, element: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse(annotation)
    assert str(caught.value) == (
        f"domain 'vm1': unexpected <vmnet:{element}> in <metadata>; expected "
        "<vmnet:interfaces> holding <vmnet:interface .../> elements"
    )


def test_two_direct_interfaces_with_one_mac_are_refused() -> None:
    twin = "<interface type='direct'><mac address='52:54:00:12:34:56'/><source dev='vnx'/></interface>"
    with pytest.raises(
        AnnotationError, match="two <interface type='direct'> have MAC 52:54:00:12:34:56"
    ):
        parse(more=twin)
