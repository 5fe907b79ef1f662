"""Configuration: ``/etc/vmnet-hook/config``, overridden by ``VMNET_HOOK_<KEY>``.

Standard library only: the hook's fast path loads it.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass

from vmnet_hook.errors import ConfigError

DEFAULT_PATH = "/etc/vmnet-hook/config"
SECTION = "vmnet-hook"
LOG_LEVELS = ("debug", "info", "warning", "error")


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
        if not value.isdigit() or not 1 <= int(value) <= 300:
            raise ConfigError(f"config key {key}: {raw!r} is not a whole number of seconds 1-300")
        return int(value)
    if key == "allowed_namespaces":
        return tuple(part for part in value.replace(",", " ").split() if part)
    if key == "log_level":
        if value not in LOG_LEVELS:
            raise ConfigError(f"config key {key}: {raw!r} is not one of {', '.join(LOG_LEVELS)}")
        return value
    if key == "vm_cidr":
        return _cidr(key, raw)
    if not value.startswith("/"):
        raise ConfigError(f"config key {key}: {raw!r} is not an absolute path; start it with /")
    return value.rstrip("/") or "/"


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
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        raise ConfigError(f"config file {path}: {error}".splitlines()[0]) from None
    unknown_sections = [name for name in parser.sections() if name != SECTION]
    if unknown_sections:
        raise ConfigError(
            f"config file {path}: unknown section [{unknown_sections[0]}]; "
            f"put every key under [{SECTION}]"
        )
    return dict(parser[SECTION]) if parser.has_section(SECTION) else {}


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
