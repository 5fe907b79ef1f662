"""The one way the hook reads a small file it did not write just now (config, state,
pointers, pid files, the lock's holder), and the one way it writes one whole or not at
all. Standard library only (the gate uses it).

A FIFO would block, a device could act on open, a link could lead anywhere, and a file
can be of any size: so only regular files are read, never following a link unless asked
(a Kubernetes ConfigMap is a file behind symlinks), without blocking, and within a limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from vmnet_hook import temporary_of

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class NotReadable(ValueError):
    """Not a regular file, or larger than allowed; ``str()`` says which."""


def read_regular(
    path: str, limit: int, *, follow: bool = False, dir_fd: int | None = None
) -> tuple[bytes, os.stat_result] | None:
    """At most ``limit`` bytes of the regular file at ``path`` (relative to ``dir_fd``
    when given) and what fstat says of it; None when there is no such file. Raises
    NotReadable, or OSError as the kernel said."""
    try:  # judge what the name is before opening anything: a device may act on open
        _require_regular(os.stat(path, dir_fd=dir_fd, follow_symlinks=follow).st_mode)
        fd = os.open(path, OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW), dir_fd=dir_fd)
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


def read_in_root(root: str, path: str, limit: int) -> tuple[bytes, os.stat_result] | None:
    """``read_regular`` of ``path`` as a process whose root is ``root`` (a pod process's
    ``/proc/PID/root``) sees it: its links resolved inside ``root``, as the pod resolves
    them, never against the host's root and never above ``root`` (which a plain open of
    ``/proc/PID/root/etc/x`` would do with an absolute link). Each directory is opened
    from the last one without following links, so a link swapped in meanwhile is refused,
    not followed. None when there is no such file; ELOOP after 40 links."""
    names = _resolved_in(root, path)
    parent = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            below = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
            os.close(parent)
            parent = below
        return read_regular(names[-1] if names else ".", limit, dir_fd=parent)
    finally:
        os.close(parent)


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _resolved_in(root: str, path: str) -> list[str]:
    """The names from ``root`` to ``path``'s file, every link but none of them resolved:
    ``..`` and a link's absolute target stop at ``root``."""
    names: list[str] = []
    todo = [part for part in path.split("/") if part not in ("", ".")]
    hops = 40
    while todo:
        part = todo.pop(0)
        if part == "..":
            names = names[:-1]
            continue
        try:
            target = os.readlink(os.path.join(root, *names, part))
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOENT):
                raise
            names.append(part)
            continue
        hops -= 1
        if hops < 0:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        names = [] if target.startswith("/") else names
        todo[:0] = [part for part in target.split("/") if part not in ("", ".")]
    return names


def write_whole(path: str, payload: bytes) -> None:
    """``path`` holds ``payload`` whole, or is as it was: written to ``temporary_of(path)``,
    flushed to disk, renamed over ``path``. The temporary is gone on every failure, and one
    a killed writer left is replaced: one writer at a time writes a given file (the host
    lock serialises state, libvirt a domain's calls). OSError as the kernel said; a write
    that makes no progress is a short write."""
    temporary = temporary_of(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_all(fd: int, payload: bytes) -> None:
    view, done = memoryview(payload), 0
    while done < len(payload):
        wrote = os.write(fd, view[done:])
        if wrote <= 0:
            raise OSError(errno.EIO, f"short write: {done} of {len(payload)} bytes written")
        done += wrote


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotReadable(f"not a regular file but {kind(mode)}")


def kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "of an unknown kind")


MAX_LINKS = 40  # as the kernel's


@dataclass(frozen=True)
class Walk:
    """Where a path leads, and the first directory or symbolic link on the way that
    anyone but root could change (``bad``, ``why``, and ``fix`` with {} for ``bad``)."""

    real: str  # the path with every link resolved (up to where it stops existing)
    found: bool
    linked: bool  # whether a symbolic link was followed
    bad: str = ""
    why: str = ""
    fix: str = ""


def walk(path: str) -> Walk:
    """Follow ``path`` one name at a time, as the kernel does, judging every directory it
    passes through (``/`` and each one below, the directories each link's target passes
    through too) and every symbolic link it follows (``passed_through``). What it finally
    names is not judged: the caller judges a file or a directory by its own rules."""
    pending = [name for name in os.path.abspath(path).split("/") if name][::-1]
    current, links = "/", 0
    if bad := _judged(current, os.stat(current)):
        return Walk(current, True, False, current, *bad)
    while pending:
        name = pending.pop()
        candidate = os.path.dirname(current) if name == ".." else os.path.join(current, name)
        try:
            info = os.lstat(candidate)
        except OSError as error:  # missing, or not a directory on the way
            rest = os.path.join(candidate, *reversed(pending)) if pending else candidate
            if isinstance(error, (FileNotFoundError, NotADirectoryError)):
                return Walk(rest, False, links > 0)
            return Walk(rest, False, links > 0, candidate, f"unreadable ({error.strerror})",
                        "check {0}")  # fmt: skip
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if bad := _judged_link(candidate, info, links):
                return Walk(candidate, True, True, candidate, *bad)
            target = os.readlink(candidate)
            pending.extend(reversed([n for n in target.split("/") if n]))
            current = "/" if target.startswith("/") else current
            continue
        if not pending:
            return Walk(candidate, True, links > 0)
        if stat.S_ISDIR(info.st_mode) and (bad := _judged(candidate, info)):
            return Walk(candidate, True, links > 0, candidate, *bad)
        current = candidate
    return Walk(current, True, links > 0)


def _judged(directory: str, info: os.stat_result) -> tuple[str, str] | None:
    """(why, fix) when anyone but root could change what ``directory`` holds: it is not
    root's, or others (or a group other than root's) may write to it and it is neither
    sticky (as /tmp is) nor on a read-only mount (as a Kubernetes ConfigMap volume is: a
    0777 directory, read-only in the container)."""
    if info.st_uid not in (0, os.geteuid()):
        return f"owned by uid {info.st_uid}, not root", "chown root: {0}"
    writable = info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0)
    if not writable or info.st_mode & stat.S_ISVTX or _read_only(directory):
        return None
    mode = stat.S_IMODE(info.st_mode)
    return (f"a directory others may write to (mode {mode:04o}, group {info.st_gid})",
            "chmod go-w {0}, or chmod +t {0} to make it sticky")  # fmt: skip


def _judged_link(link: str, info: os.stat_result, links: int) -> tuple[str, str] | None:
    if links > MAX_LINKS:
        return f"one of more than {MAX_LINKS} symbolic links in a row", "shorten the chain at {0}"
    if info.st_uid not in (0, os.geteuid()):
        return f"a symbolic link owned by uid {info.st_uid}, not root", "chown -h root: {0}"
    return None


def _read_only(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False
