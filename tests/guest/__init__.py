"""The guest tier (``pytest -m guest``): real Linux guests booted by the machine's libvirtd.

``tests/conftest.py`` imports the fixtures below (``guest_image``, ``boot_guest``); a test::

    @pytest.mark.guest
    def test_something(boot_guest: BootGuest) -> None:
        guest = boot_guest([direct_interface_xml(random_mac(), "vt1234abcd")])
        lease = guest.wait_for_lease("eth0")
        status, output = guest.run("ping -c1 -W2 203.0.113.1")

Needs root, ``tests/setup-guest.sh`` (busybox-static) and libvirtd on qemu:///system.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import pytest

from tests.guest.image import GuestImage, ImageError
from tests.guest.image import guest_image as build_guest_image
from tests.guest.vm import Guest, direct_interface_xml, random_mac, virsh

__all__ = [
    "BootGuest",
    "Guest",
    "GuestImage",
    "boot_guest",
    "direct_interface_xml",
    "guest_image",
    "random_mac",
]


class BootGuest(Protocol):
    """The ``boot_guest`` fixture's factory."""

    def __call__(
        self, interfaces_xml: list[str], *, metadata_xml: str = "", start: bool = True
    ) -> Guest: ...


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The guest's kernel and initramfs (cached under /var/cache/vmnet-hook/guest)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        image = build_guest_image()
    except ImageError as error:
        pytest.skip(str(error))
    if virsh("uri", check=False, timeout=30).returncode != 0:
        pytest.skip("libvirtd does not answer on qemu:///system: run tests/setup-system.sh")
    return image


@pytest.fixture
def boot_guest(guest_image: GuestImage) -> Iterator[BootGuest]:
    """Define (and by default start) guests; each is destroyed, undefined and its files
    removed at teardown, pass or fail."""
    guests: list[Guest] = []

    def boot(interfaces_xml: list[str], *, metadata_xml: str = "", start: bool = True) -> Guest:
        guest = Guest(guest_image, interfaces_xml, metadata_xml)
        guests.append(guest)
        guest.define()
        if start:
            guest.start()
        return guest

    yield boot
    problems = []
    for guest in reversed(guests):
        try:
            guest.remove()
        except AssertionError as error:
            problems.append(str(error))
    assert not problems, "\n".join(problems)
