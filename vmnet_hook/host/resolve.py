"""From a pod NIC to its host veth, checked at both ends of the pair."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmnet_hook.config import Config
from vmnet_hook.core import policy
from vmnet_hook.core.annotation import Selector
from vmnet_hook.errors import LinkRefused, PodNotFound
from vmnet_hook.host.netlink import Link, Netlink
from vmnet_hook.host.netns import HOST_NETNS
from vmnet_hook.host.pods import PodNetns, find_pod
from vmnet_hook.host.procfs import NetnsId, ProcFs


@dataclass(frozen=True)
class HostVeth:
    name: str
    index: int
    pod_dev: str  # the pod NIC's own name (a claim may name it by an altname)
    pod_netns: NetnsId
    bridge: str | None = None  # the bridge the host veth is a port of
    pod_path: str = ""  # where the pod's namespace was opened, checked against pod_netns


class Resolver:
    """Resolves ``(selector, pod_dev)`` to the host end of the pod NIC's veth pair."""

    def __init__(self, config: Config, netlink: Netlink, proc: ProcFs | None = None) -> None:
        self.config = config
        self.netlink = netlink
        self.proc = proc or ProcFs(config.proc_root)

    def pod(self, selector: Selector) -> PodNetns:
        """The pod's network namespace (for ``masquerade``, which needs no host veth)."""
        policy.check(selector, self.config)
        return find_pod(selector, self.config, self.proc)

    def host_veth(self, selector: Selector, pod_dev: str) -> HostVeth:
        policy.check(selector, self.config)
        pod = find_pod(selector, self.config, self.proc)
        return host_end(pod, pod_dev, self.netlink)


def host_end(pod: PodNetns, pod_dev: str, netlink: Netlink) -> HostVeth:
    with netlink.netns(pod.path) as inside:
        pod_link = inside.link_by_name(pod_dev)
        if pod_link is None:
            names = ", ".join(sorted(link.name for link in inside.links()))
            raise LinkRefused(f"the pod ({pod.netns}) has no NIC {pod_dev!r}; it has: {names}")
        _check_pod_end(pod_link, pod_dev, host_nsid=inside.nsid_of(HOST_NETNS))
    assert pod_link.peer_index is not None  # _check_pod_end
    with netlink.host() as host:
        peer = host.link_by_index(pod_link.peer_index)
        pod_nsid = host.nsid_of(pod.path)
        master = host.link_by_index(peer.master) if peer and peer.master else None
    if peer is None or peer.kind != "veth":
        what = "no link" if peer is None else f"{peer.name}, a {peer.kind or 'physical'} link"
        raise LinkRefused(
            f"{pod_dev}'s peer ifindex {pod_link.peer_index} on the host is {what}, not a "
            "veth; only veth-backed pod NICs can be handed to a VM"
        )
    if peer.peer_index != pod_link.index or peer.peer_nsid is None or peer.peer_nsid != pod_nsid:
        raise LinkRefused(
            f"host link {peer.name} (ifindex {peer.index}) is not the peer of the pod's "
            f"{pod_dev}: its own peer is ifindex {peer.peer_index} in netnsid {peer.peer_nsid}; "
            "refused rather than guessed"
        )
    _still_the_pods_netns(pod)
    bridge = master.name if master is not None else None
    return HostVeth(peer.name, peer.index, pod_link.name, pod.netns, bridge, pod.path)


GUEST_KINDS = ("macvtap", "macvlan", "ipvtap", "ipvlan")  # links that hand a NIC to a guest


def guests_on(links: Iterable[Link], lower: int) -> list[Link]:
    """The links stacked on ifindex ``lower`` (IFLA_LINK, same namespace) that carry a guest
    or a container: libvirt's macvtap of a domain, annotated or not, or a leftover."""
    return [
        link
        for link in links
        if link.kind in GUEST_KINDS and link.peer_index == lower and link.peer_nsid is None
    ]


def already_carries(host_veth: str, guests: Sequence[Link]) -> LinkRefused:
    """The refusal for a pod NIC whose host veth ``guests_on`` found in use."""
    names = ", ".join(f"{link.name} ({link.kind}, ifindex {link.index})" for link in guests)
    commands = " or ".join(f"`ip link del {link.name}`" for link in guests)
    return LinkRefused(
        f"host veth {host_veth} already carries {names}; a second guest on one pod NIC is "
        f"refused: stop the domain that uses it, or delete a leftover with {commands}"
    )


def _still_the_pods_netns(pod: PodNetns) -> None:
    """``pod.path`` was opened twice above; if its process exited and the pid was reused
    (or a pinned name re-made) meanwhile, all of the above may describe another pod."""
    try:
        info = os.stat(pod.path)
    except OSError:
        info = None
    if info is None or (info.st_dev, info.st_ino) != (pod.netns.dev, pod.netns.ino):
        raise PodNotFound(
            f"the pod's namespace at {pod.path} changed while it was read; try again"
        )


def _check_pod_end(link: Link, pod_dev: str, host_nsid: int | None) -> None:
    if link.kind != "veth":
        raise LinkRefused(
            f"{pod_dev} in the pod is a {link.kind or 'physical'} link, not a veth; "
            "only veth-backed pod NICs can be handed to a VM"
        )
    if link.peer_index is None or link.peer_nsid is None:
        raise LinkRefused(f"{pod_dev} in the pod has its veth peer inside the pod itself")
    if host_nsid is None or link.peer_nsid != host_nsid:
        raise LinkRefused(
            f"{pod_dev}'s veth peer is in another network namespace (netnsid "
            f"{link.peer_nsid}), not the host's; refused rather than guessed"
        )
