"""What each domain has bound, one JSON file per domain UUID, written atomically."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from vmnet_hook.errors import StateError
from vmnet_hook.podnet import record
from vmnet_hook.podnet.record import GuestRecord


@dataclass(frozen=True)
class Binding:
    mac: str
    placeholder: str
    host_veth: str
    ifindex: int
    pod_netns: str = ""  # "net:[INODE]" of the pod, and its NIC: who holds which pod NIC
    pod_dev: str = ""


@dataclass(frozen=True)
class DomainState:
    domain: str
    bindings: tuple[Binding, ...]
    guests: tuple[GuestRecord, ...] = ()  # network='masquerade' NICs


class StateStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def path(self, uuid: str) -> str:
        return os.path.join(self.state_dir, f"{uuid}.json")

    def load(self, uuid: str) -> DomainState | None:
        try:
            with open(self.path(uuid), encoding="utf-8") as handle:
                raw = json.load(handle)
            return DomainState(
                raw["domain"],
                tuple(Binding(**b) for b in raw["bindings"]),
                tuple(record.from_dict(g) for g in raw.get("guests", [])),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StateError(
                f"state file {self.path(uuid)} is unreadable ({error}); remove it if no domain "
                "with that UUID runs"
            ) from None

    def save(self, uuid: str, state: DomainState) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        payload = json.dumps(asdict(state), indent=1).encode()
        fd, temporary = tempfile.mkstemp(prefix=f".{uuid}.", dir=self.state_dir)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path(uuid))

    def remove(self, uuid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(uuid))

    def all(self) -> dict[str, DomainState]:
        """Every domain's readable state; one broken file must not block other domains."""
        try:
            names = sorted(os.listdir(self.state_dir))
        except FileNotFoundError:
            return {}
        found: dict[str, DomainState] = {}
        for uuid in (n.removesuffix(".json") for n in names if n.endswith(".json")):
            with contextlib.suppress(StateError):
                if (state := self.load(uuid)) is not None:
                    found[uuid] = state
        return found

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Host-wide: what other domains hold is checked and ours recorded as one step.

        The holder writes its pid and call (``qemu DOMAIN OPERATION SUBOP``) into the lock
        file while it holds it, so that a call whose deadline runs out while it waits can
        say who holds it (hook.expiry, with the kernel's /proc/locks)."""
        import sys

        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.state_dir, ".lock"),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # bounded by the hook's deadline
            call = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:4]] if sys.argv else [])
            holder = f"pid {os.getpid()}: {call}"[:200].encode("utf-8", "backslashreplace")
            with contextlib.suppress(OSError):  # a full disk must not stop the hook here
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder + b"\n", 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
