"""Configuration: ``/etc/vmnet-hook/config``, overridden by ``VMNET_HOOK_<KEY>``.

Standard library only: the hook's fast path loads it. The hook runs as root on every
domain, so only root's configuration is trusted: the file (the one its symlinks finally
name) and the state directory must be root's and writable by no one else.
"""

from __future__ import annotations

import configparser
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from vmnet_hook import files
from vmnet_hook.errors import ConfigError
from vmnet_hook.files import Walk, walk

DEFAULT_PATH = "/etc/vmnet-hook/config"
SECTION = "vmnet-hook"
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_CONFIG_BYTES = 64 * 1024
PATH_KEYS = ("proc_root", "pod_log_dir", "netns_dir", "state_dir")
# Directories that hold others' files: a state_dir there would scan and remove in them.
SHARED_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/run/lock",
        "/run/user",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/usr/local",
        "/var",
        "/var/lib",
        "/var/run",
        "/var/tmp",
    ]
)


@dataclass(frozen=True)
class Config:
    proc_root: str = "/proc"
    pod_log_dir: str = "/var/log/pods"
    netns_dir: str = "/run/netns"
    state_dir: str = "/run/vmnet-hook"
    deadline_seconds: int = 10
    allowed_namespaces: tuple[str, ...] = ()
    log_level: str = "info"
    vm_cidr: str = "10.0.2.0/24"


def _parse(key: str, raw: str) -> object:
    value = raw.strip()
    if key == "deadline_seconds":
        # isdigit() alone takes '²' and '١٢'; only ASCII digits are a number here
        number = value.isascii() and value.isdigit() and len(value) <= 3
        if not (number and 1 <= int(value) <= 300):
            raise ConfigError(f"config key {key}: {raw!r} is not a whole number of seconds 1-300")
        return int(value)
    if key == "allowed_namespaces":
        return _namespaces(key, raw)
    if key == "log_level":
        if value not in LOG_LEVELS:
            raise ConfigError(f"config key {key}: {raw!r} is not one of {', '.join(LOG_LEVELS)}")
        return value
    if key == "vm_cidr":
        return _cidr(key, raw)
    return _path(key, raw)


def _path(key: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/"):
        raise ConfigError(f"config key {key}: {raw!r} is not an absolute path; start it with /")
    if not value.isprintable():  # C0, DEL, C1 (U+0085...), line and paragraph separators
        raise ConfigError(f"config key {key}: {raw!r} holds a control character; remove it")
    if ".." in value.split("/"):  # after a link, the kernel's ".." is not the text's
        raise ConfigError(f"config key {key}: {raw!r} holds '..'; name the directory itself")
    value = "/" + value.lstrip("/")  # normpath keeps a leading "//"
    path = os.path.normpath(value)
    if key == "state_dir" and path in SHARED_DIRS:
        raise ConfigError(
            f"config key {key}: {raw!r} is a directory of the system, not one of its own; "
            "name a directory for vmnet-hook alone, like /run/vmnet-hook"
        )
    return value.rstrip("/") or "/"


def _namespaces(key: str, raw: str) -> tuple[str, ...]:
    names = tuple(part for part in raw.replace(",", " ").split() if part)
    if not names:  # "none" or "any"? Either guess could be the wrong one
        raise ConfigError(f"config key {key}: {raw!r} names no namespace; list the "
                          "namespaces domains may claim pods from, or remove the key to "
                          "allow any")  # fmt: skip
    for name in names:
        if not is_dns_label(name):
            raise ConfigError(
                f"config key {key}: {name!r} is not a Kubernetes namespace name (a DNS-1123 "
                "label: up to 63 of a-z, 0-9 and '-', beginning and ending with a-z or 0-9)"
            )
    return names


def is_dns_label(name: str) -> bool:
    allowed = "abcdefghijklmnopqrstuvwxyz0123456789-"
    return (
        0 < len(name) <= 63
        and all(char in allowed for char in name)
        and name[0] != "-"
        and name[-1] != "-"
    )


def _cidr(key: str, raw: str) -> str:
    import ipaddress

    try:
        network = ipaddress.IPv4Network(raw.strip().encode("ascii").decode(), strict=True)
    except (ValueError, UnicodeError):
        network = None
    if network is None or network.prefixlen > 30:
        raise ConfigError(
            f"config key {key}: {raw!r} is not an IPv4 network of /30 or wider, like 10.0.2.0/24"
        )
    return str(network)


def _read_file(path: str) -> dict[str, str]:
    text = read_trusted(path)
    if text is None:
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as error:
        raise ConfigError(f"config file {path}: {error}".splitlines()[0]) from None
    unknown_sections = [name for name in parser.sections() if name != SECTION]
    if unknown_sections or parser.defaults():
        where = f"[{unknown_sections[0]}]" if unknown_sections else "[DEFAULT]"
        raise ConfigError(
            f"config file {path}: unknown section {where}; put every key under [{SECTION}]"
        )
    return dict(parser[SECTION]) if parser.has_section(SECTION) else {}


def read_trusted(path: str) -> str | None:
    """The text of the config file, None when it is missing. Never blocks (a FIFO is
    refused, not read), never reads without bound, and judges every directory and
    symbolic link on the way to the file, and the file its links finally name. "" names
    no file: the defaults."""
    if not path:
        return None
    walked = walk(path)
    if walked.bad:
        raise ConfigError(on_the_way("config file", path, walked))
    if not walked.found:
        if walked.linked:
            raise ConfigError(
                f"config file {path} is a symbolic link to {walked.real}, which does not "
                "exist: point it at the config file, or remove it"
            )
        return None
    try:
        found = files.read_regular(walked.real, MAX_CONFIG_BYTES)
    except files.NotReadable as error:
        raise ConfigError(
            f"config file {path} is {error}: only a regular file of at most "
            f"{MAX_CONFIG_BYTES} bytes is read"
        ) from None
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it: {error.strerror}") from None
    if found is None:
        return None
    data, info = found
    if why := untrusted(info):
        raise ConfigError(untrusted_line("config file", path, why))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason})") from None


def untrusted(info: os.stat_result, sticky_ok: bool = False) -> str:
    """Why a file or directory with ``info`` is not root's alone; "" when it is. The hook's
    own user counts as root (a hook run by hand without root trusts its own files)."""
    if info.st_uid not in (0, os.geteuid()):
        return f"owned by uid {info.st_uid}, not root"
    if info.st_mode & 0o022 and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        return f"writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


ROOTS_ALONE = "chown root: {0}; chmod go-w {0}"


def untrusted_line(what: str, path: str, why: str) -> str:
    real = os.path.realpath(path)
    shown = path if real == path else f"{path} (-> {real})"
    return f"{what} {shown} is {why}: only root's configuration is trusted; " + ROOTS_ALONE.format(
        real
    )


def check_state_dir(path: str) -> None:
    """Refuse a state directory that anyone but root could change: itself (once it
    exists), every directory on the way to it, and every symbolic link followed."""
    walked = walk(path)
    if walked.bad:
        raise ConfigError(on_the_way("state directory", path, walked))
    if walked.found and (why := _untrusted_at(walked.real)):
        raise ConfigError(untrusted_line("state directory", path, why))


def untrusted_dir(path: str) -> tuple[str, str, str] | None:
    """(what, why, fix) when anyone but root could change the state directory at
    ``path``: the directory, a directory on the way to it or a symbolic link followed."""
    walked = walk(path)
    if walked.bad:
        return walked.bad, walked.why, walked.fix.format(walked.bad)
    why = _untrusted_at(walked.real) if walked.found else ""
    return (walked.real, why, ROOTS_ALONE.format(walked.real)) if why else None


def _untrusted_at(path: str) -> str:
    try:
        return untrusted(os.stat(path))
    except OSError as error:
        return f"unreadable ({error.strerror})"


def on_the_way(what: str, path: str, walked: Walk) -> str:
    """The line for a directory or link on the way to ``path`` that anyone but root
    could change (a ``walk`` with ``bad`` set)."""
    fix = walked.fix.format(walked.bad)
    return (f"{what} {path}: {walked.bad} on the way to it is {walked.why}: only root's "
            f"configuration is trusted; {fix}")  # fmt: skip


def load(path: str = DEFAULT_PATH, environ: Mapping[str, str] = os.environ) -> Config:
    """Defaults, then the file, then ``VMNET_HOOK_*`` variables; unknown keys are errors."""
    known = Config.__dataclass_fields__.keys()
    raw = _read_file(path)
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"config file {path}: unknown key {key!r}; known keys: {', '.join(known)}"
            )
    for variable, value in environ.items():
        if variable.startswith("VMNET_HOOK_") and variable != "VMNET_HOOK_CONFIG":
            key = variable.removeprefix("VMNET_HOOK_").lower()
            if key not in known:
                raise ConfigError(
                    f"environment: unknown variable {variable}; unset it (VMNET_HOOK_ is "
                    "followed by a config key in upper case)"
                )
            raw[key] = value
    return Config(**{key: _parse(key, value) for key, value in raw.items()})  # type: ignore[arg-type]


def config_path(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("VMNET_HOOK_CONFIG", DEFAULT_PATH)
