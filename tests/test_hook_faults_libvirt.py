"""Libvirt tier: release end under faults made through libvirt itself (issue 11, rule 1).

A running domain gets another tool's live metadata holding a ``<uuid>`` of its own
(``virsh metadata --live --set`` from another namespace URI), and the config file is
broken after the start; ``virsh destroy`` must still release: no altname, no state file,
and syslog says what is wrong with the config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakePod
from tests.test_libvirt import (  # noqa: F401 (fixtures)
    Define,
    Vm,
    domains,
    installed_hook,
    link,
    run,
    selector_for,
    start,
    virsh,
)

pytestmark = pytest.mark.libvirt

CONFIG = Path("/etc/vmnet-hook/config")  # install.sh writes none: the hook's default path
DECOY = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def broken_later() -> Iterator[Path]:
    """The real config path, put back as it was (absent, as install.sh leaves it)."""
    before = CONFIG.read_bytes() if CONFIG.exists() else None
    yield CONFIG
    if before is None:
        CONFIG.unlink(missing_ok=True)
    else:
        CONFIG.write_bytes(before)


def test_destroy_releases_despite_foreign_live_metadata_and_a_config_broken_after_start(
    make_pod: MakePod,
    domains: Define,  # noqa: F811
    syslog_lines: list[str],
    broken_later: Path,
) -> None:
    pod = make_pod()
    vm = Vm.random()
    domains(vm, selector_for(pod, "netns"))
    start(vm)
    assert vm.placeholder in link(pod.host_veth).get("altnames", [])
    foreign = (
        f"<x><!-- <uuid>{DECOY}</uuid> --><uuid>{DECOY}</uuid>"
        f"<t><![CDATA[<uuid>{DECOY}</uuid>]]></t></x>"
    )
    set_live = virsh("metadata", vm.name, "--live", "--uri", "urn:other-tool:1", "--key", "ot",
                     "--set", foreign)  # fmt: skip
    assert set_live.returncode == 0, set_live.stderr
    assert DECOY in virsh("dumpxml", vm.name).stdout
    broken_later.parent.mkdir(parents=True, exist_ok=True)
    broken_later.write_text("[vmnet-hook]\ndeadline_seconds = ١٢\n")

    destroyed = virsh("destroy", vm.name)

    assert destroyed.returncode == 0, destroyed.stderr
    assert vm.placeholder not in link(pod.host_veth).get("altnames", [])
    assert run("ip", "link", "show", "dev", vm.placeholder).returncode != 0
    assert not vm.state_file.exists()
    said = [line for line in syslog_lines if "release end" in line and vm.name in line]
    assert any(
        "config key deadline_seconds: '١٢' is not a whole number" in line
        and "released with the default settings" in line
        for line in said
    ), said
