"""What each domain has bound, one JSON file per domain UUID, written atomically.

Claims fail closed: a file that cannot be read (corrupt, of another version or shape, not
a regular file) is reported, never taken for "nobody holds this NIC". Reading never
blocks and never reads without bound. Writing names the directory and what is wrong with
it (full, read-only...) and leaves no temporary file behind."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from vmnet_hook import MAX_STATE_BYTES, files, is_uuid, temporary_of
from vmnet_hook.config import untrusted
from vmnet_hook.errors import StateError
from vmnet_hook.host import schema
from vmnet_hook.podnet.record import GuestRecord

VERSION = 1  # written in every file; a file without it predates versions (same shape)
MAX_BYTES = MAX_STATE_BYTES
STALE_TEMPORARY_SECONDS = 60  # a save takes milliseconds: older temporaries are a dead writer's
Stamp = tuple[int, int]  # (inode, mtime_ns): every save makes a new file


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


class UnreadableState(StateError):
    """A file in the state directory that may record a claim, and cannot be read."""

    def __init__(self, path: str, uuid: str, reason: str) -> None:
        self.path, self.uuid, self.reason = path, uuid, reason
        super().__init__(f"state file {path} is unreadable ({reason}): {self.fix}")

    @property
    def fix(self) -> str:
        if not self.uuid:
            return "vmnet-hook never writes a file of that name: move it out of the directory"
        return (
            f"if no running domain has UUID {self.uuid}, remove it; `vmnet-hook status` lists it"
        )


@dataclass(frozen=True)
class Scan:
    """Every state file of the directory: those read, and those that could not be."""

    states: dict[str, DomainState]
    stamps: dict[str, Stamp]
    unreadable: tuple[UnreadableState, ...]


class StateStore:
    def __init__(self, state_dir: str, elsewhere: Callable[[], tuple[str, ...]] = tuple) -> None:
        self.state_dir = state_dir
        self.elsewhere = elsewhere  # other dirs whose records hold pod NICs too, when asked

    def claims(self) -> Scan:
        """Every record that may hold a pod NIC: this directory's and those of
        ``elsewhere`` (where domains started under an earlier state_dir keep theirs)."""
        scans = [self.scan(), *(StateStore(d).scan() for d in self.elsewhere())]
        states = {u: s for scan in reversed(scans) for u, s in scan.states.items()}
        stamps = {u: s for scan in reversed(scans) for u, s in scan.stamps.items()}
        unreadable = tuple(e for scan in scans for e in scan.unreadable)
        return Scan(states, stamps, unreadable)

    def path(self, uuid: str) -> str:
        return os.path.join(self.state_dir, f"{uuid}.json")

    def load(self, uuid: str) -> DomainState | None:
        """The state of ``uuid``, None when it has none; StateError when unreadable."""
        found = self._load(self.path(uuid), uuid)
        return found[0] if found else None

    def scan(self) -> Scan:
        """Every ``<uuid>.json`` file: read, or reported. Names that start with a dot
        (``.lock``, temporary files) and names not ending in ``.json`` are not state."""
        states: dict[str, DomainState] = {}
        stamps: dict[str, Stamp] = {}
        unreadable: list[UnreadableState] = []
        for name in self._names():
            uuid = name.removesuffix(".json")
            path = os.path.join(self.state_dir, name)
            try:
                if not is_uuid(uuid):
                    raise UnreadableState(path, "", "its name is not <uuid>.json")
                if found := self._load(path, uuid):
                    states[uuid], stamps[uuid] = found
            except UnreadableState as error:
                unreadable.append(error)
        return Scan(states, stamps, tuple(unreadable))

    def all(self) -> dict[str, DomainState]:
        """Every readable state. Not for deciding who holds a NIC: ``scan()`` says which
        files could not be read."""
        return self.scan().states

    def stamp(self, uuid: str) -> Stamp | None:
        """Which write of ``uuid``'s file is there now (None: no file)."""
        try:
            found = os.lstat(self.path(uuid))
        except FileNotFoundError:
            return None
        return (found.st_ino, found.st_mtime_ns)

    def save(self, uuid: str, state: DomainState) -> None:
        """Atomically, under ``lock()``: a new file renamed over the old one. Any failure
        is a StateError naming the directory, and no temporary file is left."""
        payload = json.dumps({"version": VERSION, **asdict(state)}, indent=1).encode()
        self._make_dir()
        self._sweep_temporaries()
        try:
            files.write_whole(self.path(uuid), payload)
        except OSError as error:
            raise directory_error(self.state_dir, error) from None

    def sweep(self, uuid: str) -> None:
        """The temporary file a save of ``uuid`` killed before its rename left, if any."""
        with contextlib.suppress(OSError):
            os.unlink(temporary_of(self.path(uuid)))

    def remove(self, uuid: str) -> None:
        """The state of ``uuid``, and what a killed save of it left."""
        path = self.path(uuid)
        self.sweep(uuid)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise directory_error(self.state_dir, error, f"{path} stays") from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Host-wide: what other domains hold is checked and ours recorded as one step.

        The holder writes its pid and call (``qemu DOMAIN OPERATION SUBOP``) into the lock
        file while it holds it, so that a call whose deadline runs out while it waits can
        say who holds it (hook.expiry, with the kernel's /proc/locks)."""
        import sys

        self._make_dir()  # a read-only or full directory is named (rule 7)
        fd = self._open_lock(os.path.join(self.state_dir, ".lock"))
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

    def _open_lock(self, lock: str) -> int:
        """The lock file, made if missing; what stands in its place is named, not blamed
        on the directory. Never opens anything but a regular file (a device may act on
        open, a FIFO or socket is no lock)."""
        try:
            mode = os.lstat(lock).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        except OSError as error:
            raise directory_error(self.state_dir, error) from None
        try:
            if not stat.S_ISREG(mode):
                raise OSError(errno.EEXIST, files.kind(mode))
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise directory_error(self.state_dir, error) from None
            kind = error.strerror if error.errno == errno.EEXIST else "not a regular file"
            raise StateError(
                f"lock file {lock} is {kind}, not the regular file vmnet-hook makes: remove "
                "it (no hook holds the lock while it is there)"
            ) from None
        if why := untrusted(os.fstat(fd)):  # its owner could hold it for ever
            os.close(fd)
            raise StateError(f"lock file {lock} is {why}: only root's is used; remove it")
        return fd

    def _load(self, path: str, uuid: str) -> tuple[DomainState, Stamp] | None:
        try:
            found = _read_bounded(path)
            if found is None:
                return None
            payload, stamp = found
            return _decode(json.loads(payload.decode())), stamp
        except OSError as error:
            reason = error.strerror or str(error)
        except UnicodeDecodeError:
            reason = "not UTF-8 text"
        except json.JSONDecodeError as error:
            reason = f"not JSON: {error}"
        except RecursionError:
            reason = "JSON nested too deeply"
        except ValueError as error:  # not a regular file, too large, schema, version
            reason = str(error)
        raise UnreadableState(path, uuid, reason)

    def _names(self) -> list[str]:
        try:
            names = os.listdir(self.state_dir)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise directory_error(self.state_dir, error, "its files cannot be listed") from None
        return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))

    def _make_dir(self) -> None:
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as error:
            raise directory_error(self.state_dir, error) from None

    def _sweep_temporaries(self) -> None:
        """Remove the temporary files of writers that died (killed mid-save): those
        older than a minute. A live writer's is seconds old, and left alone."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.state_dir):
                path = os.path.join(self.state_dir, name)
                with contextlib.suppress(OSError):
                    old = time.time() - os.lstat(path).st_mtime > STALE_TEMPORARY_SECONDS
                    if is_temporary(name) and old:
                        os.unlink(path)


def is_temporary(name: str) -> bool:
    """``.<uuid>.json.tmp`` (``temporary_of``), or ``.<uuid>.<random>[.tmp]`` of older
    versions: a file written before it is renamed."""
    return name.startswith(".") and is_uuid(name[1:37]) and name[37:38] == "."


def directory_error(state_dir: str, error: OSError, what_stays: str = "") -> StateError:
    """One line naming the state directory, what is wrong with it, and the fix."""
    problem, fix = _DIRECTORY_PROBLEMS.get(error.errno or 0, _OTHER_PROBLEM)
    why = error.strerror or str(error)
    stays = f"; {what_stays}" if what_stays else ""
    return StateError(f"state directory {state_dir} {problem} ({why}){stays}: {fix}")


_ELSEWHERE = "or set state_dir to another directory"
_OTHER_PROBLEM = ("cannot be written", f"check its file system, {_ELSEWHERE}")
_DIRECTORY_PROBLEMS = {
    errno.ENOSPC: ("is full", f"free space on its file system, {_ELSEWHERE}"),
    errno.EDQUOT: ("is over its quota", f"free space on its file system, {_ELSEWHERE}"),
    errno.EROFS: ("is read-only", f"remount its file system read-write, {_ELSEWHERE}"),
    errno.EACCES: ("is not writable", f"make it root's with mode 0700, {_ELSEWHERE}"),
    errno.EPERM: (
        "is not writable",
        f"check its owner, mode and attributes (lsattr), {_ELSEWHERE}",
    ),
    errno.ENOTDIR: ("is not a directory", f"remove what stands in its way, {_ELSEWHERE}"),
    errno.EEXIST: ("is not a directory", f"remove what stands in its way, {_ELSEWHERE}"),
    errno.EIO: ("has an I/O error", f"check its file system and disk, {_ELSEWHERE}"),
}


def _read_bounded(path: str) -> tuple[bytes, Stamp] | None:
    """At most MAX_BYTES of a regular file (vmnet_hook.files) only root could have
    written: one planted while the directory was open to others is not believed, whatever
    it names. None: no such file."""
    found = files.read_regular(path, MAX_BYTES)
    if found is None:
        return None
    payload, info = found
    if why := untrusted(info):
        raise ValueError(f"{why}: only a file root alone can write is read")
    return payload, (info.st_ino, info.st_mtime_ns)


def _decode(raw: object) -> DomainState:
    """A file of this version (every field), or of the one before versions, which wrote
    this shape without ``version`` and could leave out fields that have a default."""
    if not isinstance(raw, dict):
        raise schema.SchemaError("the file is not a JSON object")
    body = dict(raw)
    version = body.pop("version", None)
    if version is not None and (type(version) is not int or version != VERSION):
        raise schema.SchemaError(
            f"written by another version of vmnet-hook: state version {version!r}, "
            f"this one reads {VERSION}"
        )
    state = schema.decode(DomainState, body, lax=version is None)
    for where, problem in _nonsense(state):
        raise schema.SchemaError(f"{where} is {problem}")
    return state


def _nonsense(state: DomainState) -> Iterator[tuple[str, str]]:
    """What the file says that no hook could have written: (where, what it is not)."""
    for i, bound in enumerate(state.bindings):
        links = [("placeholder", bound.placeholder), ("host_veth", bound.host_veth)]
        links += [("pod_dev", bound.pod_dev)] if bound.pod_dev else []
        yield from _checked(f"bindings[{i}]", bound.mac, bound.ifindex, links)
    for i, guest in enumerate(state.guests):
        where, nic = f"guests[{i}]", guest.nic
        links = [("placeholder", nic.placeholder), ("pod_end", nic.pod_end)]
        yield from _checked(f"{where}.nic", nic.mac, 1, [*links, ("pod_dev", nic.pod_dev)])
        paths = [("pid_file", guest.pid_file), ("lease_file", guest.lease_file)]
        paths += [(f"netns_paths[{j}]", path) for j, path in enumerate(guest.netns_paths)]
        for name, path in paths:
            if not (path.startswith("/") and path.isprintable()):
                yield f"{where}.{name}", "not an absolute path"
        if guest.dnsmasq_pid is not None and not 0 < guest.dnsmasq_pid < 1 << 22:
            yield f"{where}.dnsmasq_pid", "not a process id"


def _checked(
    where: str, mac: str, ifindex: int, links: list[tuple[str, str]]
) -> Iterator[tuple[str, str]]:
    for name, link in links:
        if not schema.is_link_name(link):
            yield f"{where}.{name}", "not a link name"
    if not schema.is_mac(mac):
        yield f"{where}.mac", "not a MAC address"
    if not 0 < ifindex < 1 << 31:
        yield f"{where}.ifindex", "not an interface index"
