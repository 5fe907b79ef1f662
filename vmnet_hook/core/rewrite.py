"""The XML rewrite, pure: a tree and a resolver in, a new tree out. No system access."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from lxml import etree

from vmnet_hook.core.annotation import NS, Claim


def rewrite(
    tree: etree._ElementTree, claims: Iterable[Claim], host_veth_of: Callable[[Claim], str]
) -> etree._ElementTree:
    """Point each claimed interface's ``<source dev>`` at its host veth, keeping ``mode``,
    and record ``host-dev`` on its ``<vmnet:interface>``."""
    new = copy.deepcopy(tree)
    root = new.getroot()
    annotations = root.findall("metadata/vmnet:interfaces/vmnet:interface", NS)
    for claim in claims:
        host_veth = host_veth_of(claim)
        for iface in root.findall("devices/interface[@type='direct']"):
            mac = iface.find("mac")
            source = iface.find("source")
            if mac is not None and (mac.get("address") or "").lower() == claim.mac:
                assert source is not None  # parse_domain checked it
                source.set("dev", host_veth)
        annotations[claim.index].set("host-dev", host_veth)
    return new


def to_text(tree: etree._ElementTree) -> str:
    return etree.tostring(tree, encoding="unicode") + "\n"
