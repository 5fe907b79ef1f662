"""What a masqueraded guest NIC needs in its pod, computed from what the pod has now. Pure."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmnet_hook.core.annotation import PortRange
from vmnet_hook.errors import PodNetError

OWNER = "vmnet-hook"  # first word of the pod end's ifalias and of the nft table's comment
Network = ipaddress.IPv4Network
Interface = ipaddress.IPv4Interface


@dataclass(frozen=True)
class Dns:
    servers: tuple[str, ...]
    search: tuple[str, ...]
    source: str  # the file they were read from, for the log


@dataclass(frozen=True)
class PodFacts:
    """What the pod's namespace holds now, as far as a plan needs it."""

    pod_dev: str
    pod_ip: Interface | None  # the pod NIC's first IPv4 address
    mtu: int
    addresses: tuple[Interface, ...]  # every IPv4 address not on a guest link of ours
    routes: tuple[Network, ...]  # every IPv4 route destination (all tables) not via ours
    held: tuple[Network, ...]  # subnets on guest links vmnet-hook made for other domains


@dataclass(frozen=True)
class GuestNic:
    """One masqueraded domain interface: everything made for it in its pod."""

    domain_uuid: str
    mac: str
    placeholder: str  # host end of the guest's link; libvirt's <source dev>
    pod_dev: str
    pod_end: str  # the other end, in the pod; holds the gateway
    table: str  # nft table (family ip) in the pod
    subnet: str  # the /30
    gateway: str
    guest: str
    gateway_mac: str
    pod_ip: str
    mtu: int
    default_route: bool  # only the domain's first NIC offers a router
    pod_ports: tuple[PortRange, ...]
    dns: Dns

    @property
    def owner(self) -> str:
        """The pod end's ifalias and the table's comment: who made them, for what."""
        return owner_tag(self.domain_uuid, self.mac, self.pod_dev)


@dataclass(frozen=True)
class Wanted:
    """A claim in masquerade, as the plan needs it."""

    mac: str
    placeholder: str
    pod_dev: str
    pod_ports: tuple[PortRange, ...]


def owner_tag(domain_uuid: str, mac: str, pod_dev: str) -> str:
    return f"{OWNER} uuid={domain_uuid} mac={mac} dev={pod_dev}"


def parse_owner(text: str) -> dict[str, str] | None:
    """The fields of an ``owner_tag``, or None when vmnet-hook did not write ``text``."""
    words = text.split()
    if not words or words[0] != OWNER:
        return None
    fields = dict(word.partition("=")[::2] for word in words[1:])
    return fields if {"uuid", "mac", "dev"} <= fields.keys() else None


def tag_of(domain_uuid: str, mac: str) -> str:
    """12 hex digits naming a domain NIC's pieces in its pod (``vg<tag>``, ``vmnet_<tag>``)."""
    return hashlib.sha256(f"{domain_uuid}/{mac}".encode()).hexdigest()[:12]


def gateway_mac(guest_mac: str) -> str:
    """The guest's MAC with its first octet's bit 3 flipped, locally administered, unicast:
    never the guest's own, and the same for the same guest (a restored guest's ARP cache
    stays right)."""
    octets = guest_mac.split(":")
    first = ((int(octets[0], 16) ^ 0x08) | 0x02) & 0xFE
    return ":".join([f"{first:02x}", *octets[1:]])


def plan(
    domain_uuid: str,
    wanted: Sequence[Wanted],
    facts: dict[str, PodFacts],
    dns: dict[str, Dns],
    vm_cidr: Network,
) -> tuple[GuestNic, ...]:
    """A GuestNic per wanted NIC (keyed by MAC in ``facts``/``dns``), in domain order: each
    the first /30 of ``vm_cidr`` free in its pod (and not given to an earlier NIC here)."""
    taken: list[Network] = []
    nics: list[GuestNic] = []
    for index, want in enumerate(wanted):
        pod = facts[want.mac]
        _refuse_overlap(vm_cidr, pod)
        subnet = _first_free(vm_cidr, [*pod.held, *taken], want)
        taken.append(subnet)
        nics.append(_guest_nic(domain_uuid, want, pod, dns[want.mac], subnet, index == 0))
    return tuple(nics)


def _guest_nic(
    domain_uuid: str, want: Wanted, pod: PodFacts, dns: Dns, subnet: Network, first: bool
) -> GuestNic:
    if pod.pod_ip is None:
        raise PodNetError(f"{want.pod_dev} in the pod has no IPv4 address to masquerade as")
    hosts = list(subnet.hosts())
    tag = tag_of(domain_uuid, want.mac)
    return GuestNic(
        domain_uuid=domain_uuid,
        mac=want.mac,
        placeholder=want.placeholder,
        pod_dev=want.pod_dev,
        pod_end=f"vg{tag}",
        table=f"vmnet_{tag}",
        subnet=str(subnet),
        gateway=str(hosts[0]),
        guest=str(hosts[1]),
        gateway_mac=gateway_mac(want.mac),
        pod_ip=str(pod.pod_ip.ip),
        mtu=pod.mtu,
        default_route=first,
        pod_ports=want.pod_ports,
        dns=dns,
    )


def _refuse_overlap(vm_cidr: Network, pod: PodFacts) -> None:
    for address in pod.addresses:
        if address.network.prefixlen and address.network.overlaps(vm_cidr):
            raise PodNetError(
                f"vm_cidr {vm_cidr} overlaps the pod's address {address}; "
                "set vm_cidr in /etc/vmnet-hook/config to a range the pod does not use"
            )
    for route in pod.routes:
        if route.prefixlen and route.overlaps(vm_cidr):
            raise PodNetError(
                f"vm_cidr {vm_cidr} overlaps the pod's route to {route}; "
                "set vm_cidr in /etc/vmnet-hook/config to a range the pod does not use"
            )


def _first_free(vm_cidr: Network, used: Iterable[Network], want: Wanted) -> Network:
    used = list(used)
    for subnet in vm_cidr.subnets(new_prefix=30):
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise PodNetError(
        f"no free /30 left in vm_cidr {vm_cidr} for {want.mac} in the pod "
        f"({len(used)} in use); widen vm_cidr"
    )
