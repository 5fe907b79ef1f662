"""Kernel tier, issue 11 rule 3 when the tools are hard to find: libvirtd may run its hooks
with a PATH that lacks /usr/sbin, and a host may have no nft at all. Neither may let an
``l2`` claim onto a pod NIC that a masqueraded guest holds.

Each test builds a masqueraded guest in a real pod, loses its domain's state file and the
guest link's owner tag (``ip link set ... alias ""``), so that only the nft table, or the
guest link's name, still shows the guest; then an ``l2`` claim is made on the pod NIC with
a short PATH, or in a mount namespace where nft is /dev/null."""

from __future__ import annotations

import pytest

from tests.conftest import MakePod
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_hook_kernel import altnames
from tests.test_kernel_truth import UUID_A, UUID_B, Domains, Nic, domain_xml, domains
from tests.test_podnet_kernel import run_hook_without
from vmnet_hook.podnet.plan import tag_of

__all__ = ["domains", "podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel
SHORT_PATH = {"PATH": "/usr/bin:/bin"}


def untagged_guest(podnets: pn.Podnets, domains: Domains) -> tuple[pn.Pod, str]:
    """A pod whose masqueraded guest (domain A, its state lost) lost its owner tag: the
    pod and the guest link's pod end."""
    pod = podnets.routed().pod()
    masqueraded = Nic(f'pid="{pod.pid}"', "masquerade")
    done = domains.prepare("vm1", domain_xml("vm1", UUID_A, masqueraded))
    assert done.returncode == 0, done.stderr
    domains.lose_state(UUID_A)
    pod_end = f"vg{tag_of(UUID_A, masqueraded.mac)}"
    pn.ip("-n", pod.netns, "link", "set", "dev", pod_end, "alias", "")
    assert "alias" not in pn.ip("-n", pod.netns, "-d", "link", "show", pod_end)
    return pod, pod_end


def test_a_short_path_does_not_hide_nft_from_an_l2_claim(
    podnets: pn.Podnets, domains: Domains
) -> None:
    """nft is in /usr/sbin, not on the hook's PATH: the guest's nft table still names it."""
    pod, _pod_end = untagged_guest(podnets, domains)
    before = pn.snapshot(pod.netns)
    nic = Nic(f'netns="{pod.netns}"')
    xml = domain_xml("vm2", UUID_B, nic)
    domains.xmls.append(xml)
    done = domains.run_hook("vm2", "prepare", "begin", "-", xml=xml, env=SHORT_PATH)
    assert (done.returncode, done.stdout) == (1, "")
    (line,) = done.stderr.splitlines()
    assert line == (
        f"vmnet-hook: domain 'vm2', interface {nic.mac}: pod NIC eth0 already carries a "
        f"guest of domain {UUID_A} (mac {line.split('(mac ')[1].split(')')[0]}); "
        "stop that domain first"
    )
    assert altnames(str(pod.host_veth)) == []
    assert not domains.state(UUID_B).exists()
    assert pn.snapshot(pod.netns) == before


def test_without_nft_an_untagged_guest_link_still_blocks_an_l2_claim(
    podnets: pn.Podnets, domains: Domains, hook_env: dict[str, str], make_pod: MakePod
) -> None:
    """nft truly absent: the guest link's name (``vg`` + 12 hex digits) is all that shows
    the guest, and it is enough. A pod without one is still claimed: an ``l2``-only host
    need not install nft."""
    pod, pod_end = untagged_guest(podnets, domains)
    before = pn.snapshot(pod.netns)
    nic = Nic(f'netns="{pod.netns}"')
    xml = domain_xml("vm2", UUID_B, nic)
    domains.xmls.append(xml)
    done = run_hook_without(["/usr/sbin/nft"], hook_env, "vm2", "prepare", "begin", "-",
                            xml=xml, env=SHORT_PATH)  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"vmnet-hook: domain 'vm2', interface {nic.mac}: pod NIC eth0: the pod has "
        f"{pod_end}, named as vmnet-hook names a masqueraded guest's link but without its "
        "owner tag, and nft is not installed to tell whose"
    )
    assert altnames(str(pod.host_veth)) == []
    assert not domains.state(UUID_B).exists()
    assert pn.snapshot(pod.netns) == before

    clean = make_pod()
    other = domain_xml("vm3", UUID_B, Nic(f'netns="{clean.name}"'))
    domains.xmls.append(other)
    done = run_hook_without(["/usr/sbin/nft"], hook_env, "vm3", "prepare", "begin", "-",
                            xml=other)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert domains.release("vm3", other).returncode == 0
    assert altnames(clean.host_veth) == []
