"""The click commands: output and exit status as a user sees them (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import test_status
from tests.conftest import DATA, MakePod, domain_xml
from tests.test_hook_kernel import PLACEHOLDER, UUID, altnames
from tests.test_status import FakeVirsh
from vmnet_hook.cli.main import cli

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
    """One wrapper, on the group, for every command: no traceback, exit status 1."""
    done = runner.invoke(cli, args, env={"VMNET_HOOK_LOG_LEVEL": "loud"})
    assert (done.exit_code, done.output) == (
        1, "vmnet-hook: config key log_level: 'loud' is not one of debug, info, warning, error\n")  # fmt: skip


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
