"""Kernel tier, issue 11 rule 3: the kernel is the source of truth for who uses a pod NIC.

Each test builds what state cannot show, for real: a macvtap or macvlan on the pod's host
veth (a domain without the annotation, a leftover), another domain's masqueraded guest in
the pod with that domain's state file gone, one pod NIC named twice by one domain through
two selectors. The refusal is one line naming what holds the NIC, and nothing is made."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import MakePod, RunHook
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_hook_kernel import altnames

__all__ = ["podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel
UUID_A = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
UUID_B = "0d7a2f34-5b61-4c8e-9a1d-2e3f4a5b6c7d"


@dataclass(frozen=True)
class Nic:
    """One annotated interface: ``selector`` is the attribute naming the pod."""

    selector: str
    network: str = "l2"
    dev: str = "eth0"
    mac: str = field(default_factory=lambda: "52:54:00:" + ":".join(
        secrets.token_hex(1) for _ in range(3)))  # fmt: skip
    placeholder: str = field(default_factory=lambda: f"vn{secrets.token_hex(6)}")


def domain_xml(name: str, uuid: str, *nics: Nic) -> str:
    annotations = "".join(
        f'<vmnet:interface network="{n.network}" mac="{n.mac}" {n.selector} dev="{n.dev}"/>'
        for n in nics
    )
    devices = "".join(
        f"<interface type='direct'><mac address='{n.mac}'/>"
        f"<source dev='{n.placeholder}' mode='bridge'/><model type='virtio'/></interface>"
        for n in nics
    )
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><metadata>"
        f'<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">{annotations}</vmnet:interfaces>'
        "</metadata><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' "
        f"machine='pc'>hvm</type></os><devices>{devices}</devices></domain>"
    )


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


@dataclass
class Domains:
    """Domains a test prepares: each is released at teardown, pass or fail; a state file a
    test "loses" is put back first, so that release undoes what it recorded."""

    run_hook: RunHook
    state_dir: Path
    xmls: list[str] = field(default_factory=list)
    lost: dict[Path, bytes] = field(default_factory=dict)

    def prepare(self, name: str, xml: str) -> subprocess.CompletedProcess[str]:
        self.xmls.append(xml)
        return self.run_hook(name, "prepare", "begin", "-", xml=xml)

    def release(self, name: str, xml: str) -> subprocess.CompletedProcess[str]:
        return self.run_hook(name, "release", "end", "-", xml=xml)

    def state(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.json"

    def lose_state(self, uuid: str) -> None:
        """As if the state directory lost this domain's file (the host's pieces stay)."""
        path = self.state(uuid)
        self.lost[path] = path.read_bytes()
        path.unlink()

    def close(self) -> None:
        for path, content in self.lost.items():
            if not path.exists():
                path.write_bytes(content)
        for xml in reversed(self.xmls):
            self.run_hook("vm", "release", "end", "-", xml=xml)
        for process in psutil.process_iter(["cmdline"]):  # what a failed test stranded
            if any(arg.startswith(f"--pid-file={self.state_dir}/") for arg in
                   process.info["cmdline"] or ()):  # fmt: skip
                with contextlib.suppress(psutil.Error):
                    process.kill()


@pytest.fixture
def domains(run_hook: RunHook, hook_env: dict[str, str]) -> Iterator[Domains]:
    made = Domains(run_hook, Path(hook_env["VMNET_HOOK_STATE_DIR"]))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def uppers() -> Iterator[list[str]]:
    """Names of macvtaps/macvlans a test adds on host veths; deleted at teardown."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def add_upper(uppers: list[str], host_veth: str, kind: str) -> str:
    """A real macvtap (or macvlan) on ``host_veth``, as libvirt makes for a direct NIC."""
    name = f"mvt{secrets.token_hex(4)}"
    uppers.append(name)
    subprocess.run(["ip", "link", "add", "link", host_veth, "name", name, "type", kind,
                    "mode", "bridge"], check=True, capture_output=True)  # fmt: skip
    return name


def ifindex(name: str) -> int:
    return int(Path(f"/sys/class/net/{name}/ifindex").read_text())


def pod_links(netns: str) -> str:
    return pn.run(["ip", "-n", netns, "-o", "link", "show"])


@pytest.mark.parametrize("kind", ["macvtap", "macvlan"])
def test_a_guest_link_on_the_host_veth_refuses_an_l2_prepare_until_it_is_deleted(
    kind: str, make_pod: MakePod, domains: Domains, uppers: list[str]
) -> None:
    pod = make_pod()
    upper = add_upper(uppers, pod.host_veth, kind)
    nic = Nic(f'netns="{pod.name}"')
    xml = domain_xml("vm1", UUID_A, nic)
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1', interface {nic.mac}: host veth {pod.host_veth} already "
        f"carries {upper} ({kind}, ifindex {ifindex(upper)}); a second guest on one pod NIC "
        f"is refused: stop the domain that uses it, or delete a leftover with "
        f"`ip link del {upper}`\n"
    )
    assert altnames(pod.host_veth) == []
    assert not domains.state(UUID_A).exists()
    restored = domain_xml("vm1", UUID_A, Nic(nic.selector, mac=nic.mac,
                                             placeholder=pod.host_veth))  # fmt: skip
    done = domains.prepare("vm1", restored)  # a restore's <source dev> names the veth
    assert done.returncode == 1 and f"already carries {upper}" in done.stderr
    assert not domains.state(UUID_A).exists()

    subprocess.run(["ip", "link", "del", upper], check=True)
    done = domains.prepare("vm1", xml)
    assert done.returncode == 0, done.stderr
    assert altnames(pod.host_veth) == [nic.placeholder]
    assert domains.release("vm1", xml).returncode == 0
    assert altnames(pod.host_veth) == []


@pytest.mark.parametrize("state", ["kept", "lost"])
def test_an_l2_claim_on_a_pod_nic_with_a_masqueraded_guest_is_refused(
    state: str, podnets: pn.Podnets, domains: Domains
) -> None:
    """With the first domain's state lost only the pod's kernel shows its guest."""
    pod = podnets.routed().pod()
    first = domain_xml("vm1", UUID_A, Nic(f'pid="{pod.pid}"', "masquerade"))
    done = domains.prepare("vm1", first)
    assert done.returncode == 0, done.stderr
    if state == "lost":
        domains.lose_state(UUID_A)
    before = pn.snapshot(pod.netns)
    nic = Nic(f'netns="{pod.netns}"')
    done = domains.prepare("vm2", domain_xml("vm2", UUID_B, nic))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"vmnet-hook: domain 'vm2', interface {nic.mac}: ")
    assert len(done.stderr.splitlines()) == 1
    said = {"kept": f"pod NIC {pod.host_veth} is already used by running domain 'vm1'",
            "lost": f"pod NIC eth0 already carries a guest of domain {UUID_A}"}  # fmt: skip
    assert said[state] in done.stderr
    assert altnames(str(pod.host_veth)) == []
    assert not domains.state(UUID_B).exists()
    assert pn.snapshot(pod.netns) == before


@pytest.mark.parametrize("state", ["kept", "lost"])
def test_a_masqueraded_claim_on_a_pod_nic_held_through_its_host_veth_is_refused(
    state: str, podnets: pn.Podnets, domains: Domains, uppers: list[str]
) -> None:
    """An ``l2`` domain holds the pod NIC: its state says so (before libvirt made its
    macvtap); with the state lost, the macvtap libvirt made on the host veth is the only
    witness. A masqueraded NIC on the same pod NIC is refused either way."""
    pod = podnets.routed().pod()
    assert pod.host_veth is not None
    first = domain_xml("vm1", UUID_A, Nic(f'netns="{pod.netns}"'))
    done = domains.prepare("vm1", first)
    assert done.returncode == 0, done.stderr
    upper = ""
    if state == "lost":
        upper = add_upper(uppers, pod.host_veth, "macvtap")
        domains.lose_state(UUID_A)
    before = pn.snapshot(pod.netns)
    nic = Nic(f'pid="{pod.pid}"', "masquerade")
    done = domains.prepare("vm2", domain_xml("vm2", UUID_B, nic))
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    said = (f"host veth {pod.host_veth} already carries {upper} (macvtap, ifindex "
            f"{ifindex(upper)}); a second guest on one pod NIC is refused" if upper
            else "pod NIC eth0 is already used by running domain 'vm1'")  # fmt: skip
    assert line.startswith(f"vmnet-hook: domain 'vm2', interface {nic.mac}: ")
    assert said in line
    assert not link_exists(nic.placeholder)
    assert not domains.state(UUID_B).exists()
    assert pn.snapshot(pod.netns) == before


@pytest.mark.parametrize(
    ("first", "second"),
    [("l2", "l2"), ("l2", "masquerade"), ("masquerade", "l2")],
)
def test_two_nics_of_one_domain_naming_one_pod_nic_by_two_selectors_are_refused(
    first: str, second: str, make_pod: MakePod, cgroup_root: str, domains: Domains
) -> None:
    pod = make_pod(cgroup_root=cgroup_root)
    links = pod_links(pod.name)
    nics = (Nic(f'pod-uid="{pod.uid}"', first), Nic(f'pid="{pod.pids[0]}"', second))
    done = domains.prepare("vm1", domain_xml("vm1", UUID_A, *nics))
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"vmnet-hook: domain 'vm1', interface {nics[1].mac}: pod NIC eth0 ")
    assert line.endswith(
        f"is also claimed by interface {nics[0].mac}; one pod NIC serves one domain NIC"
    )
    assert altnames(pod.host_veth) == []
    assert not any(link_exists(nic.placeholder) for nic in nics)
    assert not domains.state(UUID_A).exists()
    assert pod_links(pod.name) == links


def test_two_l2_nics_naming_one_pod_nic_by_name_and_by_altname_are_refused(
    make_pod: MakePod, domains: Domains
) -> None:
    pod = make_pod()
    altname = f"e{secrets.token_hex(5)}"  # short: dev= takes 1-15 characters
    pn.ip("-n", pod.name, "link", "property", "add", "dev", "eth0", "altname", altname)
    nics = (Nic(f'netns="{pod.name}"'), Nic(f'netns="{pod.name}"', dev=altname))
    done = domains.prepare("vm1", domain_xml("vm1", UUID_A, *nics))
    assert done.returncode == 1
    assert f"pod NIC eth0 of net:[{os.stat(pod.netns_path).st_ino}] (host veth " in done.stderr
    assert f"is also claimed by interface {nics[0].mac}" in done.stderr
    assert altnames(pod.host_veth) == []
    assert not domains.state(UUID_A).exists()
