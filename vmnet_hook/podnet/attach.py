"""The masqueraded NICs of one domain, from their pods to their records and back:
``records_for`` reads each pod and plans (under the caller's host-wide lock); the
caller saves the records, then ``connect_all``; ``disconnect_all`` undoes them."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import psutil

from vmnet_hook import files
from vmnet_hook.core.annotation import Claim
from vmnet_hook.errors import Failures, InterfaceError, PodNetError, PodNotFound, VmnetError
from vmnet_hook.host.netlink import PodNetlink, PodSession
from vmnet_hook.host.netns import HOST_NETNS
from vmnet_hook.host.pods import PodNetns
from vmnet_hook.host.resolve import HostVeth, already_carries, guests_on
from vmnet_hook.host.state import directory_error
from vmnet_hook.podnet import dhcp, kernel, wire
from vmnet_hook.podnet.plan import Dns, GuestNic, PodFacts, Wanted, parse_owner, plan, tag_of
from vmnet_hook.podnet.record import GuestRecord


@dataclass(frozen=True)
class Request:
    """A claim and the pod namespace it resolved to (an ``l2`` claim's pod is checked)."""

    claim: Claim
    pod: PodNetns


def l2_request(claim: Claim, veth: HostVeth) -> Request:
    """An ``l2`` claim's pod, as its host veth was resolved: checked under the lock."""
    return Request(claim, PodNetns(veth.pod_path, veth.pod_netns, ()))


@contextlib.contextmanager
def opened(requests: Sequence[Request]) -> Iterator[dict[str, str]]:
    """Each claim's pod namespace held open (MAC -> ``/proc/self/fd/N``), checked to be the
    namespace that was resolved: a pid reused meanwhile cannot send us to another pod."""
    with contextlib.ExitStack() as stack:
        paths = {}
        for request in requests:
            fd = _open_netns(request.pod)
            stack.callback(os.close, fd)
            paths[request.claim.mac] = f"/proc/self/fd/{fd}"
        yield paths


def records_for(
    domain: str, uuid: str, requests: Sequence[Request], paths: dict[str, str],
    netlink: PodNetlink, vm_cidr: str, state_dir: str, proc_root: str,
    host_ends: dict[str, int] | None = None,
) -> tuple[GuestRecord, ...]:  # fmt: skip
    """Read each pod, refuse pod NICs another domain holds, clean this domain's own
    leftovers, and plan the masqueraded NICs; an ``l2`` claim's pod is only checked and
    cleaned. Nothing is made here. ``host_ends`` gets each masqueraded claim's pod NIC's
    host veth (by MAC), where it has one."""
    _refuse_one_nic_twice(domain, requests)
    stop_own_dnsmasqs(uuid, state_dir)
    masqueraded = [r for r in requests if r.claim.network == "masquerade"]
    facts: dict[str, PodFacts] = {}
    dns: dict[str, Dns] = {}
    forwarding: dict[str, str] = {}
    problems: list[VmnetError] = []
    for request in requests:
        mac, path = request.claim.mac, paths[request.claim.mac]
        try:
            if request.claim.network != "masquerade":
                _check_l2_pod(uuid, request.claim, path, netlink)
                continue
            facts[mac], host_end = _read_pod(uuid, request.claim, path, netlink)
            if host_end is not None and host_ends is not None:
                host_ends[mac] = host_end
            forwarding[mac] = wire.read_sysctl(path, f"{request.claim.pod_dev}/forwarding")
            dns[mac] = kernel.read_dns(request.pod.pids, proc_root)
        except VmnetError as error:
            problems.append(InterfaceError(domain, mac, error))
    if problems:
        raise Failures(problems)
    if not masqueraded:
        return ()
    wanted = [Wanted(r.claim.mac, r.claim.placeholder, r.claim.pod_dev, r.claim.pod_ports)
              for r in masqueraded]  # fmt: skip
    try:
        nics = plan(uuid, wanted, facts, dns, ipaddress.IPv4Network(vm_cidr))
    except PodNetError as error:
        raise Failures([InterfaceError(domain, wanted[0].mac, error)]) from None
    return tuple(
        _record(nic_request, nic, forwarding[nic.mac], state_dir)
        for nic_request, nic in zip(masqueraded, nics, strict=True)
    )


def connect_all(
    domain: str, records: list[GuestRecord], paths: dict[str, str], netlink: PodNetlink,
    save: Callable[[], None],
) -> None:  # fmt: skip
    """Make each record's pieces; ``records`` is updated in place as dnsmasq pids become
    known, and ``save`` writes them."""
    for index, record in enumerate(records):

        def progress(updated: GuestRecord, index: int = index) -> None:
            records[index] = updated
            save()

        try:
            wire.connect(record, paths[record.nic.mac], netlink, progress)
        except VmnetError as error:
            raise Failures([InterfaceError(domain, record.nic.mac, error)]) from None


def disconnect_all(records: Sequence[GuestRecord], netlink: PodNetlink) -> list[str]:
    return [problem for record in records for problem in wire.disconnect(record, netlink)]


def _read_pod(
    uuid: str, claim: Claim, path: str, netlink: PodNetlink
) -> tuple[PodFacts, int | None]:
    """The pod's facts, and the ifindex of its NIC's host veth (None: it has none)."""
    with netlink.netns(path) as inside:
        _refuse_other_guests(uuid, claim.pod_dev, inside, path)
        host_end = _refuse_carried_host_veth(claim.pod_dev, inside, netlink)
        _clean_own_leftovers(uuid, claim, path, inside)
        return kernel.read_facts(inside, claim.pod_dev), host_end


def _check_l2_pod(uuid: str, claim: Claim, path: str, netlink: PodNetlink) -> None:
    """An ``l2`` claim takes the whole pod NIC: refused while the pod holds another
    domain's masqueraded guest on it; this domain's own leftovers in the pod are removed."""
    with netlink.netns(path) as inside:
        pod_link = inside.link_by_name(claim.pod_dev)
        if pod_link is None:
            raise PodNotFound(f"the pod's NIC {claim.pod_dev} vanished while it was read")
        _refuse_other_guests(uuid, pod_link.name, inside, path)
        if not kernel.has_nft():
            _refuse_untagged_guests(uuid, claim, inside)
        _clean_own_leftovers(uuid, claim, path, inside)


def _refuse_untagged_guests(uuid: str, claim: Claim, inside: PodSession) -> None:
    """Without nft, a guest link whose owner tag is lost is all that shows a masqueraded
    guest (its nft table would name it): any link named as a pod end of ours (but this
    domain's own leftover) may hold the pod NIC, so the whole NIC is not taken."""
    own = f"vg{tag_of(uuid, claim.mac)}"
    found = [name for name in kernel.untagged_guest_links(inside) if name != own]
    if found:
        raise PodNetError(
            f"pod NIC {claim.pod_dev}: the pod has {', '.join(found)}, named as vmnet-hook "
            "names a masqueraded guest's link but without its owner tag, and nft is not "
            "installed to tell whose: stop the domain that uses it, or delete a leftover "
            "in the pod (`ip link del NAME` there)"
        )


def _refuse_other_guests(uuid: str, pod_dev: str, inside: PodSession, path: str) -> None:
    """The pod's kernel tells who holds its NIC: the owner tags of the guest links and nft
    tables vmnet-hook makes, whatever state says."""
    for owner in kernel.holders(inside, path):
        if owner["dev"] == pod_dev and owner["uuid"] != uuid:
            raise PodNetError(
                f"pod NIC {pod_dev} already carries a guest of domain "
                f"{owner['uuid']} (mac {owner['mac']}); stop that domain first"
            )


def _refuse_carried_host_veth(pod_dev: str, inside: PodSession, netlink: PodNetlink) -> int | None:
    """A masqueraded NIC shares nothing with an ``l2`` guest (or a domain without the
    annotation) that holds the pod NIC's host veth through a macvtap. That veth's ifindex
    (None: the pod NIC has no host veth)."""
    pod_link = inside.link_by_name(pod_dev)
    if pod_link is None or pod_link.kind != "veth" or pod_link.peer_index is None:
        return None  # read_facts names a missing NIC; a macvlan pod NIC has no host veth
    if pod_link.peer_nsid is None or pod_link.peer_nsid != inside.nsid_of(HOST_NETNS):
        return None  # its peer is not on the host: nothing of ours can sit there
    with netlink.host() as host:
        guests = guests_on(host.links(), pod_link.peer_index)
        veth = host.link_by_index(pod_link.peer_index)
    if guests:
        raise already_carries(veth.name if veth else f"ifindex {pod_link.peer_index}", guests)
    return pod_link.peer_index


def _clean_own_leftovers(uuid: str, claim: Claim, path: str, inside: PodSession) -> None:
    """Pieces this domain left in the pod (its state lost; at prepare, after its own
    release, nothing of this domain's is there on purpose) are its own: remove them. A
    guest link's host end (the placeholder) goes with its pod end, and a pod end killed
    before it was tagged is recognised by its name, derived from this domain's UUID and MAC."""
    untagged = f"vg{tag_of(uuid, claim.mac)}"
    for link in inside.links():
        owner = parse_owner(link.alias or "")
        ours = owner is not None and owner["uuid"] == uuid
        if ours or (link.name == untagged and link.kind == "veth" and not link.alias):
            inside.del_link(link.index)
    comments = kernel.nft_comments(path) if kernel.has_nft() else {}
    for table, comment in comments.items():
        owner = parse_owner(comment)
        if owner and owner["uuid"] == uuid:
            kernel.run_tool(path, [kernel.NFT, "delete", "table", "ip", table])


def stop_own_dnsmasqs(uuid: str, state_dir: str) -> None:
    """A DHCP server this domain left (its state lost) is found by its pid file in the
    state directory, and ended if its command line names that file; its files go too."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return
    for name in names:
        if not (name.startswith(f"{uuid}.vg") and name.endswith(".pid")):
            continue
        pid_file = os.path.join(state_dir, name)
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            process = psutil.Process(_pid_in(pid_file))
            if f"--pid-file={pid_file}" in process.cmdline():
                process.kill()
                process.wait(1.0)
        for path in (pid_file, pid_file.removesuffix(".pid") + ".leases"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise directory_error(state_dir, error, f"{path} stays") from None


def _pid_in(pid_file: str) -> int:
    """The pid a pid file holds (read as vmnet_hook.files reads: never a FIFO or a link)."""
    found = files.read_regular(pid_file, 32)
    if found is None:
        raise FileNotFoundError(pid_file)
    return int(found[0].decode("ascii").strip())


def _record(
    request: Request, nic: GuestNic, forwarding_before: str, state_dir: str
) -> GuestRecord:
    pod = request.pod
    pid_file, lease_file = dhcp.files(state_dir, nic)
    return GuestRecord(
        nic=nic,
        netns_dev=pod.netns.dev,
        netns_ino=pod.netns.ino,
        netns_paths=(pod.path, *(f"/proc/{pid}/ns/net" for pid in pod.pids[:4])),
        forwarding_before=forwarding_before,
        pid_file=pid_file,
        lease_file=lease_file,
    )


def _open_netns(pod: PodNetns) -> int:
    try:
        fd = os.open(pod.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise PodNotFound(f"the pod's namespace at {pod.path} is gone: {error.strerror}") from None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (pod.netns.dev, pod.netns.ino):
        os.close(fd)
        raise PodNotFound(
            f"the pod's namespace at {pod.path} changed while it was read; try again"
        )
    return fd


def _refuse_one_nic_twice(domain: str, requests: Sequence[Request]) -> None:
    seen: dict[tuple[object, str], str] = {}
    for request in requests:
        key = (request.pod.netns, request.claim.pod_dev)
        if key in seen:
            raise Failures([InterfaceError(domain, request.claim.mac, PodNetError(
                f"pod NIC {request.claim.pod_dev} of {request.pod.netns} is also claimed by "
                f"interface {seen[key]}; one pod NIC serves one domain NIC"))])  # fmt: skip
        seen[key] = request.claim.mac


@dataclass
class PodSide:
    """``binding.PodSide`` for one domain's claims, their pods held open: masqueraded NICs
    are built there, ``l2`` claims' pods only checked for other domains' guests."""

    domain: str
    uuid: str
    requests: Sequence[Request]
    paths: dict[str, str]
    netlink: PodNetlink
    vm_cidr: str
    state_dir: str
    proc_root: str
    host_ends: dict[str, int] = field(default_factory=dict)  # found by ``records``

    def records(self) -> list[GuestRecord]:
        return list(
            records_for(self.domain, self.uuid, self.requests, self.paths, self.netlink,
                        self.vm_cidr, self.state_dir, self.proc_root, self.host_ends)
        )  # fmt: skip

    def host_end(self, mac: str) -> int | None:
        """The ifindex of the host veth of the pod NIC a masqueraded claim resolved to."""
        return self.host_ends.get(mac)

    def connect(self, records: list[GuestRecord], save: Callable[[], None]) -> None:
        connect_all(self.domain, records, self.paths, self.netlink, save)

    def disconnect(self, records: Sequence[GuestRecord]) -> list[str]:
        return disconnect_all(records, self.netlink)
