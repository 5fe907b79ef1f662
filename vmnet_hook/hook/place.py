"""The settings a call with work runs with, and where a domain's state lives.

``release end`` needs the domain's UUID and nothing else: a config file that became
unreadable, invalid or untrusted after the domain started must not strand its bindings.
So ``prepare`` leaves, in the default state dir, a pointer ``UUID.at`` naming the state dir
it used when that is another one (and not VMNET_HOOK_STATE_DIR's, which serves tests and
manual runs); ``release end`` follows it without loading config (``gate.state_dir_of``),
and with a broken config releases on the defaults, saying why. Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from vmnet_hook import config, files, is_uuid, temporary_of
from vmnet_hook.errors import ConfigError, StateError
from vmnet_hook.hook import gate

MAX_POINTER_BYTES = 4096


def settings(
    step: tuple[str, str],
    xml: bytes,
    clock: gate.deadline,
    warn: Callable[[str], None],
    environ: Mapping[str, str] = os.environ,
) -> config.Config:
    """The configuration, its state dir trusted, then its deadline started (counted from
    the call's start: one already past ends the call here, naming the state file). For
    release end, a broken config gives the defaults (and a warning), and the state dir is
    where the domain's state is."""
    try:
        loaded = config.load(config.config_path(environ), environ)
    except ConfigError as error:
        if step != gate.RELEASE:
            raise
        loaded = defaults(environ)
        warn(f"{error}; released with the default settings")
    uuid = gate.domain_uuid(xml)
    if step == gate.RELEASE:
        found = gate.state_dir_of(uuid) if uuid else None
        if uuid and found:
            loaded = replace(loaded, state_dir=_followed(found, uuid))
    config.check_state_dir(loaded.state_dir)
    clock.state_dir = loaded.state_dir
    clock.state_file = os.path.join(loaded.state_dir, f"{uuid}.json") if uuid else ""
    clock.restart(loaded.deadline_seconds)  # known by now: what may be left bound
    return loaded


def defaults(environ: Mapping[str, str]) -> config.Config:
    """What the environment overrides, else the defaults: no config file. Another
    variable that is invalid does not lose VMNET_HOOK_STATE_DIR, where the state is."""
    overridden = environ.get(gate.STATE_DIR_VARIABLE, "")
    for variables in (environ, {gate.STATE_DIR_VARIABLE: overridden} if overridden else {}):
        try:
            return config.load("", variables)
        except ConfigError:
            continue
    return config.Config()


def _followed(found: str, uuid: str) -> str:
    """``found`` (from gate.state_dir_of), or the state dir its pointer names."""
    if os.path.exists(os.path.join(found, f"{uuid}.json")):
        return found
    if os.path.exists(pointer_path(uuid)):
        return read_pointer(uuid)
    return found  # only a killed writer's temporary file: release removes it there


def pointer_path(uuid: str) -> str:
    return os.path.join(gate.DEFAULT_STATE_DIR, uuid + gate.POINTER_SUFFIX)


def needs_pointer(state_dir: str, environ: Mapping[str, str] = os.environ) -> bool:
    return state_dir != gate.DEFAULT_STATE_DIR and not environ.get(gate.STATE_DIR_VARIABLE)


def write_pointer(uuid: str, state_dir: str) -> None:
    """Record, before anything is bound, where ``uuid``'s state is: written whole or not
    at all, in a directory only root can change."""
    config.check_state_dir(gate.DEFAULT_STATE_DIR)
    from vmnet_hook.host.state import directory_error  # prepare's path loads it anyway

    try:
        os.makedirs(gate.DEFAULT_STATE_DIR, mode=0o700, exist_ok=True)
        files.write_whole(pointer_path(uuid), (state_dir + "\n").encode())
    except OSError as error:
        raise directory_error(gate.DEFAULT_STATE_DIR, error) from None


def remove_pointer(uuid: str) -> None:
    """The pointer, and a temporary file a killed ``write_pointer`` left; StateError
    naming the default state dir when one cannot go."""
    from vmnet_hook.host.state import directory_error

    for path in (pointer_path(uuid), temporary_of(pointer_path(uuid))):
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise directory_error(gate.DEFAULT_STATE_DIR, error, f"{path} stays") from None


def pointed_dirs() -> tuple[list[str], list[str]]:
    """The state dirs the pointers in the default state dir name, and a line for each
    pointer that cannot be read. Nothing while the default dir itself is refused."""
    try:
        config.check_state_dir(gate.DEFAULT_STATE_DIR)
        names = sorted(os.listdir(gate.DEFAULT_STATE_DIR))
    except (ConfigError, FileNotFoundError):
        return [], []
    except OSError as error:
        return [], [f"state directory {gate.DEFAULT_STATE_DIR}: cannot list its "
                    f"pointers ({error.strerror})"]  # fmt: skip
    found, refused = [], []
    suffix = gate.POINTER_SUFFIX
    for uuid in (n.removesuffix(suffix) for n in names if n.endswith(suffix)):
        if is_uuid(uuid):
            try:
                found.append(read_pointer(uuid))
            except (StateError, ConfigError) as error:
                refused.append(str(error))
    return list(dict.fromkeys(found)), refused


def other_state_dirs(state_dir: str, environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Where other domains' state may be besides ``state_dir``: the default state dir and
    those its pointers name (domains started under an earlier ``state_dir``), each one
    root's alone; none when VMNET_HOOK_STATE_DIR keeps tests and manual runs apart."""
    if environ.get(gate.STATE_DIR_VARIABLE):
        return ()
    found = []
    for directory in [gate.DEFAULT_STATE_DIR, *pointed_dirs()[0]]:
        if directory != state_dir and config.untrusted_dir(directory) is None:
            found.append(directory)
    return tuple(dict.fromkeys(found))


def forget_pointer(uuid: str, state_dir: str) -> None:
    """Remove ``uuid``'s pointer if it names ``state_dir``, whose state for ``uuid`` is
    released (and a killed writer's temporary); one that names another (a record still
    there), or cannot be read, stays. StateError when it cannot be removed."""
    try:
        names = read_pointer(uuid) if os.path.lexists(pointer_path(uuid)) else state_dir
    except (StateError, ConfigError):
        return
    if names == state_dir:
        remove_pointer(uuid)


def read_pointer(uuid: str) -> str:
    """The state dir ``uuid``'s pointer names. Never follows a link, never blocks, never
    reads without bound; a pointer anyone but root could have written is refused."""
    path = pointer_path(uuid)
    config.check_state_dir(gate.DEFAULT_STATE_DIR)
    try:
        found = files.read_regular(path, MAX_POINTER_BYTES)
    except (OSError, files.NotReadable) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise StateError(f"state pointer {path}: cannot read it: {reason}") from None
    if found is None:
        raise StateError(f"state pointer {path}: cannot read it: it is gone")
    data, info = found
    why = config.untrusted(info)
    text = data.decode("utf-8", "replace").removesuffix("\n")
    if not why and (len(data) > MAX_POINTER_BYTES or not text.startswith("/") or "\n" in text):
        why = "not a state dir's absolute path on one line"
    if "\0" in text or why:
        raise StateError(f"state pointer {path} is {why or 'corrupt'}; remove it once the "
                         "domain's bindings are cleared (vmnet-hook status --prune)")  # fmt: skip
    return text
