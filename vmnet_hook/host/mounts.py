"""The mounts table (``PROC/self/mounts``): where cgroup hierarchies are mounted.

A node has mounts by the thousand (each pinned netns, each pod volume): only the lines
with a cgroup type are split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

CGROUP_TYPES = (b"cgroup2", b"cgroup")
_ESCAPE = re.compile(r"\\([0-7]{3})")  # the kernel writes space, tab, newline, \ as \ooo


def cgroup_mounts(proc_root: str) -> list[tuple[str, str]]:
    """Each cgroup mount as ``(type, mount point)``, in the table's order; none when the
    table cannot be read."""
    found: list[tuple[str, str]] = []
    for line in _lines_with(read_all(f"{proc_root}/self/mounts"), b" cgroup"):
        fields = line.split()
        if len(fields) >= 3 and fields[2] in CGROUP_TYPES:
            point = _ESCAPE.sub(lambda m: chr(int(m[1], 8)), os.fsdecode(fields[1]))
            found.append((fields[2].decode(), point))
    return found


def read_all(path: str) -> bytes:
    """A /proc file whole, in as few reads as the kernel allows; empty when unreadable."""
    chunks: list[bytes] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return b""
    finally:
        os.close(fd)
    return b"".join(chunks)


def _lines_with(text: bytes, needle: bytes) -> Iterator[bytes]:
    """The lines of ``text`` that hold ``needle``, found without splitting the rest."""
    at = text.find(needle)
    while at != -1:
        begin = text.rfind(b"\n", 0, at) + 1
        end = text.find(b"\n", at)
        end = len(text) if end == -1 else end
        yield text[begin:end]
        at = text.find(needle, end)
