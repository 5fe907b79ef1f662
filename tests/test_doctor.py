"""vmnet-hook doctor: each check's verdict and fix from made-up facts, then the whole doctor
on this machine after a real install.sh into temporary directories (root)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO, InstallLayout
from vmnet_hook import __version__
from vmnet_hook.cli import doctor
from vmnet_hook.cli.doctor import (
    Check,
    Daemon,
    Facts,
    HookFile,
    Interpreter,
    Paths,
    PodDiscovery,
    SELinux,
    probes,
    render,
    report,
    run_checks,
)
from vmnet_hook.cli.doctor.facts import Place
from vmnet_hook.cli.main import cli
from vmnet_hook.config import Config

HOOKS = "/etc/libvirt/hooks"
PYTHON = "/opt/vmnet-hook/bin/python3"
HOOK_WRITTEN = 1_700_000_000.0


def healthy(**changes: object) -> Facts:
    """The facts of a host where every check passes; ``changes`` breaks one thing."""
    facts = Facts(
        paths=Paths(),
        config=Config(),
        config_error="",
        overrides=(),
        kernel_release="6.1.0-18-amd64",
        altname_error="",
        libvirt_version="9.0.0",
        main_hook=HookFile(
            f"{HOOKS}/qemu",
            exists=True,
            ours=True,
            executable=True,
            shebang=PYTHON,
            mtime=HOOK_WRITTEN,
        ),
        dropin_hook=HookFile(f"{HOOKS}/qemu.d/vmnet-hook"),
        interpreter=Interpreter(PYTHON, versions={"vmnet_hook": "0.1.0", "pyroute2": "0.9.7"}),
        daemon=Daemon("libvirtd", 812, started_at=HOOK_WRITTEN + 60),
        hup_pid=None,
        hup_at=0.0,
        own_pyroute2="0.9.7",
        cgroup_mounts=(("cgroup2", "/sys/fs/cgroup"),),
        pod_log_dirs=12,
        selinux=SELinux(enforcing=None, hooks_unconfined=None),
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def verdict(facts: Facts, name: str) -> Check:
    found = [check(facts) for check in doctor.CHECKS if check(facts).name == name]
    assert len(found) == 1, name
    return found[0]


FOREIGN = HookFile(f"{HOOKS}/qemu", exists=True, shebang="/bin/sh", mtime=HOOK_WRITTEN)
DROPIN = HookFile(f"{HOOKS}/qemu.d/vmnet-hook", exists=True, ours=True, executable=True,
                  shebang=PYTHON, mtime=HOOK_WRITTEN)  # fmt: skip


def test_a_healthy_host_passes_every_check() -> None:
    checks = [check(healthy()) for check in doctor.CHECKS]
    assert [c.name for c in checks] == ["config", "trust", "kernel-altname", "libvirt-version",
                                        "hook-layout", "hook-runs", "libvirtd", "pyroute2",
                                        "cgroups", "pod-discovery", "pod-logs", "selinux",
                                        "masquerade", "container"]  # fmt: skip
    assert [c.name for c in checks if not c.ok] == []
    assert verdict(healthy(), "hook-runs").detail == (
        f"{HOOKS}/qemu runs {PYTHON}, which imports vmnet_hook 0.1.0"
    )


# (what is broken, which check, words its detail must hold, words its fix must hold)
BROKEN: list[tuple[dict[str, object], str, str, str]] = [
    (dict(config=None, config_error="config file /etc/vmnet-hook/config: unknown key 'proc_rot'"),
     "config", "unknown key 'proc_rot'", "correct what the message names in /etc/vmnet-hook/config"),
    (dict(untrusted=(("config file", "/srv/cm/config", "owned by uid 1000, not root",
                      "chown root: /srv/cm/config; chmod go-w /srv/cm/config"),
                     ("state directory", "/srv/state", "writable by group or others (mode 0775)",
                      "chown root: /srv/state; chmod go-w /srv/state"))),
     "trust", "config file /srv/cm/config: owned by uid 1000, not root; state directory /srv/state: "
     "writable by group or others (mode 0775) (the hook refuses it",
     "chown root: /srv/cm/config; chmod go-w /srv/cm/config; chown root: /srv/state; chmod go-w /srv/state"),
    (dict(altname_error="cannot bind altname vmnprobe-alt on ifindex 3: (95, 'Operation not supported')"),
     "kernel-altname", "Linux 6.1.0-18-amd64: cannot bind altname", "Linux >= 5.5"),
    (dict(altname_error="cannot make a network namespace: Operation not permitted"),
     "kernel-altname", "Operation not permitted", "run the doctor as root"),
    (dict(libvirt_version=""),
     "libvirt-version", "neither libvirtd nor virsh found", "apt-get install libvirt-daemon-system"),
    (dict(libvirt_version="6.0.0", main_hook=FOREIGN, dropin_hook=DROPIN),
     "libvirt-version", "libvirt 6.0.0 does not run /etc/libvirt/hooks/qemu.d/vmnet-hook", "upgrade libvirt"),
    (dict(main_hook=HookFile(f"{HOOKS}/qemu")),
     "hook-layout", "no vmnet-hook hook in /etc/libvirt/hooks", "run install.sh as root"),
    (dict(main_hook=FOREIGN),
     "hook-layout", "/etc/libvirt/hooks/qemu is another program's hook and /etc/libvirt/hooks/qemu.d/vmnet-hook is missing",
     "it installs /etc/libvirt/hooks/qemu.d/vmnet-hook and leaves /etc/libvirt/hooks/qemu as it is"),
    (dict(dropin_hook=DROPIN),
     "hook-layout", "installed twice", "run install.sh again: it keeps one copy"),
    (dict(main_hook=HookFile(f"{HOOKS}/qemu")),
     "hook-runs", "no hook of ours to run", "run install.sh as root"),
    (dict(main_hook=dataclasses.replace(healthy().main_hook, executable=False)),
     "hook-runs", "/etc/libvirt/hooks/qemu is not executable", "chmod 0755 /etc/libvirt/hooks/qemu"),
    (dict(main_hook=dataclasses.replace(healthy().main_hook, shebang="/usr/bin/env python3")),
     "hook-runs", "starts with #!/usr/bin/env python3: libvirtd runs hooks with a bare PATH", "run install.sh again"),
    (dict(interpreter=Interpreter(PYTHON, error="ModuleNotFoundError: No module named 'vmnet_hook'")),
     "hook-runs", f"{PYTHON} (from /etc/libvirt/hooks/qemu) cannot import vmnet_hook: ModuleNotFoundError", "run install.sh again"),
    (dict(daemon=None),
     "libvirtd", "no libvirtd or virtqemud process running", "start libvirtd"),
    (dict(daemon=Daemon("libvirtd", 812, started_at=HOOK_WRITTEN - 60)),
     "libvirtd", "libvirtd (pid 812) started", "kill -HUP 812 (or restart libvirtd) so that it rescans /etc/libvirt/hooks"),
    (dict(daemon=Daemon("libvirtd", 812, started_at=HOOK_WRITTEN - 60), hup_pid=640, hup_at=HOOK_WRITTEN + 1),
     "libvirtd", "before /etc/libvirt/hooks/qemu was written", "kill -HUP 812"),
    (dict(interpreter=Interpreter(PYTHON, versions={"vmnet_hook": "0.1.0", "pyroute2": "0.7.12"})),
     "pyroute2", f"pyroute2 0.7.12 in the hook's {PYTHON}: vmnet-hook needs >= 0.9", "installs pyroute2 >= 0.9"),
    (dict(interpreter=None, own_pyroute2=""),
     "pyroute2", "not importable by this doctor's", "run install.sh again"),
    (dict(cgroup_mounts=()),
     "cgroups", "no cgroup or cgroup2 mount in /proc/self/mounts", "mount -t cgroup2"),
    (dict(pod_log_dirs=None),
     "pod-logs", "/var/log/pods does not exist (no kubelet here?): pod=NAMESPACE/NAME cannot be resolved", "set pod_log_dir in /etc/vmnet-hook/config"),
    (dict(selinux=SELinux(enforcing=True, hooks_unconfined=False)),
     "selinux", "virt_hooks_unconfined is off", "setsebool -P virt_hooks_unconfined on"),
    (dict(selinux=SELinux(enforcing=True, hooks_unconfined=None)),
     "selinux", "the policy has no virt_hooks_unconfined boolean", "ausearch -m avc"),
    (dict(missing_tools=("dnsmasq",)),
     "masquerade", "dnsmasq not found: network='masquerade' (the default) cannot start", "apt-get install dnsmasq-base"),
    (dict(missing_tools=("dnsmasq", "nft")),
     "masquerade", "dnsmasq and nft not found", "apt-get install dnsmasq-base nftables"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "name", "detail", "fix"), BROKEN)
def test_each_failure_says_what_is_wrong_and_what_to_fix(
    changes: dict[str, object], name: str, detail: str, fix: str
) -> None:
    check = verdict(healthy(**changes), name)
    assert not check.ok
    assert detail in check.detail
    assert fix in check.fix
    assert "\n" not in check.detail + check.fix


def test_only_the_pod_log_dir_is_a_warning() -> None:
    warned = verdict(healthy(pod_log_dirs=None), "pod-logs")
    assert (warned.status, warned.failed) == ("warn", False)
    for changes, name, _detail, _fix in BROKEN:
        if name != "pod-logs":
            assert verdict(healthy(**changes), name).failed, (name, changes)


# What passes without being the usual case, and says so.
PASSING: list[tuple[dict[str, object], str, str]] = [
    (dict(main_hook=FOREIGN, dropin_hook=DROPIN),
     "hook-layout", "/etc/libvirt/hooks/qemu.d/vmnet-hook (installed by install.sh); /etc/libvirt/hooks/qemu: another program's hook"),
    (dict(main_hook=HookFile(f"{HOOKS}/qemu"), dropin_hook=DROPIN),
     "hook-layout", "/etc/libvirt/hooks/qemu: absent"),
    (dict(libvirt_version="6.0.0"),
     "libvirt-version", "libvirt 6.0.0 (< 6.5: only /etc/libvirt/hooks/qemu runs, which is ours)"),
    (dict(daemon=Daemon("libvirtd", 812, started_at=HOOK_WRITTEN - 60), hup_pid=812, hup_at=HOOK_WRITTEN + 1),
     "libvirtd", "install.sh sent it SIGHUP"),
    (dict(daemon=Daemon("virtqemud", 90, started_at=HOOK_WRITTEN + 5)),
     "libvirtd", "virtqemud (pid 90) started"),
    (dict(interpreter=None),
     "pyroute2", "pyroute2 0.9.7 in this doctor's"),
    (dict(cgroup_mounts=(("cgroup", "/sys/fs/cgroup/cpu"), ("cgroup2", "/sys/fs/cgroup/unified"))),
     "cgroups", "cgroup2 at /sys/fs/cgroup/unified; 1 cgroup v1 hierarchies"),
    (dict(selinux=SELinux(enforcing=None, hooks_unconfined=None)), "selinux", "SELinux not enforcing"),
    (dict(selinux=SELinux(enforcing=False, hooks_unconfined=False)), "selinux", "SELinux permissive"),
    (dict(selinux=SELinux(enforcing=True, hooks_unconfined=True)), "selinux", "virt_hooks_unconfined is on"),
    (dict(overrides=("VMNET_HOOK_STATE_DIR",)), "config", "overridden here by VMNET_HOOK_STATE_DIR; libvirtd passes none"),
    (dict(pod_discovery=PodDiscovery(("/sys/fs/cgroup/kubepods.slice", "/sys/fs/cgroup/cpu/kubepods.slice"), 0, 900)),
     "pod-discovery", "pods are found through their cgroups (/sys/fs/cgroup/kubepods.slice and 1 more): a start reads its own pod's cgroup.procs"),
    (dict(pod_discovery=PodDiscovery((), 0, 900)),
     "pod-discovery", "no pod here yet (no kubepods cgroup, no pod process): a start looks for its pod's cgroup first, and walks /proc (all 900 processes now) only when none is visible"),
]  # fmt: skip


def test_pods_found_only_by_walking_proc_is_a_warning_saying_what_it_costs() -> None:
    check = verdict(healthy(pod_discovery=PodDiscovery((), 3, 4200)), "pod-discovery")
    assert (check.status, check.failed) == ("warn", False)
    assert check.detail == (
        "no kubepods cgroup is visible in /proc/self/mounts' cgroup mounts, yet 3 pods' "
        "processes are in /proc (a private cgroup namespace?): each start walks /proc, "
        "all 4200 processes now"
    )
    assert "the host's cgroup namespace" in check.fix


@pytest.mark.parametrize(("changes", "name", "detail"), PASSING)
def test_unusual_but_working_setups_pass_and_say_how(
    changes: dict[str, object], name: str, detail: str
) -> None:
    check = verdict(healthy(**changes), name)
    assert check.ok, check
    assert detail in check.detail


def test_render_is_one_table_then_the_fixes() -> None:
    checks = [
        Check("config", True, "/etc/vmnet-hook/config absent: the defaults apply"),
        Check("hook-layout", False, "no vmnet-hook hook in /etc/libvirt/hooks", "run install.sh as root"),
        Check("pod-logs", False, "/var/log/pods does not exist", "nothing to do", severity="warning"),
    ]  # fmt: skip
    assert render(checks).splitlines() == [
        "ok    config       /etc/vmnet-hook/config absent: the defaults apply",
        "FAIL  hook-layout  no vmnet-hook hook in /etc/libvirt/hooks",
        "warn  pod-logs     /var/log/pods does not exist",
        "",
        "To fix:",
        "  hook-layout: run install.sh as root",
        "  pod-logs: nothing to do",
        "",
        "3 checks: 1 ok, 1 failed, 1 warning",
    ]
    assert json.loads(json.dumps(report(checks))) == {
        "ok": False,
        "checks": [
            {"status": "ok", "name": "config", "ok": True, "severity": "error", "fix": "",
             "detail": "/etc/vmnet-hook/config absent: the defaults apply"},
            {"status": "FAIL", "name": "hook-layout", "ok": False, "severity": "error",
             "detail": "no vmnet-hook hook in /etc/libvirt/hooks", "fix": "run install.sh as root"},
            {"status": "warn", "name": "pod-logs", "ok": False, "severity": "warning",
             "detail": "/var/log/pods does not exist", "fix": "nothing to do"},
        ],
    }  # fmt: skip
    assert report(checks[:1] + checks[2:])["ok"] is True  # a warning alone does not fail


def test_an_invalid_config_file_is_named_and_the_rest_still_runs(tmp_path: Path) -> None:
    config_file = tmp_path / "config"
    config_file.write_text("[vmnet-hook]\ndeadline_seconds = soon\n")

    checks = run_checks(Paths(hooks_dir=str(tmp_path / "hooks"), config_path=str(config_file)), {})

    config_check = checks[0]
    assert config_check.name == "config" and not config_check.ok
    assert (
        config_check.detail
        == "config key deadline_seconds: 'soon' is not a whole number of seconds 1-300"
    )
    assert len(checks) == len(doctor.CHECKS)


# --- on this machine, for real ---------------------------------------------------------


class Installed(InstallLayout):
    @property
    def config_file(self) -> Path:
        return self.config / "config"

    def paths(self, **changes: object) -> Paths:
        paths = Paths(hooks_dir=str(self.hooks), config_path=str(self.config_file))
        return dataclasses.replace(paths, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """install.sh, run for real into temporary PREFIX, HOOKS_DIR and CONFIG_DIR, once."""
    if os.geteuid() != 0:
        pytest.skip("install.sh runs as root")
    layout = Installed(tmp_path_factory.mktemp("doctor") / "root")
    env = layout.env()
    result = subprocess.run(["bash", str(REPO / "install.sh")], env=env, capture_output=True,
                            text=True, timeout=600, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    yield layout
    subprocess.run(["bash", str(REPO / "install.sh"), "--uninstall"], env=env,
                   capture_output=True, timeout=600, check=False)  # fmt: skip


@pytest.fixture
def libvirtd_started_now(tmp_path: Path) -> Iterator[str]:
    """A process named libvirtd, started after the install, and its pid file: what a host
    looks like once libvirtd was (re)started after install.sh, without touching the real
    libvirtd that other tests use."""
    program = tmp_path / "libvirtd"
    shutil.copy("/bin/sleep", program)
    process = subprocess.Popen([str(program), "600"])
    pidfile = tmp_path / "libvirtd.pid"
    pidfile.write_text(f"{process.pid}\n")
    yield str(pidfile)
    process.kill()
    process.wait()


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


@pytest.mark.kernel
@pytest.mark.libvirt
def test_doctor_passes_on_this_machine_after_install(
    installed: Installed, libvirtd_started_now: str
) -> None:
    checks = run_checks(installed.paths(daemon_pidfiles=(libvirtd_started_now,)), environ={})

    assert [c.name for c in checks if c.failed] == [], render(checks)
    found = by_name(checks)
    assert found["kernel-altname"].detail.endswith(
        "bound, looked up and unbound an altname on a veth"
    )
    assert found["hook-layout"].detail == f"{installed.hooks}/qemu (installed by install.sh)"
    assert found["hook-runs"].detail == (
        f"{installed.hooks}/qemu runs {installed.prefix}/bin/python3, which imports vmnet_hook {__version__}"
    )
    assert found["pyroute2"].detail.startswith("pyroute2 0.9")
    assert f"in the hook's {installed.prefix}/bin/python3" in found["pyroute2"].detail
    assert found["libvirtd"].detail.startswith("libvirtd (pid ")
    assert found["config"].detail == f"{installed.config_file} absent: the defaults apply"
    assert found["pod-logs"].status == ("ok" if os.path.isdir("/var/log/pods") else "warn")
    assert " 0 failed, " in render(checks).splitlines()[-1]


@pytest.mark.kernel
def test_doctor_names_the_missing_hook(installed: Installed, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    shutil.copytree(installed.hooks, hooks)
    (hooks / "qemu").unlink()

    found = by_name(run_checks(installed.paths(hooks_dir=str(hooks)), environ={}))

    assert found["hook-layout"].status == "FAIL"
    assert found["hook-layout"].detail == f"no vmnet-hook hook in {hooks}"
    assert found["hook-layout"].fix == "run install.sh as root"
    assert found["hook-runs"].detail == "no hook of ours to run"


@pytest.mark.kernel
def test_doctor_names_an_interpreter_that_cannot_import_the_package(
    installed: Installed, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    shutil.copytree(installed.hooks, hooks)
    hook = hooks / "qemu"
    lines = hook.read_text().splitlines(keepends=True)
    hook.write_text("#!/usr/bin/python3\n" + "".join(lines[1:]))  # Debian's, without the package

    found = by_name(run_checks(installed.paths(hooks_dir=str(hooks)), environ={}))

    assert found["hook-runs"].status == "FAIL"
    assert (
        "cannot import vmnet_hook: ModuleNotFoundError: No module named"
        in found["hook-runs"].detail
    )
    assert found["hook-runs"].fix.startswith("run install.sh again")


@pytest.mark.kernel
@pytest.mark.libvirt
def test_doctor_asks_for_a_sighup_when_libvirtd_predates_the_hook(
    installed: Installed, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    shutil.copytree(installed.hooks, hooks)
    os.utime(hooks / "qemu")  # written just now, after the real libvirtd started
    paths = installed.paths(hooks_dir=str(hooks))

    found = by_name(run_checks(paths, environ={}))["libvirtd"]

    daemon = probes.find_daemon(paths.daemon_pidfiles, "/proc")
    assert daemon is not None, "libvirtd must run for the libvirt tier (tests/setup-system.sh)"
    assert found.status == "FAIL"
    assert f"{daemon.name} (pid {daemon.pid}) started" in found.detail
    assert f"before {hooks}/qemu was written" in found.detail
    assert found.fix.startswith(f"kill -HUP {daemon.pid} (or restart {daemon.name})")

    # install.sh's record of the SIGHUP it sent, after the hook was written, settles it.
    record = installed.prefix / "vmnet-hook-install" / "libvirtd-hup"
    time.sleep(0.01)
    record.write_text(f"{daemon.pid}\n")
    try:
        again = by_name(run_checks(paths, environ={}))["libvirtd"]
    finally:
        record.unlink()
    assert again.ok, again
    assert "install.sh sent it SIGHUP" in again.detail


@pytest.mark.kernel
def test_the_altname_probe_leaves_nothing_behind() -> None:
    before = sorted(os.listdir("/sys/class/net")), sorted(_pinned_netns())

    assert doctor.probe_altnames() == ""

    assert (sorted(os.listdir("/sys/class/net")), sorted(_pinned_netns())) == before


@pytest.mark.kernel
def test_the_altname_probe_without_capabilities_says_to_run_as_root() -> None:
    probe = "from vmnet_hook.cli.doctor import probe_altnames; print(probe_altnames())"
    result = subprocess.run(  # root, but with every capability dropped
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO,
    )  # fmt: skip
    error = result.stdout.strip()
    assert error == "cannot make a network namespace: Operation not permitted"
    check = verdict(healthy(altname_error=error), "kernel-altname")
    assert check.fix.startswith("run the doctor as root")


def _pinned_netns() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


def test_the_doctor_command_names_a_missing_hook_and_exits_1(tmp_path: Path) -> None:
    hooks, runner = tmp_path / "hooks", CliRunner()
    env = {"VMNET_HOOK_CONFIG": str(tmp_path / "no-config")}
    table = runner.invoke(cli, ["doctor", "--hooks-dir", str(hooks)], env=env)
    as_json = runner.invoke(cli, ["doctor", "--json", "--hooks-dir", str(hooks)], env=env)
    assert table.exit_code == 1 and as_json.exit_code == 1
    assert f"FAIL  hook-layout      no vmnet-hook hook in {hooks}" in table.output
    assert "  hook-layout: run install.sh as root" in table.output
    assert json.loads(as_json.output)["ok"] is False


def fake_proc(tmp_path: Path, cgroups: dict[int, str], kubepods: bool) -> str:
    """A /proc with one cgroup2 mount (holding a kubepods cgroup or not) and processes
    whose cgroup files say ``cgroups``."""
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    (mount / "kubepods.slice" if kubepods else mount).mkdir(parents=True)
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mounts").write_text(f"cgroup2 {mount} cgroup2 rw 0 0\n")
    for pid, cgroup in cgroups.items():
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
    return str(proc)


POD_A, POD_B = "0b6e3c8e-1c3f-4a5e-9d1e-2f3a4b5c6d7e", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
IN_PODS = {
    10: f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_A.replace('-', '_')}.slice/cri-containerd-{'a' * 64}.scope",
    11: f"/kubepods/burstable/pod{POD_B}/{'b' * 64}",
    12: f"/kubepods/burstable/pod{POD_B}/crio-conmon-{'c' * 64}.scope",
    13: "/system.slice/ssh.service",
}


def test_the_pod_discovery_probe_names_kubepods_cgroups_when_it_sees_them(tmp_path: Path) -> None:
    found = probes.probe_pod_discovery(fake_proc(tmp_path, IN_PODS, kubepods=True))
    assert found == PodDiscovery((f"{tmp_path}/cgroup/kubepods.slice",), 0, 4)


def test_the_pod_discovery_probe_counts_pods_in_proc_when_their_cgroups_are_hidden(
    tmp_path: Path,
) -> None:
    found = probes.probe_pod_discovery(fake_proc(tmp_path, IN_PODS, kubepods=False))
    assert found == PodDiscovery((), 2, 4)
    assert verdict(healthy(pod_discovery=found), "pod-discovery").status == "warn"


# --- the hook in a container ----------------------------------------------------------

IN_POD = ("own mount namespace", "own cgroup namespace")


def test_on_the_host_the_container_check_says_so() -> None:
    check = verdict(healthy(), "container")
    assert check.ok
    assert check.detail == "not in a container: the host's processes, cgroups and /run/netns"


def test_a_pod_that_sees_only_its_own_processes_fails_and_says_what_to_set() -> None:
    place = Place(signs=("KUBERNETES_SERVICE_HOST set",), sees_host_init=False)
    check = verdict(healthy(place=place), "container")
    assert check.failed
    assert "/proc shows only its own processes" in check.detail
    assert "hostPID: true" in check.fix and "deploy/libvirtd/config-no-host-pid" in check.fix


def test_a_private_cgroup_namespace_without_the_hosts_tree_warns_about_the_walk() -> None:
    place = Place(signs=IN_POD, sees_host_init=True, own_cgroupns=True, netns_mount="slave")
    check = verdict(healthy(place=place), "container")
    assert check.status == "warn"
    assert "pods are found by walking every process of /proc" in check.detail
    assert "/host/sys/fs/cgroup" in check.fix


@pytest.mark.parametrize("mount", ["private", ""])
def test_a_netns_dir_without_propagation_warns(mount: str) -> None:
    place = Place(signs=IN_POD, sees_host_init=True, own_cgroupns=True, kubepods_cgroups=3,
                  netns_mount=mount)  # fmt: skip
    check = verdict(healthy(place=place), "container")
    assert check.status == "warn"
    assert "pods are found by their own cgroups (3 kubepods cgroups)" in check.detail
    assert "mountPropagation: HostToContainer" in check.fix


def test_the_deployed_layout_passes() -> None:
    place = Place(signs=IN_POD, sees_host_init=True, own_cgroupns=True, kubepods_cgroups=3,
                  netns_mount="slave")  # fmt: skip
    check = verdict(healthy(place=place), "container")
    assert check.ok, check
    assert check.detail.startswith("in a container (own mount namespace, own cgroup namespace)")


@pytest.mark.kernel
def test_mount_propagation_reads_this_process_mountinfo(tmp_path: Path) -> None:
    host, seen, plain = tmp_path / "host", tmp_path / "seen", tmp_path / "plain"
    for directory in (host, seen, plain):
        directory.mkdir()
    script = (
        f"mount -t tmpfs none {host} && mount --make-shared {host}"
        f" && mount --bind {host} {seen} && mount --make-slave {seen} && "
        f"{sys.executable} -c 'import sys; from vmnet_hook.cli.doctor.probes import "
        "mount_propagation as m; print([m(p) for p in sys.argv[1:]])' "
        f"{host} {seen} {plain}"
    )
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['shared', 'slave', '']"


def test_the_trust_probe_judges_real_files_behind_symlinks(tmp_path: Path) -> None:
    """Made for real: a config owned by nobody behind a symlink, a state dir its group may
    write; then both made root's alone, which the probe accepts."""
    from vmnet_hook.cli.doctor.probes import probe_trust

    target, link = tmp_path / "real-config", tmp_path / "config"
    target.write_text("[vmnet-hook]\n")
    link.symlink_to(target)
    os.chown(target, 65534, 65534)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o770)
    assert probe_trust(str(link), str(state)) == (
        ("config file", str(target), "owned by uid 65534, not root",
         f"chown root: {target}; chmod go-w {target}"),
        ("state directory", str(state), "writable by group or others (mode 0770)",
         f"chown root: {state}; chmod go-w {state}"),
    )  # the default state dir, also judged, is root's here  # fmt: skip
    os.chown(target, 0, 0)
    state.chmod(0o700)
    assert probe_trust(str(link), str(state)) == ()
    os.lchown(link, 65534, 65534)  # the link itself: chown root: would change its target
    assert probe_trust(str(link), str(state)) == (
        ("config file", str(link), "a symbolic link owned by uid 65534, not root",
         f"chown -h root: {link}"),
    )  # fmt: skip
