"""Network namespace work, scoped like CNI's ``ns.Do``: a short-lived thread enters the
namespace, does one piece of work there and ends; the process itself never leaves the
host's namespace, and nothing is forked. Python 3.11 has no ``os.setns``: libc's is used.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from vmnet_hook.errors import PodNotFound

CLONE_NEWNET = 0x40000000
HOST_NETNS = "/proc/self/ns/net"  # the main thread's, which never leaves the host's

T = TypeVar("T")


def run_in_netns(path: str, work: Callable[[], T]) -> T:
    """``work()`` in the network namespace at ``path`` (never creating it), from a
    short-lived thread; its result, or its exception raised here."""

    def enter() -> None:
        try:
            enter_netns(path)
        except OSError as error:
            raise PodNotFound(f"cannot enter network namespace {path}: {error.strerror}") from None

    return _in_thread(enter, work)


def run_in_new_netns(work: Callable[[], T]) -> T:
    """``work()`` in a new, unnamed network namespace that lives only as long as what
    ``work`` opens in it (sockets), from a short-lived thread. An ``OSError`` making the
    namespace is raised as it is."""

    def unshare() -> None:
        if libc().unshare(CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return _in_thread(unshare, work)


def _in_thread(enter: Callable[[], None], work: Callable[[], T]) -> T:
    """``enter()`` then ``work()`` in a thread of their own (namespaces are per thread);
    the outcome is handed back to the calling thread."""
    results: list[T] = []
    failures: list[BaseException] = []

    def body() -> None:
        try:
            enter()
            results.append(work())
        except BaseException as error:  # handed to the caller's thread
            failures.append(error)

    worker = threading.Thread(target=body, name="vmnet-netns", daemon=True)
    worker.start()
    worker.join()
    if failures:
        raise failures[0]
    return results[0]


def enter_netns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (never creating it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, for setns and unshare, which Python 3.11's os lacks."""
    return ctypes.CDLL(None, use_errno=True)
