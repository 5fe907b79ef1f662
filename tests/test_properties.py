"""Pure tier, property-based: whatever the annotation or the XML, the hook answers with the
project's own errors (one line each) or a well-formed rewrite; never anything else."""

from __future__ import annotations

import os
import tempfile
from xml.sax.saxutils import quoteattr

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.fakes import FakeNetlink, veth
from vmnet_hook.config import Config
from vmnet_hook.core.annotation import NS, SELECTORS, Selector, parse_domain, parse_xml
from vmnet_hook.errors import PodNotFound, VmnetError
from vmnet_hook.hook.handlers import HookCall, System, run
from vmnet_hook.host.pods import PodNetns
from vmnet_hook.host.procfs import NetnsId
from vmnet_hook.host.resolve import HostVeth

EXAMPLES = 2000 if os.environ.get("CI") == "true" else 300
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
HOST = FakeNetlink(veth(10, "vethA"), veth(11, "vethB"), veth(3, "eth1"))


class FakeResolver:
    """Pods 'exist' for even pids only; every other selector names a missing pod."""

    def host_veth(self, selector: Selector, pod_dev: str) -> HostVeth:
        if selector.kind == "pid" and int(selector.value) % 2 == 0:
            return HostVeth("vethA", 10, pod_dev, NetnsId(4, 1))
        raise PodNotFound(f"{selector}: no such pod")

    def pod(self, selector: Selector) -> PodNetns:
        raise PodNotFound(f"{selector}: no such pod")  # masquerade is proven on real pods


class FakeSystem(System):
    @property
    def resolver(self) -> FakeResolver:  # type: ignore[override]
        return FakeResolver()


names = st.sampled_from(["eth0", "net1", "vethA", "eth1", "", "a/b", "..", "x" * 16, "é", "vn1"])
values = st.one_of(
    names,
    st.sampled_from(
        [
            "default/vm-1",
            "Bad/Name",
            "2",
            "4",
            "0",
            "-1",
            "0123456789ab",
            "3f9a0c1d-2e4b-4c5d-8e6f-7a8b9c0d1e2f",
            "l2",
            "masquerade",
            "tcp/9091 udp/53",
            "tcp/0",
            "52:54:00:12:34:56",
        ]
    ),
    st.text(min_size=0, max_size=30),
)
keys = st.sampled_from(
    ["mac", "dev", "host-dev", "network", "pod-ports", *SELECTORS, "colour", "MAC"]
)
macs = st.sampled_from(["52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:ZZ:00:00", ""])
plausible = st.fixed_dictionaries(
    {
        "mac": macs,
        "pid": st.sampled_from(["2", "3", "4"]),
        "dev": st.sampled_from(["eth0", "net1"]),
        "network": st.just("l2"),
    }
)
annotation = st.one_of(st.dictionaries(keys, values, max_size=5), plausible)


def clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters at all; drop them."""
    return "".join(ch for ch in text if ch in "\t\n\r" or (ord(ch) >= 0x20 and ord(ch) != 0xFFFE))


def domain_xml(annotations: list[dict[str, str]], interfaces: list[tuple[str, str, str]]) -> bytes:
    notes = "".join(
        "<vmnet:interface " + " ".join(f"{k}={quoteattr(clean(v))}" for k, v in a.items()) + "/>"
        for a in annotations
    )
    devices = "".join(
        f"<interface type={quoteattr(kind)}><mac address={quoteattr(mac)}/>"
        f"<source dev={quoteattr(clean(dev))}/></interface>"
        for kind, mac, dev in interfaces
    )
    return (
        "<domain type='qemu'><name>vm</name><uuid>6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6</uuid>"
        f'<metadata><vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">{notes}'
        f"</vmnet:interfaces></metadata><devices>{devices}</devices></domain>"
    ).encode()


def prepare(xml: bytes) -> str:
    with tempfile.TemporaryDirectory() as state_dir:
        config = Config(state_dir=state_dir)
        system = FakeSystem(config, netlink=HOST, log=lambda level, message: None)
        try:
            return run(HookCall("vm", "prepare", "begin", xml, config), system)
        finally:
            for link in HOST.host_links.values():  # leave the fake host as found
                HOST.host_links[link.index] = veth(link.index, link.name)


def assert_one_line_errors_or_xml(xml: bytes) -> None:
    try:
        printed = prepare(xml)
    except VmnetError as error:
        event(type(error).__name__)
        lines = str(error).splitlines()
        assert lines and all(line.strip() for line in lines)
        return
    event("rewritten" if printed else "nothing to do")
    if printed:  # every claimed interface now names the pod's veth, and says so
        root = etree.fromstring(printed.encode())
        notes = root.findall("metadata/vmnet:interfaces/vmnet:interface", NS)
        assert notes and all(note.get("host-dev") == "vethA" for note in notes)
        for claim in parse_domain(parse_xml(xml)).claims:
            sources = [
                i.find("source")
                for i in root.iterfind("devices/interface[@type='direct']")
                if (i.find("mac").get("address") or "").lower() == claim.mac  # type: ignore[union-attr]
            ]
            assert [source.get("dev") for source in sources] == ["vethA"]  # type: ignore[union-attr]


@PROPERTY
@given(
    st.lists(annotation, max_size=3),
    st.lists(
        st.tuples(st.sampled_from(["direct", "bridge"]), macs, st.one_of(st.just("vn1"), names)),
        max_size=3,
    ),
)
def test_generated_annotations_meet_only_our_errors(
    annotations: list[dict[str, str]], interfaces: list[tuple[str, str, str]]
) -> None:
    assert_one_line_errors_or_xml(domain_xml(annotations, interfaces))


@PROPERTY
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_arbitrary_bytes_around_the_namespace_meet_only_our_errors(noise: bytes, cut: int) -> None:
    base = domain_xml([{"mac": "52:54:00:12:34:56", "pid": "2", "dev": "eth0"}],
                      [("direct", "52:54:00:12:34:56", "vn1")])  # fmt: skip
    assert_one_line_errors_or_xml(base[:cut] + noise + base[cut:])
