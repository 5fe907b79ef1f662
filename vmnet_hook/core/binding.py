"""Bind placeholders as altnames of host veths, and undo it; all or nothing."""

from __future__ import annotations

from vmnet_hook.core.annotation import Domain
from vmnet_hook.errors import BindError, Failures, InterfaceError, VmnetError
from vmnet_hook.host.netlink import Netlink, NetlinkSession
from vmnet_hook.host.resolve import HostVeth
from vmnet_hook.host.state import Binding, DomainState, StateStore


def plan(domain: Domain, veths: dict[str, HostVeth]) -> tuple[Binding, ...]:
    """Each claim's binding. One whose ``<source dev>`` already names the veth (after a
    migrate or restore) adds no altname, but is recorded all the same: the domain holds
    that pod NIC."""
    return tuple(
        Binding(claim.mac, claim.placeholder, veths[claim.mac].name, veths[claim.mac].index)
        for claim in domain.claims
    )


def needs_altname(binding: Binding) -> bool:
    return binding.placeholder != binding.host_veth


def bind_all(
    domain: Domain, bindings: tuple[Binding, ...], netlink: Netlink, store: StateStore
) -> None:
    """Check every placeholder, record the intent, then bind; undo everything on failure."""
    if not bindings:
        return
    with store.lock(), netlink.host() as host:
        to_bind = tuple(filter(needs_altname, bindings))
        _refuse_shared_nics(domain, bindings, store)
        _refuse_taken_placeholders(domain.name, to_bind, host)
        # Intent first: a kill -9 from here on is undone by release or the next prepare.
        store.save(domain.uuid, DomainState(domain.name, bindings))
        try:
            for binding in to_bind:
                host.add_altname(binding.ifindex, binding.placeholder)
        except BaseException:
            # Every binding, not only those whose call returned: the kernel may have added
            # the last one. None of these names existed before, so what is there is ours.
            if not unbind(host, bindings):
                store.remove(domain.uuid)
            raise


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


def release(uuid: str, netlink: Netlink, store: StateStore) -> list[str]:
    state = store.load(uuid)
    if state is None:
        return []
    problems: list[str] = []
    if state.bindings:
        with netlink.host() as host:
            problems = unbind(host, state.bindings)
    store.remove(uuid)
    return problems


def _refuse_taken_placeholders(
    domain: str, bindings: tuple[Binding, ...], host: NetlinkSession
) -> None:
    problems: list[VmnetError] = []
    for binding in bindings:
        link = host.link_by_name(binding.placeholder)
        if link is not None:
            cause = BindError(
                f"placeholder <source dev='{binding.placeholder}'> is already a name of host "
                f"link {link.name} (ifindex {link.index}); choose a name no link has"
            )
            problems.append(InterfaceError(domain, binding.mac, cause))
    if problems:
        raise Failures(problems)


def _refuse_shared_nics(domain: Domain, bindings: tuple[Binding, ...], store: StateStore) -> None:
    taken = {
        b.ifindex: state.domain
        for uuid, state in store.all().items()
        if uuid != domain.uuid
        for b in state.bindings
    }
    problems: list[VmnetError] = [
        InterfaceError(
            domain.name,
            b.mac,
            BindError(
                f"pod NIC {b.host_veth} is already used by running domain {taken[b.ifindex]!r}"
            ),
        )
        for b in bindings
        if b.ifindex in taken
    ]
    if problems:
        raise Failures(problems)
