"""Pure tier: golden-file rewrites of sample domain XMLs (no system access)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmnet_hook.core.annotation import Claim, parse_domain, parse_xml
from vmnet_hook.core.rewrite import rewrite, to_text

CASES = Path(__file__).parent / "data" / "rewrite"
HOST_VETHS = {  # what a resolver would find, by selector
    "pod=default/virt-launcher-vm2-x7k2p": "veth1a2b3c4d",
    "pod-uid=3f9a0c1d-2e4b-4c5d-8e6f-7a8b9c0d1e2f": "cali0123456789a",
    "container=0123456789abcdef": "veth99887766",
    "pid=4242": "vethnew0",
}


def fake_resolver(claim: Claim) -> str:
    return HOST_VETHS[str(claim.selector)]


@pytest.mark.parametrize(
    "case", sorted(p.name.removesuffix(".in.xml") for p in CASES.glob("*.in.xml"))
)
def test_rewrite_matches_golden_file(case: str) -> None:
    tree = parse_xml((CASES / f"{case}.in.xml").read_bytes())
    domain = parse_domain(tree)
    text = to_text(rewrite(tree, domain.claims, fake_resolver))
    golden = CASES / f"{case}.out.xml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_rewrite_leaves_the_input_tree_untouched() -> None:
    source = (CASES / "two-pods.in.xml").read_bytes()
    tree = parse_xml(source)
    rewrite(tree, parse_domain(tree).claims, fake_resolver)
    assert to_text(tree) == to_text(parse_xml(source))


def test_mode_is_kept_as_written_and_absent_mode_stays_absent() -> None:
    tree = parse_xml((CASES / "two-pods.in.xml").read_bytes())
    new = rewrite(tree, parse_domain(tree).claims, fake_resolver).getroot()
    sources = [dict(s.attrib) for s in new.iterfind("devices/interface[@type='direct']/source")]
    assert sources == [
        {"dev": "veth1a2b3c4d", "mode": "bridge"},
        {"dev": "cali0123456789a"},
    ]
