"""``vmnet-hook status``: what each running domain holds, from state, checked live: ``l2``
bindings against the host's links, ``masquerade`` pod sides against their pods."""

from __future__ import annotations

from dataclasses import dataclass

from vmnet_hook.host.netlink import Netlink, NetlinkSession, PodNetlink
from vmnet_hook.host.state import Binding, StateStore
from vmnet_hook.podnet import health


@dataclass(frozen=True)
class BindingStatus:
    domain: str
    uuid: str
    mac: str
    placeholder: str
    host_veth: str
    ifindex: int
    problem: str  # empty when placeholder -> veth -> pod netns all hold
    network: str = "l2"

    @property
    def state(self) -> str:
        return "stale" if self.problem else "ok"


@dataclass(frozen=True)
class GuestStatus:
    """A masqueraded NIC: its link, its /30, its DHCP server and nft table, checked live."""

    domain: str
    uuid: str
    mac: str
    placeholder: str  # the host end of the guest's link
    pod_end: str
    pod_dev: str
    subnet: str
    guest: str
    gateway: str
    pod_ip: str
    dhcp_pid: int | None
    dhcp_alive: bool
    nft_table: str
    problem: str  # every missing piece, "; "-separated; empty when whole
    network: str = "masquerade"

    @property
    def state(self) -> str:
        return "broken" if self.problem else "ok"


def guest_statuses(
    store: StateStore, netlink: PodNetlink, domain: str | None = None
) -> list[GuestStatus]:
    """Every recorded masqueraded NIC (of ``domain``, by name or UUID, when given)."""
    rows = []
    for uuid, state in store.all().items():
        for record in state.guests if domain in (None, uuid, state.domain) else ():
            nic, found = record.nic, health.check(record, netlink)
            rows.append(GuestStatus(
                state.domain, uuid, nic.mac, nic.placeholder, nic.pod_end, nic.pod_dev,
                nic.subnet, nic.guest, nic.gateway, nic.pod_ip, record.dnsmasq_pid,
                found.dhcp_alive, nic.table, "; ".join(found.problems),
            ))  # fmt: skip
    return rows


def statuses(
    store: StateStore, netlink: Netlink, domain: str | None = None
) -> list[BindingStatus]:
    """Every recorded binding (of ``domain``, by name or UUID, when given), checked live."""
    recorded = [
        (uuid, state.domain, binding)
        for uuid, state in store.all().items()
        if domain in (None, uuid, state.domain)
        for binding in state.bindings
    ]
    if not recorded:
        return []
    with netlink.host() as host:
        return [
            BindingStatus(
                name, uuid, b.mac, b.placeholder, b.host_veth, b.ifindex, _problem(host, b)
            )
            for uuid, name, b in recorded
        ]


def _problem(host: NetlinkSession, binding: Binding) -> str:
    link = host.link_by_name(binding.placeholder)
    if link is None:
        return f"{binding.placeholder} names no link: the pod's veth is gone"
    if link.index != binding.ifindex:
        return (
            f"{binding.placeholder} now names {link.name} (ifindex {link.index}), "
            "not the bound veth"
        )
    if link.kind != "veth" or link.peer_nsid is None:
        return f"{link.name} no longer has its other end in a pod's namespace"
    return ""
