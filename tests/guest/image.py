"""The guest's kernel and initramfs: moved into the package (``vmnet_hook.demo.guestimage``),
where ``vmnet-hook demo`` uses them too; this module keeps the tests' imports working."""

from vmnet_hook.demo.guestimage import (
    ASSETS,
    BUSYBOX,
    CACHE_ROOT,
    CMDLINE,
    INIT_SCRIPT,
    LEASE_SCRIPT,
    METAPACKAGE,
    MODULES,
    GuestImage,
    ImageError,
    guest_image,
    kernel_package,
)

__all__ = [
    "ASSETS",
    "BUSYBOX",
    "CACHE_ROOT",
    "CMDLINE",
    "INIT_SCRIPT",
    "LEASE_SCRIPT",
    "METAPACKAGE",
    "MODULES",
    "GuestImage",
    "ImageError",
    "guest_image",
    "kernel_package",
]
