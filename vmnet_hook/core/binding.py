"""A domain's claims on pod NICs, made all or nothing under one host-wide lock: ``l2``
placeholders bound as altnames of host veths, ``masquerade`` NICs built in their pods
(through a ``PodSide``); and undone from the record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from vmnet_hook.core.annotation import Domain
from vmnet_hook.errors import (
    BindError,
    Failures,
    InterfaceError,
    LinkRefused,
    StateError,
    VmnetError,
)
from vmnet_hook.host.netlink import Netlink, NetlinkSession
from vmnet_hook.host.procfs import NetnsId
from vmnet_hook.host.resolve import HostVeth, already_carries, guests_on
from vmnet_hook.host.state import Binding, DomainState, StateStore
from vmnet_hook.podnet.record import GuestRecord, Note


class PodSide(Protocol):
    """The masqueraded NICs of one domain (``vmnet_hook.podnet.attach``)."""

    def records(self) -> list[GuestRecord]: ...  # read the pods and plan; nothing made
    def connect(self, records: list[GuestRecord], save: Callable[[], None]) -> None: ...
    def disconnect(self, records: Sequence[GuestRecord]) -> list[str]: ...
    def host_end(self, mac: str) -> int | None: ...  # the host veth of a claim's pod NIC


def plan(
    domain: Domain, veths: dict[str, HostVeth], pods: Mapping[str, NetnsId] | None = None
) -> tuple[Binding, ...]:
    """Each ``l2`` claim's binding. One whose ``<source dev>`` already names the veth (after
    a migrate or restore) adds no altname, but is recorded all the same: the domain holds
    that pod NIC. ``pods`` gives the other claims' pod namespaces (by MAC): no two NICs of
    the domain may claim one pod NIC, in whatever mode and by whatever selector."""
    problems: list[VmnetError] = [
        InterfaceError(domain.name, claim.mac, LinkRefused(
            f"host veth {veths[claim.mac].name} is a port of bridge {veths[claim.mac].bridge}, "
            "where the kernel refuses a macvtap; use network='masquerade' (the default)"))
        for claim in domain.claims
        if claim.mac in veths and veths[claim.mac].bridge is not None
    ]  # fmt: skip
    problems += _one_nic_twice(domain, veths, pods or {})
    if problems:
        raise Failures(problems)
    return tuple(
        Binding(
            claim.mac,
            claim.placeholder,
            veths[claim.mac].name,
            veths[claim.mac].index,
            str(veths[claim.mac].pod_netns),
            veths[claim.mac].pod_dev,
        )
        for claim in domain.claims
        if claim.mac in veths
    )


def _one_nic_twice(
    domain: Domain, veths: dict[str, HostVeth], pods: Mapping[str, NetnsId]
) -> list[VmnetError]:
    """Claims that resolved to a pod NIC an earlier claim of the domain resolved to: the
    same namespace and NIC name, or (``l2``) the same host veth."""
    seen: dict[object, str] = {}
    problems: list[VmnetError] = []
    for claim in domain.claims:
        if claim.mac in veths:
            veth = veths[claim.mac]
            keys: tuple[object, ...] = ((str(veth.pod_netns), veth.pod_dev), veth.index)
            nic = f"{veth.pod_dev} of {veth.pod_netns} (host veth {veth.name})"
        elif claim.mac in pods:
            keys = ((str(pods[claim.mac]), claim.pod_dev),)
            nic = f"{claim.pod_dev} of {pods[claim.mac]}"
        else:
            continue
        earlier = next((seen[key] for key in keys if key in seen), None)
        if earlier is not None:
            problems.append(InterfaceError(domain.name, claim.mac, LinkRefused(
                f"pod NIC {nic} is also claimed by interface {earlier}; "
                "one pod NIC serves one domain NIC")))  # fmt: skip
        seen.update(dict.fromkeys(keys, claim.mac))
    return problems


def needs_altname(binding: Binding) -> bool:
    return binding.placeholder != binding.host_veth


def bind_all(
    domain: Domain,
    bindings: tuple[Binding, ...],
    netlink: Netlink,
    store: StateStore,
    pod_side: PodSide | None = None,
) -> list[str]:
    """Check every claim, record the intent, then bind and build; undo all on failure.
    What was cleaned on the way (this domain's own leftovers), one line each."""
    if not bindings and pod_side is None:
        return []
    with store.lock(), netlink.host() as host:
        to_bind, records, cleaned = _checked(domain, bindings, host, store, pod_side)

        def save() -> None:
            store.save(domain.uuid, DomainState(domain.name, bindings, tuple(records)))

        save()  # intent first: a kill -9 from here on is undone by release or the next prepare
        try:
            for binding in to_bind:
                host.add_altname(binding.ifindex, binding.placeholder)
            if pod_side is not None:
                pod_side.connect(records, save)
        except BaseException:
            # Every binding, not only those whose call returned: the kernel may have added
            # the last one. None of these names existed before, or they were this domain's
            # own leftovers (adopted), so what is there is ours.
            problems = unbind(host, bindings)
            problems += pod_side.disconnect(records) if pod_side else []
            if not failed(problems):
                store.remove(domain.uuid)
            raise
    return cleaned


def _checked(
    domain: Domain,
    bindings: tuple[Binding, ...],
    host: NetlinkSession,
    store: StateStore,
    pod_side: PodSide | None,
) -> tuple[tuple[Binding, ...], list[GuestRecord], list[str]]:
    """Under the lock: refuse pod NICs that state or the kernel shows in use, and taken
    placeholders; read the pods and plan. The altnames still to add, the records, and
    what of this domain's own was cleaned."""
    _refuse_shared_nics(domain, bindings, [], store)
    _refuse_carried_veths(domain.name, bindings, host)
    records = pod_side.records() if pod_side else []
    if records:
        _refuse_shared_nics(domain, (), records, store)
    adopted = _adoptable(domain, bindings, host, store)
    to_bind = tuple(b for b in bindings if needs_altname(b) and b not in adopted)
    cleaned = _drop_own_altnames(domain, records, host, store, pod_side) if records else []
    _refuse_taken_placeholders(
        domain.name,
        [(b.mac, b.placeholder) for b in to_bind]
        + [(r.nic.mac, r.nic.placeholder) for r in records],
        host,
    )
    return to_bind, records, cleaned


def unbind(host: NetlinkSession, bindings: tuple[Binding, ...] | list[Binding]) -> list[str]:
    """Remove the altnames that are still ours; what is already gone is fine."""
    problems: list[str] = []
    for binding in bindings:
        link = host.link_by_name(binding.placeholder)
        ours = (
            link is not None
            and link.index == binding.ifindex
            and binding.placeholder in link.altnames
        )
        if not ours:
            continue
        try:
            host.del_altname(binding.ifindex, binding.placeholder)
        except BindError as error:
            problems.append(str(error))
    return problems


def release(
    uuid: str,
    netlink: Netlink,
    store: StateStore,
    disconnect: Callable[[Sequence[GuestRecord]], list[str]] | None = None,
) -> list[str]:
    """Undo what the state of ``uuid`` records, and only what is provably its own. The
    record stays while a piece in a pod could not be undone, so that the next release or
    prepare tries again; what is left alone as another's (a ``Note``) does not keep it."""
    state = store.load(uuid)
    if state is None:
        store.sweep(uuid)  # a save killed before its first rename left its temporary
        return []
    problems = _unbind_own(uuid, state.bindings, netlink, store) if state.bindings else []
    own = [r for r in state.guests if r.nic.domain_uuid == uuid]
    problems += [Note(
        f"guest {r.nic.mac}: its record names domain {r.nic.domain_uuid}, not {uuid}: "
        "nothing of it undone") for r in state.guests if r not in own]  # fmt: skip
    if own:
        if disconnect is None:
            raise VmnetError(
                f"domain {state.domain!r} has pod-side pieces and no way to undo them"
            )
        undone = disconnect(own)
        problems += undone
        if failed(undone):
            return problems
    store.remove(uuid)
    return problems


def failed(problems: Iterable[str]) -> list[str]:
    """The problems that are failures to undo, not pieces left alone as another's."""
    return [problem for problem in problems if not isinstance(problem, Note)]


def _unbind_own(
    uuid: str, bindings: tuple[Binding, ...], netlink: Netlink, store: StateStore
) -> list[str]:
    shared = _recorded_by_others(uuid, bindings, store)
    with netlink.host() as host:
        problems = unbind(host, [b for b in bindings if b not in shared])
    return problems + [Note(
        f"altname {b.placeholder} of host veth {b.host_veth} (ifindex {b.ifindex}) is also "
        f"recorded by domain {who!r}: left in place (two records of one NIC come from a "
        "fault; `vmnet-hook status` lists both)") for b, who in shared.items()]  # fmt: skip


def _recorded_by_others(
    uuid: str, bindings: tuple[Binding, ...], store: StateStore
) -> dict[Binding, str]:
    """Bindings whose altname another readable state records on the same link: only a
    fault makes two records of one NIC, and release must not take it from the other."""
    held = {
        (b.placeholder, b.ifindex): state.domain
        for other, state in store.scan().states.items()
        if other != uuid
        for b in state.bindings
    }
    return {
        b: held[(b.placeholder, b.ifindex)]
        for b in bindings
        if (b.placeholder, b.ifindex) in held
    }  # fmt: skip


def _refuse_carried_veths(
    domain: str, bindings: tuple[Binding, ...], host: NetlinkSession
) -> None:
    """The kernel knows who uses a host veth, whatever state says: a macvtap (or macvlan)
    on it is another guest's, a domain's without the annotation, or a leftover. At prepare
    libvirt has not made this domain's own macvtap yet, so whatever is there is not ours."""
    if not bindings:
        return
    links = host.links()
    problems: list[VmnetError] = [
        InterfaceError(domain, b.mac, already_carries(b.host_veth, guests))
        for b in bindings
        if (guests := guests_on(links, b.ifindex))
    ]
    if problems:
        raise Failures(problems)


def _adoptable(
    domain: Domain, bindings: tuple[Binding, ...], host: NetlinkSession, store: StateStore
) -> set[Binding]:
    """This domain's own leftovers (its state lost): the placeholder already an altname of
    exactly the host veth the claim resolves to, and no other domain recording it."""
    found = {
        b for b in bindings
        if needs_altname(b)
        and (link := host.link_by_name(b.placeholder)) is not None
        and link.index == b.ifindex
        and b.placeholder in link.altnames
    }  # fmt: skip
    if not found:
        return found
    scan = store.scan()
    if scan.unreadable:  # it may record this very name: not adopted (and so refused)
        return set()
    others = {
        (held.placeholder, held.ifindex)
        for uuid, state in scan.states.items()
        if uuid != domain.uuid
        for held in state.bindings
    }
    return {
        b for b in found
        if not any(b.placeholder == name or b.ifindex == index for name, index in others)
    }  # fmt: skip


def _drop_own_altnames(
    domain: Domain,
    records: list[GuestRecord],
    host: NetlinkSession,
    store: StateStore,
    pod_side: PodSide | None,
) -> list[str]:
    """A masqueraded claim's placeholder left as an altname (an ``l2`` binding whose state
    was lost) on exactly the host veth of the pod NIC the claim now resolves to, and no
    readable state recording it, is this domain's own leftover: removed, and said."""
    scan = store.scan()
    if scan.unreadable or pod_side is None:
        return []  # it may record this very name: left, and so refused
    recorded = {b.placeholder for state in scan.states.values() for b in state.bindings}
    said = []
    for record in records:
        name, host_end = record.nic.placeholder, pod_side.host_end(record.nic.mac)
        link = host.link_by_name(name)
        if (
            link is None or host_end is None or link.index != host_end
            or name not in link.altnames or name in recorded
        ):  # fmt: skip
            continue
        host.del_altname(link.index, name)
        said.append(f"{domain.name} {record.nic.mac}: removed {name}, an altname of host "
                    f"veth {link.name} (ifindex {link.index}) that no state records: "
                    "this domain's own leftover")  # fmt: skip
    return said


def _refuse_taken_placeholders(
    domain: str, placeholders: Iterable[tuple[str, str]], host: NetlinkSession
) -> None:
    problems: list[VmnetError] = []
    for mac, placeholder in placeholders:
        link = host.link_by_name(placeholder)
        if link is not None:
            cause = BindError(
                f"placeholder <source dev='{placeholder}'> is already a name of host "
                f"link {link.name} (ifindex {link.index}); choose a name no link has"
            )
            problems.append(InterfaceError(domain, mac, cause))
    if problems:
        raise Failures(problems)


def _refuse_shared_nics(
    domain: Domain, bindings: tuple[Binding, ...], records: list[GuestRecord], store: StateStore
) -> None:
    """One domain per pod NIC, whatever the modes: by host veth (l2) and by the pod's
    namespace and NIC name (both modes). A state file that cannot be read may hold any
    of them: nothing is claimed while one is there (claims fail closed). Records in the
    other state dirs a domain's state may be in count too."""
    scan = store.claims()
    if scan.unreadable:
        raise Failures([
            StateError(f"domain {domain.name!r}: cannot tell who holds its pod NICs: {error}")
            for error in scan.unreadable
        ])  # fmt: skip
    veths: dict[int, str] = {}
    pod_nics: dict[tuple[str, str], str] = {}
    for uuid, state in scan.states.items():
        if uuid != domain.uuid:
            veths.update({b.ifindex: state.domain for b in state.bindings})
            pod_nics.update({_pod_nic(b): state.domain for b in state.bindings})
            pod_nics.update({_pod_nic(r): state.domain for r in state.guests})
    pod_nics.pop(("", ""), None)  # bindings written before pod NICs were recorded
    wanted = [(b.mac, b.host_veth, veths.get(b.ifindex) or pod_nics.get(_pod_nic(b)))
              for b in bindings]  # fmt: skip
    wanted += [(r.nic.mac, r.nic.pod_dev, pod_nics.get(_pod_nic(r))) for r in records]
    problems: list[VmnetError] = [
        InterfaceError(domain.name, mac, BindError(
            f"pod NIC {nic} is already used by running domain {holder!r}"))
        for mac, nic, holder in wanted
        if holder is not None
    ]  # fmt: skip
    if problems:
        raise Failures(problems)


def _pod_nic(held: Binding | GuestRecord) -> tuple[str, str]:
    if isinstance(held, Binding):
        return (held.pod_netns, held.pod_dev) if held.pod_netns else ("", "")
    return (f"net:[{held.netns_ino}]", held.nic.pod_dev)
