"""Kernel tier: the hook under faults built for real (issue 11, rules 1, 5, 6, 8, 9).

A config on a FIFO, a writer that never closes stdin, a config owned by nobody or writable
by its group, a ConfigMap-like symlinked config, the host-wide lock held by another
process, a closed or broken stdout after a real ``l2`` prepare. Each asserts what a user
sees: the exit status, the one line, and that nothing is left bound (no altname, no state
file, no pointer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HOOK, MakePod, domain_xml
from vmnet_hook.demo import sandbox
from vmnet_hook.hook import place

pytestmark = pytest.mark.kernel

NOBODY = 65534


@dataclass(frozen=True)
class Vm:
    xml: str
    uuid: str
    placeholder: str


def vm_on(pod: sandbox.Pod) -> Vm:
    """tests/data/one-nic.xml on ``pod``, with a UUID and placeholder of its own."""
    uuid, placeholder = str(uuidlib.uuid4()), sandbox.random_name("vn", 12)
    xml = domain_xml(NETNS=pod.name).replace("6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6", uuid)
    return Vm(xml.replace("vn3f9a0c1d2e4b", placeholder), uuid, placeholder)


def altnames(link: str) -> list[str]:
    shown = subprocess.run(["ip", "-j", "link", "show", link], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    return list(json.loads(shown)[0].get("altnames", []))


def hook(
    env: dict[str, str], *args: str, xml: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HOOK), "vm1", *args, "-"], input=xml, text=True,
        capture_output=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


def nothing_left(pod: sandbox.Pod, vm: Vm, state_dir: Path) -> None:
    assert vm.placeholder not in altnames(pod.host_veth)
    assert not (state_dir / f"{vm.uuid}.json").exists()
    assert not os.path.exists(place.pointer_path(vm.uuid))


@pytest.fixture
def config_env(hook_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """hook_env whose VMNET_HOOK_CONFIG names tmp_path/config (not written yet)."""
    return {**hook_env, "VMNET_HOOK_CONFIG": str(tmp_path / "config")}


def test_a_config_on_a_fifo_is_refused_at_once(make_pod: MakePod, config_env: dict[str, str],
                                                tmp_path: Path) -> None:  # fmt: skip
    os.mkfifo(tmp_path / "config")  # opening it for reading would block without a writer
    pod = make_pod()
    vm = vm_on(pod)
    started = time.monotonic()
    done = hook(config_env, "prepare", "begin", xml=vm.xml, timeout=30)
    assert time.monotonic() - started < 5
    assert (done.returncode, done.stdout) == (1, "")
    assert (
        done.stderr
        == f"vmnet-hook: config file {tmp_path}/config is not a regular file but a FIFO: only a regular file of at most 65536 bytes is read\n"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_an_empty_allowed_namespaces_is_refused_not_taken_for_any(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    """A templated config whose list came out empty: neither "none" nor "any" is guessed."""
    (tmp_path / "config").write_text("[vmnet-hook]\nallowed_namespaces =\n")
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(config_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "vmnet-hook: config key allowed_namespaces: '' names no namespace; list the namespaces "
        "domains may claim pods from, or remove the key to allow any\n"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_a_stdin_that_never_closes_ends_at_the_deadline(hook_env: dict[str, str]) -> None:
    """The writer keeps the pipe open: the default deadline (config is not read yet; its
    deadline_seconds of 2 does not count) ends the hook with a line saying so, and
    nothing is bound."""
    proc = subprocess.Popen([sys.executable, str(HOOK), "vm1", "prepare", "begin", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**hook_env, "VMNET_HOOK_DEADLINE_SECONDS": "2"})  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"<domain><name>vm1</name>")
        proc.stdin.flush()
        started = time.monotonic()
        proc.wait(timeout=30)  # stdin stays open: communicate() would close it
        waited = time.monotonic() - started
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert 9 < waited < 13
    assert (proc.returncode, stdout) == (1, b"")
    assert stderr.decode() == (
        "vmnet-hook: domain 'vm1': gave up after 10s (the default deadline: the config, and "
        "its deadline_seconds, is read after the domain XML) while reading the domain XML on "
        "stdin (its writer never closed it); nothing is bound\n"
    )


@pytest.mark.parametrize(
    ("owner", "mode", "why"),
    [(NOBODY, 0o644, "owned by uid 65534, not root"),
     (0, 0o664, "writable by group or others (mode 0664)"),
     (0, 0o646, "writable by group or others (mode 0646)")],
    ids=["owned-by-nobody", "group-writable", "other-writable"],
)  # fmt: skip
def test_a_config_only_root_may_change_is_trusted(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path, owner: int, mode: int, why: str
) -> None:
    config = tmp_path / "config"
    config.write_text("[vmnet-hook]\nlog_level = debug\n")
    os.chown(config, owner, owner)
    config.chmod(mode)
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(config_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: config file {config} is {why}: only root's configuration is trusted; "
        f"chown root: {config}; chmod go-w {config}\n"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_a_config_made_untrusted_after_start_does_not_strand_the_binding(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("[vmnet-hook]\nlog_level = debug\n")
    pod = make_pod()
    vm = vm_on(pod)
    assert hook(config_env, "prepare", "begin", xml=vm.xml).returncode == 0
    assert altnames(pod.host_veth) == [vm.placeholder]
    os.chown(config, NOBODY, NOBODY)
    done = hook(config_env, "release", "end", xml=vm.xml)
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.endswith(f"chmod go-w {config}; released with the default settings\n")
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def configmap_volume(volume: Path) -> None:
    """As kubelet lays out a ConfigMap volume: the volume an emptyDir (0777, root's), a
    timestamped directory made 0755 by its atomic writer, the file 0644 in it (the default
    defaultMode), ``..data`` a symlink to the timestamped directory, the key a symlink to
    ``..data/config``; every one root's."""
    (volume / "..2024_01_01_00_00_00.1").mkdir(parents=True)
    volume.chmod(0o777)
    (volume / "..2024_01_01_00_00_00.1").chmod(0o755)
    (volume / "..2024_01_01_00_00_00.1" / "config").write_text("[vmnet-hook]\nlog_level = debug\n")
    (volume / "..2024_01_01_00_00_00.1" / "config").chmod(0o644)
    (volume / "..data").symlink_to("..2024_01_01_00_00_00.1")
    (volume / "config").symlink_to("..data/config")


def test_a_configmap_behind_symlinks_is_trusted(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    """The DaemonSet mounts the volume read-only at /etc/vmnet-hook: its 0777 directory
    can be changed by no one there. The config path is a link to it, as well."""
    volume, mounted = tmp_path / "volume", tmp_path / "etc-vmnet-hook"
    configmap_volume(volume)
    mounted.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(volume), str(mounted)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True)
        (tmp_path / "config").symlink_to(mounted / "config")
        pod = make_pod()
        vm = vm_on(pod)
        done = hook(config_env, "prepare", "begin", xml=vm.xml)
        assert (done.returncode, done.stderr) == (0, "")
        assert altnames(pod.host_veth) == [vm.placeholder]
        assert hook(config_env, "release", "end", xml=vm.xml).returncode == 0
        nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))
    finally:
        subprocess.run(["umount", str(mounted)], check=False)


def test_a_configmap_volume_others_can_write_to_is_refused(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    """The same volume, mounted read-write: anyone may swap ``..data`` in its 0777
    directory for a config of their own."""
    volume = tmp_path / "volume"
    configmap_volume(volume)
    (tmp_path / "config").symlink_to(volume / "config")
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(config_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: config file {tmp_path}/config: {volume} on the way to it is a directory "
        "others may write to (mode 0777, group 0): only root's configuration is trusted; "
        f"chmod go-w {volume}, or chmod +t {volume} to make it sticky\n"
    )
    nothing_left(pod, vm, Path(config_env["VMNET_HOOK_STATE_DIR"]))


def test_a_state_dir_another_user_owns_is_refused(
    make_pod: MakePod, hook_env: dict[str, str], tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    os.chown(state_dir, NOBODY, NOBODY)
    pod = make_pod()
    vm = vm_on(pod)
    done = hook(hook_env, "prepare", "begin", xml=vm.xml)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: state directory {state_dir} is owned by uid 65534, not root: only root's "
        f"configuration is trusted; chown root: {state_dir}; chmod go-w {state_dir}\n"
    )
    assert vm.placeholder not in altnames(pod.host_veth)
    assert os.listdir(state_dir) == []


HOLD_THE_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid {os.getpid()}: qemu vm-holder prepare begin\\n".encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_wait_for_the_lock_names_the_lock_and_its_holder(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    state_dir.mkdir(mode=0o700)
    lock = state_dir / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(lock)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        pod = make_pod()
        vm = vm_on(pod)
        done = hook({**hook_env, "VMNET_HOOK_DEADLINE_SECONDS": "1"}, "prepare", "begin",
                    xml=vm.xml)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1': gave up after 1s (deadline_seconds) while waiting for the "
        f"host-wide lock {lock}, held by pid {holder.pid} (pid {holder.pid}: qemu vm-holder "
        "prepare begin); nothing is bound\n"
    )
    nothing_left(pod, vm, state_dir)


@pytest.mark.parametrize("stdout", ["closed", "broken-pipe"])
def test_a_prepare_that_cannot_print_undoes_its_binding(
    make_pod: MakePod, hook_env: dict[str, str], stdout: str
) -> None:
    pod = make_pod()
    vm = vm_on(pod)
    argv = [sys.executable, str(HOOK), "vm1", "prepare", "begin", "-"]
    if stdout == "closed":  # as a shell's >&-
        done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *argv], input=vm.xml,
                              text=True, stderr=subprocess.PIPE, env=hook_env, timeout=60)  # fmt: skip
        reason = "stdout is closed"
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)  # nobody reads: the write fails with EPIPE
        try:
            done = subprocess.run(argv, input=vm.xml, text=True, stdout=write_end,
                                  stderr=subprocess.PIPE, env=hook_env, timeout=60)  # fmt: skip
        finally:
            os.close(write_end)
        reason = "Broken pipe"
    assert done.returncode == 1
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1': cannot write the domain XML to stdout ({reason}); what "
        "this prepare bound is undone\n"
    )
    nothing_left(pod, vm, Path(hook_env["VMNET_HOOK_STATE_DIR"]))


def test_a_closed_stdin_gets_one_line(hook_env: dict[str, str]) -> None:
    done = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, str(HOOK), "vm1",
                           "prepare", "begin", "-"], capture_output=True, text=True, env=hook_env,
                          timeout=60)  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "vmnet-hook: domain 'vm1': stdin is closed; the domain XML is read from it\n"
    )


def test_control_characters_in_a_domain_name_are_shown_escaped(hook_env: dict[str, str]) -> None:
    """What XML 1.0 lets a name hold: CR (as a reference), C1 controls, a bidi override."""
    xml = domain_xml(NETNS=sandbox.random_name("vmnt-gone-"))
    xml = xml.replace("<name>vm1</name>", "<name>vm&#13;\x85\u202e1</name>")
    done = subprocess.run([sys.executable, str(HOOK), "vm1", "prepare", "begin", "-"], input=xml,
                          capture_output=True, text=True, env=hook_env, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("vmnet-hook: domain 'vm\\r\\x85\\u202e1', interface ")
    assert done.stderr.count("\n") == 1 and "\r" not in done.stderr


def test_release_with_a_config_broken_after_start_releases_and_says_why(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    """A config that names a state_dir: prepare leaves a pointer in the default state dir;
    the config is then made unreadable (a FIFO in its place): release follows the pointer."""
    state_dir = tmp_path / "moved-state"
    config = tmp_path / "config"
    config.write_text(f"[vmnet-hook]\nstate_dir = {state_dir}\n")
    env = {k: v for k, v in config_env.items() if k != "VMNET_HOOK_STATE_DIR"}
    pod = make_pod()
    vm = vm_on(pod)
    try:
        assert hook(env, "prepare", "begin", xml=vm.xml).returncode == 0
        assert place.read_pointer(vm.uuid) == str(state_dir)
        assert (state_dir / f"{vm.uuid}.json").exists()
        config.unlink()
        os.mkfifo(config)
        done = hook(env, "release", "end", xml=vm.xml, timeout=30)
        assert (done.returncode, done.stdout) == (0, "")
        assert done.stderr == (
            f"vmnet-hook: config file {config} is not a regular file but a FIFO: only a regular file of at most 65536 bytes is read; released "
            "with the default settings\n"
        )
        nothing_left(pod, vm, state_dir)
    finally:
        place.remove_pointer(vm.uuid)
        shutil.rmtree(state_dir, ignore_errors=True)


KILLED_AT_FSYNC = """
import os, runpy, signal, sys
def profile(frame, event, arg):
    if event == "c_call" and arg is os.fsync:
        os.kill(os.getpid(), signal.SIGKILL)
sys.setprofile(profile)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def hook_killed_writing(env: dict[str, str], *args: str, xml: str) -> int:
    """The hook, SIGKILLed at its first fsync: a file written whole, not yet renamed."""
    return subprocess.run([sys.executable, "-c", KILLED_AT_FSYNC, str(HOOK), "vm1", *args, "-"],
                          input=xml, text=True, capture_output=True, env=env, timeout=60,
                          check=False).returncode  # fmt: skip


def test_a_prepare_killed_writing_its_state_leaves_a_temporary_release_removes(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    """Killed before its first state file is renamed into place: nothing is bound yet,
    and the one thing left, the temporary file, goes at release end."""
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    pod = make_pod()
    vm = vm_on(pod)
    assert hook_killed_writing(hook_env, "prepare", "begin", xml=vm.xml) == -signal.SIGKILL
    assert set(os.listdir(state_dir)) == {".lock", f".{vm.uuid}.json.tmp"}
    done = hook(hook_env, "release", "end", xml=vm.xml)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert os.listdir(state_dir) == [".lock"]
    nothing_left(pod, vm, state_dir)


def test_a_prepare_killed_writing_its_pointer_leaves_a_temporary_release_removes(
    make_pod: MakePod, config_env: dict[str, str], tmp_path: Path
) -> None:
    """A config that names a state_dir: prepare first writes a pointer in the default
    state dir; killed inside that write, it leaves only the pointer's temporary file."""
    state_dir = tmp_path / "moved-state"
    (tmp_path / "config").write_text(f"[vmnet-hook]\nstate_dir = {state_dir}\n")
    env = {k: v for k, v in config_env.items() if k != "VMNET_HOOK_STATE_DIR"}
    pod = make_pod()
    vm = vm_on(pod)
    temporary = Path(place.pointer_path(vm.uuid)).with_name(f".{vm.uuid}.at.tmp")
    try:
        assert hook_killed_writing(env, "prepare", "begin", xml=vm.xml) == -signal.SIGKILL
        assert temporary.exists() and not state_dir.exists()
        done = hook(env, "release", "end", xml=vm.xml)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert not temporary.exists()
        nothing_left(pod, vm, state_dir)
    finally:
        temporary.unlink(missing_ok=True)
        place.remove_pointer(vm.uuid)


def test_a_release_whose_deadline_passed_while_reading_stdin_names_what_stays(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    """The configured 1 s is over once the XML is read: the line says what the domain's
    state still records, not "nothing is bound"; the next release clears it."""
    pod = make_pod()
    vm = vm_on(pod)
    assert hook(hook_env, "prepare", "begin", xml=vm.xml).returncode == 0
    writer = subprocess.Popen(["sh", "-c", 'printf %s "$0"; sleep 1.5', vm.xml],
                              stdout=subprocess.PIPE)  # fmt: skip
    done = subprocess.run([sys.executable, str(HOOK), "vm1", "release", "end", "-"],
                          stdin=writer.stdout, capture_output=True, text=True, timeout=30,
                          env={**hook_env, "VMNET_HOOK_DEADLINE_SECONDS": "1"})  # fmt: skip
    writer.wait()
    state_file = Path(hook_env["VMNET_HOOK_STATE_DIR"]) / f"{vm.uuid}.json"
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1': gave up after 1s (deadline_seconds); may be left bound: "
        f"altname {vm.placeholder} of {pod.host_veth} (as {state_file} records); "
        "`vmnet-hook status --prune` or the domain's next start clears it\n"
    )
    assert altnames(pod.host_veth) == [vm.placeholder]
    assert hook(hook_env, "release", "end", xml=vm.xml).returncode == 0
    nothing_left(pod, vm, state_file.parent)
