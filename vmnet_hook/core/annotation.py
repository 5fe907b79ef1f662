"""Parse a domain XML and its vmnet annotation into frozen values, validated once.

Everything after this module trusts what it returns.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from lxml import etree

from vmnet_hook import NAMESPACE_URI, is_uuid
from vmnet_hook.errors import AnnotationError
from vmnet_hook.hook.gate import domain_uuid as plain_uuid

NS = {"vmnet": NAMESPACE_URI}
SELECTORS = ("pod", "pod-uid", "container", "pid", "netns")
NETWORKS = ("masquerade", "l2")
ATTRIBUTES = frozenset({"mac", "dev", "host-dev", "network", "pod-ports", *SELECTORS})
PROTOCOLS = ("tcp", "udp")
MAX_XML_BYTES = 4 * 1024 * 1024

_PORTS = re.compile(r"(tcp|udp)/([0-9]{1,5})(?:-([0-9]{1,5}))?")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,14}")
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SELECTOR_SYNTAX = {
    "pod": (re.compile(rf"{_LABEL}/[a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?"), "NAMESPACE/NAME"),
    # static (mirror) pods have a 32-hex-digit UID, the hash of their manifest
    "pod-uid": (re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9a-f]{32}"), "a UID"),
    "container": (re.compile(r"[0-9a-f]{12,64}"), "12 to 64 hex digits"),
    "pid": (re.compile(r"[1-9][0-9]{0,9}"), "a process id"),
    "netns": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}"), "a name under netns_dir"),
}


@dataclass(frozen=True)
class Selector:
    """How the pod is named: one of SELECTORS and its validated value."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


@dataclass(frozen=True)
class PortRange:
    """``tcp/9091`` or ``udp/8000-8100``: traffic to the pod's IP that stays with the pod."""

    proto: str
    first: int
    last: int

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{self.proto}/{span}"


@dataclass(frozen=True)
class Claim:
    """One annotated ``<interface type='direct'>``: which pod NIC it should use."""

    index: int  # position of the <vmnet:interface> element
    mac: str
    selector: Selector
    pod_dev: str
    placeholder: str  # the interface's <source dev> as written
    network: str = "masquerade"  # or "l2"
    pod_ports: tuple[PortRange, ...] = ()


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    claims: tuple[Claim, ...]


def placeholder_for(uuid: str, mac: str) -> str:
    """``vn`` + 12 hex digits of a hash of the domain UUID and the MAC: 14 characters,
    within libvirt's 15, and unique per host in practice."""
    digest = hashlib.sha256(f"{uuid.lower()}/{mac.lower()}".encode()).hexdigest()
    return f"vn{digest[:12]}"


def is_ifname(value: str) -> bool:
    return _IFNAME.fullmatch(value) is not None


def parse_selector(kind: str, raw: str) -> Selector:
    value = raw.lower() if kind in ("pod-uid", "container") else raw
    pattern, meaning = _SELECTOR_SYNTAX[kind]
    if pattern.fullmatch(value) is None or value in (".", ".."):
        raise AnnotationError(f"{kind}={_shown(raw)} is not {meaning}")
    return Selector(kind, value)


def parse_xml(xml: bytes) -> etree._ElementTree:
    """Parse without DTDs, entities or network; refuse anything that carries a DTD."""
    if len(xml) > MAX_XML_BYTES:
        raise AnnotationError(f"domain XML is larger than {MAX_XML_BYTES} bytes")
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise AnnotationError("domain XML carries a DTD or entity declarations; refused")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as error:
        raise AnnotationError(f"domain XML is not well-formed: {error}") from None
    if root.tag != "domain":
        raise AnnotationError(f"expected a <domain> document, got <{root.tag}>")
    _require_plain_uuid(xml, root)
    return root.getroottree()


def _require_plain_uuid(xml: bytes, root: etree._Element) -> None:
    """``release end`` reads the UUID from the bytes, without a parser (hook.gate): a
    domain whose UUID it could not read there would keep what prepare bound. libvirt
    always writes it as plain text."""
    written = (root.findtext("uuid") or "").strip().lower()
    if is_uuid(written) and plain_uuid(xml) != written:
        raise AnnotationError(
            "domain <uuid> is not plain text (CDATA, character references or markup in it); "
            "write the UUID as plain text, as libvirt does"
        )


def domain_uuid(tree: etree._ElementTree) -> str:
    uuid = (tree.getroot().findtext("uuid") or "").strip().lower()
    if not is_uuid(uuid):
        raise AnnotationError(f"domain <uuid> {_shown(uuid)} is not a UUID")
    return uuid


def parse_domain(tree: etree._ElementTree, fallback_name: str = "") -> Domain:
    root = tree.getroot()
    name = (root.findtext("name") or fallback_name).strip()
    uuid = domain_uuid(tree)
    _refuse_misplaced_elements(root, name)
    elements = root.findall("metadata/vmnet:interfaces/vmnet:interface", NS)
    directs = _direct_interfaces(root)
    claims = tuple(_claim(name, index, el, directs) for index, el in enumerate(elements))
    _refuse_duplicates(name, claims)
    return Domain(name=name, uuid=uuid, claims=claims)


def _refuse_misplaced_elements(root: etree._Element, domain: str) -> None:
    """An annotation in the wrong shape is an error, not a domain without one."""
    metadata = root.find("metadata")
    for element in metadata.iter() if metadata is not None else ():
        qname = etree.QName(element) if isinstance(element.tag, str) else None
        if qname is None or qname.namespace != NAMESPACE_URI:
            continue
        parent = element.getparent()
        fits = (qname.localname == "interfaces" and parent is metadata) or (
            qname.localname == "interface"
            and parent is not None
            and parent.tag == f"{{{NAMESPACE_URI}}}interfaces"
            and parent.getparent() is metadata
        )
        if not fits:
            raise AnnotationError(
                f"domain {domain!r}: unexpected <vmnet:{qname.localname}> in <metadata>; "
                "expected <vmnet:interfaces> holding <vmnet:interface .../> elements"
            )


def _direct_interfaces(root: etree._Element) -> dict[str, etree._Element]:
    found: dict[str, etree._Element] = {}
    for iface in root.findall("devices/interface[@type='direct']"):
        address = iface.find("mac")
        if address is not None:
            mac = (address.get("address") or "").lower()
            if mac in found:
                raise AnnotationError(
                    f"two <interface type='direct'> have MAC {mac}; give each its own"
                )
            found[mac] = iface
    return found


def _claim(
    domain: str, index: int, element: etree._Element, directs: dict[str, etree._Element]
) -> Claim:
    where = f"domain {domain!r}, <vmnet:interface> #{index + 1}"
    try:
        return _parse_claim(index, element, directs)
    except AnnotationError as error:
        raise AnnotationError(f"{where}: {error}") from None


def _parse_claim(index: int, element: etree._Element, directs: dict[str, etree._Element]) -> Claim:
    attributes = {str(key): str(value) for key, value in element.attrib.items()}
    unknown = sorted(set(attributes) - ATTRIBUTES)
    if unknown:
        raise AnnotationError(
            f"unknown attribute {_shown(unknown[0])}; allowed: mac, dev, network, pod-ports, "
            "and one of " + ", ".join(SELECTORS)
        )
    selector = _one_selector(attributes)
    pod_dev = attributes.get("dev", "")
    if not is_ifname(pod_dev):
        raise AnnotationError(
            f"dev={_shown(pod_dev)} must name the NIC inside the pod (like eth0), 1-15 characters"
        )
    mac, iface = _target(attributes.get("mac"), directs)
    source = iface.find("source")
    placeholder = source.get("dev", "") if source is not None else ""
    if not is_ifname(placeholder):
        raise AnnotationError(
            f"interface {mac}: <source dev={_shown(placeholder)}> must be a placeholder of"
            " 1-15 characters (vmnet-hook annotate writes one)"
        )
    network, pod_ports = _network(attributes)
    return Claim(index, mac, selector, pod_dev, placeholder, network, pod_ports)


def _network(attributes: dict[str, str]) -> tuple[str, tuple[PortRange, ...]]:
    network = attributes.get("network", "masquerade")
    if network not in NETWORKS:
        raise AnnotationError(
            f"network={_shown(network)} is not one of {', '.join(NETWORKS)} "
            "(masquerade, the default, routes the guest through the pod)"
        )
    raw_ports = attributes.get("pod-ports")
    if raw_ports is None:
        return network, ()
    if network != "masquerade":
        raise AnnotationError(
            "pod-ports goes with network='masquerade' only: with 'l2' the pod keeps nothing"
        )
    return network, parse_pod_ports(raw_ports)


def parse_pod_ports(text: str) -> tuple[PortRange, ...]:
    """``"tcp/9091 udp/53 tcp/8000-8100"`` (spaces or commas between) into PortRanges."""
    ranges = []
    for item in text.replace(",", " ").split():
        match = _PORTS.fullmatch(item)
        first = int(match.group(2)) if match else 0
        last = int(match.group(3) or first) if match else 0
        if match is None or not 1 <= first <= last <= 65535:
            raise AnnotationError(
                f"pod-ports: {_shown(item)} is not PROTO/PORT or PROTO/FIRST-LAST "
                "(tcp or udp, ports 1-65535), as in pod-ports='tcp/9091 udp/53 tcp/8000-8100'"
            )
        ranges.append(PortRange(match.group(1), first, last))
    return tuple(ranges)


def _one_selector(attributes: dict[str, str]) -> Selector:
    given = [kind for kind in SELECTORS if kind in attributes]
    if len(given) != 1:
        named = ", ".join(given) if given else "none"
        raise AnnotationError(
            f"name the pod with exactly one of {', '.join(SELECTORS)} (found: {named})"
        )
    return parse_selector(given[0], attributes[given[0]])


def _target(raw_mac: str | None, directs: dict[str, etree._Element]) -> tuple[str, etree._Element]:
    if raw_mac is None:
        if len(directs) != 1:
            raise AnnotationError(
                f"the domain has {len(directs)} <interface type='direct'>; "
                "add mac=... to say which"
            )
        return next(iter(directs.items()))
    mac = raw_mac.lower()
    if _MAC.fullmatch(mac) is None:
        raise AnnotationError(f"mac={_shown(raw_mac)} is not a MAC address like 52:54:00:12:34:56")
    if mac not in directs:
        raise AnnotationError(f"no <interface type='direct'> has MAC {mac}")
    return mac, directs[mac]


def _refuse_duplicates(domain: str, claims: tuple[Claim, ...]) -> None:
    for seen, field in (
        ({c.mac for c in claims}, "MAC"),
        ({c.placeholder for c in claims}, "placeholder"),
    ):
        if len(seen) != len(claims):
            raise AnnotationError(f"domain {domain!r}: two <vmnet:interface> share one {field}")


def _shown(value: str) -> str:
    """A value quoted for an error line: printable and at most 40 characters."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in value)
    return repr(printable if len(printable) <= 40 else printable[:37] + "...")
