"""Which domains libvirt runs, asked by the CLI through ``virsh`` (the hook never asks:
it runs inside libvirtd's own calls). A seam: ``status`` takes any ``RunningDomains``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from vmnet_hook import is_uuid
from vmnet_hook.errors import VmnetError

RunningDomains = Callable[[], frozenset[str]]  # UUIDs; raises LibvirtUnknown
TIMEOUT_SECONDS = 10.0


class LibvirtUnknown(VmnetError):
    """libvirt could not be asked which domains run: nothing may be taken as stale."""


def virsh_running(uri: str, timeout: float = TIMEOUT_SECONDS) -> frozenset[str]:
    """The UUIDs of the active domains (running or paused, starting too) at ``uri``."""
    command = ["virsh", "-c", uri, "list", "--uuid"]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)  # fmt: skip
    except FileNotFoundError:
        raise LibvirtUnknown("virsh is not installed") from None
    except subprocess.TimeoutExpired:
        raise LibvirtUnknown(f"virsh -c {uri} gave no answer in {timeout:g}s") from None
    except OSError as error:
        raise LibvirtUnknown(f"virsh cannot run: {error.strerror or error}") from None
    said = printable(done.stderr.decode("utf-8", "replace")).strip()
    if done.returncode != 0:
        first = said.splitlines()[0] if said else f"exit status {done.returncode}"
        raise LibvirtUnknown(f"virsh -c {uri}: {first}")
    uuids = done.stdout.decode("utf-8", "replace").split()
    strange = [word for word in uuids if not is_uuid(word)]
    if strange:
        raise LibvirtUnknown(f"virsh printed {printable(strange[0])!r}, not a domain UUID")
    return frozenset(uuids)


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes, never sent to a terminal."""
    return "".join(c if c.isprintable() or c in "\n" else f"\\x{ord(c):02x}" for c in text)
