"""Is a masqueraded NIC's pod side whole? And, for ``reconnect``, mend what can be mended
without touching a healthy piece: today, a DHCP server that is gone is started again."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vmnet_hook.errors import VmnetError
from vmnet_hook.host.netlink import PodNetlink
from vmnet_hook.podnet import kernel, wire
from vmnet_hook.podnet.record import GuestRecord


@dataclass(frozen=True)
class Health:
    """What is missing of a record's pieces (empty: all there)."""

    dhcp_alive: bool
    problems: tuple[str, ...]


def check(record: GuestRecord, netlink: PodNetlink) -> Health:
    problems = []
    dhcp_alive = wire.recorded_dnsmasq(record) is not None
    if not dhcp_alive:
        problems.append(f"dnsmasq for {record.nic.pod_end} is not running")
    fd = wire.open_pod_netns(record)
    if fd is None:
        return Health(dhcp_alive, (*problems, "the pod's network namespace is gone"))
    try:
        problems += _pod_problems(record, f"/proc/self/fd/{fd}", netlink)
    finally:
        os.close(fd)
    return Health(dhcp_alive, tuple(problems))


def repair(record: GuestRecord, netlink: PodNetlink) -> tuple[GuestRecord, list[str]]:
    """Start the DHCP server again if it is gone and its link is there; what else is
    wrong is only reported (a guest link or table that vanished means the pod was
    tampered with or re-created: the domain's next start rebuilds it)."""
    health = check(record, netlink)
    problems = [p for p in health.problems if "dnsmasq" not in p]
    if health.dhcp_alive or problems:
        return record, list(health.problems)
    fd = wire.open_pod_netns(record)
    if fd is None:
        return record, ["the pod's network namespace is gone"]
    try:
        pid, started = wire.start_dnsmasq(record, f"/proc/self/fd/{fd}")
    except VmnetError as error:
        return record, [str(error)]
    finally:
        os.close(fd)
    return record.started(pid, started), [f"dnsmasq for {record.nic.pod_end} started again"]


def _pod_problems(record: GuestRecord, pod_path: str, netlink: PodNetlink) -> list[str]:
    nic, problems = record.nic, []
    try:
        with netlink.netns(pod_path) as inside:
            pod_end = inside.link_by_name(nic.pod_end)
            if pod_end is None or pod_end.alias != nic.owner:
                problems.append(f"the guest's link {nic.pod_end} is gone from the pod")
            if inside.link_by_name(nic.pod_dev) is None:
                problems.append(f"the pod NIC {nic.pod_dev} is gone")
        if nic.table not in kernel.nft_comments(pod_path):
            problems.append(f"nft table {nic.table} is gone from the pod")
    except VmnetError as error:
        problems.append(str(error))
    return problems
