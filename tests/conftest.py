"""Shared fixtures. Kernel and libvirt tiers need root; in CI (CI=true) a skip is a failure."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.guest import boot_guest, guest_image  # noqa: F401 (fixtures of the guest tier)
from vmnet_hook.demo import sandbox

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
HOOK = REPO / "hooks" / "qemu"
IN_CI = os.environ.get("CI") == "true"
DEV_LOG = "/dev/log"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every tier: {report.longrepr}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs_root = ("kernel", "libvirt", "runtimes")
        if any(item.get_closest_marker(mark) for mark in needs_root) and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root"))


@pytest.fixture
def hook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment where the hook keeps its state in tmp_path and reads no config file."""
    state_dir = tmp_path / "state"
    monkeypatch.setenv("VMNET_HOOK_STATE_DIR", str(state_dir))
    monkeypatch.setenv("VMNET_HOOK_CONFIG", str(tmp_path / "no-config"))
    return dict(os.environ)


RunHook = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_hook(hook_env: dict[str, str]) -> RunHook:
    """Run hooks/qemu as libvirt does: arguments, XML on stdin, nothing else."""

    def run(
        *args: str, xml: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(HOOK), *args], input=xml, capture_output=True, text=True,
            env={**hook_env, **(env or {})}, timeout=60, check=False,
        )  # fmt: skip

    return run


@pytest.fixture
def cgroup_root() -> Iterator[str]:
    """A private directory in the real cgroup2 tree, for this test's pods."""
    root = f"{sandbox.cgroup2_mount()}/{sandbox.random_name('vmnt-test-')}"
    os.mkdir(root)
    yield root
    for directory, _subdirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        os.rmdir(directory)


MakePod = Callable[..., sandbox.Pod]


@pytest.fixture
def make_pod(cgroup_root: str) -> Iterator[MakePod]:
    """Build real pods (netns, veth, processes); every one is removed, pass or fail, and
    before ``cgroup_root``, whose directories their processes sit in."""
    pods: list[sandbox.Pod] = []

    def make(pod_dev: str = "eth0", **options: object) -> sandbox.Pod:
        pod = sandbox.make_pod(pod_dev, **options)  # type: ignore[arg-type]
        pods.append(pod)
        return pod

    yield make
    for pod in reversed(pods):
        sandbox.remove_pod(pod)


def domain_xml(name: str = "one-nic.xml", **replacements: str) -> str:
    text = (DATA / name).read_text()
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


@dataclass(frozen=True)
class InstallLayout:
    """Where install.sh is told to put things: all below one temporary root."""

    root: Path

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "vmnet-hook"

    @property
    def hooks(self) -> Path:
        return self.root / "etc" / "libvirt" / "hooks"

    @property
    def dropin(self) -> Path:
        return self.hooks / "qemu.d" / "vmnet-hook"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "vmnet-hook"

    @property
    def bin(self) -> Path:
        return self.root / "usr" / "local" / "sbin"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment that points install.sh at this layout."""
        return {
            **os.environ,
            "PREFIX": str(self.prefix),
            "HOOKS_DIR": str(self.hooks),
            "CONFIG_DIR": str(self.config),
            "BIN_DIR": str(self.bin),
            **extra,
        }


@pytest.fixture
def syslog_lines() -> Iterator[list[str]]:
    """What is sent to syslog while the test runs, from a socket bound at /dev/log (this
    host runs no syslog daemon); drained all the time, so no sender ever blocks."""
    if os.path.exists(DEV_LOG):
        pytest.skip(f"{DEV_LOG} exists: a syslog daemon owns it, and this test cannot read it")
    lines: list[str] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(DEV_LOG)
    sock.settimeout(0.2)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                lines.append(sock.recv(65536).decode("utf-8", "replace"))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        stop.set()
        reader.join()
        sock.close()
        os.unlink(DEV_LOG)
