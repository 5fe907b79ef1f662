"""Pods made by real runtimes (dockerd as cri-dockerd drives it; containerd with the CNI
ptp and bridge plugins): every selector resolves the runtime's own veth, ``pods`` lists
it, ``doctor`` passes, and a real guest annotated with ``vmnet-hook annotate --pod`` gets
its pod's network through a plain ``virsh start``, the pod left as found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from tests.guest import BootGuest, Guest, direct_interface_xml, random_mac
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard
from tests.guest.vm import virsh
from tests.runtimes import BRIDGED, RUNTIMES, RuntimePod, RuntimePods, runtime_pods
from tests.runtimes.host import uplink_guard_drops
from tests.test_guest_network import (
    POD_TCP,
    STATE_DIR,
    Scene,
    assert_reach,
    podnets_bridge,
    serve_in_guest,
)
from tests.test_libvirt import installed_hook

__all__ = ["installed_hook", "podnet_guard", "runtime_pods"]

pytestmark = pytest.mark.runtimes
VMNET_HOOK = str(Path(sys.executable).parent / "vmnet-hook")
Pods = RuntimePods


def vmnet_hook(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMNET_HOOK, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def selectors(pod: RuntimePod) -> list[list[str]]:
    """Every way of naming the pod: kubelet's name and UID, each container's full id and
    12-digit prefix, each container's main pid, and the netns pinned by ``ip netns attach``."""
    return [
        ["--pod", pod.ref], ["--pod-uid", pod.uid],
        ["--container", pod.sandbox_id], ["--container", pod.sandbox_id[:12]],
        ["--container", pod.app_id], ["--container", pod.app_id[:12]],
        ["--pid", str(pod.sandbox_pid)], ["--pid", str(pod.app_pid)],
        ["--netns", pod.net.netns],
    ]  # fmt: skip


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_selector_resolves_the_runtimes_own_veth(runtime: str, runtime_pods: Pods) -> None:
    for pod in runtime_pods[runtime]:
        for selector in selectors(pod):
            done = vmnet_hook("resolve", *selector, "--dev", "eth0", "--json")
            assert done.returncode == 0, f"{selector}: {done.stderr}"
            assert json.loads(done.stdout)["name"] == pod.net.host_veth, selector


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pods_lists_the_pod_with_its_containers_and_veth(runtime: str, runtime_pods: Pods) -> None:
    done = vmnet_hook("pods", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    for pod in runtime_pods[runtime]:
        (entry,) = [e for e in listed if any(p["uid"] == pod.uid for p in e["pods"])]
        assert entry["pods"] == [{"uid": pod.uid, "namespace": pod.namespace, "name": pod.name}]
        assert {pod.sandbox_id, pod.app_id} <= set(entry["containers"])
        (nic,) = [nic for nic in entry["nics"] if nic["name"] == "eth0"]
        assert (nic["kind"], nic["host_veth"], nic["problem"]) == ("veth", pod.net.host_veth, None)


def test_doctor_passes_and_says_pods_are_found_through_their_cgroups(
    runtime_pods: Pods, installed_hook: Path
) -> None:
    done = vmnet_hook("doctor", "--json")
    report = json.loads(done.stdout)
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert report["ok"] and done.returncode == 0, failed
    (found,) = [c for c in report["checks"] if c["name"] == "pod-discovery"]
    assert found["status"] == "ok" and "through their cgroups" in found["detail"], found


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_nothing_from_the_pods_is_forwarded_to_the_uplink(
    runtime: str, runtime_pods: Pods
) -> None:
    """The runtimes turned the host's ip_forward on: the tier's own nft table drops what
    their pods send towards the uplink's range (192.0.2.1: the uplink's gateway)."""
    pod = runtime_pods[runtime][0]
    before = uplink_guard_drops(runtime_pods.uplink_guard)
    with pytest.raises(pn.PodnetError):
        pn.connect_tcp(pod.net, "192.0.2.1", 9, timeout=1)
    assert uplink_guard_drops(runtime_pods.uplink_guard) > before


def annotated_guest(boot_guest: BootGuest, pod: RuntimePod, *options: str) -> tuple[Guest, str]:
    """A guest defined with one direct interface, then annotated for ``pod`` by
    ``vmnet-hook annotate --pod`` and defined again, as a user would; and its placeholder."""
    mac = random_mac()
    guest = boot_guest([direct_interface_xml(mac, "eth-unset")], start=False)
    xml = virsh("dumpxml", "--inactive", guest.name).stdout
    done = vmnet_hook("annotate", "--pod", pod.ref, "--dev", "eth0", *options, stdin=xml)
    assert done.returncode == 0, done.stderr
    path = guest.workdir / "annotated.xml"
    path.write_text(done.stdout)
    virsh("define", str(path))
    sources = etree.fromstring(done.stdout.encode()).findall(
        "devices/interface[@type='direct']/source"
    )
    assert len(sources) == 1, done.stdout
    return guest, str(sources[0].get("dev"))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_guest_gets_the_pods_network_and_the_pod_is_left_as_found(
    runtime: str, runtime_pods: Pods, boot_guest: BootGuest, installed_hook: Path
) -> None:
    pod, peer = runtime_pods[runtime]
    pn.serve_tcp(pod.net, POD_TCP, "pod")
    pn.serve_udp(pod.net, POD_TCP, "pod-udp")
    before = pn.snapshot(pod.net.netns)
    guest, placeholder = annotated_guest(
        boot_guest, pod, "--pod-ports", f"tcp/{POD_TCP} udp/{POD_TCP}"
    )
    guest.start()
    scene = Scene(pod.net, peer.net, guest, placeholder, before)
    lease = guest.wait_for_lease("eth0")
    assert (lease["ip"], lease["mask"], lease["router"]) == ("10.0.2.2", "30", "10.0.2.1")
    assert lease["dns"].split(",") == list(pod.net.dns_servers)
    assert lease["search"].split(",") == list(pod.net.dns_search)
    serve_in_guest(guest)
    assert_reach(scene)
    guest.destroy()
    assert pn.snapshot(pod.net.netns) == before
    assert not Path(f"/sys/class/net/{placeholder}").exists()
    assert not list(STATE_DIR.glob(f"{guest.uuid}*"))


@pytest.mark.parametrize("runtime", BRIDGED)
def test_l2_on_a_bridged_pod_is_refused_naming_the_bridge(
    runtime: str, runtime_pods: Pods, boot_guest: BootGuest, installed_hook: Path
) -> None:
    pod = runtime_pods[runtime][0]
    before = pn.snapshot(pod.net.netns)
    guest, _placeholder = annotated_guest(boot_guest, pod, "--network", "l2")
    started = guest.start(check=False)
    assert started.returncode != 0
    assert f"vmnet-hook: domain '{guest.name}', interface " in started.stderr
    assert f"is a port of bridge {podnets_bridge(pod.net)}" in started.stderr, started.stderr
    assert pn.snapshot(pod.net.netns) == before
