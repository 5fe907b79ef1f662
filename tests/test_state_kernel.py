"""Kernel tier: the state directory on a real tmpfs that is full or read-only, a state
file that is a FIFO, a writer whose file size limit cuts its write short, as the hook
and the CLI meet them. Nothing bound, no temporary file left, one line naming the fault."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, MakePod, RunHook, domain_xml
from tests.test_hook_kernel import PLACEHOLDER, UUID, altnames
from vmnet_hook.demo import sandbox
from vmnet_hook.errors import StateError
from vmnet_hook.host.state import DomainState, StateStore

pytestmark = pytest.mark.kernel
OTHER = "11111111-1111-4111-8111-111111111111"
FULL = "is full (No space left on device): free space on its file system, or set state_dir to another directory"
READ_ONLY = "is read-only (Read-only file system): remount its file system read-write, or set state_dir to another directory"


@pytest.fixture
def mount() -> Iterator[Path]:
    """A 1 MiB tmpfs of this test's own, unmounted whatever happens."""
    where = Path(tempfile.mkdtemp(prefix="vmnt-state-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(where)],
                   check=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill(mount: Path) -> None:
    """Until the next write of a single byte fails with ENOSPC."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def xml_for(pod: sandbox.Pod, placeholder: str) -> str:
    return domain_xml(NETNS=pod.name).replace(PLACEHOLDER, placeholder)


def test_a_full_state_directory_refuses_the_claim_and_binds_nothing(
    mount: Path, make_pod: MakePod, run_hook: RunHook
) -> None:
    state_dir = mount / "state"
    state_dir.mkdir(mode=0o700)
    fill(mount)
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    env = {"VMNET_HOOK_STATE_DIR": str(state_dir)}
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml_for(pod, placeholder), env=env)
    assert (prepared.returncode, prepared.stdout) == (1, "")
    assert prepared.stderr == f"vmnet-hook: state directory {state_dir} {FULL}\n"
    assert altnames(pod.host_veth) == []
    assert os.listdir(state_dir) == [".lock"]  # no temporary, no state
    (mount / "filler").unlink()  # once there is room, the same start works
    again = run_hook("vm1", "prepare", "begin", "-", xml=xml_for(pod, placeholder), env=env)
    assert again.returncode == 0, again.stderr
    assert altnames(pod.host_veth) == [placeholder]
    run_hook("vm1", "release", "end", "-", xml=xml_for(pod, placeholder), env=env)
    assert altnames(pod.host_veth) == []


def test_a_read_only_state_directory_refuses_the_claim_and_binds_nothing(
    mount: Path, make_pod: MakePod, run_hook: RunHook
) -> None:
    state_dir = mount / "state"
    state_dir.mkdir(mode=0o700)
    remount(mount, "ro")
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    env = {"VMNET_HOOK_STATE_DIR": str(state_dir)}
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml_for(pod, placeholder), env=env)
    assert (prepared.returncode, prepared.stdout) == (1, "")
    assert prepared.stderr == f"vmnet-hook: state directory {state_dir} {READ_ONLY}\n"
    assert altnames(pod.host_veth) == []
    assert os.listdir(state_dir) == []


def test_a_release_that_cannot_remove_the_record_keeps_it_and_says_why(
    mount: Path, make_pod: MakePod, run_hook: RunHook
) -> None:
    """The altname goes; the record stays, so the domain's next start fails closed on it
    until the directory is writable again."""
    state_dir = mount / "state"
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    xml, env = xml_for(pod, placeholder), {"VMNET_HOOK_STATE_DIR": str(state_dir)}
    assert run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env).returncode == 0
    remount(mount, "ro")
    released = run_hook("vm1", "release", "end", "-", xml=xml, env=env)
    record = state_dir / f"{UUID}.json"
    line = f"vmnet-hook: state directory {state_dir} {READ_ONLY}"
    assert (released.returncode, released.stderr) == (
        0, line.replace(" (Read-only file system)", f" (Read-only file system); {record} stays") + "\n")  # fmt: skip
    assert altnames(pod.host_veth) == [] and record.exists()
    refused = run_hook("vm1", "prepare", "begin", "-", xml=xml, env=env)
    assert refused.returncode == 1 and f"{record} stays" in refused.stderr
    assert altnames(pod.host_veth) == []
    remount(mount, "rw")
    assert run_hook("vm1", "release", "end", "-", xml=xml, env=env).returncode == 0
    assert not record.exists()


def test_save_and_remove_on_a_full_then_read_only_tmpfs(mount: Path) -> None:
    store = StateStore(str(mount / "state"))
    store.save(OTHER, DomainState("vm0", ()))
    fill(mount)
    with pytest.raises(StateError) as caught:
        store.save(OTHER, DomainState("vm0-bigger", ()))
    assert str(caught.value) == f"state directory {store.state_dir} {FULL}"
    assert os.listdir(store.state_dir) == [f"{OTHER}.json"]
    assert store.load(OTHER) == DomainState("vm0", ())  # the old record, whole
    remount(mount, "ro")
    acts: list[tuple[Callable[[], None], str]] = [
        (lambda: store.save(OTHER, DomainState("vm0", ())), ""),
        (lambda: store.remove(OTHER), f"; {store.path(OTHER)} stays"),
    ]
    for act, stays in acts:
        with pytest.raises(StateError) as caught:
            act()
        assert str(caught.value) == f"state directory {store.state_dir} {READ_ONLY}".replace(
            "system)", f"system){stays}"
        )
    new = StateStore(str(mount / "new"))  # the directory itself cannot be made
    with pytest.raises(StateError) as caught:
        new.save(OTHER, DomainState("vm0", ()))
    assert str(caught.value) == f"state directory {new.state_dir} {READ_ONLY}"
    assert os.listdir(store.state_dir) == [f"{OTHER}.json"]


def test_an_immutable_state_directory_is_named(mount: Path) -> None:
    store = StateStore(str(mount / "state"))
    os.mkdir(store.state_dir, 0o700)
    subprocess.run(["chattr", "+i", store.state_dir], check=True)
    try:
        with pytest.raises(StateError) as caught:
            store.save(OTHER, DomainState("vm0", ()))
    finally:
        subprocess.run(["chattr", "-i", store.state_dir], check=True)
    assert str(caught.value) == (
        f"state directory {store.state_dir} is not writable (Operation not permitted): check "
        "its owner, mode and attributes (lsattr), or set state_dir to another directory"
    )
    assert os.listdir(store.state_dir) == []


SAVE = """
import resource, signal, sys
from vmnet_hook.host.state import DomainState, StateStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[2] == "ignore" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    StateStore(sys.argv[1]).save(sys.argv[3], DomainState("v" * 5000, ()))
except Exception as error:
    print(error)
"""


def save_limited(state_dir: Path, on_limit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SAVE, str(state_dir), on_limit, OTHER], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def test_a_short_write_is_an_error_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A file size limit: the kernel writes 1000 of the bytes, then refuses the rest."""
    state_dir = tmp_path / "state"
    done = save_limited(state_dir, "ignore")
    assert (done.returncode, done.stdout) == (0, (
        f"state directory {state_dir} cannot be written (File too large): check its file "
        "system, or set state_dir to another directory\n"))  # fmt: skip
    assert os.listdir(state_dir) == []


def test_a_writer_killed_mid_save_leaves_a_temporary_the_next_save_sweeps(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    assert save_limited(state_dir, "die").returncode < 0  # SIGXFSZ: killed inside write()
    (left,) = os.listdir(state_dir)
    assert left.startswith(f".{OTHER}.") and left.endswith(".tmp")
    store = StateStore(str(state_dir))
    store.save(UUID, DomainState("vm1", ()))
    assert sorted(os.listdir(state_dir)) == sorted([left, f"{UUID}.json"])  # seconds old: kept
    os.utime(state_dir / left, (0, 0))
    store.save(UUID, DomainState("vm1", ()))
    assert os.listdir(state_dir) == [f"{UUID}.json"]
    assert store.scan().unreadable == ()


def test_a_fifo_among_the_state_files_refuses_the_claim_at_once(
    make_pod: MakePod, run_hook: RunHook, hook_env: dict[str, str]
) -> None:
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    state_dir.mkdir(mode=0o700)
    fifo = state_dir / f"{OTHER}.json"
    os.mkfifo(fifo)
    pod, placeholder = make_pod(), sandbox.random_name("vn", 12)
    prepared = run_hook("vm1", "prepare", "begin", "-", xml=xml_for(pod, placeholder),
                        env={"VMNET_HOOK_DEADLINE_SECONDS": "30"})  # fmt: skip
    assert (prepared.returncode, prepared.stderr) == (1, (
        f"vmnet-hook: domain 'vm1': cannot tell who holds its pod NICs: state file {fifo} is "
        f"unreadable (not a regular file but a FIFO): if no running domain has UUID {OTHER}, "
        "remove it; `vmnet-hook status` lists it\n"))  # fmt: skip
    assert altnames(pod.host_veth) == []
    assert sorted(os.listdir(state_dir)) == [".lock", fifo.name]
