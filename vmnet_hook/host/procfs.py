"""The seam over ``proc_root`` and the cgroup trees: every read of /proc, and of the
cgroup directories its ``self/mounts`` names, goes through ``ProcFs``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from vmnet_hook.errors import ConfigError
from vmnet_hook.host.mounts import cgroup_mounts


@dataclass(frozen=True)
class NetnsId:
    """A network namespace, as the device and inode of its ``ns/net`` file."""

    dev: int
    ino: int

    @classmethod
    def of(cls, info: os.stat_result) -> NetnsId:
        return cls(info.st_dev, info.st_ino)

    def __str__(self) -> str:
        return f"net:[{self.ino}]"


class ProcFs:
    def __init__(self, proc_root: str) -> None:
        self.root = proc_root

    def netns_of(self, pid: int) -> NetnsId | None:
        try:
            info = os.stat(f"{self.root}/{pid}/ns/net")
        except OSError:
            return None
        return NetnsId.of(info)

    def host_netns(self) -> NetnsId:
        try:
            info = os.stat(f"{self.root}/self/ns/net")
        except OSError as error:
            raise self.unreadable(f"{self.root}/self/ns/net", error) from None
        return NetnsId.of(info)

    def unreadable(self, path: str, error: OSError) -> ConfigError:
        """The one line for a proc_root that is not a readable proc."""
        return ConfigError(
            f"config key proc_root: cannot read {path} ({error.strerror or error}): set "
            "proc_root to where the host's proc is mounted (/proc)"
        )

    def cgroup_mounts(self) -> list[str]:
        """Each hierarchy once: cgroup2 first, then the cgroup v1 hierarchies."""
        mounts = cgroup_mounts(self.root)
        v2 = [point for kind, point in mounts if kind == "cgroup2"]
        return _one_per_hierarchy(v2 + [point for kind, point in mounts if kind == "cgroup"])

    def pids(self) -> Iterator[int]:
        try:
            with os.scandir(self.root) as entries:
                names = [entry.name for entry in entries]
        except OSError as error:
            raise self.unreadable(self.root, error) from None
        yield from (int(name) for name in names if name.isdigit())

    def cgroup_of(self, pid: int) -> bytes:
        """``/proc/PID/cgroup`` in one read; empty when the process is gone."""
        try:
            fd = os.open(f"{self.root}/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return b""
        try:
            return os.read(fd, 65536)
        except OSError:
            return b""
        finally:
            os.close(fd)

    # --- cgroup directories, below the mount points cgroup_mounts gives ----------------

    @staticmethod
    def names(cgroup_dir: str) -> list[str]:
        """What a cgroup directory holds (its files too); empty when it is gone."""
        try:
            return os.listdir(cgroup_dir)
        except OSError:
            return []

    @staticmethod
    def subdirs(cgroup_dir: str) -> list[os.DirEntry[str]]:
        """The cgroups directly below ``cgroup_dir``; empty when it is gone."""
        try:
            with os.scandir(cgroup_dir) as entries:
                return [entry for entry in entries if entry.is_dir(follow_symlinks=False)]
        except OSError:
            return []

    @staticmethod
    def is_cgroup(path: str) -> bool:
        return os.path.isdir(path)

    @staticmethod
    def procs_in(cgroup_dir: str) -> list[int]:
        """The processes in one cgroup, not below it."""
        try:
            with open(f"{cgroup_dir}/cgroup.procs", "rb") as procs:
                return [int(line) for line in procs.read().split()]
        except OSError:  # gone, or a threaded cgroup
            return []


def _one_per_hierarchy(points: list[str]) -> list[str]:
    """Mount points, dropping second mounts of a directory already listed."""
    seen: set[tuple[int, int]] = set()
    kept: list[str] = []
    for point in points:
        try:
            info = os.stat(point)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            kept.append(point)
    return kept
