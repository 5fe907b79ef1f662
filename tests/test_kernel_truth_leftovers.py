"""Kernel tier, issue 11 rule 4: a domain's own leftovers are its own.

Each test loses a domain's state file for real after it bound or built, then prepares the
same domain again: its altname on exactly the veth it resolves to is adopted (and released),
its masqueraded guest's link, host end, nft table and dnsmasq are removed and made afresh;
the same name on another link is still refused."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import psutil
import pytest

from tests.conftest import MakePod
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_hook_kernel import altnames
from tests.test_kernel_truth import UUID_A, Domains, Nic, domain_xml, domains, link_exists
from vmnet_hook.podnet.plan import tag_of

__all__ = ["domains", "podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel


def dnsmasqs(netns: str) -> list[int]:
    lines = pn.processes_in(f"/run/netns/{netns}").splitlines()
    return [int(line.split()[0]) for line in lines if " dnsmasq " in f"{line} "]


def vmnet_pieces(pod: pn.Pod) -> tuple[list[str], list[str]]:
    """The guest links (by name) and the vmnet nft tables in the pod."""
    links = pn.run(["ip", "-n", pod.netns, "-o", "link", "show"]).splitlines()
    tables = pn.in_pod(pod, "nft", "list", "tables", "ip").split()
    return ([line.split()[1].split("@")[0] for line in links if ": vg" in line],
            [word for word in tables if word.startswith("vmnet_")])  # fmt: skip


def as_found_but_forwarding(before: dict[str, str], pod: pn.Pod) -> None:
    """The pod as ``before``, except the pod NIC's forwarding sysctl: what it was before the
    lost domain set it is known only to the lost state file, so it stays on (refused to
    guess, not repaired)."""
    after = pn.snapshot(pod.netns)
    assert {k: v for k, v in after.items() if k != "sysctls"} == {
        k: v for k, v in before.items() if k != "sysctls"
    }
    assert after["sysctls"] == before["sysctls"].replace(
        "conf/eth0/forwarding:0", "conf/eth0/forwarding:1"
    )


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_own_leftover_altname_on_exactly_its_veth_is_adopted_then_released(
    make_pod: MakePod, domains: Domains
) -> None:
    pod = make_pod()
    nic = Nic(f'netns="{pod.name}"')
    xml = domain_xml("vm1", UUID_A, nic)
    assert domains.prepare("vm1", xml).returncode == 0
    domains.state(UUID_A).unlink()  # lost for good: the altname is the only trace
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert f'<source dev="{pod.host_veth}" mode="bridge"/>' in done.stdout
    assert altnames(pod.host_veth) == [nic.placeholder]
    recorded = json.loads(domains.state(UUID_A).read_text())["bindings"]
    assert [(b["placeholder"], b["host_veth"]) for b in recorded] == [
        (nic.placeholder, pod.host_veth)
    ]
    assert domains.release("vm1", xml).returncode == 0
    assert altnames(pod.host_veth) == []
    assert not domains.state(UUID_A).exists()


def test_an_own_placeholder_left_on_another_link_is_still_refused(
    make_pod: MakePod, domains: Domains
) -> None:
    """The domain's pod changed; its old pod still holds the altname: not adopted there."""
    old, new = make_pod(), make_pod()
    nic = Nic(f'netns="{old.name}"')
    assert domains.prepare("vm1", domain_xml("vm1", UUID_A, nic)).returncode == 0
    domains.state(UUID_A).unlink()
    moved = Nic(f'netns="{new.name}"', mac=nic.mac, placeholder=nic.placeholder)
    done = domains.prepare("vm1", domain_xml("vm1", UUID_A, moved))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1', interface {nic.mac}: placeholder <source dev="
        f"'{nic.placeholder}'> is already a name of host link {old.host_veth} (ifindex "
        f"{Path(f'/sys/class/net/{old.host_veth}/ifindex').read_text().strip()}); "
        "choose a name no link has\n"
    )
    assert altnames(new.host_veth) == [] and altnames(old.host_veth) == [nic.placeholder]
    assert not domains.state(UUID_A).exists()
    pn.ip("link", "property", "del", "dev", old.host_veth, "altname", nic.placeholder)


def test_own_masquerade_leftovers_are_removed_and_made_afresh(
    podnets: pn.Podnets, domains: Domains, hook_env: dict[str, str]
) -> None:
    """State lost after a full build: the guest link (and its host end), the nft table and
    the dnsmasq whose pid file sits in the state dir are this domain's: none is doubled."""
    pod = podnets.routed().pod()
    before = pn.snapshot(pod.netns)
    nic = Nic(f'pid="{pod.pid}"', "masquerade")
    xml = domain_xml("vm1", UUID_A, nic)
    assert domains.prepare("vm1", xml).returncode == 0
    (old_dnsmasq,) = dnsmasqs(pod.netns)
    domains.state(UUID_A).unlink()
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert dead(old_dnsmasq)
    tag = tag_of(UUID_A, nic.mac)
    assert vmnet_pieces(pod) == ([f"vg{tag}"], [f"vmnet_{tag}"])
    (new_dnsmasq,) = dnsmasqs(pod.netns)
    assert new_dnsmasq != old_dnsmasq
    assert domains.release("vm1", xml).returncode == 0
    as_found_but_forwarding(before, pod)
    assert not link_exists(nic.placeholder)
    assert sorted(p.name for p in Path(hook_env["VMNET_HOOK_STATE_DIR"]).iterdir()) == [".lock"]


def test_an_untagged_guest_link_of_this_domain_is_removed_with_its_host_end(
    podnets: pn.Podnets, domains: Domains
) -> None:
    """Killed between making the guest's veth pair and tagging its pod end, with the state
    lost: the host end holds the placeholder, the pod end has the name this domain's UUID
    and MAC give it. Both are this domain's, not a reason to choose another name."""
    pod = podnets.routed().pod()
    before = pn.snapshot(pod.netns)
    nic = Nic(f'netns="{pod.netns}"', "masquerade")
    pod_end = f"vg{tag_of(UUID_A, nic.mac)}"
    pn.ip("link", "add", nic.placeholder, "type", "veth", "peer", "name", pod_end,
          "netns", pod.netns)  # fmt: skip
    xml = domain_xml("vm1", UUID_A, nic)
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert vmnet_pieces(pod)[0] == [pod_end]
    assert domains.release("vm1", xml).returncode == 0
    assert pn.snapshot(pod.netns) == before
    assert not link_exists(nic.placeholder)


def test_a_guest_link_of_another_name_is_not_taken_for_ours(
    podnets: pn.Podnets, domains: Domains, make_pod: MakePod
) -> None:
    """An untagged veth whose name this domain would not give: the placeholder it holds on
    the host is still refused, and nothing in the pod is touched."""
    pod = podnets.routed().pod()
    nic = Nic(f'netns="{pod.netns}"', "masquerade")
    stranger = f"vg{secrets.token_hex(6)}"
    pn.ip("link", "add", nic.placeholder, "type", "veth", "peer", "name", stranger,
          "netns", pod.netns)  # fmt: skip
    before = pn.snapshot(pod.netns)
    done = domains.prepare("vm1", domain_xml("vm1", UUID_A, nic))
    assert done.returncode == 1
    assert f"placeholder <source dev='{nic.placeholder}'> is already a name of host link" in (
        done.stderr
    )
    assert pn.snapshot(pod.netns) == before
    assert link_exists(nic.placeholder)
    pn.ip("link", "del", nic.placeholder)


def test_an_l2_claim_removes_this_domains_masquerade_leftovers_in_its_pod(
    podnets: pn.Podnets, domains: Domains
) -> None:
    """The domain ran masqueraded, lost its state, and now takes the pod NIC in ``l2``:
    its own guest in the pod is a leftover, removed; another domain's would be refused."""
    pod = podnets.routed().pod()
    assert pod.host_veth is not None
    before = pn.snapshot(pod.netns)
    masqueraded = Nic(f'pid="{pod.pid}"', "masquerade")
    assert domains.prepare("vm1", domain_xml("vm1", UUID_A, masqueraded)).returncode == 0
    (old_dnsmasq,) = dnsmasqs(pod.netns)
    domains.state(UUID_A).unlink()
    whole = Nic(f'netns="{pod.netns}"', mac=masqueraded.mac)
    xml = domain_xml("vm1", UUID_A, whole)
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert dead(old_dnsmasq)
    as_found_but_forwarding(before, pod)
    assert altnames(pod.host_veth) == [whole.placeholder]
    assert not link_exists(masqueraded.placeholder)
    assert domains.release("vm1", xml).returncode == 0
    assert altnames(pod.host_veth) == []


def test_a_pid_file_that_is_a_fifo_neither_blocks_nor_stops_a_prepare(
    make_pod: MakePod, domains: Domains
) -> None:
    """Leftover pid files are read without blocking and without following links."""
    pod = make_pod()
    domains.state_dir.mkdir(mode=0o700)
    fifo = domains.state_dir / f"{UUID_A}.vg{secrets.token_hex(6)}.pid"
    os.mkfifo(fifo)
    nic = Nic(f'netns="{pod.name}"')
    xml = domain_xml("vm1", UUID_A, nic)
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stderr) == (0, "")
    assert not fifo.exists()
    assert domains.release("vm1", xml).returncode == 0


def test_an_own_l2_altname_is_removed_when_the_nic_turns_masquerade(
    podnets: pn.Podnets, domains: Domains
) -> None:
    """The domain bound the pod NIC in ``l2``, lost its state, and now claims the same pod
    NIC masqueraded under the same placeholder: its altname on that NIC's host veth is its
    own leftover, removed, and the guest link takes the name."""
    pod = podnets.routed().pod()
    assert pod.host_veth is not None
    before = pn.snapshot(pod.netns)
    whole = Nic(f'netns="{pod.netns}"')
    assert domains.prepare("vm1", domain_xml("vm1", UUID_A, whole)).returncode == 0
    domains.state(UUID_A).unlink()  # lost for good: the altname is the only trace
    masqueraded = Nic(f'pid="{pod.pid}"', "masquerade", mac=whole.mac,
                      placeholder=whole.placeholder)  # fmt: skip
    xml = domain_xml("vm1", UUID_A, masqueraded)
    done = domains.prepare("vm1", xml)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert altnames(pod.host_veth) == []
    assert f"{whole.placeholder}@" in pn.ip("-o", "link", "show", whole.placeholder)
    assert domains.release("vm1", xml).returncode == 0
    assert pn.snapshot(pod.netns) == before
    assert not link_exists(whole.placeholder)
    assert not domains.state(UUID_A).exists()


def test_an_own_l2_altname_on_another_pods_veth_still_refuses_a_masqueraded_claim(
    podnets: pn.Podnets, domains: Domains
) -> None:
    """The domain's pod changed along with its mode: the altname sits on the old pod's
    host veth, not the one the claim resolves to, and is not taken for a leftover."""
    net = podnets.routed()
    old, new = net.pod(), net.pod()
    assert old.host_veth is not None
    whole = Nic(f'netns="{old.netns}"')
    assert domains.prepare("vm1", domain_xml("vm1", UUID_A, whole)).returncode == 0
    domains.state(UUID_A).unlink()
    before = pn.snapshot(new.netns)
    masqueraded = Nic(f'pid="{new.pid}"', "masquerade", mac=whole.mac,
                      placeholder=whole.placeholder)  # fmt: skip
    done = domains.prepare("vm1", domain_xml("vm1", UUID_A, masqueraded))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1', interface {whole.mac}: placeholder <source dev="
        f"'{whole.placeholder}'> is already a name of host link {old.host_veth} (ifindex "
        f"{Path(f'/sys/class/net/{old.host_veth}/ifindex').read_text().strip()}); "
        "choose a name no link has\n"
    )
    assert altnames(old.host_veth) == [whole.placeholder]
    assert pn.snapshot(new.netns) == before
    pn.ip("link", "property", "del", "dev", old.host_veth, "altname", whole.placeholder)
