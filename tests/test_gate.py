"""The hook's nothing-to-do path, as libvirtd runs it: behaviour, not timing.

Every step libvirt runs the hook at, with nothing to do, must exit 0, print nothing and
import nothing heavy (bench/hook.py measures what that is worth). The process is the real
``hooks/qemu`` in a subprocess; ``-X importtime`` lists every module it loads.
"""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOOK, RunHook, domain_xml
from vmnet_hook import config
from vmnet_hook.errors import VmnetError
from vmnet_hook.hook import gate, place
from vmnet_hook.hook.operations import ANNOTATION, OPERATIONS
from vmnet_hook.host.state import DomainState, StateStore

HEAVY = ("lxml", "pyroute2", "psutil", "click", "vmnet_hook.hook.handlers")
PLAIN = domain_xml("realistic.xml")  # no vmnet annotation
ANNOTATED = domain_xml("realistic-annotated.xml", NETNS="vmnt-not-there")
ANNOTATED_UUID = "b7d4e2a1-0c9f-4a3b-8e6d-5f1a2b3c4d5e"
PLAIN_UUID = "3c9e1f6a-7b2d-4e8f-a1c5-9d0b4e6f2a18"
PHASES = ("prepare", "start", "started", "stopped", "release")
STEPS = [(op, sub) for op in PHASES for sub in ("begin", "end")] + [
    ("migrate", "begin"),
    ("restore", "begin"),
    ("reconnect", "begin"),
    ("attach", "begin"),
]
# With the annotation, these have work; every other step (release end too, when the
# domain has no state file) has none.
ANNOTATED_WORK = {step for step, op in OPERATIONS.items() if op.needs == ANNOTATION}
ANNOTATED_IDLE = [step for step in STEPS if step not in ANNOTATED_WORK]


def step_id(step: tuple[str, str]) -> str:
    return "-".join(step)


def imported(
    args: list[str], xml: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime`` on ``args``; the result (importtime lines removed from
    stderr) and the names of every module the process imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], input=xml, capture_output=True,
        text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    modules: set[str] = set()
    other: list[str] = []
    for line in done.stderr.splitlines(keepends=True):
        if not line.startswith("import time:"):
            other.append(line)
        elif not line.rstrip().endswith("imported package"):  # the header line
            modules.add(line.rsplit("|", 1)[1].strip())
    done.stderr = "".join(other)
    return done, modules


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture
def libvirt_env(tmp_path: Path) -> dict[str, str]:
    """What libvirtd gives the hook: a cleared environment (so no VMNET_HOOK_* override) and,
    here, no config file; the state dir is then the default one, only looked at."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMNET_HOOK_")}
    return {**env, "VMNET_HOOK_CONFIG": str(tmp_path / "no-config")}


@pytest.fixture(scope="module")
def interpreter_modules() -> set[str]:
    _done, modules = imported(["-c", "pass"], "", dict(os.environ))
    return modules


def assert_idle(
    args: list[str], xml: str, env: dict[str, str], interpreter_modules: set[str]
) -> None:
    done, modules = imported([str(HOOK), *args], xml, env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert heavy(modules) == []
    # Stricter than the contract's "nothing heavy": nothing past the interpreter's own
    # start-up but the fast path itself. Not even vmnet_hook.config, typing or signal.
    assert modules - interpreter_modules == {
        "vmnet_hook",
        "vmnet_hook.hook",
        "vmnet_hook.hook.gate",
        "vmnet_hook.hook.operations",
    }


@pytest.mark.parametrize("step", STEPS, ids=step_id)
def test_unannotated_domain_is_silent_and_light(
    step: tuple[str, str],
    run_hook: RunHook,
    libvirt_env: dict[str, str],
    interpreter_modules: set[str],
) -> None:
    done = run_hook("web-frontend-01", *step, "-", xml=PLAIN)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert_idle(["web-frontend-01", *step, "-"], PLAIN, libvirt_env, interpreter_modules)


@pytest.mark.parametrize("step", ANNOTATED_IDLE, ids=step_id)
def test_annotated_domain_without_work_is_silent_and_light(
    step: tuple[str, str],
    run_hook: RunHook,
    libvirt_env: dict[str, str],
    interpreter_modules: set[str],
) -> None:
    """Includes release end of a domain that has no state file (never prepared here)."""
    done = run_hook("web-frontend-02", *step, "-", xml=ANNOTATED)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert_idle(["web-frontend-02", *step, "-"], ANNOTATED, libvirt_env, interpreter_modules)


def test_release_end_with_a_config_file_that_keeps_the_state_dir_is_light(
    libvirt_env: dict[str, str], tmp_path: Path, interpreter_modules: set[str]
) -> None:
    """A config file (allowed_namespaces, say) that does not name state_dir cannot move it:
    release end of a domain without state needs no config module to know that."""
    config_file = tmp_path / "config"
    config_file.write_text("[vmnet-hook]\nallowed_namespaces = vms\nlog_level = debug\n")
    env = {**libvirt_env, "VMNET_HOOK_CONFIG": str(config_file)}
    args = ["web-frontend-02", "release", "end", "-"]
    assert_idle(args, ANNOTATED, env, interpreter_modules)


def test_release_end_with_overridden_state_dir_and_no_state_is_light(
    hook_env: dict[str, str],
) -> None:
    """An override makes the hook load config to find the state dir; still nothing heavy."""
    done, modules = imported([str(HOOK), "web-frontend-02", "release", "end", "-"], ANNOTATED,
                             hook_env)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert heavy(modules) == []


def test_release_end_with_state_does_the_work(hook_env: dict[str, str]) -> None:
    """The control for the tests above: the import check sees work when there is some, and
    the state dir of VMNET_HOOK_STATE_DIR is the one looked at."""
    store = StateStore(hook_env["VMNET_HOOK_STATE_DIR"])
    store.save(ANNOTATED_UUID, DomainState("web-frontend-02", ()))
    done, modules = imported([str(HOOK), "web-frontend-02", "release", "end", "-"], ANNOTATED,
                             hook_env)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert "vmnet_hook.hook.handlers" in modules
    assert store.load(ANNOTATED_UUID) is None


@pytest.fixture
def pointed_uuid() -> Iterator[str]:
    """A fresh domain UUID whose pointer (in the real default state dir, where prepare
    writes it) is removed at the end, pass or fail."""
    uuid = str(uuidlib.uuid4())
    yield uuid
    place.remove_pointer(uuid)


def test_release_end_follows_prepares_pointer_to_the_config_files_state_dir(
    libvirt_env: dict[str, str], tmp_path: Path, pointed_uuid: str
) -> None:
    """A config file's state_dir is found through the pointer prepare leaves in the default
    state dir, and an unannotated domain's state is released too (its annotation may have
    been removed while it ran). The pointer goes with the state."""
    state_dir = tmp_path / "configured-state"
    config_file = tmp_path / "config"
    config_file.write_text(f"[vmnet-hook]\nstate_dir = {state_dir}\n")
    store = StateStore(str(state_dir))
    store.save(pointed_uuid, DomainState("web-frontend-01", ()))
    place.write_pointer(pointed_uuid, str(state_dir))
    xml = PLAIN.replace(PLAIN_UUID, pointed_uuid)
    env = {**libvirt_env, "VMNET_HOOK_CONFIG": str(config_file)}
    done, modules = imported([str(HOOK), "web-frontend-01", "release", "end", "-"], xml, env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert "vmnet_hook.hook.handlers" in modules
    assert store.load(pointed_uuid) is None
    assert not os.path.exists(place.pointer_path(pointed_uuid))


def test_release_end_with_a_config_file_that_moves_the_state_dir_is_light(
    libvirt_env: dict[str, str], tmp_path: Path, interpreter_modules: set[str]
) -> None:
    """A config file that sets state_dir no longer costs release end a config load: a
    domain without state (no state file, no pointer) is idle like any other."""
    config_file = tmp_path / "config"
    config_file.write_text(f"[vmnet-hook]\nstate_dir = {tmp_path / 'moved'}\n")
    env = {**libvirt_env, "VMNET_HOOK_CONFIG": str(config_file)}
    assert_idle(["web-frontend-01", "release", "end", "-"], PLAIN, env, interpreter_modules)


def test_release_end_with_a_config_broken_after_start_still_releases(
    libvirt_env: dict[str, str], tmp_path: Path, pointed_uuid: str
) -> None:
    """The config file turned invalid while the domain ran: release follows the pointer,
    undoes the state, says what is wrong with the config, and exits 0."""
    state_dir = tmp_path / "configured-state"
    store = StateStore(str(state_dir))
    store.save(pointed_uuid, DomainState("web-frontend-01", ()))
    place.write_pointer(pointed_uuid, str(state_dir))
    config_file = tmp_path / "config"
    config_file.write_text("[vmnet-hook]\nstate_dir = relative/now\n")
    env = {**libvirt_env, "VMNET_HOOK_CONFIG": str(config_file)}
    xml = PLAIN.replace(PLAIN_UUID, pointed_uuid)
    done = subprocess.run([sys.executable, str(HOOK), "web-frontend-01", "release", "end", "-"],
                          input=xml, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr == (
        "vmnet-hook: config key state_dir: 'relative/now' is not an absolute path; start it "
        "with /; released with the default settings\n"
    )
    assert store.load(pointed_uuid) is None
    assert not os.path.exists(place.pointer_path(pointed_uuid))


def test_fast_path_defaults_match_config() -> None:
    """The gate mirrors two defaults so that release end can skip loading config."""
    assert gate.DEFAULT_CONFIG_PATH == config.DEFAULT_PATH == config.config_path({})
    assert config.Config().state_dir == gate.DEFAULT_STATE_DIR


@pytest.mark.parametrize(
    "args",
    [[], ["vm1"], ["vm1", "prepare"], ["vm1", "prepare", "begin", "-", "surplus"]],
    ids=["none", "one", "two", "five"],
)
def test_wrong_argument_count_prints_one_usage_line(args: list[str], run_hook: RunHook) -> None:
    done = run_hook(*args, xml=PLAIN)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("vmnet-hook: usage: ")
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n")


def test_three_arguments_are_enough(run_hook: RunHook) -> None:
    done = run_hook("web-frontend-01", "started", "begin", xml=PLAIN)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def feed(args: list[str], data: bytes, env: dict[str, str]) -> tuple[int, bool]:
    """Write all of ``data`` to the hook's stdin as libvirt does, then wait for it.

    A BrokenPipeError here means the hook exited before reading to the end (libvirt would
    get EPIPE); a hook that stops reading without exiting is killed after 30 s, which
    this returns as ``killed``. subprocess.communicate would hide both.
    """
    proc = subprocess.Popen(
        [sys.executable, str(HOOK), *args], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    watchdog = threading.Timer(30, kill)
    watchdog.start()
    try:
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(data)
        return proc.wait(), killed.is_set()
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def padded(xml: str, size: int) -> bytes:
    """``xml`` grown to ``size`` bytes by a long <description>; still a domain document."""
    head, tail = xml.split("</description>", 1)
    return (head + "x" * (size - len(xml)) + "</description>" + tail).encode()


@pytest.mark.parametrize(
    ("args", "xml", "status"),
    [
        (["web-frontend-01", "started", "begin", "-"], PLAIN, 0),
        (["web-frontend-01", "prepare", "begin", "-"], PLAIN, 0),
        (["web-frontend-02", "release", "end", "-"], ANNOTATED, 0),
        (["web-frontend-01"], PLAIN, 2),
    ],
    ids=["no-op-step", "unannotated-prepare", "release-without-state", "usage-error"],
)
def test_stdin_is_read_to_the_end(
    args: list[str], xml: str, status: int, hook_env: dict[str, str]
) -> None:
    data = padded(xml, 5 * 1024 * 1024)
    assert len(data) == 5 * 1024 * 1024
    assert feed(args, data, hook_env) == (status, False)


def test_main_called_in_process_leaves_the_garbage_collector_alone() -> None:
    """hooks/qemu's process turns gc off for its one call; a caller of main() keeps its own."""
    err = io.StringIO()
    xml = io.BytesIO(ANNOTATED.encode())
    status = gate.main(["web-frontend-02", "prepare", "begin", "-"], xml, io.StringIO(), err)
    assert status == 1 and "vmnt-not-there" in err.getvalue()
    assert gc.isenabled()


def test_every_operation_has_its_handler_and_only_resolving_ones_may_fail() -> None:
    """One table serves the gate and the handlers: each name in it is a handler, and
    libvirt sees a failure only where it refuses a start (it kills a running VM at
    reconnect or attach, and release must always clean up)."""
    from vmnet_hook.hook.handlers import HANDLERS, HANDLERS_BY_NAME

    assert set(HANDLERS) == set(OPERATIONS)
    assert {op.handler for op in OPERATIONS.values()} == set(HANDLERS_BY_NAME)
    failing = {step for step, op in OPERATIONS.items() if op.may_fail}
    assert failing == {("prepare", "begin"), ("migrate", "begin"), ("restore", "begin")}


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6", True),
        ("6f1c2a9e3b4d-4c5e-8f90-a1b2c3d4e5f6-", False),
        ("6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5fg", False),
        ("6F1C2A9E-3B4D-4C5E-8F90-A1B2C3D4E5F6", True),  # both lower-case it first
        ("", False),
    ],
)
def test_the_gate_and_the_parser_agree_on_uuids(text: str, valid: bool) -> None:
    from vmnet_hook.core.annotation import domain_uuid, parse_xml

    xml = f"<domain><uuid>{text}</uuid></domain>".encode()
    try:
        parsed = domain_uuid(parse_xml(xml)) is not None
    except VmnetError:
        parsed = False
    assert (gate.domain_uuid(xml) is not None) == parsed == valid


OWN = "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
DECOY = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    "xml",
    [
        f"<domain><metadata><x:m xmlns:x='urn:x'><uuid>{DECOY}</uuid></x:m></metadata>"
        f"<uuid>{OWN}</uuid></domain>",
        f"<domain><!-- <uuid>{DECOY}</uuid> --><uuid>{OWN}</uuid></domain>",
        f"<domain><description><![CDATA[<uuid>{DECOY}</uuid>]]></description>"
        f"<uuid>{OWN}</uuid></domain>",
        f"<?xml version='1.0'?><?pi <uuid>{DECOY}</uuid>?><domain type='qemu'>"
        f"<title a='x>y'>&lt;uuid>{DECOY}&lt;/uuid></title><uuid>{OWN}</uuid></domain>",
        f"<domain><name x=\"'>\" y='\">'>n</name><x><uuid>{DECOY}</uuid></x>\n"
        f"<uuid >\n {OWN.upper()} </uuid ></domain>",
        f"<domain><os><uuid>{DECOY}</uuid><uuid/></os><uuid>{OWN}</uuid>"
        f"<metadata>{'<a>' * 200}{'</a>' * 200}</metadata></domain>",
    ],
    ids=["metadata-first", "comment", "cdata", "pi-and-quoted-gt", "quotes-and-spaces", "nested"],
)
def test_the_gate_finds_the_domains_own_uuid_whatever_comes_first(xml: str) -> None:
    assert gate.domain_uuid(xml.encode()) == OWN
    from vmnet_hook.core.annotation import domain_uuid, parse_xml

    assert domain_uuid(parse_xml(xml.encode())) == OWN  # the parser agrees


@pytest.mark.parametrize(
    "xml",
    [
        f"<domain><x><uuid>{OWN}</uuid></x></domain>",  # not a child of <domain>
        f"<other><uuid>{OWN}</uuid></other>",  # not a domain
        f"<domain><!-- <uuid>{OWN}</uuid> --></domain>",
        f"<domain><uuid>{OWN}<!-- x --></uuid></domain>",
        f"<domain><uuid>{OWN}</uuidx></domain>",
        f"<domain></domain><uuid>{OWN}</uuid>",  # after the root
        f"<domain><uuid>{OWN}",
        f"<domain a='{OWN}><uuid>{OWN}</uuid></domain>",  # an unclosed quote
        "",
    ],
)
def test_the_gate_finds_no_uuid_where_the_domain_has_none(xml: str) -> None:
    assert gate.domain_uuid(xml.encode()) is None


def test_finding_the_uuid_stays_cheap_at_any_size() -> None:
    """libvirt writes <uuid> near the top: the 60 MB that follow are never looked at; and
    a document whose uuid comes last is still read in linear time."""
    import time

    top = f"<domain><name>n</name><uuid>{OWN}</uuid>".encode() + b"<a/>" * 15_000_000
    top += b"</domain>"
    started = time.perf_counter()
    assert gate.domain_uuid(top) == OWN
    assert time.perf_counter() - started < 0.01
    last = b"<domain><metadata>" + b"<m>x</m>" * 50_000 + b"</metadata>"
    last += f"<uuid>{OWN}</uuid></domain>".encode()
    started = time.perf_counter()
    assert gate.domain_uuid(last) == OWN
    assert time.perf_counter() - started < 1.0


def test_the_deadlines_line_names_a_state_file_it_cannot_read(tmp_path: Path) -> None:
    """What may be left bound is never "nothing" while a state file is there unread."""
    from vmnet_hook.hook.expiry import _recorded

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "bad").write_bytes(b"\xff{")
    assert _recorded(str(tmp_path / "missing")) == []
    for name in ("fifo", "dir"):
        assert _recorded(str(tmp_path / name)) == [
            f"whatever {tmp_path / name} records (it cannot be read now)"
        ]
    assert _recorded(str(tmp_path / "bad")) == [f"whatever {tmp_path / 'bad'} records"]


def test_the_lock_holder_is_found_in_a_long_proc_locks(tmp_path: Path) -> None:
    """A busy host's /proc/locks (here 2 MB): the holder's line is found wherever it is;
    a waiter's line (``->``) is no holder."""
    from vmnet_hook.hook.expiry import _flock_holders

    other = "".join(f"{n}: FLOCK  ADVISORY  WRITE {n} 00:1a:{n} 0 EOF\n" for n in range(40_000))
    ours = ("40001: FLOCK  ADVISORY  WRITE 4242 00:19:77 0 EOF\n"
            "40001: -> FLOCK  ADVISORY  WRITE 4343 00:19:77 0 EOF\n")  # fmt: skip
    (tmp_path / "locks").write_text(other + ours)
    assert len(other) > 1_000_000
    assert _flock_holders("00:19:77", str(tmp_path / "locks")) == ["4242"]
    assert _flock_holders("00:19:78", str(tmp_path / "locks")) == []
