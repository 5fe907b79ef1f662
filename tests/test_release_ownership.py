"""Kernel tier, issue 11: ``release end`` undoes only what is provably its own record's.

A record can name what is no longer its own: a domain whose pod died leaves a record whose
placeholder another domain then takes for its own guest link; or (a fault, a copied file) two
records name one NIC. Each test builds that for real and releases the record: the other
domain's veth, guest link, DHCP server or altname stays, the release still exits 0 and the
record that had nothing left of its own goes."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from tests.conftest import MakePod
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_hook_kernel import altnames
from tests.test_kernel_truth import UUID_A, UUID_B, Domains, Nic, domain_xml, domains, link_exists
from tests.test_kernel_truth_leftovers import dnsmasqs
from vmnet_hook.podnet.plan import tag_of

__all__ = ["domains", "podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel


def write_state(domains: Domains, uuid: str, state: dict[str, object]) -> None:
    """A state file as the hook writes them (root's, 0600)."""
    fd = os.open(domains.state(uuid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(state, file)


def pod_has(pod: pn.Pod, link: str) -> bool:
    return f": {link}@" in pn.ip("-n", pod.netns, "-o", "link", "show")


@pytest.mark.parametrize("owner", ["copied", "rewritten"])
def test_a_record_naming_another_pods_veth_does_not_delete_it(
    owner: str, podnets: pn.Podnets, domains: Domains
) -> None:
    """A copy of domain A's record under UUID B, its placeholder another pod's CNI host veth,
    its namespace one that does not exist, no dnsmasq pid (its pid file still A's): the
    release of B deletes no veth and stops no DHCP server. ``copied`` keeps A's UUID in
    the record; ``rewritten`` makes the record B's own in every field."""
    net = podnets.routed()
    pod, other = net.pod(), net.pod()
    assert other.host_veth is not None
    nic = Nic(f'pid="{pod.pid}"', "masquerade")
    first = domain_xml("vm1", UUID_A, nic)
    assert domains.prepare("vm1", first).returncode == 0
    before, (dhcp,) = pn.snapshot(pod.netns), dnsmasqs(pod.netns)
    state = json.loads(domains.state(UUID_A).read_text())
    state["domain"] = "vm2"
    guest = state["guests"][0]
    guest["netns_ino"] += 1
    guest["dnsmasq_pid"] = guest["dnsmasq_started"] = None
    tag = secrets.token_hex(6)
    guest["nic"].update(placeholder=other.host_veth, pod_end=f"vg{tag}", table=f"vmnet_{tag}")
    if owner == "rewritten":
        guest["nic"]["domain_uuid"] = UUID_B
    write_state(domains, UUID_B, state)
    done = domains.release("vm2", domain_xml("vm2", UUID_B, nic))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert link_exists(other.host_veth) and pod_has(other, "eth0")
    assert dnsmasqs(pod.netns) == [dhcp] and Path(guest["pid_file"]).exists()
    assert pn.snapshot(pod.netns) == before
    assert not domains.state(UUID_B).exists()
    assert domains.release("vm1", first).returncode == 0
    assert not link_exists(nic.placeholder) and dnsmasqs(pod.netns) == []


def wait_gone(link: str, seconds: float = 10) -> None:
    """A namespace's links go in the kernel's own time once its last user is gone."""
    deadline = time.monotonic() + seconds
    while link_exists(link):
        assert time.monotonic() < deadline, f"{link} outlived its namespace"
        time.sleep(0.05)


def test_a_dead_pods_record_does_not_take_the_guest_link_another_domain_made_since(
    podnets: pn.Podnets, domains: Domains
) -> None:
    """Domain A's pod dies with A's record still there (its guest link went with the pod's
    namespace); domain B then makes its own guest link under the same placeholder. A's
    release leaves B's guest link alone."""
    net = podnets.routed()
    dying, living = net.pod(), net.pod()
    nic = Nic(f'pid="{dying.pid}"', "masquerade")
    first = domain_xml("vm1", UUID_A, nic)
    assert domains.prepare("vm1", first).returncode == 0
    for pid in dnsmasqs(dying.netns):  # the pod's processes die with it
        os.kill(pid, 9)
    dying.close()
    wait_gone(nic.placeholder)
    same = Nic(f'pid="{living.pid}"', "masquerade", placeholder=nic.placeholder)
    second = domain_xml("vm2", UUID_B, same)
    done = domains.prepare("vm2", second)
    assert done.returncode == 0, done.stderr
    built = pn.snapshot(living.netns)
    done = domains.release("vm1", first)
    assert (done.returncode, done.stderr) == (0, "")
    assert link_exists(same.placeholder)
    assert pod_has(living, f"vg{tag_of(UUID_B, same.mac)}")
    assert pn.snapshot(living.netns) == built
    assert not domains.state(UUID_A).exists() and domains.state(UUID_B).exists()
    assert domains.release("vm2", second).returncode == 0
    assert not link_exists(same.placeholder)


def test_an_altname_two_records_name_is_not_taken_from_the_other_domain(
    make_pod: MakePod, domains: Domains
) -> None:
    """Domain A's l2 binding recorded again under UUID B (a fault): B's release leaves A's
    altname where it is, and A's release removes it."""
    pod = make_pod()
    nic = Nic(f'netns="{pod.name}"')
    first = domain_xml("vm1", UUID_A, nic)
    assert domains.prepare("vm1", first).returncode == 0
    state = json.loads(domains.state(UUID_A).read_text())
    write_state(domains, UUID_B, {**state, "domain": "vm2"})
    done = domains.release("vm2", domain_xml("vm2", UUID_B, nic))
    assert (done.returncode, done.stderr) == (0, "")
    assert altnames(pod.host_veth) == [nic.placeholder]
    assert not domains.state(UUID_B).exists() and domains.state(UUID_A).exists()
    assert domains.release("vm1", first).returncode == 0
    assert altnames(pod.host_veth) == []
