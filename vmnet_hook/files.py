"""The one way the hook reads a small file it did not write just now: config, state,
pointers, pid files, the lock's holder. Standard library only (the gate uses it).

A FIFO would block, a device could act on open, a link could lead anywhere, and a file
can be of any size: so only regular files are read, never following a link unless asked
(a Kubernetes ConfigMap is a file behind symlinks), without blocking, and within a limit.
"""

from __future__ import annotations

import os
import stat

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class NotReadable(ValueError):
    """Not a regular file, or larger than allowed; ``str()`` says which."""


def read_regular(
    path: str, limit: int, *, follow: bool = False
) -> tuple[bytes, os.stat_result] | None:
    """At most ``limit`` bytes of the regular file at ``path`` and what fstat says of it;
    None when there is no such file. Raises NotReadable, or OSError as the kernel said."""
    try:
        if not follow:  # judge the name itself before opening anything
            _require_regular(os.lstat(path).st_mode)
        fd = os.open(path, OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW))
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        _require_regular(info.st_mode)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise NotReadable(f"larger than {limit} bytes")
        return b"".join(chunks), info
    finally:
        os.close(fd)


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotReadable(f"not a regular file but {kind(mode)}")


def kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "of an unknown kind")
