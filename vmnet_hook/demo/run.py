"""``vmnet-hook demo``: the whole job on a machine with no Kubernetes.

Builds a throwaway pod and its peer from kernel objects (``network``), and a domain
annotated for the pod with the default network, masquerade. Where libvirtd runs with the
hook installed, ``virsh start`` boots a real guest (``guestimage``, ``guest``): its lease,
a ping and TCP both ways with the peer; then ``virsh destroy``, and the pod is as found.
Where the guest image cannot be built (no apt, no busybox-static) a diskless domain shows
the wiring alone; without libvirtd the hook runs by hand and shows the pod side it builds.
Everything is removed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from vmnet_hook.core.annotation import placeholder_for
from vmnet_hook.demo import guest as guests
from vmnet_hook.demo import network, sandbox
from vmnet_hook.demo.guestimage import CACHE_ROOT, GuestImage, ImageError, guest_image
from vmnet_hook.errors import DemoError
from vmnet_hook.hook.gate import main as hook_main

Echo = Callable[[str], None]
PEER_PORT, GUEST_PORT = 7070, 8080
HOOKS = ("/etc/libvirt/hooks/qemu", "/etc/libvirt/hooks/qemu.d/vmnet-hook")


class DemoGuest(guests.Guest):
    NAME_PREFIX: ClassVar[str] = "vmnet-demo-"
    RUN_ROOT: ClassVar[Path] = Path("/var/lib/libvirt/vmnet-hook-demo")


def run(echo: Echo, with_libvirt: bool = True) -> None:
    if os.geteuid() != 0:
        raise DemoError("the demo builds namespaces and veths: run it as root")
    cgroup_root = f"{sandbox.cgroup2_mount()}/{sandbox.random_name('vmnet-demo-')}"
    os.mkdir(cgroup_root)
    try:
        with contextlib.ExitStack() as stack:  # unwinds on Ctrl-C too, wherever it comes
            net = stack.enter_context(network.pod_network(cgroup_root))
            _show_network(echo, net)
            _story(echo, stack, net, with_libvirt)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(cgroup_root)
        echo("\nCleaned up: domain, pods, namespaces, veths, cgroups and bindings are gone.")


def _show_network(echo: Echo, net: network.PodNetwork) -> None:
    echo(
        "Two throwaway pods on a bridge, built from kernel objects (nothing leaves this machine):"
    )
    echo(f"  pod       {net.pod_ip}/24 on eth0, pod UID {net.pod.uid}")
    echo(f"            process {net.pod_pid} in a kubelet-shaped cgroup, its own resolv.conf")
    echo(f"  peer pod  {net.peer_ip}/24 on eth0; bridge {network.GATEWAY} in namespace {net.node}")


def _story(
    echo: Echo, stack: contextlib.ExitStack, net: network.PodNetwork, libvirt: bool
) -> None:
    mac = guests.random_mac()
    uuid = str(uuidlib.uuid4())
    placeholder = placeholder_for(uuid, mac)
    metadata = (
        '<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">'
        f'<vmnet:interface mac="{mac}" pod-uid="{net.pod.uid}" dev="eth0"/></vmnet:interfaces>'
    )
    interface = guests.direct_interface_xml(mac, placeholder)
    echo("\nA domain annotated for the pod (network: the default, masquerade):")
    echo(f"    {metadata.split('>', 1)[1].split('</vmnet:interfaces')[0]}")
    echo(f"    {interface.split('<model')[0]}")
    reason = _libvirt_missing() if libvirt else "--no-libvirt"
    if reason:
        echo(f"\nNo VM ({reason}): the hook runs by hand, as libvirtd runs it at `virsh start`.")
        _by_hand(echo, stack, net, DemoGuest(None, [interface], metadata, uuid))
        return
    image = _image(echo)
    guest = DemoGuest(image, [interface], metadata, uuid)
    stack.callback(_remove, guest)
    before = _start(echo, net, guest, placeholder)
    if image is not None:
        _guest_talks(echo, net, guest)
    guest.destroy()
    echo(f"\n`virsh destroy {guest.name}`: libvirtd ran the hook's `release end`.")
    _as_found(echo, net.pod_pid, before)


def _image(echo: Echo) -> GuestImage | None:
    """The guest's kernel and initramfs, built on first use; None (said in one line) when
    this machine cannot build them."""
    echo(f"\nThe guest: Debian's cloud kernel and a busybox initramfs, cached in {CACHE_ROOT}")
    try:
        return guest_image(progress=lambda message: echo(f"  guest image: {message}"))
    except ImageError as error:
        echo(f"  no guest image ({error}): starting a diskless domain to show its wiring.")
        return None


def _start(
    echo: Echo, net: network.PodNetwork, guest: DemoGuest, placeholder: str
) -> dict[str, str]:
    """Define and start the domain, show its wiring; the pod's snapshot from before."""
    before = network.snapshot(net.pod_pid)
    guest.define()
    started = time.monotonic()
    result = guest.start(check=False)
    if result.returncode != 0:
        raise DemoError(
            f"virsh start failed: {result.stderr.strip()}; `vmnet-hook doctor` checks "
            "libvirt's set-up (or run the demo with --no-libvirt)"
        )
    echo(f"\n`virsh start {guest.name}` ({time.monotonic() - started:.1f} s; libvirtd ran "
         "the installed hook):")  # fmt: skip
    echo(f"  its macvtap: {_macvtap_on(placeholder)}, on the guest's own link into the pod")
    _show_pod_side(echo, net.pod_pid)
    return before


def _guest_talks(echo: Echo, net: network.PodNetwork, guest: DemoGuest) -> None:
    lease = guest.wait_for_lease("eth0", timeout=90)
    echo(
        f"\nThe guest's lease, from the dnsmasq in the pod ({_seconds(guest)} s after the start):"
    )
    echo(f"  address {lease['ip']}/{lease['mask']}  gateway {lease['router']}  "
         f"MTU {lease['mtu']}")  # fmt: skip
    echo(f"  DNS {lease['dns']}  search {lease['search']}  (the pod's resolv.conf)")
    echo(f"\nFrom the guest to the peer pod {net.peer_ip}:")
    echo(f"  ping      {_ping(guest, net.peer_ip)}")
    with network.listening(net.peer, PEER_PORT, "peer") as listener:
        answer = guest.check(f"echo hi | nc -w 3 {net.peer_ip} {PEER_PORT}").strip()
        seen = listener.seen[-1] if listener.seen else "nothing"
    whose = "the pod's IP" if seen == net.pod_ip else "NOT the pod's IP"
    echo(f"  tcp/{PEER_PORT}  answered {answer!r}; the peer saw it come from {seen} ({whose})")
    guest.check(f"(echo guest | nc -l -p {GUEST_PORT}) >/dev/null 2>&1 &")
    answer = network.connect(net.peer, net.pod_ip, GUEST_PORT)
    echo(f"\nFrom the peer to the pod's IP {net.pod_ip}:")
    echo(f"  tcp/{GUEST_PORT}  answered {answer!r}, by the guest (the pod's NAT sends it there)")


def _ping(guest: DemoGuest, address: str) -> str:
    output = guest.check(f"ping -c1 -W3 {address}")
    found = re.search(r"ttl=(\d+) time=([\d.]+ ms)", output)
    return f"reply in {found.group(2)}, ttl {found.group(1)}" if found else output.strip()


def _seconds(guest: DemoGuest) -> str:
    return f"{time.monotonic() - (guest.started_at or time.monotonic()):.1f}"


def _as_found(echo: Echo, pid: int, before: dict[str, str]) -> None:
    after = network.snapshot(pid)
    changed = [part for part in before if before[part] != after[part]]
    if changed:
        raise DemoError(f"the pod is not as it was found: {', '.join(changed)} changed")
    echo(f"  the pod is as it was found: {', '.join(before)}.")


def _by_hand(echo: Echo, stack: contextlib.ExitStack, net: network.PodNetwork,
             guest: DemoGuest) -> None:  # fmt: skip
    before = network.snapshot(net.pod_pid)
    stack.callback(_hook, guest, "release", "end")
    status, out, err = _hook(guest, "prepare", "begin")
    if status != 0:
        raise DemoError(err.strip())
    echo("`hooks/qemu NAME prepare begin -` built the pod side; the rewrite keeps the")
    echo("placeholder as <source dev> (the guest's own link) and records it:")
    echo(f"    {re.findall(r'<vmnet:interface [^>]*>', out)[0]}")
    _show_pod_side(echo, net.pod_pid)
    _hook(guest, "release", "end")
    echo("\n`hooks/qemu NAME release end -` (what libvirtd runs at `virsh destroy`):")
    _as_found(echo, net.pod_pid, before)


def _hook(guest: DemoGuest, operation: str, subop: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = hook_main([guest.name, operation, subop, "-"], io.BytesIO(guest.xml.encode()),
                       out, err)  # fmt: skip
    return status, out.getvalue(), err.getvalue()


def _show_pod_side(echo: Echo, pid: int) -> None:
    """What the hook made in the pod: the guest's link, the nft table, the DHCP server."""
    echo("  in the pod, the hook made:")
    for line in network.in_pod(pid, "ip", "-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        if fields[1].startswith("vg"):
            echo(f"    link {fields[1]} {fields[3]}, the guest's gateway")
    for line in network.in_pod(pid, "nft", "list", "tables").splitlines():
        if " vmnet_" in line:
            echo(f"    nft {line.strip()}: DNAT to the guest, SNAT to the pod's IP")
    for entry in network.processes_in(pid):
        process, name = entry.split(":", 1)
        if name == "dnsmasq":
            echo(f"    dnsmasq pid {process}, answering only the guest's MAC")


def _macvtap_on(link: str) -> str:
    links = subprocess.run(["ip", "-o", "link", "show", "type", "macvtap"],
                           capture_output=True, text=True, check=False).stdout  # fmt: skip
    found = [line.split(":")[1].strip() for line in links.splitlines() if f"@{link}:" in line]
    return found[0] if found else "NOT FOUND"


def _remove(guest: DemoGuest) -> None:
    """Destroy and undefine the domain and remove its files, whatever state it is in; the
    hook's ``release end`` once more, in case libvirt never ran it."""
    with contextlib.suppress(guests.GuestError):
        guest.remove()
    _hook(guest, "release", "end")


def _libvirt_missing() -> str:
    if shutil.which("virsh") is None:
        return "virsh is not installed"
    if guests.virsh("version", check=False, timeout=30).returncode != 0:
        return "libvirtd is not running (scripts/setup-libvirt.sh starts it)"
    if not any(os.path.exists(path) for path in HOOKS):
        return "the hook is not installed in /etc/libvirt/hooks (run install.sh)"
    return ""
