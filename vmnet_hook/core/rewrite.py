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
    """The document, every character ``str.isprintable`` refuses but a newline or tab (C1
    controls, bidi overrides, line separators: lxml leaves them raw) written as a character
    reference: the same document to libvirt, nothing that acts on a terminal."""
    text = etree.tostring(tree, encoding="unicode")
    if not text.replace("\n", "").replace("\t", "").isprintable():
        text = "".join(c if c.isprintable() or c in "\n\t" else f"&#x{ord(c):x};" for c in text)
    return text + "\n"
