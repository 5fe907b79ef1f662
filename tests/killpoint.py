"""Run a script (hooks/qemu) and SIGKILL its own process at the Nth step of vmnet_hook code.

    KILLPOINT_AT=N KILLPOINT_REPORT=PATH python tests/killpoint.py SCRIPT [ARGS...]

A step is a profile event (``sys.setprofile``, and ``threading.setprofile`` for the
threads that enter pod namespaces) whose frame runs a vmnet_hook function: its ``call``
and ``return``, and the ``c_call`` and ``c_return`` of each C function it calls directly.
The C events are where the side effects are (``os.write``, ``os.replace``, ``os.kill``,
``fcntl.flock``): with them a kill lands between a temporary file's creation and its
rename, not only before or after the function that does both. Not counted:

- events inside pyroute2, lxml, psutil or subprocess: a kernel operation is atomic, so a
  kill inside a library call leaves what a kill at the hook's next step leaves. One
  exception: the moment a child has been forked (``_posixsubprocess.fork_exec`` returned,
  whoever called it) is a step. The hook then only waits, so without it no kill would land
  while nft or dnsmasq runs, which is when a deadline or an OOM kill may well come: the
  child outlives the hook and races the release that follows.
- importing vmnet_hook modules (module code and what it calls, e.g. dataclass
  machinery): an import changes nothing on the host, so a kill there is the kill at the
  next step; counted, imports were 40 % of a prepare's steps.

Counting events, not time, makes a kill point reproducible: the same N kills at the same
step on every run, give or take the few steps by which a run's count varies: the hook's
own loops see a different host, or wait (a release polls until dnsmasq has exited). With ``KILLPOINT_AT`` 0 nothing is killed; either way, a run that ends
writes ``total T`` to the report, and a killed one writes the step it died at:
``N EVENT MODULE FUNCTION FILE:LINE thread=NAME stack=OUTER>...>INNER`` (and, in a
pod-namespace thread, ``main=`` the main thread's stack). Standard library only.
"""

from __future__ import annotations

import _posixsubprocess
import itertools
import os
import runpy
import signal
import sys
import threading
from types import FrameType

PACKAGE = "vmnet_hook"
EVENTS = frozenset({"call", "return", "c_call", "c_return"})


def in_package(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == PACKAGE or module.startswith(PACKAGE + "."))


def function_of(frame: FrameType) -> str:
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_qualname}"


def stack_of(frame: FrameType | None) -> str:
    """The vmnet_hook functions being executed, outermost first."""
    names: list[str] = []
    while frame is not None:
        if in_package(frame):
            names.append(function_of(frame).removeprefix(PACKAGE + "."))
        frame = frame.f_back
    return ">".join(reversed(names))


class KillPoint:
    """The profile function: counts steps, and at step ``at`` reports it and dies."""

    def __init__(self, at: int, report: str) -> None:
        self.at, self.report = at, report
        self.counter = itertools.count(1)  # next() is atomic under the GIL: threads share it
        self.last = 0
        self.importing = 0  # depth of vmnet_hook module code being run

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "c_return" and arg is _posixsubprocess.fork_exec:
            self.step(frame, "child", arg)  # a child runs: the kill lands while it does
            return
        if event not in EVENTS or not in_package(frame):
            return
        if frame.f_code.co_name == "<module>":
            self.importing += {"call": 1, "return": -1}.get(event, 0)
            return
        if not self.importing:
            self.step(frame, event, arg)

    def step(self, frame: FrameType, event: str, arg: object) -> None:
        self.last = step = next(self.counter)
        if step == self.at:
            self.die(frame, event, arg, step)

    def die(self, frame: FrameType, event: str, arg: object, step: int) -> None:
        module = frame.f_globals.get("__name__", "?")
        where = f"{module} {frame.f_code.co_qualname}"
        if event.startswith("c_") or event == "child":
            where += f"->{getattr(arg, '__module__', None) or ''}.{getattr(arg, '__name__', arg)}"
        thread = threading.current_thread()
        line = (
            f"{step} {event} {where} {frame.f_code.co_filename}:{frame.f_lineno} "
            f"thread={thread.name} stack={stack_of(frame)}"
        )
        if thread is not threading.main_thread():  # a pod-namespace thread: what waits on it
            main = sys._current_frames().get(threading.main_thread().ident or 0)
            line += f" main={stack_of(main)}"
        self.write(line + "\n")
        os.kill(os.getpid(), signal.SIGKILL)

    def write(self, text: str) -> None:
        fd = os.open(self.report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def main() -> None:
    killer = KillPoint(int(os.environ["KILLPOINT_AT"]), os.environ["KILLPOINT_REPORT"])
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    del sys.path[0]  # this directory: the script sees the path it would have on its own
    sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
    threading.setprofile(killer)
    sys.setprofile(killer)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        killer.write(f"total {killer.last}\n")


if __name__ == "__main__":
    main()
