"""Entry point of ``hooks/qemu``: decide, with the standard library alone, whether there is
work (from ``hook.operations``, the one table of operations), and translate every error
into lines on stderr and an exit status.

libvirtd runs the hook at every step of every domain; most calls have nothing to do and
must cost no more than starting the interpreter. lxml, pyroute2, psutil and click are
imported only past ``has_work``; so are typing, contextlib and vmnet_hook.config, each a
few milliseconds on a path whose whole budget is the interpreter's start-up. ``_signal``
(the deadline's) is built in and imported by the interpreter's own start-up.
"""

from __future__ import annotations

import os
import sys

from vmnet_hook import NAMESPACE_URI, is_uuid, temporary_of
from vmnet_hook.hook.operations import ANNOTATION, OPERATIONS, STATE

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it as True
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with stubs
    from collections.abc import Callable
    from types import FrameType
    from typing import Any, BinaryIO, TextIO

    Handler = Callable[[int, FrameType | None], Any] | int | None
else:
    import _signal

URI = NAMESPACE_URI.encode()
USAGE = "usage: qemu DOMAIN OPERATION SUB-OPERATION [EXTRA] < domain.xml"
DEFAULT_DEADLINE_SECONDS = 10  # until the configuration is read
MAX_STDIN_BYTES = 64 * 1024 * 1024  # kept; the rest is read and dropped (libvirt writes it all)
# Mirrors of vmnet_hook.config's defaults (tests/test_gate.py checks them): release end
# finds a domain's state without loading config (see state_dir_of).
DEFAULT_CONFIG_PATH = "/etc/vmnet-hook/config"
DEFAULT_STATE_DIR = "/run/vmnet-hook"
STATE_DIR_VARIABLE = "VMNET_HOOK_STATE_DIR"
POINTER_SUFFIX = ".at"  # DEFAULT_STATE_DIR/UUID.at: the state_dir prepare used, if another
RELEASE = ("release", "end")


def main(
    argv: list[str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin_closed: bool = False,
) -> int:
    """The hook. Without ``argv`` this process is hooks/qemu's, and ends with the call.
    ``stdin_closed``: the caller's stdin was closed (the CLI reads /dev/null in its place)."""
    args = sys.argv[1:] if argv is None else argv
    if argv is None:
        plug_closed_descriptors()
    out, err = stdout or sys.stdout, stderr or sys.stderr
    step = (args[1], args[2]) if len(args) >= 3 else ("", "")
    operation = OPERATIONS.get(step)
    status = 1 if operation is not None and operation.may_fail else 0
    domain = args[0] if args else ""
    with deadline(DEFAULT_DEADLINE_SECONDS, domain, status, step == RELEASE) as clock:
        process_stdin = None if stdin_closed else sys.stdin
        xml, problem, annotated = _read_all(None if stdin_closed else stdin, process_stdin)
        if not 3 <= len(args) <= 4:
            say(err, USAGE)
            return 2
        if problem == TOO_LARGE and not (annotated and status):
            problem = ""  # a call that must not fail needs only the UUID (near the top)
        if problem:
            say(err, f"domain {domain!r}: {problem}")
            return status
        clock.doing = ""
        if not has_work(step, xml, annotated):
            return 0
        return _work_once(args[:3], xml, out, err, clock, ends_with_call=argv is None)


def _work_once(args: list[str], xml: bytes, out: TextIO | None, err: TextIO | None,
               clock: deadline, ends_with_call: bool) -> int:  # fmt: skip
    if not ends_with_call:  # a longer-lived process (the CLI, tests): leave gc alone
        return _work(args, xml, out, err, clock)
    import gc

    # A process that ends with the call has no use for the cyclic collector, only its
    # cost: its passes during pyroute2's imports, and its sweep of every object at exit
    # (about 70 ms of a 310 ms prepare). Nothing here relies on a cycle being collected:
    # netlink sockets and files are closed by `with`, state is renamed.
    gc.disable()
    try:
        return _work(args, xml, out, err, clock)
    finally:
        gc.freeze()


def plug_closed_descriptors() -> None:
    """Python leaves sys.stdin/stdout/stderr None for a descriptor 0, 1 or 2 that was
    closed; /dev/null takes its number, so that no file opened later (the lock, a netlink
    socket) is taken for one of them."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if stream is None:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: the closed one


TOO_LARGE = f"the domain XML on stdin is larger than {MAX_STDIN_BYTES} bytes"


def _read_all(stdin: BinaryIO | None, process_stdin: TextIO | None) -> tuple[bytes, str, bool]:
    """The domain XML, read to the end (libvirt writes it all into the pipe), what went
    wrong or "", and whether it holds the vmnet namespace. Past MAX_STDIN_BYTES, only the
    first MAX_STDIN_BYTES are kept (TOO_LARGE); the rest is still searched for the
    namespace."""
    source = stdin or (process_stdin.buffer if process_stdin is not None else None)
    if source is None:
        return b"", "stdin is closed; the domain XML is read from it", False
    chunks, kept, total, tail, annotated = [], 0, 0, b"", False
    try:
        while chunk := source.read(1 << 20):
            total += len(chunk)
            if kept < MAX_STDIN_BYTES:
                chunks.append(chunk[: MAX_STDIN_BYTES - kept])
                kept += len(chunks[-1])
            annotated = annotated or URI in tail + chunk
            tail = chunk[-len(URI) :]
    except (OSError, ValueError) as error:
        return b"", f"cannot read the domain XML on stdin: {error}", False
    return b"".join(chunks), TOO_LARGE if total > MAX_STDIN_BYTES else "", annotated


def say(err: TextIO | None, line: str) -> None:
    """One line on stderr, control characters shown, whatever stderr has become."""
    text = f"vmnet-hook: {line}"
    if not text.isprintable():
        from vmnet_hook.text import printable

        text = printable(text)
    try:
        if err is not None:
            err.write(text + "\n")
            err.flush()
    except (OSError, ValueError):
        pass  # stderr closed or gone: syslog has the line where it matters


def has_work(step: tuple[str, str], xml: bytes, annotated: bool | None = None) -> bool:
    """``annotated``: whether the whole XML holds the namespace, when ``xml`` is a part."""
    operation = OPERATIONS.get(step)
    if operation is None:
        return False
    if operation.needs == ANNOTATION:
        return URI in xml if annotated is None else annotated
    assert operation.needs == STATE
    uuid = domain_uuid(xml)
    return uuid is not None and state_dir_of(uuid) is not None


def state_dir_of(uuid: str) -> str | None:
    """Where ``uuid``'s state lives, found without loading config (which costs more than
    the interpreter's start-up): VMNET_HOOK_STATE_DIR's, else the default state dir, which
    holds either the state or, where config names another state_dir, a pointer to it
    (``hook.pointer``). The pointer's own directory is returned; _work reads it."""
    overridden = os.environ.get(STATE_DIR_VARIABLE, "")
    directories = ([overridden] if overridden else []) + [DEFAULT_STATE_DIR]
    for directory in directories:
        if os.path.exists(os.path.join(directory, f"{uuid}.json")):
            return directory
    if os.path.exists(os.path.join(DEFAULT_STATE_DIR, uuid + POINTER_SUFFIX)):
        return DEFAULT_STATE_DIR
    for directory in directories:  # only what a killed writer left: release removes it
        names = (f"{uuid}.json", uuid + POINTER_SUFFIX)
        if any(os.path.exists(temporary_of(os.path.join(directory, n))) for n in names):
            return directory
    return None


def _work(args: list[str], xml: bytes, out: TextIO | None, err: TextIO | None,
          clock: deadline) -> int:  # fmt: skip
    domain, operation, subop = args
    from vmnet_hook.errors import VmnetError
    from vmnet_hook.host.log import Log

    log = Log()

    def warn(line: str) -> None:
        say(err, line)
        log("warning", f"{operation} {subop} {domain}: {line}")

    try:
        from vmnet_hook.hook import place

        settings = place.settings((operation, subop), xml, clock, warn)
        from vmnet_hook.hook.handlers import HookCall, deliver, run

        call = HookCall(domain, operation, subop, xml, settings)
        lines = deliver(call, run(call), out)
    except VmnetError as error:
        lines = str(error).splitlines()
    except ImportError as error:
        lines = [f"{error}: run the hook with the interpreter install.sh set up for it"]
    except Exception as error:  # a bug; libvirt still gets one line, never a traceback
        lines = [f"internal error in {operation} {subop} of {domain!r}: {error!r}"]
    for line in lines:
        say(err, line)
        log("error", f"{operation} {subop} {domain}: {line}")
    return clock.status if lines else 0


class deadline:  # a class, not @contextmanager: contextlib is not worth it on the no-op path
    """From the first instruction: after ``seconds``, one line on stderr (what it was
    doing, what is left bound and how to clear it), and exit at once with ``status``.

    Exit, not an exception: raised into pyroute2's event loop, an exception can leave the
    loop blocked in its cleanup. Nothing is lost by exiting: bindings are recorded in state
    before they are made, and libvirt runs ``release end`` after a failed start.
    """

    def __init__(self, seconds: float, domain: str, status: int, releasing: bool) -> None:
        self.seconds, self.domain, self.status = seconds, domain, status
        self.releasing = releasing  # inside release end: never promise a release
        self.doing = "while reading the domain XML on stdin (its writer never closed it)"
        self.state_file = ""  # once known: what may be left bound
        self.state_dir = ""  # once known: where the host-wide lock is
        self.configured = False  # whether the config's deadline_seconds counts yet
        self.previous: Handler = None

    def __enter__(self) -> deadline:
        self.previous = _signal.signal(_signal.SIGALRM, self._expire)
        _signal.setitimer(_signal.ITIMER_REAL, self.seconds)
        return self

    def restart(self, seconds: int) -> None:
        """The configured deadline, counted from the start of the call, not from now."""
        left = seconds - (self.seconds - _signal.getitimer(_signal.ITIMER_REAL)[0])
        self.seconds, self.configured = seconds, True
        if left <= 0:
            self._expire(_signal.SIGALRM, None)
        _signal.setitimer(_signal.ITIMER_REAL, left)

    def __exit__(self, *_exc_info: object) -> None:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, self.previous)

    def _expire(self, _signum: int, frame: FrameType | None) -> None:
        line = f"domain {self.domain!r}: gave up after {self.seconds:g}s ({self.which()})"
        # What follows reads small local files; a second, short alarm ends the process
        # with the line so far should one of them hang.
        _signal.signal(_signal.SIGALRM, lambda _s, _f: self._exit(line))
        _signal.setitimer(_signal.ITIMER_REAL, 1)
        try:
            from vmnet_hook.hook import expiry

            line = expiry.line(self, frame)
        finally:
            self._exit(line)

    def which(self) -> str:
        """Which deadline ran out, for the line."""
        if self.configured:
            return "deadline_seconds"
        return (
            "the default deadline: the config, and its deadline_seconds, is read after the "
            "domain XML"
        )

    def _exit(self, line: str) -> None:
        from vmnet_hook.text import printable

        kill_children()
        os.write(2, f"vmnet-hook: {printable(line)}\n".encode(errors="replace"))
        os._exit(self.status)


def kill_children() -> None:
    """The tools this call started (an nft, a dnsmasq not yet detached) end with it: left
    running, one could make what the next ``release end`` has already looked for. Found
    by their parent pid in /proc (this kernel may lack /proc/PID/task/TID/children)."""
    me = str(os.getpid()).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
            if fields[1] == me:
                os.kill(int(name), _signal.SIGKILL)
        except (OSError, IndexError):
            continue


def domain_uuid(xml: bytes) -> str | None:
    """The UUID in the ``<uuid>`` child of the ``<domain>`` root, found without a parser
    and cheaply (libvirt writes it near the top): whatever comes before it, other tools'
    metadata, comments, CDATA or text that looks like markup, is stepped over, not read."""
    depth, pos = 0, 0
    while (start := xml.find(b"<", pos)) >= 0:
        if xml.startswith(b"<!--", start):
            pos = _after(xml, b"-->", start + 4)
        elif xml.startswith(b"<![CDATA[", start):
            pos = _after(xml, b"]]>", start + 9)
        elif xml.startswith(b"<?", start):
            pos = _after(xml, b"?>", start + 2)
        elif xml.startswith(b"<!", start):  # a DOCTYPE, maybe with an internal subset
            subset = xml.find(b"[", start, xml.find(b">", start))
            pos = _after(xml, b"]", subset) if subset >= 0 else start
            pos = _after(xml, b">", pos) if pos >= 0 else -1
        elif xml.startswith(b"</", start):
            depth -= 1
            pos = _after(xml, b">", start) if depth > 0 else -1
        else:
            pos, name, empty = _start_tag(xml, start)
            if pos < 0 or (depth == 0 and name != b"domain"):
                return None
            if depth == 1 and name == b"uuid":
                return None if empty else _uuid_text(xml, pos)
            depth += not empty
        if pos < 0:
            return None
    return None


def _after(xml: bytes, end: bytes, start: int) -> int:
    found = xml.find(end, start)
    return found + len(end) if found >= 0 else -1


def _start_tag(xml: bytes, start: int) -> tuple[int, bytes, bool]:
    """(where the tag that opens at ``start`` ends, its name, whether it is empty); -1 when
    it does not end. A quoted attribute value may hold '>'."""
    pos = start + 1
    while (close := xml.find(b">", pos)) >= 0:
        double, single = xml.find(b'"', pos, close), xml.find(b"'", pos, close)
        quote = single if double < 0 or 0 <= single < double else double
        if quote < 0:
            tag = xml[start + 1 : close]
            empty = tag.endswith(b"/")
            name = tag.removesuffix(b"/").split(None, 1)
            return close + 1, name[0] if name else b"", empty
        pos = _after(xml, xml[quote : quote + 1], quote + 1)
        if pos < 0:
            break
    return -1, b"", False


def _uuid_text(xml: bytes, pos: int) -> str | None:
    end = xml.find(b"<", pos)
    if not (xml.startswith(b"</uuid", end) and xml[end + 6 : end + 7] in b"> \t\r\n"):
        return None
    uuid = xml[pos:end].strip().decode("ascii", "replace").lower()
    return uuid if is_uuid(uuid) else None
