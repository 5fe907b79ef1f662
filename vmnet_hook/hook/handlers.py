"""The hook's work, one small handler per libvirt operation, in one dispatch table.

Reached only through ``vmnet_hook.hook.gate`` once it has decided there is work to do.
Which handler serves which ``(operation, subop)`` is ``hook.operations``' table.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

from lxml import etree

from vmnet_hook.config import Config
from vmnet_hook.core import binding
from vmnet_hook.core.annotation import Claim, Domain, parse_domain, parse_xml
from vmnet_hook.core.rewrite import rewrite, to_text
from vmnet_hook.errors import AnnotationError, Failures, InterfaceError, StateError, VmnetError
from vmnet_hook.hook import gate, place
from vmnet_hook.hook.operations import OPERATIONS
from vmnet_hook.host.log import Log
from vmnet_hook.host.netlink import Netlink, PodNetlink, Pyroute2Netlink
from vmnet_hook.host.procfs import ProcFs
from vmnet_hook.host.resolve import HostVeth, Resolver
from vmnet_hook.host.state import DomainState, StateStore
from vmnet_hook.podnet import attach, health
from vmnet_hook.podnet.record import GuestRecord


@dataclass(frozen=True)
class HookCall:
    domain: str
    operation: str
    subop: str
    xml: bytes
    config: Config


@dataclass
class System:
    """Everything with side effects, passed in so tests can choose real or fake."""

    config: Config
    netlink: Netlink = field(default_factory=Pyroute2Netlink)
    pod_netlink: PodNetlink = field(default_factory=Pyroute2Netlink)  # masquerade's pod side
    log: Callable[[str, str], None] = field(default_factory=lambda: Log())

    @property
    def store(self) -> StateStore:
        state_dir = self.config.state_dir
        return StateStore(state_dir, lambda: place.other_state_dirs(state_dir))

    @property
    def resolver(self) -> Resolver:
        return Resolver(self.config, self.netlink, ProcFs(self.config.proc_root))


def prepare(call: HookCall, system: System) -> str:
    tree, domain = _parse(call)
    if not domain.claims:
        return ""
    pointed = place.needs_pointer(system.config.state_dir)
    if pointed:  # before anything is bound: release end must find the state without config
        place.write_pointer(domain.uuid, system.config.state_dir)
    try:
        return _prepare(call, system, tree, domain)
    except BaseException:
        if pointed and not os.path.exists(system.store.path(domain.uuid)):
            with contextlib.suppress(StateError):  # the failure to report is the one above
                place.remove_pointer(domain.uuid)
        raise


def _prepare(call: HookCall, system: System, tree: etree._ElementTree, domain: Domain) -> str:
    leftovers = binding.release(domain.uuid, system.netlink, system.store, _disconnect(system))
    for problem in leftovers:
        system.log("warning", f"{domain.name}: leftover binding: {problem}")
    if failed := binding.failed(leftovers):  # the record stays; a new one would forget it
        raise Failures(
            [
                VmnetError(
                    f"what this domain's last run left cannot be undone, so it "
                    f"does not start: {problem}"
                )
                for problem in failed
            ]
        )
    veths, requests = resolve_all(domain, system.resolver, system.log)
    bindings = binding.plan(domain, veths, {r.claim.mac: r.pod.netns for r in requests})
    with attach.opened(requests) as paths:
        pod_side = attach.PodSide(domain.name, domain.uuid, requests, paths, system.pod_netlink,
                                  system.config.vm_cidr, system.config.state_dir,
                                  system.config.proc_root) if requests else None  # fmt: skip
        cleaned = binding.bind_all(domain, bindings, system.netlink, system.store, pod_side)
    for line in cleaned:
        system.log("warning", f"leftover: {line}")
    bound = {b.mac for b in bindings if binding.needs_altname(b)}
    for claim in domain.claims:
        if claim.network == "masquerade":
            result, where = "pod side built", claim.placeholder
        else:
            result = f"bound {claim.placeholder}" if claim.mac in bound else "already named"
            where = veths[claim.mac].name
        _decision(system, call, claim, where, result)
    return to_text(rewrite(tree, domain.claims, source_dev(veths)))


def filter_xml(call: HookCall, system: System) -> str:
    """migrate/restore begin: libvirt starts the domain with the XML printed here. A
    masqueraded NIC keeps its placeholder: the prepare that follows builds its pod side."""
    tree, domain = _parse(call)
    if not domain.claims:
        return ""
    veths, _requests = resolve_all(domain, system.resolver, system.log)
    for claim in domain.claims:
        where = veths[claim.mac].name if claim.mac in veths else claim.placeholder
        _decision(system, call, claim, where, "rewritten")
    return to_text(rewrite(tree, domain.claims, source_dev(veths)))


def release(call: HookCall, system: System) -> str:
    uuid = _uuid_of(call)
    problems = binding.release(uuid, system.netlink, system.store, _disconnect(system))
    for problem in problems:
        system.log("warning", f"release {call.domain}: {problem}")
    if not os.path.exists(system.store.path(uuid)):  # all undone: its pointer goes too
        place.forget_pointer(uuid, system.store.state_dir)
    if not problems:
        system.log("info", f"release {call.domain}: bindings and pod-side pieces removed")
    return ""


def deliver(call: HookCall, text: str, out: TextIO | None) -> list[str]:
    """Print what the handler returned; [] when printed, else one line saying why not. A
    prepare that bound and cannot print its XML undoes the binding first."""
    if not text:
        return []
    try:
        if out is None:
            raise OSError("stdout is closed")
        out.write(text)
        out.flush()
        return []
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    if out is sys.stdout:  # what is still buffered goes nowhere, not into an error at exit
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    line = f"domain {call.domain!r}: cannot write the domain XML to stdout ({reason})"
    if call.operation != "prepare":
        return [line]
    run(replace(call, operation="release", subop="end"))
    return [f"{line}; what this prepare bound is undone"]


def source_dev(veths: dict[str, HostVeth]) -> Callable[[Claim], str]:
    """``l2``: the host veth; ``masquerade``: the guest's own link, named by the placeholder."""
    return lambda claim: veths[claim.mac].name if claim.mac in veths else claim.placeholder


def _disconnect(system: System) -> Callable[[Sequence[GuestRecord]], list[str]]:
    return lambda records: attach.disconnect_all(records, system.pod_netlink)


def check(call: HookCall, system: System) -> str:
    """reconnect/attach begin must never fail: libvirt would kill the running VM. Check
    every binding and pod side; start a masqueraded NIC's DHCP server again if it is gone
    (the guest may reboot, and no hook runs then); leave healthy pieces alone."""
    try:
        uuid = _uuid_of(call)
        state = system.store.load(uuid)
        if state is None:
            return ""
        _check_bindings(call, system, state)
        if state.guests:
            _repair_guests(call, system, uuid)
    except VmnetError as error:
        system.log("warning", f"{call.operation} {call.domain}: {error}")
    return ""


def _check_bindings(call: HookCall, system: System, state: DomainState) -> None:
    with system.netlink.host() as host:
        for bound in state.bindings:
            link = host.link_by_name(bound.placeholder)
            if link is None or link.index != bound.ifindex:
                system.log(
                    "warning",
                    f"{call.operation} {call.domain} {bound.mac}: "
                    f"{bound.placeholder} no longer names {bound.host_veth}",
                )


def _repair_guests(call: HookCall, system: System, uuid: str) -> None:
    with system.store.lock():
        state = system.store.load(uuid)  # again, under the lock: a release may have run
        if state is None:
            return
        guests = []
        for record in state.guests:
            mended, said = health.repair(record, system.pod_netlink)
            guests.append(mended)
            for line in said:
                system.log("warning", f"{call.operation} {call.domain} {record.nic.mac}: {line}")
        if tuple(guests) != state.guests:
            system.store.save(uuid, replace(state, guests=tuple(guests)))


Handler = Callable[[HookCall, System], str]
HANDLERS_BY_NAME: dict[str, Handler] = {
    "prepare": prepare,
    "filter_xml": filter_xml,
    "release": release,
    "check": check,
}
# The table itself is hook.operations', which the gate reads too.
HANDLERS: dict[tuple[str, str], Handler] = {
    step: HANDLERS_BY_NAME[operation.handler] for step, operation in OPERATIONS.items()
}


def run(call: HookCall, system: System | None = None) -> str:
    """Run the handler for ``call``; what it returns goes to stdout. Unknown steps do nothing."""
    handler = HANDLERS.get((call.operation, call.subop))
    if handler is None:
        return ""
    return handler(call, system or System(call.config, log=Log(call.config.log_level)))


def resolve_all(
    domain: Domain, resolver: Resolver, log: Callable[[str, str], None] = lambda _l, _m: None
) -> tuple[dict[str, HostVeth], list[attach.Request]]:
    """Each ``l2`` claim's host veth, and each claim's pod (where ``masquerade`` builds and
    ``l2`` checks that no other domain's guest sits), or one error line per interface
    that failed."""
    veths: dict[str, HostVeth] = {}
    requests: list[attach.Request] = []
    problems: list[VmnetError] = []
    for claim in domain.claims:
        log("debug", f"{domain.name} {claim.mac}: resolving {claim.selector} dev {claim.pod_dev}")
        try:
            if claim.network == "masquerade":
                requests.append(attach.Request(claim, resolver.pod(claim.selector)))
                log("debug", f"{domain.name} {claim.mac}: pod {requests[-1].pod.netns}")
                continue
            found = veths[claim.mac] = resolver.host_veth(claim.selector, claim.pod_dev)
            requests.append(attach.l2_request(claim, found))  # its pod is checked too
            log(
                "debug",
                f"{domain.name} {claim.mac}: pod {found.pod_netns}, host veth "
                f"{found.name} (ifindex {found.index}), both ends checked",
            )
        except VmnetError as error:
            problems.append(InterfaceError(domain.name, claim.mac, error))
    if problems:
        raise Failures(problems)
    return veths, requests


def _decision(system: System, call: HookCall, claim: Claim, source_dev: str, result: str) -> None:
    system.log(
        "info",
        f"{call.operation} domain={call.domain} mac={claim.mac} network={claim.network} "
        f"pod={claim.selector} dev={claim.pod_dev} source_dev={source_dev}: {result}",
    )


def _parse(call: HookCall) -> tuple[etree._ElementTree, Domain]:
    tree = parse_xml(call.xml)
    return tree, parse_domain(tree, call.domain)


def _uuid_of(call: HookCall) -> str:
    """The domain's own UUID, found as the gate finds it: whatever else the XML holds
    (any size, other tools' metadata), release needs nothing more."""
    uuid = gate.domain_uuid(call.xml)
    if uuid is None:
        raise AnnotationError(f"domain {call.domain!r}: the domain XML has no <uuid> of its own")
    return uuid
