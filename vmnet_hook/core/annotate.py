"""``vmnet-hook annotate``, pure: add or update a domain's vmnet annotation.

Writes the ``<vmnet:interface>`` for one NIC and gives the matching
``<interface type='direct'>`` a placeholder ``<source dev>`` (``placeholder_for``). A
domain with no direct interface (and no ``--mac`` naming another kind) gets one.
"""

from __future__ import annotations

import copy
import os
import uuid as uuidlib

from lxml import etree

from vmnet_hook import NAMESPACE_URI
from vmnet_hook.core.annotation import (
    NS,
    SELECTORS,
    Selector,
    domain_uuid,
    parse_domain,
    placeholder_for,
)
from vmnet_hook.errors import AnnotationError

VMNET = f"{{{NAMESPACE_URI}}}"


def annotate(
    tree: etree._ElementTree,
    selector: Selector,
    pod_dev: str,
    mac: str | None = None,
    network: str | None = None,
    pod_ports: str | None = None,
) -> etree._ElementTree:
    """The domain with ``mac``'s interface annotated; ``network`` and ``pod-ports`` are
    written only when given (absent, the network is the default, masquerade)."""
    new = copy.deepcopy(tree)
    root = new.getroot()
    uuid = _ensure_uuid(root)
    iface = _direct_interface(root, mac.lower() if mac else None)
    address = iface.find("mac")
    assert address is not None  # _direct_interface gives every interface a MAC
    chosen_mac = address.get("address", "").lower()
    source = iface.find("source")
    if source is None:
        source = etree.SubElement(iface, "source", mode="bridge")
    source.set("dev", placeholder_for(uuid, chosen_mac))
    element = _annotation_for(root, chosen_mac)
    element.attrib.update({"mac": chosen_mac, selector.kind: selector.value, "dev": pod_dev})
    for key, value in (("network", network), ("pod-ports", pod_ports)):
        if value is not None:
            element.set(key, value)
    parse_domain(new)  # what annotate writes, the hook must accept
    return new


def _ensure_uuid(root: etree._Element) -> str:
    if root.find("uuid") is None:
        element = etree.Element("uuid")
        element.text = str(uuidlib.uuid4())
        name = root.find("name")
        if name is not None:
            name.addnext(element)
        else:
            root.insert(0, element)
    return domain_uuid(root.getroottree())


def _direct_interface(root: etree._Element, mac: str | None) -> etree._Element:
    interfaces = root.findall("devices/interface")
    if mac is not None:
        matches = [i for i in interfaces if _mac_of(i) == mac]
        if matches and matches[0].get("type") != "direct":
            raise AnnotationError(
                f"interface {mac} is type={matches[0].get('type')!r}; make it type='direct' "
                "(macvtap) or name another MAC"
            )
        return matches[0] if matches else _new_interface(root, mac)
    directs = [i for i in interfaces if i.get("type") == "direct"]
    if len(directs) > 1:
        raise AnnotationError(
            f"the domain has {len(directs)} direct interfaces: say which with --mac"
        )
    return directs[0] if directs else _new_interface(root, _random_mac())


def _new_interface(root: etree._Element, mac: str) -> etree._Element:
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    iface = etree.SubElement(devices, "interface", type="direct")
    etree.SubElement(iface, "mac", address=mac)
    etree.SubElement(iface, "source", mode="bridge")
    etree.SubElement(iface, "model", type="virtio")
    return iface


def _annotation_for(root: etree._Element, mac: str) -> etree._Element:
    metadata = root.find("metadata")
    if metadata is None:
        metadata = etree.Element("metadata")
        anchor = root.find("uuid")
        assert anchor is not None  # _ensure_uuid
        anchor.addnext(metadata)
    group = metadata.find("vmnet:interfaces", NS)
    if group is None:
        group = etree.SubElement(metadata, f"{VMNET}interfaces", nsmap={"vmnet": NAMESPACE_URI})
    for element in group.findall("vmnet:interface", NS):
        if element.get("mac", "").lower() == mac or element.get("mac") is None:
            for stale in (*SELECTORS, "host-dev"):
                if stale in element.attrib:
                    del element.attrib[stale]
            return element
    return etree.SubElement(group, f"{VMNET}interface")


def _mac_of(iface: etree._Element) -> str:
    address = iface.find("mac")
    return (address.get("address") or "").lower() if address is not None else ""


def _random_mac() -> str:
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))
