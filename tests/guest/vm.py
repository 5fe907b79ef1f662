"""A real Linux guest under the machine's libvirtd: moved into the package
(``vmnet_hook.demo.guest``), where ``vmnet-hook demo`` uses it too. The test tier's guests
keep their own names (``vmnt-guest-…``) and files (under /var/lib/libvirt/vmnet-hook-tests)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from vmnet_hook.demo import guest as _guest
from vmnet_hook.demo.guest import (
    HOST_LIBVIRT,
    LEASE_LINE,
    LIBVIRT_URI,
    ControlChannel,
    GuestError,
    Libvirt,
    direct_interface_xml,
    domain_xml,
    random_mac,
    virsh,
)

RUN_ROOT = Path("/var/lib/libvirt/vmnet-hook-tests")
NAME_PREFIX = "vmnt-guest-"


class Guest(_guest.Guest):
    """One test domain: defined with ``define()``, run with ``start()``, gone after ``remove()``."""

    NAME_PREFIX: ClassVar[str] = NAME_PREFIX
    RUN_ROOT: ClassVar[Path] = RUN_ROOT


__all__ = [
    "HOST_LIBVIRT",
    "LEASE_LINE",
    "LIBVIRT_URI",
    "NAME_PREFIX",
    "RUN_ROOT",
    "ControlChannel",
    "Guest",
    "GuestError",
    "Libvirt",
    "direct_interface_xml",
    "domain_xml",
    "random_mac",
    "virsh",
]
