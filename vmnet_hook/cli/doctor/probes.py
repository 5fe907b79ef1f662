"""Gathering the doctor's facts: every side effect of the doctor is here (files, /proc,
the hook's interpreter run with ``-c``, ``libvirtd --version``, and a real altname bound
in a throwaway network namespace)."""

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
import time
from collections.abc import Mapping

from vmnet_hook.cli.doctor.facts import (
    DAEMONS,
    HOOK_PATH,
    HUP_RECORD,
    MARKER,
    MASQUERADE_TOOLS,
    Daemon,
    Facts,
    HookFile,
    Interpreter,
    Paths,
    Place,
    PodDiscovery,
    SELinux,
)
from vmnet_hook.config import ROOTS_ALONE, Config, load, untrusted, untrusted_dir
from vmnet_hook.errors import ConfigError
from vmnet_hook.files import walk
from vmnet_hook.host.mounts import cgroup_mounts
from vmnet_hook.host.netns import run_in_new_netns
from vmnet_hook.host.pods import kubepods_cgroups, pod_uids_in_proc
from vmnet_hook.host.procfs import ProcFs

CONTAINER_FILES = ("/.dockerenv", "/run/.containerenv")  # docker's, podman's

SIOCGIFINDEX = 0x8933
PROBE_VETH, PROBE_PEER, PROBE_ALTNAME = "vmnprobe0", "vmnprobe1", "vmnprobe-alt"
# What the hook's interpreter is asked to import: what the hook itself needs when it works.
IMPORT_PROBE = (
    "import json, lxml, psutil, pyroute2, vmnet_hook, vmnet_hook.hook.handlers, "
    "vmnet_hook.host.netlink; "
    "print(json.dumps({'vmnet_hook': vmnet_hook.__version__, 'pyroute2': pyroute2.__version__}))"
)


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
        # /proc, not proc_root: the pid file is in this PID namespace, as is the libvirtd
        # that runs the hook (proc_root may be the host's, seen from a container)
        daemon=find_daemon(paths.daemon_pidfiles, "/proc"),
        hup_pid=hup_pid,
        hup_at=hup_at,
        own_pyroute2=_own_pyroute2(),
        cgroup_mounts=tuple(cgroup_mounts(proc_root)),
        pod_log_dirs=_count_dirs(pod_log_dir),
        selinux=read_selinux(paths.selinux_dir),
        missing_tools=tuple(
            tool for tool in MASQUERADE_TOOLS if shutil.which(tool, path=paths.search_path) is None
        ),
        pod_discovery=probe_pod_discovery(proc_root),
        place=read_place(settings or Config(), environ),
        untrusted=probe_trust(paths.config_path, (settings or Config()).state_dir),
    )


def probe_trust(config_path: str, state_dir: str) -> tuple[tuple[str, str, str, str], ...]:
    """The config file (the one its symlinks name) and the state dirs (the configured one
    and the default one, which holds prepare's pointers) that anyone but root could change:
    (what, the path to fix, why, the fix: a link's is chown -h, a shared dir's chmod +t)."""
    found: list[tuple[str, str, str, str]] = []
    walked = walk(config_path)  # every directory and link on the way is judged too
    try:
        why = untrusted(os.stat(walked.real)) if walked.found and not walked.bad else ""
    except OSError:
        why = ""  # missing: the defaults; unreadable: the config check says so
    if walked.bad:
        found.append(("config file", walked.bad, walked.why, walked.fix.format(walked.bad)))
    elif why:
        found.append(("config file", walked.real, why, ROOTS_ALONE.format(walked.real)))
    for directory in dict.fromkeys((state_dir, Config().state_dir)):
        if (judged := untrusted_dir(directory)) is not None:
            found.append(("state directory", *judged))
    return tuple(found)


def probe_pod_discovery(proc_root: str) -> PodDiscovery:
    """The kubepods cgroups a start would search; without any, what a walk of /proc finds."""
    proc = ProcFs(proc_root)
    roots = tuple(kubepods_cgroups(proc))
    try:
        processes = sum(1 for _pid in proc.pids())
    except OSError:
        processes = 0
    pods = 0 if roots or not processes else len(pod_uids_in_proc(proc))
    return PodDiscovery(roots, pods, processes)


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


def read_place(settings: Config, environ: Mapping[str, str]) -> Place:
    """Whether this runs in a container, and what it sees of the host from there."""
    own_mount, own_cgroup = (_differs(settings.proc_root, ns) for ns in ("mnt", "cgroup"))
    signs = [path for path in CONTAINER_FILES if os.path.exists(path)]
    signs += ["KUBERNETES_SERVICE_HOST set"] if "KUBERNETES_SERVICE_HOST" in environ else []
    signs += ["own mount namespace"] if own_mount else []
    signs += ["own cgroup namespace"] if own_cgroup else []
    return Place(
        signs=tuple(signs),
        sees_host_init=own_mount,
        own_cgroupns=own_cgroup,
        kubepods_cgroups=len(kubepods_cgroups(ProcFs(settings.proc_root))),
        netns_mount=mount_propagation(settings.netns_dir),
    )


def _differs(proc_root: str, ns: str) -> bool:
    """This process's namespace ``ns`` is not the host's: that of PID 1 in ``proc_root``,
    or where PID 1's cannot be read (a PID 1 that is not dumpable), of the first process
    whose can. False when none can be read."""
    try:
        mine = os.readlink(f"/proc/self/ns/{ns}")
        pids = sorted(int(entry) for entry in os.listdir(proc_root) if entry.isdigit())
    except OSError:
        return False
    for pid in pids:
        with contextlib.suppress(OSError):
            return os.readlink(f"{proc_root}/{pid}/ns/{ns}") != mine
    return False


def mount_propagation(point: str) -> str:
    """``slave``, ``shared`` or ``private`` for the mount at ``point``; "" if none is there."""
    found = ""
    with (
        contextlib.suppress(OSError),
        open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as table,
    ):
        for line in table:
            fields = line.split(" - ", 1)[0].split()
            if len(fields) > 4 and fields[4] == point.rstrip("/"):
                found = _propagation(fields[6:])  # the last mount at a point wins
    return found


def _propagation(optional_fields: list[str]) -> str:
    tags = " ".join(optional_fields)
    if "master:" in tags:
        return "slave"
    return "shared" if "shared:" in tags else "private"
