"""Kernel tier: the pod's resolv.conf, read through a pod process's root (issue 11, rules
2 and 8). The pod owns that tree: its links are resolved inside it, as its own resolver
would, never against the host's root; a FIFO, a loop or a huge file is never read and
the host's resolv.conf is used instead, at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from vmnet_hook.podnet.kernel import read_dns

pytestmark = pytest.mark.kernel

POD_DNS = "nameserver 203.0.113.53\nsearch pod.svc\n"
HOST_DNS = "nameserver 198.51.100.53\n"


class Blocked(Exception):  # not an OSError: read_dns must not take it for a failed read
    pass


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """A read that blocks (a FIFO opened for reading) fails the test instead of hanging."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise Blocked("read_dns blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


Layout = list[tuple[str, str | bytes]]  # (path in the root, what it is)


def build(root: Path, layout: Layout) -> None:
    """Each path: text or bytes (a file), "-> TARGET" (a link), "fifo" or "dir"."""
    for path, what in layout:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, bytes):
            (root / path).write_bytes(what)
        elif what.startswith("-> "):
            (root / path).symlink_to(what.removeprefix("-> "))
        elif what in ("fifo", "dir"):
            os.mkfifo(root / path) if what == "fifo" else (root / path).mkdir()
        else:
            (root / path).write_text(what)


LAYOUTS: dict[str, Layout] = {
    "a file": [("etc/resolv.conf", POD_DNS)],
    "an absolute link": [("run/dns/resolv.conf", POD_DNS),
                         ("etc/resolv.conf", "-> /run/dns/resolv.conf")],
    "a link climbing out": [("resolv.conf", POD_DNS),
                            ("etc/resolv.conf", "-> ../../../../../resolv.conf")],
    "a linked /etc": [("alt/etc/resolv.conf", POD_DNS), ("etc", "-> /alt/etc")],
    "links of links": [("c/resolv.conf", POD_DNS), ("b", "-> /c"),
                       ("etc/resolv.conf", "-> /a/../b/./resolv.conf")],
}  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_pods_links_are_resolved_inside_the_pod(tmp_path: Path, layout: str) -> None:
    """Each layout holds the pod's DNS only inside its root: a link followed against the
    host's root would find nothing (or the host's) there."""
    root, host = tmp_path / "proc" / "7" / "root", tmp_path / "host-resolv.conf"
    root.mkdir(parents=True)
    host.write_text(HOST_DNS)
    build(root, LAYOUTS[layout])
    dns = read_dns((7,), str(tmp_path / "proc"), str(host))
    assert (dns.servers, dns.search) == (("203.0.113.53",), ("pod.svc",))
    assert dns.source == f"{root}/etc/resolv.conf"


ODD: dict[str, Layout] = {
    "a FIFO": [("etc/resolv.conf", "fifo")],
    "a link to a FIFO": [("fifo", "fifo"), ("etc/resolv.conf", "-> /fifo")],
    "a loop": [("etc/resolv.conf", "-> /etc/resolv.conf")],
    "a directory": [("etc/resolv.conf", "dir")],
    "over 64 KiB": [("etc/resolv.conf", POD_DNS + "#" * 65536)],
    "not UTF-8": [("etc/resolv.conf", POD_DNS.encode() + b"\xff")],
}


@pytest.mark.parametrize("odd", ODD)
def test_what_cannot_be_read_gives_the_hosts_at_once(tmp_path: Path, odd: str) -> None:
    root, host = tmp_path / "proc" / "7" / "root", tmp_path / "host-resolv.conf"
    root.mkdir(parents=True)
    host.write_text(HOST_DNS)
    build(root, ODD[odd])
    dns = read_dns((7,), str(tmp_path / "proc"), str(host))
    assert (dns.servers, dns.source) == (("198.51.100.53",), str(host))


def test_a_chrooted_pod_process_gets_its_own_roots_resolv_conf(tmp_path: Path) -> None:
    """A real process in a root of its own, whose resolv.conf is an absolute link (as
    systemd-resolved images have): read through /proc/PID/root, resolved in that root."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    build(root, [("run/resolved/stub-resolv.conf", POD_DNS),
                 ("etc/resolv.conf", "-> /run/resolved/stub-resolv.conf")])  # fmt: skip
    assert not Path("/run/resolved/stub-resolv.conf").exists()  # only inside the pod
    process = subprocess.Popen(["chroot", str(root), "/bin/busybox", "sleep", "60"])
    try:
        while os.readlink(f"/proc/{process.pid}/root") != str(root):
            time.sleep(0.01)  # chroot(1) has not changed its root yet
        dns = read_dns((process.pid,), "/proc", "/nonexistent")
        assert (dns.servers, dns.search) == (("203.0.113.53",), ("pod.svc",))
        assert dns.source == f"/proc/{process.pid}/root/etc/resolv.conf"
    finally:
        process.kill()
        process.wait()
