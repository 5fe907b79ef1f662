"""Entry point of ``hooks/qemu``: decide, with the standard library alone, whether there is
work, and translate every error into lines on stderr and an exit status.

libvirtd runs the hook at every step of every domain; most calls have nothing to do and
must cost no more than starting the interpreter. lxml, pyroute2, psutil and click are
imported only past ``has_work``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, TextIO

URI = b"urn:vmnet-hook:1"
RESOLVING = frozenset({("prepare", "begin"), ("migrate", "begin"), ("restore", "begin")})
CHECKING = frozenset({("reconnect", "begin"), ("attach", "begin")})
RELEASING = ("release", "end")
USAGE = "usage: qemu DOMAIN OPERATION SUB-OPERATION [EXTRA] < domain.xml"
HARD_KILL_SECONDS = 2


def main(
    argv: list[str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    args = sys.argv[1:] if argv is None else argv
    xml = (stdin or sys.stdin.buffer).read()  # always to the end: libvirt writes it all
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if len(args) < 3:
        err.write(f"vmnet-hook: {USAGE}\n")
        return 2
    domain, operation, subop = args[:3]
    if not has_work((operation, subop), xml):
        return 0
    return _work(domain, operation, subop, xml, out, err)


def has_work(step: tuple[str, str], xml: bytes) -> bool:
    if step in RESOLVING or step in CHECKING:
        return URI in xml
    if step == RELEASING:
        uuid = _uuid(xml)
        return uuid is not None and os.path.exists(os.path.join(_state_dir(), f"{uuid}.json"))
    return False


def _work(domain: str, operation: str, subop: str, xml: bytes, out: TextIO, err: TextIO) -> int:
    from vmnet_hook import config
    from vmnet_hook.errors import VmnetError
    from vmnet_hook.log import Log

    failure_status = 1 if (operation, subop) in RESOLVING else 0  # others must never fail
    try:
        settings = config.load(config.config_path())
        with deadline(settings.deadline_seconds):
            from vmnet_hook.hook import HookCall, run

            text = run(HookCall(domain, operation, subop, xml, settings))
    except VmnetError as error:
        lines = str(error).splitlines()
    except Exception as error:  # a bug; libvirt still gets one line, never a traceback
        lines = [f"internal error in {operation} {subop} of {domain!r}: {error!r}"]
    else:
        out.write(text)
        return 0
    log = Log()
    for line in lines:
        err.write(f"vmnet-hook: {line}\n")
        log("error", f"{operation} {subop} {domain}: {line}")
    return failure_status


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise DeadlineExceeded after ``seconds``; if cleanup then hangs too, die soon after."""
    from vmnet_hook.errors import DeadlineExceeded

    def expire(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(HARD_KILL_SECONDS)
        raise DeadlineExceeded(f"gave up after {seconds}s (deadline_seconds); nothing left bound")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _uuid(xml: bytes) -> str | None:
    start = xml.find(b"<uuid>")
    end = xml.find(b"</uuid>", start)
    if start < 0 or end < 0:
        return None
    uuid = xml[start + 6 : end].strip().decode("ascii", "replace").lower()
    hex_only = uuid.replace("-", "")
    if (
        len(uuid) != 36
        or len(hex_only) != 32
        or not all(c in "0123456789abcdef" for c in hex_only)
    ):
        return None
    return uuid


def _state_dir() -> str:
    from vmnet_hook import config

    try:
        return config.load(config.config_path()).state_dir
    except Exception:  # a broken config is reported by _work, which loads it again
        return config.Config().state_dir
