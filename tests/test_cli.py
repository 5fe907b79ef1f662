"""The click commands: output and exit status as a user sees them (CliRunner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import test_status
from tests.conftest import DATA, REPO, MakePod, domain_xml
from tests.test_hook_kernel import PLACEHOLDER, UUID, altnames
from tests.test_status import FakeVirsh
from vmnet_hook.cli.main import cli
from vmnet_hook.core.annotation import parse_xml

fake_virsh = test_status.fake_virsh  # the fixture: which domains libvirt runs

REWRITE = DATA / "rewrite" / "two-pods.in.xml"


@pytest.fixture
def runner(hook_env: dict[str, str]) -> CliRunner:
    return CliRunner()


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    commands = sorted(cli.commands)
    assert {"annotate", "demo", "hook", "pods", "resolve", "rewrite", "status"} <= set(commands)
    for name in commands:
        shown = runner.invoke(cli, [name, "--help"])
        assert shown.exit_code == 0 and "Example:" in shown.output, name


def test_bash_completion_comes_from_click(runner: CliRunner) -> None:
    script = runner.invoke(cli, [], prog_name="vmnet-hook",
                           env={"_VMNET_HOOK_COMPLETE": "bash_source"})  # fmt: skip
    assert script.exit_code == 0 and "_VMNET_HOOK_COMPLETE=bash_complete" in script.output


def test_annotate_prints_xml_the_hook_accepts(runner: CliRunner) -> None:
    done = runner.invoke(cli, ["annotate", str(REWRITE), "--pod-uid",
                               "3F9A0C1D-2E4B-4C5D-8E6F-7A8B9C0D1E2F", "--dev", "net1",
                               "--mac", "52:54:00:00:00:02"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert ('<vmnet:interface network="l2" mac="52:54:00:00:00:02" dev="net1" '
            'pod-uid="3f9a0c1d-2e4b-4c5d-8e6f-7a8b9c0d1e2f"/>') in done.output  # fmt: skip


def test_status_prune_prints_lines_not_json(runner: CliRunner) -> None:
    done = runner.invoke(cli, ["status", "--prune", "--json"])
    assert done.exit_code == 2 and "--prune prints lines, not JSON" in done.output


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["annotate", str(REWRITE), "--dev", "eth0"], 2, "name the pod with exactly one of --pod"),
        (["annotate", str(REWRITE), "--dev", "eth0", "--pid", "x"], 2, "pid='x' is not a process id"),
        (["annotate", str(REWRITE), "--dev", "eth0", "--pid", "1"], 1,
         "vmnet-hook: the domain has 2 direct interfaces: say which with --mac"),
        (["resolve", "--netns", "../x", "--dev", "eth0"], 2, "netns='../x' is not a name"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    runner: CliRunner, args: list[str], status: int, message: str
) -> None:
    done = runner.invoke(cli, args)
    assert done.exit_code == status
    assert message in done.output
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    "args",
    [["status"], ["pods"], ["rewrite", str(REWRITE)], ["resolve", "--pid", "1", "--dev", "eth0"]],
    ids=lambda args: args[0],
)
def test_every_command_reports_the_projects_errors_as_one_line(
    runner: CliRunner, args: list[str]
) -> None:
    """One wrapper, on the group, for every command: no traceback, exit status 1. status
    goes on with the state dir release would read (tests/test_hook_faults_lines.py)."""
    done = runner.invoke(cli, args, env={"VMNET_HOOK_LOG_LEVEL": "loud"})
    line = "vmnet-hook: config key log_level: 'loud' is not one of debug, info, warning, error"
    if args == ["status"]:
        state_dir = os.environ["VMNET_HOOK_STATE_DIR"]
        line += f"; status reads the state directory {state_dir}\nno bindings"
    assert (done.exit_code, done.output) == (1, line + "\n")


@pytest.mark.kernel
def test_resolve_prints_the_host_veth_and_json(runner: CliRunner, make_pod: MakePod) -> None:
    pod = make_pod()
    plain = runner.invoke(cli, ["resolve", "--pid", str(pod.pids[0]), "--dev", "eth0"])
    assert (plain.exit_code, plain.output) == (0, f"{pod.host_veth}\n")
    as_json = runner.invoke(cli, ["resolve", "--netns", pod.name, "--dev", "eth0", "--json"])
    record = json.loads(as_json.output)
    assert (record["name"], record["pod_dev"]) == (pod.host_veth, "eth0")


@pytest.mark.kernel
def test_resolve_of_a_missing_pod_says_so(runner: CliRunner) -> None:
    done = runner.invoke(cli, ["resolve", "--netns", "vmnt-none", "--dev", "eth0"])
    assert (done.exit_code, done.output) == (
        1, "vmnet-hook: netns=vmnt-none: no namespace /run/netns/vmnt-none (see `ip netns list`)\n")  # fmt: skip


@pytest.mark.kernel
def test_rewrite_binds_nothing(runner: CliRunner, make_pod: MakePod) -> None:
    pod = make_pod()
    done = runner.invoke(cli, ["rewrite", "-"], input=domain_xml(NETNS=pod.name))
    assert done.exit_code == 0
    assert f'<source dev="{pod.host_veth}" mode="bridge"/>' in done.output
    assert altnames(pod.host_veth) == []


@pytest.mark.kernel
def test_hook_then_status_shows_the_binding_and_nothing_after_release(
    runner: CliRunner, make_pod: MakePod, hook_env: dict[str, str], fake_virsh: FakeVirsh
) -> None:
    fake_virsh(f"echo {UUID}")
    pod = make_pod()
    xml = domain_xml(NETNS=pod.name)
    prepared = runner.invoke(cli, ["hook", "vm1", "prepare", "begin", "-"], input=xml)
    assert prepared.exit_code == 0 and f'dev="{pod.host_veth}"' in prepared.output
    shown = runner.invoke(cli, ["status", "vm1"])
    assert (shown.exit_code, shown.output) == (
        0, f"vm1  52:54:00:12:34:56  l2  {PLACEHOLDER} -> {pod.host_veth}  ok\n")  # fmt: skip
    rows = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    assert [(r["domain"], r["host_veth"], r["state"], r["stale"]) for r in rows] == [
        ("vm1", pod.host_veth, "ok", False)
    ]
    released = runner.invoke(cli, ["hook", "vm1", "release", "end", "-"], input=xml)
    assert (released.exit_code, released.output) == (0, "")
    assert runner.invoke(cli, ["status"]).output == "no bindings\n"
    assert list(Path(hook_env["VMNET_HOOK_STATE_DIR"]).glob("*.json")) == []


@pytest.mark.kernel
def test_names_from_the_xml_and_the_pod_reach_the_terminal_escaped(
    runner: CliRunner, make_pod: MakePod, fake_virsh: FakeVirsh
) -> None:
    fake_virsh(f"echo {UUID}")
    pod = make_pod()
    name = "vm\x9b2J\u202e1"  # C1 CSI: clear the screen; then turn the rest of the line around
    xml = domain_xml(NETNS=pod.name).replace("<name>vm1</name>", f"<name>{name}</name>")
    prepared = runner.invoke(cli, ["hook", name, "prepare", "begin", "-"], input=xml)
    try:
        assert prepared.exit_code == 0
        assert "<name>vm&#x9b;2J&#x202e;1</name>" in prepared.stdout  # the XML: references
        assert "\x9b" not in prepared.stdout and "\u202e" not in prepared.stdout
        assert parse_xml(prepared.stdout.encode()).findtext("name") == name
        shown = runner.invoke(cli, ["status"])
        assert shown.output.startswith("vm\\x9b2J\\u202e1  52:54:00:12:34:56  l2  "), shown.output
        assert "\x9b" not in shown.output and "\u202e" not in shown.output
    finally:
        runner.invoke(cli, ["hook", name, "release", "end", "-"], input=xml)


def test_annotate_writes_control_characters_as_references(runner: CliRunner) -> None:
    """The same document to libvirt; nothing that acts on the terminal it is shown on."""
    name = "vm\x85\u2028\u202e1"
    xml = REWRITE.read_text().replace("<name>vm2</name>", f"<name>{name}</name>")
    assert name in xml
    done = runner.invoke(cli, ["annotate", "-", "--pid", "1", "--dev", "eth0", "--mac",
                               "52:54:00:00:00:01"], input=xml)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "<name>vm&#x85;&#x2028;&#x202e;1</name>" in done.stdout
    assert parse_xml(done.stdout.encode()).findtext("name") == name


@pytest.mark.parametrize(
    ("redirect", "status", "line"),
    [
        (">&-", 1, "vmnet-hook: stdout is closed: nothing a command prints could be read"),
        ("<&-", 1, "vmnet-hook: domain XML is not well-formed: Document is empty"),
    ],
)
def test_a_closed_stdout_or_stdin_is_one_line_not_a_traceback(
    hook_env: dict[str, str], redirect: str, status: int, line: str
) -> None:
    command = f"exec {sys.executable} -m vmnet_hook.cli.main rewrite - {redirect}"
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                          env=hook_env, cwd=REPO, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stderr.count("\n")) == (status, 1), done.stderr
    assert done.stderr.startswith(line)


def cli_process(
    args: str, env: dict[str, str], **options: object
) -> subprocess.CompletedProcess[str]:
    """The installed command as a shell runs it: ``args`` may hold redirections."""
    command = f"exec {sys.executable} -m vmnet_hook.cli.main {args}"
    done: subprocess.CompletedProcess[str] = subprocess.run(
        ["sh", "-c", command], text=True, env=env, cwd=REPO, timeout=60, check=False, **options
    )  # type: ignore[call-overload]
    return done


@pytest.mark.parametrize("command", ["status", "status --json", "--help"])
def test_a_full_stdout_is_one_line_naming_stdout(hook_env: dict[str, str], command: str) -> None:
    done = cli_process(f"{command} > /dev/full", hook_env, stderr=subprocess.PIPE)
    assert (done.returncode, done.stderr) == (
        1, "vmnet-hook: cannot write to stdout (No space left on device)\n")  # fmt: skip


@pytest.mark.parametrize("command", ["status", "status --json", "--help"])
def test_a_broken_pipe_on_stdout_is_one_line(hook_env: dict[str, str], command: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write fails with EPIPE
    try:
        done = cli_process(command, hook_env, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (
        1,
        "vmnet-hook: cannot write to stdout (Broken pipe)\n",
    )


def test_the_hook_command_with_a_closed_stdin_says_so(hook_env: dict[str, str]) -> None:
    done = cli_process("hook vm1 prepare begin - <&-", hook_env, capture_output=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert (
        done.stderr
        == "vmnet-hook: domain 'vm1': stdin is closed; the domain XML is read from it\n"
    )


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("PROC_ROOT", "/nonexistent", "vmnet-hook: config key proc_root: cannot read "
         "/nonexistent/self/ns/net (No such file or directory): set proc_root to where the "
         "host's proc is mounted (/proc)\n"),
        ("NETNS_DIR", "/etc/hostname", "vmnet-hook: config key netns_dir: cannot list "
         "/etc/hostname (Not a directory): set netns_dir to where `ip netns` pins namespaces "
         "(/run/netns)\n"),
    ],
)  # fmt: skip
def test_pods_with_a_path_key_it_cannot_read_names_the_key(
    hook_env: dict[str, str], key: str, value: str, line: str
) -> None:
    done = cli_process("pods", {**hook_env, f"VMNET_HOOK_{key}": value}, capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", line)


@pytest.mark.kernel
def test_a_prepare_with_a_proc_root_it_cannot_read_names_the_key(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    from tests.test_hook_faults import hook, nothing_left, vm_on

    pod = make_pod()
    vm = vm_on(pod)
    done = hook({**hook_env, "VMNET_HOOK_PROC_ROOT": "/nonexistent"}, "prepare", "begin",
                xml=vm.xml)  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1 and "internal error" not in done.stderr
    assert "config key proc_root: cannot read /nonexistent/" in done.stderr
    nothing_left(pod, vm, Path(hook_env["VMNET_HOOK_STATE_DIR"]))
