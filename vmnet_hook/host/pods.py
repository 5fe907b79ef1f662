"""Find a pod's network namespace from its selector, reading cgroups and /proc.

Cost grows with the pod, not with the host. kubelet's ``kubepods`` cgroups are found by a
walk of each cgroup hierarchy that never enters them; the pod's own directory is then
named directly from its UID (a few ``stat`` calls), and only its ``cgroup.procs`` files
are read. Every process on the host is read (one ``cgroup`` file each) only when no
hierarchy holds a ``kubepods`` cgroup, as in a private cgroup namespace.

Layouts, as kubelet and the runtimes make them::

    systemd driver   kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
                     kubepods.slice/kubepods-pod<uid_>.slice/          (guaranteed)
    cgroupfs driver  kubepods/burstable/pod<uid>/, kubepods/pod<uid>/  (guaranteed)
    containers       cri-containerd-<id>.scope, crio-<id>.scope, docker-<id>.scope, <id>
    CRI-O's conmon   crio-conmon-<id>.scope, in the pod's cgroup but the host's netns
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from vmnet_hook.config import Config
from vmnet_hook.core.annotation import Selector
from vmnet_hook.errors import PodNotFound
from vmnet_hook.host.kubelet import UID, normal_uid, uids_named
from vmnet_hook.host.procfs import NetnsId, ProcFs

MAX_ROOT_DEPTH = 8  # how far below a mount point kubelet's kubepods cgroup may sit
MAX_POD_DEPTH = 4  # cgroups below a pod's: its containers, and what a runtime nests in them
QOS_CLASSES = ("besteffort", "burstable")  # guaranteed pods sit right under kubepods

_POD_DIR = re.compile(rf"(?:[\w.-]*-)?pod({UID})(?:\.slice)?")
_QOS_DIR = re.compile(r"(?:[\w.-]*-)?(?:besteffort|burstable)(?:\.slice)?")
_CONTAINER_DIR = re.compile(r"(?:cri-containerd-|crio-|docker-)?([0-9a-f]{64})(?:\.scope)?")
_CONMON_DIR = re.compile(r"crio-conmon-[0-9a-f]{64}(?:\.scope)?")
_POD_IN_CGROUP = re.compile(rf"/(?:[\w.-]*-)?pod({UID})(?:\.slice)?(?=/|$)".encode(), re.M)
_CONTAINER_IN_CGROUP = re.compile(
    rb"/(?:cri-containerd-|crio-|docker-)?([0-9a-f]{64})(?:\.scope)?(?=/|$)", re.M
)
_CONMON_IN_CGROUP = b"/crio-conmon-"


@dataclass(frozen=True)
class PodNetns:
    """A pod's network namespace: a path that opens it, and the processes seen in it."""

    path: str
    netns: NetnsId
    pids: tuple[int, ...]


@dataclass(frozen=True)
class CgroupPlace:
    """What a process's ``/proc/PID/cgroup`` says of it."""

    pod_uid: str | None
    container_id: str | None
    conmon: bool  # CRI-O's monitor: in the pod's cgroup, never in the pod's netns


def place_of(cgroup_text: bytes) -> CgroupPlace:
    """The pod UID and container id named by a ``/proc/PID/cgroup`` text, if any."""
    pod = _POD_IN_CGROUP.search(cgroup_text)
    container = _CONTAINER_IN_CGROUP.search(cgroup_text)
    return CgroupPlace(
        pod_uid=normal_uid(pod[1].decode()) if pod else None,
        container_id=container[1].decode() if container else None,
        conmon=_CONMON_IN_CGROUP in cgroup_text,
    )


def find_pod(selector: Selector, config: Config, proc: ProcFs) -> PodNetns:
    """The single non-host network namespace of the pod named by ``selector``."""
    if selector.kind == "netns":
        return pinned_netns(config.netns_dir, selector.value, proc)
    if selector.kind == "pid":
        return _netns_of_pid(int(selector.value), proc)
    if selector.kind == "container":
        return one_pod_netns(str(selector), _pids_of_container(selector.value, proc), proc)
    if selector.kind == "pod":
        uid = pod_uid_of(config.pod_log_dir, selector.value, proc)
        return one_pod_netns(f"{selector} (uid {uid})", _pids_of_pod(uid, selector, proc), proc)
    return one_pod_netns(str(selector), _pids_of_pod(selector.value, selector, proc), proc)


def one_pod_netns(what: str, pids: list[int], proc: ProcFs) -> PodNetns:
    """Group ``pids`` by network namespace, drop the host's: exactly one must remain."""
    host = proc.host_netns()
    groups: dict[NetnsId, list[int]] = {}
    in_host = False
    for pid in sorted(pids):
        netns = proc.netns_of(pid)
        if netns == host:
            in_host = True
        elif netns is not None:
            groups.setdefault(netns, []).append(pid)
    if not groups:
        if in_host:
            raise PodNotFound(
                f"{what} uses the host network (its processes are in the host's network "
                "namespace); only a pod with its own network namespace has a NIC to give"
            )
        raise PodNotFound(f"{what}: no running process found; is the pod running on this host?")
    if len(groups) > 1:
        listed = "; ".join(f"{ns} (pids {_few(p)})" for ns, p in sorted(groups.items(), key=str))
        raise PodNotFound(
            f"{what} spans {len(groups)} network namespaces: {listed}; refused, not guessed"
        )
    ((netns, members),) = groups.items()
    return PodNetns(f"{proc.root}/{members[0]}/ns/net", netns, tuple(members))


def pod_uid_of(pod_log_dir: str, pod: str, proc: ProcFs) -> str:
    """``NAMESPACE/NAME`` to UID through kubelet's ``<namespace>_<name>_<uid>`` log dirs.

    Names cannot hold ``_``, so the prefix is exact. A name reused by a newer pod leaves
    several directories: the one pod with a running process is meant.
    """
    namespace, name = pod.split("/", 1)
    try:
        uids = uids_named(pod_log_dir, namespace, name)
    except OSError as error:
        raise PodNotFound(
            f"pod={pod}: cannot read pod_log_dir {pod_log_dir}: {error.strerror}"
        ) from None
    if not uids:
        raise PodNotFound(
            f"pod={pod}: no such pod on this host (no {namespace}_{name}_<uid> directory in "
            f"{pod_log_dir})"
        )
    if len(uids) == 1:
        return uids[0]
    running = [uid for uid in uids if _running_pids_of_pod(uid, proc)]
    if len(running) == 1:
        return running[0]
    if not running:
        raise PodNotFound(
            f"pod={pod}: no running process found for any of its uids {', '.join(uids)}; "
            "is the pod running on this host?"
        )
    raise PodNotFound(
        f"pod={pod}: {len(running)} running pods have that name (uids {', '.join(running)}); "
        "name one with pod-uid="
    )


@dataclass
class _Search:
    """What a cgroup search saw: kubepods roots, matching directories, their processes."""

    roots: list[str]
    dirs: list[str]
    pids: list[int]


def _pids_of_pod(uid: str, selector: Selector, proc: ProcFs) -> list[int]:
    what = f"{selector} (uid {uid})" if selector.kind == "pod" else str(selector)
    search = _search_cgroups(proc, lambda root: _pod_dirs_for(root, uid))
    if search.pids:
        return search.pids
    if not search.roots:
        pids = _pids_by_walking_proc(proc, _pod_matcher(uid)).get(uid, [])
        if pids:
            return pids
        raise PodNotFound(
            f"{what}: no such pod on this host (no kubepods cgroup in "
            f"{', '.join(proc.cgroup_mounts()) or 'any cgroup mount'}, and no process in one)"
        )
    if search.dirs:
        raise PodNotFound(
            f"{what}: no running process found (its cgroup {search.dirs[0]} is empty); "
            "is the pod running on this host?"
        )
    if selector.kind == "pod":
        raise PodNotFound(
            f"{what}: no running process found (kubelet's log directory is there, but no "
            "cgroup); is the pod running on this host?"
        )
    raise PodNotFound(
        f"{what}: no such pod on this host (no cgroup for it under {_few_paths(search.roots)})"
    )


def _running_pids_of_pod(uid: str, proc: ProcFs) -> list[int]:
    search = _search_cgroups(proc, lambda root: _pod_dirs_for(root, uid))
    if search.pids or search.roots:
        return search.pids
    return _pids_by_walking_proc(proc, _pod_matcher(uid)).get(uid, [])


def _pids_of_container(prefix: str, proc: ProcFs) -> list[int]:
    """Processes of the one container whose id starts with ``prefix``."""
    what = f"container={prefix}"
    roots: list[str] = []
    empty: list[str] = []
    for hierarchy_roots in _kubepods_roots(proc):
        roots += hierarchy_roots
        by_id = _container_dirs(proc, hierarchy_roots, prefix)
        _refuse_ambiguous(what, by_id)
        for dirs in by_id.values():
            pids = [pid for directory in dirs for pid in _procs_below(proc, directory)]
            if pids:
                return pids
            empty += dirs
    if empty:
        raise PodNotFound(
            f"{what}: no running process found (its cgroup {empty[0]} is empty); "
            "has the container exited?"
        )
    if roots:
        raise PodNotFound(f"{what}: no such container on this host")
    pids_by_id = _pids_by_walking_proc(proc, _container_matcher(prefix))
    _refuse_ambiguous(what, pids_by_id)
    if not pids_by_id:
        raise PodNotFound(f"{what}: no such container on this host")
    return next(iter(pids_by_id.values()))


def _refuse_ambiguous(what: str, ids: Collection[str]) -> None:
    if len(ids) > 1:
        raise PodNotFound(
            f"{what} matches {len(ids)} containers: {', '.join(sorted(ids))}; give more digits"
        )


def _container_dirs(proc: ProcFs, roots: list[str], prefix: str) -> dict[str, list[str]]:
    """Container cgroups whose id starts with ``prefix``: one listing per pod cgroup.

    Names alone decide (no ``stat``): cgroupfs's own files never hold 12 hex digits.
    """
    by_id: dict[str, list[str]] = {}
    for root in roots:
        for pod_dir in _all_pod_dirs(proc, root):
            for name in proc.names(pod_dir):
                if prefix in name:
                    match = _CONTAINER_DIR.fullmatch(name)
                    if match and match[1].startswith(prefix):
                        by_id.setdefault(match[1], []).append(f"{pod_dir}/{name}")
    return by_id


def _search_cgroups(proc: ProcFs, candidates: Callable[[str], list[str]]) -> _Search:
    """Hierarchy by hierarchy, the first whose matching directories hold processes."""
    seen = _Search([], [], [])
    for roots in _kubepods_roots(proc):
        seen.roots += roots
        dirs = [path for root in roots for path in candidates(root) if proc.is_cgroup(path)]
        pids = [pid for path in dirs for pid in _procs_below(proc, path)]
        if pids:
            return _Search(seen.roots, dirs, pids)
        seen.dirs += dirs
    return seen


def kubepods_cgroups(proc: ProcFs) -> list[str]:
    """kubelet's kubepods cgroups in every hierarchy, as a search for a pod finds them: where
    there are none, pods are found by walking /proc."""
    return [root for roots in _kubepods_roots(proc) for root in roots]


def pod_uids_in_proc(proc: ProcFs) -> set[str]:
    """The UIDs of the pods whose processes a walk of /proc finds (the fallback's view)."""

    def uid_of(text: bytes) -> str | None:
        place = place_of(text)
        return None if place.conmon else place.pod_uid

    return set(_pids_by_walking_proc(proc, uid_of))


def _kubepods_roots(proc: ProcFs) -> Iterator[list[str]]:
    """For each cgroup hierarchy in turn, the kubepods cgroups in it (often none)."""
    for mount in proc.cgroup_mounts():
        yield sorted(_find_kubepods(proc, mount, 0))


def _find_kubepods(proc: ProcFs, path: str, depth: int) -> Iterator[str]:
    for entry in proc.subdirs(path):
        if _is_kubepods(entry.name):
            yield entry.path
        elif depth < MAX_ROOT_DEPTH:
            yield from _find_kubepods(proc, entry.path, depth + 1)


def _is_kubepods(name: str) -> bool:
    # cgroupfs: kubepods; systemd: kubepods.slice, or <cgroup-root>-kubepods.slice
    return name in ("kubepods", "kubepods.slice") or name.endswith("-kubepods.slice")


def _pod_dirs_for(root: str, uid: str) -> list[str]:
    """Where kubelet puts the pod ``uid`` below ``root``, for each QoS class."""
    name = os.path.basename(root)
    if name.endswith(".slice"):
        base, under = name.removesuffix(".slice"), uid.replace("-", "_")
        return [f"{root}/{base}-pod{under}.slice"] + [
            f"{root}/{base}-{qos}.slice/{base}-{qos}-pod{under}.slice" for qos in QOS_CLASSES
        ]
    return [f"{root}/pod{uid}"] + [f"{root}/{qos}/pod{uid}" for qos in QOS_CLASSES]


def _all_pod_dirs(proc: ProcFs, root: str) -> Iterator[str]:
    for name in proc.names(root):
        if _POD_DIR.fullmatch(name):
            yield f"{root}/{name}"
        elif _QOS_DIR.fullmatch(name):
            qos = f"{root}/{name}"
            yield from (f"{qos}/{pod}" for pod in proc.names(qos) if _POD_DIR.fullmatch(pod))


def _procs_below(proc: ProcFs, path: str, depth: int = 0) -> Iterator[int]:
    """Processes in the cgroup ``path`` and below it, except CRI-O's conmon."""
    yield from proc.procs_in(path)
    if depth < MAX_POD_DEPTH:
        for entry in proc.subdirs(path):
            if not _CONMON_DIR.fullmatch(entry.name):
                yield from _procs_below(proc, entry.path, depth + 1)


def _pod_matcher(uid: str) -> Callable[[bytes], str | None]:
    markers = (f"pod{uid}".encode(), f"pod{uid.replace('-', '_')}".encode())

    def match(text: bytes) -> str | None:
        if not (markers[0] in text or markers[1] in text):
            return None
        place = place_of(text)
        return None if place.conmon else place.pod_uid

    return match


def _container_matcher(prefix: str) -> Callable[[bytes], str | None]:
    marker = prefix.encode()

    def match(text: bytes) -> str | None:
        if marker not in text:
            return None
        found = place_of(text).container_id
        return found if found and found.startswith(prefix) else None

    return match


def _pids_by_walking_proc(
    proc: ProcFs, key_of: Callable[[bytes], str | None]
) -> dict[str, list[int]]:
    """The fallback: every process's cgroup file, read once; pids by what ``key_of`` saw."""
    found: dict[str, list[int]] = {}
    for pid in proc.pids():
        key = key_of(proc.cgroup_of(pid))
        if key is not None:
            found.setdefault(key, []).append(pid)
    return found


def _netns_of_pid(pid: int, proc: ProcFs) -> PodNetns:
    netns = proc.netns_of(pid)
    if netns is None:
        raise PodNotFound(f"pid={pid}: no such process on this host")
    if netns == proc.host_netns():
        raise PodNotFound(
            f"pid={pid} uses the host network (the process is in the host's network "
            "namespace); only a pod with its own network namespace has a NIC to give"
        )
    return PodNetns(f"{proc.root}/{pid}/ns/net", netns, (pid,))


def pinned_netns(netns_dir: str, name: str, proc: ProcFs) -> PodNetns:
    """The namespace pinned as ``name`` (as `ip netns add` pins it), never the host's."""
    path = f"{netns_dir}/{name}"
    try:
        info = os.lstat(path)
    except OSError:
        raise PodNotFound(f"netns={name}: no namespace {path} (see `ip netns list`)") from None
    host = proc.host_netns()
    if not stat.S_ISREG(info.st_mode) or info.st_dev != host.dev:
        raise PodNotFound(f"netns={name}: {path} is not a pinned network namespace")
    netns = NetnsId.of(info)
    if netns == host:
        raise PodNotFound(f"netns={name} is the host's own network namespace; refused")
    return PodNetns(path, netns, ())


def _few(pids: list[int]) -> str:
    shown = ",".join(str(pid) for pid in pids[:5])
    return shown + (",..." if len(pids) > 5 else "")


def _few_paths(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
