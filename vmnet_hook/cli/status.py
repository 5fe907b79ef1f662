"""``vmnet-hook status``: the bindings in effect, from state, checked against live links."""

from __future__ import annotations

from dataclasses import dataclass

from vmnet_hook.host.netlink import Netlink, NetlinkSession
from vmnet_hook.host.state import Binding, StateStore


@dataclass(frozen=True)
class BindingStatus:
    domain: str
    uuid: str
    mac: str
    placeholder: str
    host_veth: str
    ifindex: int
    problem: str  # empty when placeholder -> veth -> pod netns all hold

    @property
    def state(self) -> str:
        return "stale" if self.problem else "ok"


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
