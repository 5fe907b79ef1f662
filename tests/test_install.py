"""install.sh, run for real into a temporary PREFIX, HOOKS_DIR and CONFIG_DIR (root only).

Each test makes a real virtual environment and pip-installs the checkout into it, then
checks the files a user would find and the lines install.sh printed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.conftest import HOOK, REPO, InstallLayout, domain_xml
from vmnet_hook import __version__

INSTALL = REPO / "install.sh"
MARKER = "# vmnet-hook: installed by install.sh; remove with install.sh --uninstall"
FOREIGN_HOOK = "#!/bin/sh\n# the site's own qemu hook\nexit 0\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")


class Layout(InstallLayout):
    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(INSTALL), *args], env=self.env(**extra_env), capture_output=True,
            text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def install(self, *args: str) -> list[str]:
        """Run install.sh, require success, and return the lines it printed."""
        result = self.run(*args)
        assert result.returncode == 0, f"install.sh {args} failed:\n{result.stdout}{result.stderr}"
        return result.stdout.splitlines()

    def snapshot(self) -> dict[str, tuple[int, str]]:
        """Everything under the root but the virtual environment: kind, mode and content."""
        found: dict[str, tuple[int, str]] = {}
        for path in sorted(self.root.rglob("*")):
            if path == self.prefix or self.prefix in path.parents:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = "-> " + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_text()
            else:
                content = ""
            found[str(path.relative_to(self.root))] = (info.st_mode, content)
        return found


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "root")


def said(lines: list[str], text: str) -> bool:
    return any(text in line for line in lines)


def run_installed_hook(
    hook: Path, tmp_path: Path, *args: str, xml: str
) -> subprocess.CompletedProcess[str]:
    """Run the installed hook as libvirtd does: by its path, with an almost empty environment."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "VMNET_HOOK_STATE_DIR": str(tmp_path / "state"),
        "VMNET_HOOK_CONFIG": str(tmp_path / "no-config"),
    }
    return subprocess.run(
        [str(hook), *args], input=xml, env=env, capture_output=True, text=True, timeout=60,
        check=False, cwd="/",
    )  # fmt: skip


def test_fresh_install_makes_a_working_hook_and_uninstall_removes_it(
    layout: Layout, tmp_path: Path
) -> None:
    lines = layout.install()

    assert lines == [
        f"install.sh: virtual environment {layout.prefix}: made with Python "
        + lines[0].rsplit(" ", 1)[-1],
        f"install.sh: package vmnet-hook {__version__}: installed into {layout.prefix}"
        f" from {REPO}",
        f"install.sh: hook {layout.hooks}/qemu: installed",
        f"install.sh: config directory {layout.config}: made (no config file: the defaults apply)",
        f"install.sh: command {layout.bin}/vmnet-hook: linked to {layout.prefix}/bin/vmnet-hook",
        "install.sh: libvirtd: not signalled (HOOKS_DIR is not /etc/libvirt/hooks)",
        "install.sh: done",
    ]
    hook = layout.hooks / "qemu"
    text = hook.read_text().splitlines()
    assert text[0] == f"#!{layout.prefix}/bin/python3"
    assert text[1] == MARKER
    assert text[2:] == HOOK.read_text().splitlines()[1:]
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert not layout.dropin.exists()
    assert layout.config.is_dir() and list(layout.config.iterdir()) == []

    # Installed, not editable: the environment imports its own copy, not the checkout.
    python = str(layout.prefix / "bin" / "python3")
    where = subprocess.run(
        [python, "-c", "import vmnet_hook; print(vmnet_hook.__file__)"],
        capture_output=True, text=True, timeout=60, check=True, cwd="/",
    ).stdout.strip()  # fmt: skip
    assert where.startswith(f"{layout.prefix}/lib/"), where
    version = subprocess.run(
        [str(layout.bin / "vmnet-hook"), "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert __version__ in version

    # The hook runs by its shebang with libvirt's bare environment: nothing to do...
    quiet = run_installed_hook(hook, tmp_path, "vm1", "started", "begin", "-", xml="<domain/>")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    # ...and a real failure, which needs the package's dependencies from the environment.
    missing = f"vmnt-missing-{uuidlib.uuid4().hex[:8]}"
    failed = run_installed_hook(
        hook, tmp_path, "vm1", "prepare", "begin", "-", xml=domain_xml(NETNS=missing)
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("vmnet-hook: domain 'vm1', interface 52:54:00:12:34:56: ")
    assert missing in failed.stderr
    assert "Traceback" not in failed.stderr

    # A config file the user wrote since is theirs: uninstall keeps it and its directory.
    (layout.config / "config").write_text("[vmnet-hook]\nlog_level = debug\n")
    lines = layout.install("--uninstall")
    assert f"install.sh: removed hook {hook}" in lines
    assert f"install.sh: removed command {layout.bin}/vmnet-hook" in lines
    assert not (layout.bin / "vmnet-hook").exists()
    assert f"install.sh: kept directory {layout.config}: it is not empty" in lines
    assert f"install.sh: removed virtual environment {layout.prefix}" in lines
    assert not layout.prefix.exists()
    assert not layout.hooks.exists()  # install.sh made it, and it is empty again
    assert (layout.config / "config").read_text() == "[vmnet-hook]\nlog_level = debug\n"


def test_rerun_changes_nothing_and_says_so(layout: Layout) -> None:
    layout.install()
    before = layout.snapshot()
    record = sorted(p.name for p in (layout.prefix / "vmnet-hook-install").iterdir())

    lines = layout.install()

    assert layout.snapshot() == before
    assert sorted(p.name for p in (layout.prefix / "vmnet-hook-install").iterdir()) == record
    assert f"install.sh: virtual environment {layout.prefix}: already there" in lines
    assert f"install.sh: hook {layout.hooks}/qemu: up to date" in lines
    assert f"install.sh: config directory {layout.config}: already there" in lines
    assert not said(lines, f"hook {layout.hooks}/qemu: installed")
    assert not said(lines, "moved")
    # Each directory install.sh made is recorded once, however often it runs.
    created = (layout.prefix / "vmnet-hook-install" / "created").read_text().splitlines()
    assert len(created) == len(set(created))
    assert str(layout.hooks) in created and str(layout.config) in created


def test_a_broken_environment_is_remade_and_the_record_kept(layout: Layout) -> None:
    layout.install()
    record = layout.prefix / "vmnet-hook-install" / "created"
    created = record.read_text()
    # As after a Python upgrade: the environment's interpreter no longer runs.
    (layout.prefix / "bin" / "python3").unlink()
    (layout.prefix / "bin" / "python3").symlink_to("/nonexistent/python3")

    lines = layout.install()

    assert lines[0].startswith(f"install.sh: virtual environment {layout.prefix}: remade with ")
    assert record.read_text() == created
    assert f"install.sh: hook {layout.hooks}/qemu: up to date" in lines
    lines = layout.install("--uninstall")
    assert not layout.prefix.exists() and not layout.hooks.exists()


def test_foreign_hook_is_kept_and_the_hook_goes_to_qemu_d(layout: Layout) -> None:
    layout.hooks.mkdir(parents=True)
    foreign = layout.hooks / "qemu"
    foreign.write_text(FOREIGN_HOOK)
    foreign.chmod(0o750)
    before = layout.snapshot()

    lines = layout.install()

    assert foreign.read_text() == FOREIGN_HOOK
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o750
    assert f"install.sh: {foreign} is another program's hook: left as it is" in lines
    installed = (
        f"install.sh: hook {layout.dropin}: installed (libvirt >= 6.5 runs it after {foreign})"
    )
    assert installed in lines
    dropin = layout.dropin.read_text().splitlines()
    assert dropin[:2] == [f"#!{layout.prefix}/bin/python3", MARKER]
    assert os.access(layout.dropin, os.X_OK)

    # A second run keeps to qemu.d, and the foreign hook is still untouched.
    again = layout.install()
    assert f"install.sh: hook {layout.dropin}: up to date" in again
    assert foreign.read_text() == FOREIGN_HOOK

    lines = layout.install("--uninstall")
    assert f"install.sh: removed hook {layout.dropin}" in lines
    assert layout.snapshot() == before
    assert not layout.prefix.exists()


def test_uninstall_puts_back_what_install_moved_aside(layout: Layout) -> None:
    # Something already sits where the hook must go (qemu is taken, so qemu.d/vmnet-hook),
    # next to hooks of other drivers that install.sh must not touch.
    dropin_dir = layout.dropin.parent
    dropin_dir.mkdir(parents=True)
    (layout.hooks / "qemu").write_text(FOREIGN_HOOK)
    (layout.hooks / "qemu").chmod(0o755)
    (layout.hooks / "lxc").write_text(FOREIGN_HOOK)
    layout.dropin.write_text("#!/bin/sh\n# an old hand-made copy\nexit 0\n")
    layout.dropin.chmod(0o700)
    (dropin_dir / "10-other").symlink_to("/bin/true")
    before = layout.snapshot()

    lines = layout.install()

    moved = [line for line in lines if line.startswith(f"install.sh: moved {layout.dropin}")]
    assert len(moved) == 1 and moved[0].endswith("--uninstall puts it back"), lines
    assert layout.dropin.read_text().splitlines()[1] == MARKER
    backups = list((layout.prefix / "vmnet-hook-install" / "backup").iterdir())
    assert [p.read_text() for p in backups] == ["#!/bin/sh\n# an old hand-made copy\nexit 0\n"]

    lines = layout.install("--uninstall")

    assert f"install.sh: put back {layout.dropin}" in lines
    assert layout.snapshot() == before
    assert not layout.prefix.exists()
    # Of the directories, install.sh made only the environment's parent, CONFIG_DIR and
    # BIN_DIR with its parents.
    removed = sorted(line for line in lines if line.startswith("install.sh: removed directory"))
    assert removed == sorted(
        f"install.sh: removed directory {path}"
        for path in (layout.config, layout.prefix.parent, layout.bin, layout.bin.parent,
                     layout.bin.parent.parent)
    )  # fmt: skip


def test_uninstall_with_nothing_installed_says_so(layout: Layout) -> None:
    lines = layout.install("--uninstall")
    assert f"install.sh: nothing installed in {layout.prefix}" in lines
    assert not layout.root.exists()


def test_a_prefix_install_sh_did_not_make_is_refused(layout: Layout) -> None:
    layout.prefix.mkdir(parents=True)
    (layout.prefix / "precious").write_text("data\n")

    for args in ((), ("--uninstall",)):
        result = layout.run(*args)
        assert result.returncode == 1
        assert f"{layout.prefix}" in result.stderr and "not made by install.sh" in result.stderr
        assert (layout.prefix / "precious").read_text() == "data\n"
        assert not layout.hooks.exists()


def test_an_interpreter_that_cannot_make_a_venv_is_named(layout: Layout, tmp_path: Path) -> None:
    # Like Debian's python3 without python3-venv: `import ensurepip` fails. install.sh
    # apt-installs python3-venv only for /usr/bin/python3; another interpreter is reported.
    python = tmp_path / "python3"
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    result = layout.run(PYTHON=str(python))
    assert result.returncode == 1
    assert result.stderr == (
        f"install.sh: error: {python} cannot make a virtual environment (no venv/ensurepip module)\n"
    )
    assert not layout.root.exists()


@pytest.mark.parametrize("signal_name", ["INT", "TERM"])
def test_an_interrupted_install_leaves_nothing_staged(
    layout: Layout, tmp_path: Path, signal_name: str
) -> None:
    """Interrupted right after it wrote the hook's staged copy (a chmod that signals its
    caller, as Ctrl-C would): nothing of that copy, nor of the build copy, stays behind;
    in qemu.d/ libvirt would run a stray executable as a second hook."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "chmod").write_text(f'#!/bin/sh\nkill -{signal_name} "$PPID"\nexit 1\n')
    (shims / "chmod").chmod(0o755)
    builds = tmp_path / "tmp"  # where install.sh's mktemp -d makes its build copy
    builds.mkdir()

    result = layout.run(PATH=f"{shims}:{os.environ['PATH']}", TMPDIR=str(builds))

    assert result.returncode == {"INT": 130, "TERM": 143}[signal_name], result.stderr
    assert list(layout.hooks.iterdir()) == []  # made, but holds nothing: no staged hook
    assert list(builds.iterdir()) == []
    layout.install("--uninstall")
    assert not layout.root.exists()


def test_bad_arguments_print_usage(layout: Layout) -> None:
    result = layout.run("--frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: install.sh [--uninstall]")
    assert not layout.root.exists()


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (tests/setup-system.sh installs it)")
    scripts = [INSTALL, REPO / "scripts" / "setup-libvirt.sh", *sorted(REPO.glob("tests/*.sh"))]
    result = subprocess.run(
        [shellcheck, "-x", *map(str, scripts)], cwd=REPO,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


@pytest.mark.kernel
def test_sighup_goes_only_to_the_libvirtd_of_its_own_mount_namespace(tmp_path: Path) -> None:
    """As in a container with the host's PID namespace: a libvirtd of another mount
    namespace is in /proc, and even named by the pid file, yet is never signalled; the one
    in install.sh's own namespaces is. install.sh's functions are run without its main
    (the whole install is the daemonset tier's, in a real container); ``libvirtd`` here
    is a copy of sleep, which SIGHUP ends."""
    assert INSTALL.read_text().splitlines()[-1] == 'main "$@"'
    fake = tmp_path / "libvirtd"
    shutil.copy("/bin/sleep", fake)
    outsider = subprocess.Popen([str(fake), "600"], start_new_session=True)
    script = f"""set -euo pipefail
source <(sed '$d' {INSTALL})
mount -t tmpfs none /run
echo {outsider.pid} >/run/libvirtd.pid
reload_libvirtd
{fake} 600 &
insider=$!
echo "$insider" >/run/libvirtd.pid
echo "insider $insider"
reload_libvirtd
wait "$insider" || echo "insider ended by signal $(($? - 128))"
"""
    try:
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
            env={"PATH": os.environ["PATH"], "PREFIX": str(tmp_path / "prefix")},
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert outsider.poll() is None, "the outsider was signalled"
    finally:
        outsider.kill()
        outsider.wait()
    insider = lines[1].split()[1]
    assert lines == [
        "install.sh: libvirtd: not running here (no live /run/libvirtd.pid in this mount and "
        "PID namespace); it finds the hook when it starts",
        f"insider {insider}",
        f"install.sh: libvirtd (pid {insider}): sent SIGHUP so that it rescans /etc/libvirt/hooks",
        "insider ended by signal 1",
    ]
