"""``vmnet-hook doctor``: can this host run the hook? One check per thing that can be
missing, each saying what to fix.

The side effects are gathered once, up front, into ``Facts`` (files, /proc, the hook's
interpreter run with ``-c``, ``libvirtd --version``, and a real altname bound in a throwaway
network namespace); each check is then a small pure function of the facts, so every
failure text is tested with made-up facts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from vmnet_hook.config import DEFAULT_PATH, Config, load
from vmnet_hook.errors import ConfigError
from vmnet_hook.host.mounts import cgroup_mounts
from vmnet_hook.host.netns import run_in_new_netns

LIBVIRT_HOOKS_DIR = "/etc/libvirt/hooks"
# install.sh's marker, on the hook's second line: what tells our hook from another program's.
MARKER = "# vmnet-hook: installed by install.sh; remove with install.sh --uninstall"
HUP_RECORD = "vmnet-hook-install/libvirtd-hup"  # under PREFIX: the pid install.sh sent SIGHUP
QEMU_D_SINCE = (6, 5)  # libvirt runs hooks/qemu.d/* since 6.5
PYROUTE2_SINCE = (0, 9)  # setup.cfg's floor: the netns and altname calls netlink.py makes
HOOK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # about what libvirtd gives its hooks
DAEMONS = ("libvirtd", "virtqemud")  # monolithic, or the modular daemon that runs qemu hooks
SIOCGIFINDEX = 0x8933
PROBE_VETH, PROBE_PEER, PROBE_ALTNAME = "vmnprobe0", "vmnprobe1", "vmnprobe-alt"
# What the hook's interpreter is asked to import: what the hook itself needs when it works.
IMPORT_PROBE = (
    "import json, lxml, psutil, pyroute2, vmnet_hook, vmnet_hook.hook.handlers, "
    "vmnet_hook.host.netlink; "
    "print(json.dumps({'vmnet_hook': vmnet_hook.__version__, 'pyroute2': pyroute2.__version__}))"
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    severity: str = "error"  # "warning": shown, but does not make the doctor fail

    @property
    def failed(self) -> bool:
        return not self.ok and self.severity == "error"

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.failed else "warn"

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, **asdict(self)}


@dataclass(frozen=True)
class Paths:
    """Where the doctor looks; tests point these at temporary directories."""

    hooks_dir: str = LIBVIRT_HOOKS_DIR
    config_path: str = DEFAULT_PATH
    selinux_dir: str = "/sys/fs/selinux"
    daemon_pidfiles: tuple[str, ...] = ("/run/libvirtd.pid", "/run/virtqemud.pid")
    search_path: str = HOOK_PATH  # where libvirtd and virsh are looked for

    @property
    def main_hook(self) -> str:
        return f"{self.hooks_dir}/qemu"

    @property
    def dropin_hook(self) -> str:
        return f"{self.hooks_dir}/qemu.d/vmnet-hook"


@dataclass(frozen=True)
class HookFile:
    path: str
    exists: bool = False
    ours: bool = False
    executable: bool = False
    shebang: str = ""  # the first line, without "#!"
    mtime: float = 0.0

    @property
    def interpreter(self) -> str:
        return self.shebang.split()[0] if self.shebang.split() else ""

    @property
    def prefix(self) -> str:
        """install.sh's PREFIX: the interpreter is PREFIX/bin/python3."""
        return os.path.dirname(os.path.dirname(self.interpreter))


@dataclass(frozen=True)
class Interpreter:
    """What the hook's interpreter said when asked to import what the hook needs."""

    path: str
    versions: Mapping[str, str] = field(default_factory=dict)  # empty when the import failed
    error: str = ""


@dataclass(frozen=True)
class Daemon:
    name: str
    pid: int
    started_at: float  # seconds since the epoch


@dataclass(frozen=True)
class SELinux:
    enforcing: bool | None  # None: no SELinux on this host
    hooks_unconfined: bool | None  # None: the policy has no virt_hooks_unconfined boolean


@dataclass(frozen=True)
class Facts:
    paths: Paths
    config: Config | None
    config_error: str
    overrides: tuple[str, ...]  # VMNET_HOOK_* variables set (libvirtd passes none to hooks)
    kernel_release: str
    altname_error: str  # "" when an altname was bound, looked up and unbound
    libvirt_version: str  # "" when neither libvirtd nor virsh answered
    main_hook: HookFile
    dropin_hook: HookFile
    interpreter: Interpreter | None  # None: no hook of ours to ask
    daemon: Daemon | None
    hup_pid: int | None  # the pid install.sh recorded sending SIGHUP to
    hup_at: float
    own_pyroute2: str  # this interpreter's pyroute2, when the hook's cannot be asked
    cgroup_mounts: tuple[tuple[str, str], ...]  # (type, mount point)
    pod_log_dirs: int | None  # None: pod_log_dir does not exist
    selinux: SELinux

    @property
    def settings(self) -> Config:
        return self.config or Config()

    @property
    def hook(self) -> HookFile | None:
        """The hook of ours libvirt runs: qemu when install.sh put it there, else qemu.d."""
        for hook in (self.main_hook, self.dropin_hook):
            if hook.ours:
                return hook
        return None


# --- the checks: each a small pure function of the facts -------------------------------


def check_config(facts: Facts) -> Check:
    path = facts.paths.config_path
    if facts.config is None:
        return Check(
            "config",
            False,
            facts.config_error,
            f"correct what the message names in {path} (or the variable), or remove "
            "the key to get its default",
        )
    where = f"{path}: valid" if os.path.exists(path) else f"{path} absent: the defaults apply"
    if facts.overrides:
        where += f" (overridden here by {', '.join(facts.overrides)}; libvirtd passes none)"
    return Check("config", True, where)


def check_kernel_altname(facts: Facts) -> Check:
    release = facts.kernel_release
    if not facts.altname_error:
        return Check(
            "kernel-altname",
            True,
            f"Linux {release}: bound, looked up and unbound an altname on a veth",
        )
    if "Operation not permitted" in facts.altname_error:
        fix = (
            "run the doctor as root, with its capabilities: it tries altnames in a "
            "throwaway network namespace"
        )
    else:
        fix = (
            "the hook binds placeholders as altnames: it needs Linux >= 5.5 "
            "(RTM_NEWLINKPROP, IFLA_ALT_IFNAME) with veth support"
        )
    return Check("kernel-altname", False, f"Linux {release}: {facts.altname_error}", fix)


def check_libvirt_version(facts: Facts) -> Check:
    found = facts.libvirt_version
    if not found:
        return Check(
            "libvirt-version",
            False,
            f"neither libvirtd nor virsh found in {facts.paths.search_path}",
            "install libvirt (Debian: apt-get install libvirt-daemon-system)",
        )
    since = ".".join(map(str, QEMU_D_SINCE))
    if _version(found) >= QEMU_D_SINCE:
        return Check("libvirt-version", True, f"libvirt {found} (>= {since}: runs qemu.d hooks)")
    hook = facts.hook
    if hook is not None and hook.path == facts.paths.dropin_hook:
        return Check(
            "libvirt-version",
            False,
            f"libvirt {found} does not run {hook.path}: qemu.d hooks need >= {since}",
            f"upgrade libvirt, or make {facts.paths.main_hook} run {hook.path} "
            "with the same arguments and stdin",
        )
    return Check(
        "libvirt-version",
        True,
        f"libvirt {found} (< {since}: only {facts.paths.main_hook} runs, which is ours)",
    )


def check_hook_layout(facts: Facts) -> Check:
    main, dropin = facts.main_hook, facts.dropin_hook
    if main.ours and dropin.ours:
        return Check(
            "hook-layout",
            False,
            f"installed twice, as {main.path} and {dropin.path}: libvirt runs it twice",
            "run install.sh again: it keeps one copy",
        )
    if main.ours:
        return Check("hook-layout", True, f"{main.path} (installed by install.sh)")
    if dropin.ours:
        beside = "another program's hook" if main.exists else "absent"
        return Check(
            "hook-layout", True, f"{dropin.path} (installed by install.sh); {main.path}: {beside}"
        )
    if main.exists:
        return Check(
            "hook-layout",
            False,
            f"{main.path} is another program's hook and {dropin.path} is missing",
            f"run install.sh as root: it installs {dropin.path} and leaves {main.path} as it is",
        )
    return Check(
        "hook-layout",
        False,
        f"no vmnet-hook hook in {facts.paths.hooks_dir}",
        "run install.sh as root",
    )


def check_hook_runs(facts: Facts) -> Check:
    hook, interpreter = facts.hook, facts.interpreter
    rerun = "run install.sh again: it writes its environment's interpreter into the hook"
    if hook is None:
        return Check("hook-runs", False, "no hook of ours to run", "run install.sh as root")
    if not hook.executable:
        return Check(
            "hook-runs",
            False,
            f"{hook.path} is not executable",
            f"chmod 0755 {hook.path}, or run install.sh again",
        )
    if not hook.interpreter.startswith("/") or os.path.basename(hook.interpreter) == "env":
        return Check(
            "hook-runs",
            False,
            f"{hook.path} starts with #!{hook.shebang}: libvirtd runs hooks with a "
            "bare PATH and no virtual environment",
            rerun,
        )
    if interpreter is None or not interpreter.versions:
        error = interpreter.error if interpreter else "not run"
        return Check(
            "hook-runs",
            False,
            f"{hook.interpreter} (from {hook.path}) cannot import vmnet_hook: {error}",
            rerun,
        )
    version = interpreter.versions.get("vmnet_hook", "?")
    return Check(
        "hook-runs",
        True,
        f"{hook.path} runs {hook.interpreter}, which imports vmnet_hook {version}",
    )


def check_libvirtd(facts: Facts) -> Check:
    daemon, hook = facts.daemon, facts.hook
    if daemon is None:
        return Check(
            "libvirtd",
            False,
            f"no {' or '.join(DAEMONS)} process running",
            "start libvirtd (libvirtd -d, or its service): it finds the hook when it starts",
        )
    running = f"{daemon.name} (pid {daemon.pid}) started {_when(daemon.started_at)}"
    if hook is None:
        return Check(
            "libvirtd",
            False,
            f"{running}; no hook of ours installed for it to run",
            "run install.sh as root",
        )
    if facts.paths.hooks_dir != LIBVIRT_HOOKS_DIR:
        running += f" (it reads {LIBVIRT_HOOKS_DIR}, not {facts.paths.hooks_dir})"
    if daemon.started_at >= hook.mtime:
        return Check("libvirtd", True, f"{running}, after {hook.path} was written")
    if facts.hup_pid == daemon.pid and facts.hup_at >= hook.mtime:
        return Check(
            "libvirtd",
            True,
            f"{running}; install.sh sent it SIGHUP {_when(facts.hup_at)}, after "
            f"{hook.path} was written",
        )
    return Check(
        "libvirtd",
        False,
        f"{running}, before {hook.path} was written {_when(hook.mtime)}: it does not "
        "run the hook until it reloads",
        f"kill -HUP {daemon.pid} (or restart {daemon.name}) so that it rescans "
        f"{LIBVIRT_HOOKS_DIR}",
    )


def check_pyroute2(facts: Facts) -> Check:
    since = ".".join(map(str, PYROUTE2_SINCE))
    interpreter = facts.interpreter
    if interpreter is not None and "pyroute2" in interpreter.versions:
        found, where = interpreter.versions["pyroute2"], f"the hook's {interpreter.path}"
    else:
        found, where = facts.own_pyroute2, f"this doctor's {sys.executable} (not the hook's)"
    if not found:
        return Check(
            "pyroute2",
            False,
            f"not importable by {where}",
            "run install.sh again: it installs pyroute2 with the package",
        )
    if _version(found) < PYROUTE2_SINCE:
        return Check(
            "pyroute2",
            False,
            f"pyroute2 {found} in {where}: vmnet-hook needs >= {since}",
            "run install.sh again: it installs pyroute2 >= " + since,
        )
    return Check("pyroute2", True, f"pyroute2 {found} in {where}")


def check_cgroups(facts: Facts) -> Check:
    mounts_file = f"{facts.settings.proc_root}/self/mounts"
    if not facts.cgroup_mounts:
        return Check(
            "cgroups",
            False,
            f"no cgroup or cgroup2 mount in {mounts_file}: pod, pod-uid and container "
            "selectors cannot find a pod's processes",
            "mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup), or set proc_root to "
            "a /proc that sees the host's mounts",
        )
    v2 = [point for kind, point in facts.cgroup_mounts if kind == "cgroup2"]
    v1 = [point for kind, point in facts.cgroup_mounts if kind == "cgroup"]
    parts = [f"cgroup2 at {', '.join(v2)}"] if v2 else []
    parts += [f"{len(v1)} cgroup v1 hierarchies"] if v1 else []
    return Check("cgroups", True, f"{'; '.join(parts)} (from {mounts_file})")


def check_pod_logs(facts: Facts) -> Check:
    directory = facts.settings.pod_log_dir
    if facts.pod_log_dirs is None:
        return Check(
            "pod-logs",
            False,
            f"{directory} does not exist (no kubelet here?): pod=NAMESPACE/NAME cannot "
            "be resolved; pod-uid, container, pid and netns still work",
            f"on a Kubernetes node, set pod_log_dir in {facts.paths.config_path} to "
            "kubelet's pod log directory; elsewhere, nothing to do",
            severity="warning",
        )
    return Check("pod-logs", True, f"{directory}: {facts.pod_log_dirs} pod directories")


def check_selinux(facts: Facts) -> Check:
    selinux = facts.selinux
    if not selinux.enforcing:
        state = "permissive" if selinux.enforcing is False else "not enforcing"
        return Check("selinux", True, f"SELinux {state}")
    if selinux.hooks_unconfined:
        return Check("selinux", True, "SELinux enforcing; virt_hooks_unconfined is on")
    if selinux.hooks_unconfined is None:
        return Check(
            "selinux",
            False,
            "SELinux enforcing and the policy has no virt_hooks_unconfined boolean: "
            "the hook runs confined, and may not enter pods' network namespaces",
            "look for the hook's denials (ausearch -m avc -ts recent) and allow them "
            "in a local policy module",
        )
    return Check(
        "selinux",
        False,
        "SELinux enforcing and virt_hooks_unconfined is off: the hook runs confined, "
        "and may not enter pods' network namespaces",
        "setsebool -P virt_hooks_unconfined on",
    )


CHECKS: tuple[Callable[[Facts], Check], ...] = (
    check_config,
    check_kernel_altname,
    check_libvirt_version,
    check_hook_layout,
    check_hook_runs,
    check_libvirtd,
    check_pyroute2,
    check_cgroups,
    check_pod_logs,
    check_selinux,
)


def run_checks(paths: Paths | None = None, environ: Mapping[str, str] = os.environ) -> list[Check]:
    """Gather the facts of this host (as ``paths`` says where to look), then check them."""
    facts = gather(paths or Paths(), environ)
    return [check(facts) for check in CHECKS]


def render(checks: list[Check]) -> str:
    """One table, one line per check; then what to fix for each that did not pass."""
    width = max((len(check.name) for check in checks), default=0)
    lines = [f"{check.status:<4}  {check.name:<{width}}  {check.detail}" for check in checks]
    fixes = [check for check in checks if not check.ok]
    if fixes:
        lines += ["", "To fix:"]
        lines += [f"  {check.name}: {check.fix}" for check in fixes]
    failed = sum(check.failed for check in checks)
    warned = sum(not check.ok and not check.failed for check in checks)
    passed = len(checks) - failed - warned
    lines += [
        "",
        f"{len(checks)} checks: {passed} ok, {failed} failed, {warned} "
        + ("warning" if warned == 1 else "warnings"),
    ]
    return "\n".join(lines)


def report(checks: list[Check]) -> dict[str, object]:
    """The JSON form: ``ok`` is false when any check failed (warnings do not count)."""
    return {
        "ok": not any(check.failed for check in checks),
        "checks": [check.as_dict() for check in checks],
    }


# --- gathering the facts: every side effect is here -----------------------------------


def gather(paths: Paths, environ: Mapping[str, str] = os.environ) -> Facts:
    settings, config_error = _load_config(paths.config_path, environ)
    main_hook, dropin_hook = read_hook(paths.main_hook), read_hook(paths.dropin_hook)
    proc_root, pod_log_dir = (settings or Config()).proc_root, (settings or Config()).pod_log_dir
    ours = next((hook for hook in (main_hook, dropin_hook) if hook.ours), None)
    hup_pid, hup_at = _hup_record(ours)
    return Facts(
        paths=paths,
        config=settings,
        config_error=config_error,
        overrides=tuple(
            sorted(k for k in environ if k.startswith("VMNET_HOOK_") and k != "VMNET_HOOK_CONFIG")
        ),
        kernel_release=platform.release(),
        altname_error=probe_altnames(),
        libvirt_version=libvirt_version(paths.search_path),
        main_hook=main_hook,
        dropin_hook=dropin_hook,
        interpreter=ask_interpreter(ours.interpreter) if ours and ours.executable else None,
        daemon=find_daemon(paths.daemon_pidfiles, proc_root),
        hup_pid=hup_pid,
        hup_at=hup_at,
        own_pyroute2=_own_pyroute2(),
        cgroup_mounts=tuple(cgroup_mounts(proc_root)),
        pod_log_dirs=_count_dirs(pod_log_dir),
        selinux=read_selinux(paths.selinux_dir),
    )


def _load_config(path: str, environ: Mapping[str, str]) -> tuple[Config | None, str]:
    try:
        return load(path, environ), ""
    except ConfigError as error:
        return None, str(error)


def read_hook(path: str) -> HookFile:
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace").splitlines()
    except OSError:
        return HookFile(path, exists=os.path.lexists(path))
    shebang = head[0][2:].strip() if head and head[0].startswith("#!") else ""
    return HookFile(
        path,
        exists=True,
        ours=MARKER in head,  # a whole line, as install.sh's grep -x
        executable=os.access(path, os.X_OK),
        shebang=shebang,
        mtime=info.st_mtime,
    )


def ask_interpreter(interpreter: str) -> Interpreter:
    """Run the hook's interpreter as libvirtd would (bare PATH, from /) and import the hook."""
    if not interpreter.startswith("/"):
        return Interpreter(interpreter, error="not an absolute path")
    try:
        answer = subprocess.run(
            [interpreter, "-c", IMPORT_PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": HOOK_PATH},
            cwd="/",
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Interpreter(interpreter, error=str(error))
    if answer.returncode != 0:
        lines = answer.stderr.strip().splitlines() or [f"exit status {answer.returncode}"]
        return Interpreter(interpreter, error=lines[-1])
    try:
        versions = json.loads(answer.stdout)
    except ValueError:
        return Interpreter(interpreter, error=f"unexpected output {answer.stdout[:80]!r}")
    return Interpreter(interpreter, versions={str(k): str(v) for k, v in versions.items()})


def probe_altnames() -> str:
    """Bind an altname to a veth in a private network namespace, look it up by name as
    libvirt does (SIOCGIFINDEX), and unbind it; "" when all of that works.

    The namespace has no name and no file: it lives as long as the two sockets opened in
    it, so closing them removes it with its veths, and nothing is left behind even if this
    process is killed half-way.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    from vmnet_hook.errors import BindError
    from vmnet_hook.host.netlink import Pyroute2Session

    try:
        route_socket, ioctl_socket = _sockets_in_new_netns()
    except OSError as error:
        return f"cannot make a network namespace: {error.strerror}"
    with ioctl_socket, IPRoute(fileno=route_socket.detach()) as ipr:
        session = Pyroute2Session(ipr)
        try:
            ipr.link("add", ifname=PROBE_VETH, kind="veth", peer={"ifname": PROBE_PEER})
        except NetlinkError as error:
            return f"cannot make a veth pair: {error}"
        veth = session.link_by_name(PROBE_VETH)
        if veth is None:
            return "the veth made for the probe is not there"
        try:
            session.add_altname(veth.index, PROBE_ALTNAME)
        except BindError as error:
            return str(error)
        found = _ifindex_by_name(ioctl_socket, PROBE_ALTNAME)
        if found != veth.index:
            return f"altname {PROBE_ALTNAME} was bound but a lookup by name finds {found}"
        try:
            session.del_altname(veth.index, PROBE_ALTNAME)
        except BindError as error:
            return str(error)
    return ""


def _sockets_in_new_netns() -> tuple[socket.socket, socket.socket]:
    """A NETLINK_ROUTE socket and a UDP socket in a new, unnamed network namespace."""
    return run_in_new_netns(
        lambda: (
            socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        )
    )


def _ifindex_by_name(sock: socket.socket, name: str) -> int | None:
    request = struct.pack("16si", name.encode(), 0)
    try:
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, request)
    except OSError:
        return None
    return int(struct.unpack("16si", answer)[1])


def libvirt_version(search_path: str) -> str:
    """libvirt's version from ``libvirtd --version`` (or ``virsh --version``); "" if none."""
    for program in ("libvirtd", "virsh"):
        binary = shutil.which(program, path=search_path)
        if binary is None:
            continue
        try:
            answer = subprocess.run(
                [binary, "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = answer.stdout.split()
        if answer.returncode == 0 and words and words[-1][:1].isdigit():
            return words[-1]
    return ""


def find_daemon(pidfiles: tuple[str, ...], proc_root: str) -> Daemon | None:
    """The running libvirtd (or virtqemud): its pid file first, else a scan of comm names."""
    for pidfile in pidfiles:
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile, encoding="ascii") as handle:
                pid = int(handle.read().strip())
            if (daemon := _daemon(pid, proc_root)) is not None:
                return daemon
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(proc_root)):
            if entry.isdigit() and (daemon := _daemon(int(entry), proc_root)) is not None:
                return daemon
    return None


def _daemon(pid: int, proc_root: str) -> Daemon | None:
    try:
        with open(f"{proc_root}/{pid}/comm", encoding="utf-8") as handle:
            name = handle.read().strip()
        if name not in DAEMONS:
            return None
        with open(f"{proc_root}/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return Daemon(name, pid, started_at(int(fields[19])))  # field 22: starttime


def started_at(start_ticks: int) -> float:
    """A process's start, in seconds since the epoch, from its starttime in clock ticks
    since boot; precise to a tick (where btime from /proc/stat is whole seconds)."""
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - since_boot


def _hup_record(hook: HookFile | None) -> tuple[int | None, float]:
    if hook is None or not hook.interpreter.startswith("/"):
        return None, 0.0
    record = f"{hook.prefix}/{HUP_RECORD}"
    try:
        with open(record, encoding="ascii") as handle:
            return int(handle.read().strip()), os.stat(record).st_mtime
    except (OSError, ValueError):
        return None, 0.0


def read_selinux(selinux_dir: str) -> SELinux:
    try:
        with open(f"{selinux_dir}/enforce", encoding="ascii") as handle:
            enforcing = handle.read().strip() == "1"
    except OSError:
        return SELinux(enforcing=None, hooks_unconfined=None)
    try:
        with open(f"{selinux_dir}/booleans/virt_hooks_unconfined", encoding="ascii") as handle:
            return SELinux(enforcing, hooks_unconfined=handle.read().split()[:1] == ["1"])
    except OSError:
        return SELinux(enforcing, hooks_unconfined=None)


def _own_pyroute2() -> str:
    try:
        import pyroute2
    except ImportError:
        return ""
    return str(pyroute2.__version__)


def _count_dirs(directory: str) -> int | None:
    try:
        return sum(entry.is_dir() for entry in os.scandir(directory))
    except OSError:
        return None


def _version(text: str) -> tuple[int, ...]:
    numbers: list[int] = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
