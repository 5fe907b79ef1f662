"""Find a pod's network namespace from its selector, reading cgroups and /proc.

Cost grows with the pod: the pod's (or container's) own cgroup directory is found by
walking the cgroup tree, and only its ``cgroup.procs`` are read. A walk of every process
is the fallback for hosts whose cgroups are not mounted where ``self/mounts`` says.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vmnet_hook.annotation import Selector
from vmnet_hook.config import Config
from vmnet_hook.errors import PodNotFound

MAX_CGROUP_DEPTH = 12
_CONTAINER_DIR = re.compile(r"(?:cri-containerd-|crio-|docker-)?([0-9a-f]{64})(?:\.scope)?")


@dataclass(frozen=True)
class NetnsId:
    dev: int
    ino: int

    def __str__(self) -> str:
        return f"net:[{self.ino}]"


@dataclass(frozen=True)
class PodNetns:
    """A pod's network namespace: a path that opens it, and the processes seen in it."""

    path: str
    netns: NetnsId
    pids: tuple[int, ...]


class ProcFs:
    """The seam over ``proc_root``: every read of /proc and cgroupfs goes through here."""

    def __init__(self, proc_root: str) -> None:
        self.root = proc_root

    def netns_of(self, pid: int) -> NetnsId | None:
        try:
            info = os.stat(f"{self.root}/{pid}/ns/net")
        except OSError:
            return None
        return NetnsId(info.st_dev, info.st_ino)

    def host_netns(self) -> NetnsId:
        info = os.stat(f"{self.root}/self/ns/net")
        return NetnsId(info.st_dev, info.st_ino)

    def cgroup_mounts(self) -> list[str]:
        """cgroup2 mount points first, then cgroup v1 hierarchies."""
        v2: list[str] = []
        v1: list[str] = []
        with open(f"{self.root}/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[2] in ("cgroup2", "cgroup"):
                    point = fields[1].replace("\\040", " ")
                    (v2 if fields[2] == "cgroup2" else v1).append(point)
        return v2 + v1

    def pids(self) -> Iterator[int]:
        for entry in os.scandir(self.root):
            if entry.name.isdigit():
                yield int(entry.name)

    def cgroup_lines(self, pid: int) -> str:
        try:
            with open(f"{self.root}/{pid}/cgroup", encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return ""


def find_pod(selector: Selector, config: Config, proc: ProcFs) -> PodNetns:
    """The single non-host network namespace of the pod named by ``selector``."""
    if selector.kind == "netns":
        return _pinned_netns(config.netns_dir, selector.value, proc)
    if selector.kind == "pid":
        pids: list[int] = [int(selector.value)]
    elif selector.kind == "pod":
        pids = _pids_of_pod_uid(pod_uid_of(config.pod_log_dir, selector.value, proc), proc)
    elif selector.kind == "pod-uid":
        pids = _pids_of_pod_uid(selector.value, proc)
    else:
        pids = _pids_of_container(selector.value, proc)
    return one_pod_netns(str(selector), pids, proc)


def one_pod_netns(what: str, pids: list[int], proc: ProcFs) -> PodNetns:
    host = proc.host_netns()
    groups: dict[NetnsId, list[int]] = {}
    in_host = 0
    for pid in pids:
        netns = proc.netns_of(pid)
        if netns == host:
            in_host += 1
        elif netns is not None:
            groups.setdefault(netns, []).append(pid)
    if not groups:
        if in_host:
            raise PodNotFound(f"{what} uses the host network; only pods with their own netns")
        raise PodNotFound(f"{what}: no running process found; is the pod running on this host?")
    if len(groups) > 1:
        listed = "; ".join(f"{ns} (pids {_few(p)})" for ns, p in sorted(groups.items(), key=str))
        raise PodNotFound(f"{what} spans several network namespaces: {listed}; refused")
    ((netns, members),) = groups.items()
    return PodNetns(f"{proc.root}/{members[0]}/ns/net", netns, tuple(members))


def _pinned_netns(netns_dir: str, name: str, proc: ProcFs) -> PodNetns:
    path = f"{netns_dir}/{name}"
    try:
        info = os.lstat(path)
    except OSError:
        raise PodNotFound(f"netns={name}: no namespace {path} (see `ip netns list`)") from None
    nsfs = proc.host_netns().dev
    if not stat.S_ISREG(info.st_mode) or info.st_dev != nsfs:
        raise PodNotFound(f"netns={name}: {path} is not a pinned network namespace")
    netns = NetnsId(info.st_dev, info.st_ino)
    if netns == proc.host_netns():
        raise PodNotFound(f"netns={name} is the host's own network namespace; refused")
    return PodNetns(path, netns, ())


def pod_uid_of(pod_log_dir: str, pod: str, proc: ProcFs) -> str:
    """``NAMESPACE/NAME`` to UID through kubelet's ``<namespace>_<name>_<uid>`` log dirs."""
    namespace, name = pod.split("/", 1)
    prefix = f"{namespace}_{name}_"
    try:
        uids = sorted(
            e.name[len(prefix) :] for e in os.scandir(pod_log_dir) if e.name.startswith(prefix)
        )
    except OSError as error:
        raise PodNotFound(f"pod={pod}: cannot read {pod_log_dir}: {error.strerror}") from None
    if not uids:
        raise PodNotFound(f"pod={pod}: no such pod on this host (nothing in {pod_log_dir})")
    if len(uids) == 1:
        return uids[0]
    running = [uid for uid in uids if _pids_of_pod_uid_or_none(uid, proc)]
    if len(running) != 1:
        raise PodNotFound(
            f"pod={pod}: {len(running)} running pods of that name: {', '.join(uids)}"
        )
    return running[0]


def _pids_of_pod_uid(uid: str, proc: ProcFs) -> list[int]:
    pids = _pids_of_pod_uid_or_none(uid, proc)
    if pids is None:
        raise PodNotFound(f"pod-uid={uid}: no such pod on this host (no cgroup, no process)")
    return pids


def _pids_of_pod_uid_or_none(uid: str, proc: ProcFs) -> list[int] | None:
    markers = (f"pod{uid}", f"-pod{uid.replace('-', '_')}.slice")

    def is_pod_dir(name: str) -> bool:
        return name == markers[0] or name.endswith(markers[1])

    found = _pids_in_cgroups(proc, is_pod_dir)
    if found is None:
        found = _pids_by_walking_proc(proc, lambda text: any(m in text for m in markers))
    return found


def _pids_of_container(prefix: str, proc: ProcFs) -> list[int]:
    def container_id(name: str) -> str | None:
        match = _CONTAINER_DIR.fullmatch(name)
        return match.group(1) if match and match.group(1).startswith(prefix) else None

    found = _cgroup_dirs_with_procs(proc, lambda name: container_id(name) is not None)
    if found is None:
        raise PodNotFound(f"container={prefix}: no such container on this host")
    dirs, pids = found
    ids = sorted({container_id(os.path.basename(path)) or "" for path in dirs})
    if len(ids) > 1:
        raise PodNotFound(
            f"container={prefix} matches {len(ids)} containers: "
            f"{', '.join(i[:16] for i in ids)}; give more digits"
        )
    return pids


def _pids_in_cgroups(proc: ProcFs, matches: Callable[[str], bool]) -> list[int] | None:
    found = _cgroup_dirs_with_procs(proc, matches)
    return found[1] if found else None


def _cgroup_dirs_with_procs(
    proc: ProcFs, matches: Callable[[str], bool]
) -> tuple[list[str], list[int]] | None:
    """Matching directories and their processes, from the first hierarchy that has any."""
    for mount in proc.cgroup_mounts():
        dirs = list(_matching_dirs(mount, matches, 0))
        pids = [pid for path in dirs for pid in _procs_below(path)]
        if pids:
            return dirs, pids
    return None


def _matching_dirs(path: str, matches: Callable[[str], bool], depth: int) -> Iterator[str]:
    try:
        entries = [e for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in entries:
        if matches(entry.name):
            yield entry.path
        elif depth < MAX_CGROUP_DEPTH:
            yield from _matching_dirs(entry.path, matches, depth + 1)


def _procs_below(path: str) -> Iterator[int]:
    for directory, _subdirs, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                with open(f"{directory}/cgroup.procs", encoding="ascii") as procs:
                    yield from (int(line) for line in procs if line.strip())
            except OSError:
                continue


def _pids_by_walking_proc(proc: ProcFs, matches: Callable[[str], bool]) -> list[int] | None:
    pids = [pid for pid in proc.pids() if matches(proc.cgroup_lines(pid))]
    return pids or None


def _few(pids: list[int]) -> str:
    shown = ",".join(str(pid) for pid in pids[:5])
    return shown + (",..." if len(pids) > 5 else "")
