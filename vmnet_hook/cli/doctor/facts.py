"""What the doctor knows of the host: values gathered once by ``probes``, read by ``checks``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from vmnet_hook.config import DEFAULT_PATH, Config

LIBVIRT_HOOKS_DIR = "/etc/libvirt/hooks"
# install.sh's marker, on the hook's second line: what tells our hook from another program's.
MARKER = "# vmnet-hook: installed by install.sh; remove with install.sh --uninstall"
HUP_RECORD = "vmnet-hook-install/libvirtd-hup"  # under PREFIX: the pid install.sh sent SIGHUP
HOOK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # about what libvirtd gives its hooks
DAEMONS = ("libvirtd", "virtqemud")  # monolithic, or the modular daemon that runs qemu hooks


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
class PodDiscovery:
    """How a start finds its pod's processes here: through kubelet's kubepods cgroups, or,
    where none is visible, by walking every process in /proc."""

    kubepods_cgroups: tuple[str, ...] = ()
    pods_in_proc: int = 0  # pods a walk of /proc finds (walked only without kubepods cgroups)
    processes: int = 0  # processes in proc_root: what each start reads without the cgroups


@dataclass(frozen=True)
class Place:
    """Where the doctor runs, against the host's PID 1 as ``proc_root`` shows it."""

    signs: tuple[str, ...] = ()  # what says "a container": namespaces, Kubernetes, files
    sees_host_init: bool = False  # proc_root's PID 1 is in another mount namespace
    own_cgroupns: bool = False  # a cgroup namespace of its own: pods' cgroups are hidden
    kubepods_cgroups: int = 0  # kubepods cgroups under the cgroup mounts in proc_root
    netns_mount: str = ""  # propagation of a mount at netns_dir: slave, shared, private; ""

    @property
    def in_container(self) -> bool:
        """A namespace of its own, or a pod. (/.dockerenv alone is no proof: a whole
        machine can be a container with its own init, as where these tests run.)"""
        return self.sees_host_init or self.own_cgroupns or self.in_pod

    @property
    def in_pod(self) -> bool:
        return "KUBERNETES_SERVICE_HOST set" in self.signs


MASQUERADE_TOOLS = {"dnsmasq": "dnsmasq-base", "nft": "nftables"}  # tool: Debian package


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
    missing_tools: tuple[str, ...] = ()  # of MASQUERADE_TOOLS, those not on the search path
    pod_discovery: PodDiscovery = PodDiscovery()
    place: Place = Place()  # a container, or the host
    # (what, path to fix, why, fix) of each config file or state dir not root's alone
    untrusted: tuple[tuple[str, str, str, str], ...] = ()

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
