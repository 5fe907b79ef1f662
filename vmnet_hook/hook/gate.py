"""Entry point of ``hooks/qemu``: decide, with the standard library alone, whether there is
work (from ``hook.operations``, the one table of operations), and translate every error
into lines on stderr and an exit status.

libvirtd runs the hook at every step of every domain; most calls have nothing to do and
must cost no more than starting the interpreter. lxml, pyroute2, psutil and click are
imported only past ``has_work``; so are signal, typing, contextlib and vmnet_hook.config,
each a few milliseconds on a path whose whole budget is the interpreter's start-up.
"""

from __future__ import annotations

import os
import sys

from vmnet_hook import NAMESPACE_URI, is_uuid
from vmnet_hook.hook.operations import ANNOTATION, OPERATIONS, STATE

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import BinaryIO, TextIO

    SignalHandler = Callable[[int, FrameType | None], object] | int | None

URI = NAMESPACE_URI.encode()
USAGE = "usage: qemu DOMAIN OPERATION SUB-OPERATION [EXTRA] < domain.xml"
DEFAULT_DEADLINE_SECONDS = 10  # until the configuration is read
# Mirrors of vmnet_hook.config's defaults (tests/test_gate.py checks them), so that
# release end needs no config import when nothing can move the state dir (see _state_dir).
DEFAULT_CONFIG_PATH = "/etc/vmnet-hook/config"
DEFAULT_STATE_DIR = "/run/vmnet-hook"


def main(
    argv: list[str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The hook. Without ``argv`` this process is hooks/qemu's, and ends with the call."""
    args = sys.argv[1:] if argv is None else argv
    xml = (stdin or sys.stdin.buffer).read()  # always to the end: libvirt writes it all
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if not 3 <= len(args) <= 4:
        err.write(f"vmnet-hook: {USAGE}\n")
        return 2
    domain, operation, subop = args[:3]
    if not has_work((operation, subop), xml):
        return 0
    if argv is not None:  # called in a longer-lived process (the CLI, tests): leave gc alone
        return _work(domain, operation, subop, xml, out, err)
    import gc

    # A process that ends with the call has no use for the cyclic collector, only its cost:
    # its passes during pyroute2's imports, and its sweep of every object at exit
    # (about 70 ms of a 310 ms prepare). Nothing here relies on a cycle being collected:
    # netlink sockets and files are closed by `with`, state is written and renamed.
    gc.disable()
    try:
        return _work(domain, operation, subop, xml, out, err)
    finally:
        gc.freeze()


def has_work(step: tuple[str, str], xml: bytes) -> bool:
    operation = OPERATIONS.get(step)
    if operation is None:
        return False
    if operation.needs == ANNOTATION:
        return URI in xml
    assert operation.needs == STATE
    uuid = _uuid(xml)
    return uuid is not None and os.path.exists(os.path.join(_state_dir(), f"{uuid}.json"))


def _work(domain: str, operation: str, subop: str, xml: bytes, out: TextIO, err: TextIO) -> int:
    failure_status = 1 if OPERATIONS[(operation, subop)].may_fail else 0
    with deadline(DEFAULT_DEADLINE_SECONDS, domain, failure_status) as clock:
        from vmnet_hook import config
        from vmnet_hook.errors import VmnetError
        from vmnet_hook.host.log import Log

        try:
            settings = config.load(config.config_path())
            clock.restart(settings.deadline_seconds)
            from vmnet_hook.hook.handlers import HookCall, run

            text = run(HookCall(domain, operation, subop, xml, settings))
        except VmnetError as error:
            lines = str(error).splitlines()
        except ImportError as error:
            lines = [f"{error}: run the hook with the interpreter install.sh set up for it"]
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


class deadline:  # a class, not @contextmanager: contextlib is not worth it on the no-op path
    """After ``seconds``: one line on stderr and exit at once with ``status``.

    Exit, not an exception: raised into pyroute2's event loop, an exception can leave the
    loop blocked in its cleanup. Nothing is lost by exiting: bindings are recorded in state
    before they are made, and libvirt runs ``release end`` after a failed start, which
    removes them (as does the domain's next ``prepare``).
    """

    def __init__(self, seconds: int, domain: str, status: int) -> None:
        self.seconds, self.domain, self.status = seconds, domain, status
        self.previous: SignalHandler = None

    def __enter__(self) -> deadline:
        import signal

        self.previous = signal.signal(signal.SIGALRM, self._expire)
        signal.alarm(self.seconds)
        return self

    def restart(self, seconds: int) -> None:
        import signal

        self.seconds = seconds
        signal.alarm(seconds)

    def __exit__(self, *_exc_info: object) -> None:
        import signal

        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)

    def _expire(self, _signum: int, _frame: FrameType | None) -> None:
        line = (
            f"vmnet-hook: domain {self.domain!r}: gave up after {self.seconds}s "
            "(deadline_seconds); release end undoes any binding\n"
        )
        os.write(2, line.encode())
        os._exit(self.status)


def _uuid(xml: bytes) -> str | None:
    start = xml.find(b"<uuid>")
    end = xml.find(b"</uuid>", start)
    if start < 0 or end < 0:
        return None
    uuid = xml[start + 6 : end].strip().decode("ascii", "replace").lower()
    return uuid if is_uuid(uuid) else None


def _state_dir() -> str:
    """``config.load(...).state_dir``, or the default when loading fails. Loading config
    costs more than the interpreter's start-up, so it is skipped where it can only give
    the default: no override, and a config file that is missing or never names state_dir
    (config either leaves the default or fails, which means the default here too)."""
    overridden = any(
        name.startswith("VMNET_HOOK_") and name != "VMNET_HOOK_CONFIG" for name in os.environ
    )
    if not overridden and not _names_state_dir(
        os.environ.get("VMNET_HOOK_CONFIG", DEFAULT_CONFIG_PATH)
    ):
        return DEFAULT_STATE_DIR
    from vmnet_hook import config

    try:
        return config.load(config.config_path()).state_dir
    except Exception:  # a broken config is reported by _work, which loads it again
        return config.Config().state_dir


def _names_state_dir(path: str) -> bool:
    """Whether the config file at ``path`` could set state_dir. configparser lower-cases
    keys; the only other characters that lower-case into ASCII, U+0130 and U+212A, become
    "i" + U+0307 and "k", which cannot complete "state_dir"."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError:  # missing: the defaults; unreadable: config fails, so the default
        return False
    return "state_dir" in text.decode("utf-8", "replace").lower()
