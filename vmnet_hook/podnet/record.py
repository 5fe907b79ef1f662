"""What state keeps of each masqueraded NIC: the plan, where its pod was, and what was
there before. Written before each change; release undoes from it, never by recomputing."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from vmnet_hook.core.annotation import PortRange
from vmnet_hook.podnet.dhcp import files
from vmnet_hook.podnet.plan import Dns, GuestNic


class Note(str):
    """A line about a piece that release left alone because it is not provably this
    record's (not one it failed to undo): said, and the record may go all the same."""


@dataclass(frozen=True)
class GuestRecord:
    nic: GuestNic
    netns_dev: int  # the pod's network namespace, as stat() of its nsfs file shows it
    netns_ino: int
    netns_paths: tuple[str, ...]  # where it could be opened when recorded
    forwarding_before: str  # the pod NIC's net.ipv4.conf.<dev>.forwarding before ours
    pid_file: str  # dnsmasq's, named before it starts
    lease_file: str
    dnsmasq_pid: int | None = None
    dnsmasq_started: float | None = None  # psutil create_time, so a reused pid is not ours

    def started(self, pid: int, create_time: float) -> GuestRecord:
        return replace(self, dnsmasq_pid=pid, dnsmasq_started=create_time)

    def own_files(self) -> tuple[str, ...]:
        """The pid and lease files, if they are the ones this record's NIC is given (in
        the state directory, named by its domain and guest link): none else is touched."""
        directory = os.path.dirname(self.pid_file)
        given = files(directory, self.nic)
        return given if (self.pid_file, self.lease_file) == given else ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dict(raw: dict[str, Any]) -> GuestRecord:
    """The inverse of ``as_dict``; a KeyError or TypeError means a file of another shape."""
    nic = dict(raw["nic"])
    nic["pod_ports"] = tuple(PortRange(**port) for port in nic["pod_ports"])
    dns = nic["dns"]
    nic["dns"] = Dns(tuple(dns["servers"]), tuple(dns["search"]), str(dns["source"]))
    fields = dict(raw)
    fields["nic"] = GuestNic(**nic)
    fields["netns_paths"] = tuple(fields["netns_paths"])
    return GuestRecord(**fields)
