"""Which domains libvirt runs, asked by the CLI through ``virsh`` (the hook never asks:
it runs inside libvirtd's own calls). A seam: ``status`` takes any ``RunningDomains``."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable

from vmnet_hook import is_uuid
from vmnet_hook.errors import VmnetError

RunningDomains = Callable[[], frozenset[str]]  # UUIDs; raises LibvirtUnknown
TIMEOUT_SECONDS = 10.0
MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # a UUID line each: room for some 100,000 domains


class LibvirtUnknown(VmnetError):
    """libvirt could not be asked which domains run: nothing may be taken as stale."""


def virsh_running(uri: str, timeout: float = TIMEOUT_SECONDS) -> frozenset[str]:
    """The UUIDs of the active domains (running or paused, starting too) at ``uri``."""
    command = ["virsh", "-c", uri, "list", "--uuid"]
    try:
        returncode, stdout, stderr = _run(command, timeout)
    except FileNotFoundError:
        raise LibvirtUnknown("virsh is not installed") from None
    except subprocess.TimeoutExpired:
        raise LibvirtUnknown(f"virsh -c {uri} gave no answer in {timeout:g}s") from None
    except OSError as error:
        raise LibvirtUnknown(f"virsh cannot run: {error.strerror or error}") from None
    if len(stdout) > MAX_OUTPUT_BYTES or len(stderr) > MAX_OUTPUT_BYTES:
        raise LibvirtUnknown(f"virsh -c {uri} printed more than {MAX_OUTPUT_BYTES} bytes")
    said = printable(stderr.decode("utf-8", "replace")).strip()
    if returncode != 0:
        first = said.splitlines()[0] if said else f"exit status {returncode}"
        raise LibvirtUnknown(f"virsh -c {uri}: {first}")
    uuids = stdout.decode("utf-8", "replace").split()
    strange = [word for word in uuids if not is_uuid(word)]
    if strange:
        raise LibvirtUnknown(f"virsh printed {printable(strange[0])!r}, not a domain UUID")
    return frozenset(uuids)


def _run(command: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr), each read up to one byte past MAX_OUTPUT_BYTES:
    then, or after ``timeout``, virsh is killed."""
    until = time.monotonic() + timeout
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:  # fmt: skip
        try:
            out, err = _bounded(process, until)
            if max(len(out), len(err)) > MAX_OUTPUT_BYTES:
                process.kill()
            return process.wait(max(until - time.monotonic(), 0.01)), out, err
        except subprocess.TimeoutExpired:
            raise subprocess.TimeoutExpired(command, timeout) from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _bounded(process: subprocess.Popen[bytes], until: float) -> tuple[bytes, bytes]:
    assert process.stdout is not None and process.stderr is not None
    streams = (process.stdout, process.stderr)
    read = {stream.fileno(): bytearray() for stream in streams}
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map() and all(len(got) <= MAX_OUTPUT_BYTES for got in read.values()):
            if (left := until - time.monotonic()) <= 0:
                raise subprocess.TimeoutExpired(process.args, 0)
            for key, _events in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                read[key.fd] += chunk
                if not chunk:
                    selector.unregister(key.fileobj)
    return bytes(read[streams[0].fileno()]), bytes(read[streams[1].fileno()])


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes, never sent to a terminal."""
    return "".join(c if c.isprintable() or c in "\n" else f"\\x{ord(c):02x}" for c in text)
