"""The guest's kernel and initramfs, built once and cached where QEMU can read them.

Shared by ``vmnet-hook demo`` and the guest test tier (``tests/guest``). The kernel is
Debian's cloud kernel, the package ``linux-image-cloud-amd64`` depends on,
fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed). The
initramfs is busybox-static, the virtio modules the kernel does not build in, and the
``init.sh`` / ``lease.sh`` next to this file, written as a gzip'd newc cpio by Python.

Layout (every directory 0755, every file 0644, for the ``libvirt-qemu`` user)::

    /var/cache/vmnet-hook/guest/<kernel package>_<version>/
        vmlinuz
        modules/<name>.ko          the modules that are loadable, uncompressed
        modules.list               one line per wanted module: name and builtin/absent/<file>
        initrd-<hash of its inputs>.gz
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vmnet_hook.errors import DemoError

CACHE_ROOT = Path(os.environ.get("VMNET_HOOK_GUEST_CACHE", "/var/cache/vmnet-hook/guest"))
METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path(os.environ.get("VMNET_HOOK_GUEST_BUSYBOX", "/bin/busybox"))
ASSETS = Path(__file__).resolve().parent
INIT_SCRIPT = ASSETS / "init.sh"
LEASE_SCRIPT = ASSETS / "lease.sh"
# Loaded in this order by the guest's /init; each may be built in or absent.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
# panic=-1: reboot at once instead of hanging; quiet: only warnings on the console.
CMDLINE = "console=ttyS0 panic=-1 quiet rdinit=/init"
INITRD_FORMAT = "1"  # bump when the cpio layout below changes


class ImageError(DemoError):
    """The image cannot be built here; the message says what to run."""


@dataclass(frozen=True)
class GuestImage:
    """What a domain boots: ``kernel`` and ``initrd`` paths and the kernel command line."""

    kernel: Path
    initrd: Path
    cmdline: str
    package: str  # e.g. linux-image-6.1.0-56-cloud-amd64
    version: str  # e.g. 6.1.192-2
    modules: tuple[str, ...]  # the modules the initramfs loads (not built in, present)


Progress = Callable[[str], None]


def _progress(message: str) -> None:
    print(f"guest image: {message}", file=sys.stderr, flush=True)


def guest_image(cache_root: Path = CACHE_ROOT, progress: Progress = _progress) -> GuestImage:
    """The cached image for the current kernel package, built (or rebuilt) when needed;
    ``progress`` hears one line per slow step (the download, the initramfs)."""
    missing_tool()
    package, version = kernel_package()
    _mkdir_readable(cache_root)
    kernel_dir = cache_root / f"{package}_{version}"
    with _locked(cache_root / ".lock"):
        if not (kernel_dir / "modules.list").is_file():
            _fetch_kernel(package, version, kernel_dir, progress)
        modules = _loadable_modules(kernel_dir)
        initrd = _initrd(kernel_dir, modules, progress)
    return GuestImage(
        kernel=kernel_dir / "vmlinuz",
        initrd=initrd,
        cmdline=CMDLINE,
        package=package,
        version=version,
        modules=modules,
    )


def missing_tool() -> None:
    """ImageError when a tool the build needs is not here: busybox-static, apt, dpkg."""
    if not BUSYBOX.is_file():
        raise ImageError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    for tool in ("apt-cache", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ImageError(f"no {tool} here: the guest's kernel comes from Debian's apt")


def kernel_package() -> tuple[str, str]:
    """The exact kernel package behind ``linux-image-cloud-amd64`` and its candidate version."""
    depends = _apt_cache("depends", METAPACKAGE)
    names = [
        line.split(":", 1)[1].strip()
        for line in depends.splitlines()
        if line.strip().startswith("Depends:")
    ]
    kernels = [name for name in names if name.startswith("linux-image-")]
    if len(kernels) != 1:
        raise ImageError(f"{METAPACKAGE} depends on {names!r}, expected one linux-image-*")
    policy = _apt_cache("policy", kernels[0])
    for line in policy.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return kernels[0], value.strip()
    raise ImageError(f"apt knows no candidate for {kernels[0]}: run apt-get update")


def _apt_cache(*args: str) -> str:
    result = subprocess.run(
        ["apt-cache", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise ImageError(
            f"apt-cache {' '.join(args)} failed ({result.stderr.strip()}): run apt-get update"
        )
    return result.stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (parallel pytest workers share the cache)."""
    with open(path, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mkdir_readable(path: Path) -> None:
    """Make ``path`` and its missing parents, each 0755 whatever the umask."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)


def _write_readable(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, mode 0644."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.chmod(0o644)
    os.replace(temporary, path)


def _fetch_kernel(package: str, version: str, kernel_dir: Path, progress: Progress) -> None:
    progress(f"downloading {package} {version} (apt-get download, not installed)")
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=kernel_dir.parent))
    try:
        _download_into(staging, f"{package}={version}")
        debs = list(staging.glob("*.deb"))
        if len(debs) != 1:
            raise ImageError(f"apt-get download {package}={version} gave {debs!r}")
        tree = staging / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        _install_kernel_files(tree, kernel_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_into(directory: Path, spec: str) -> None:
    """``apt-get download`` into ``directory``; owned by ``_apt`` so apt does not warn."""
    directory.chmod(0o755)
    try:
        apt_user = pwd.getpwnam("_apt")
        os.chown(directory, apt_user.pw_uid, -1)
    except KeyError:
        pass
    _run(["apt-get", "download", "-q", spec], cwd=directory)


def _run(command: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def _install_kernel_files(tree: Path, kernel_dir: Path) -> None:
    """Copy vmlinuz and the wanted modules from an unpacked package into ``kernel_dir``."""
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    module_roots = sorted((tree / "lib" / "modules").iterdir())
    if len(vmlinuz) != 1 or len(module_roots) != 1:
        raise ImageError(f"unexpected package layout: {vmlinuz!r} {module_roots!r}")
    staging = Path(tempfile.mkdtemp(prefix=".kernel-", dir=kernel_dir.parent))
    (staging / "modules").mkdir()
    _write_readable(staging / "vmlinuz", vmlinuz[0].read_bytes())
    listing = [_copy_module(module_roots[0], name, staging / "modules") for name in MODULES]
    _write_readable(staging / "modules.list", "".join(f"{line}\n" for line in listing).encode())
    for directory in (staging, staging / "modules"):
        directory.chmod(0o755)
    shutil.rmtree(kernel_dir, ignore_errors=True)
    os.replace(staging, kernel_dir)


def _copy_module(root: Path, name: str, destination: Path) -> str:
    """Copy module ``name`` (decompressed) into ``destination``; its modules.list line."""
    if _is_builtin(root, name):
        return f"{name} builtin"
    found = [p for p in root.rglob(f"{name}.ko*") if p.name.split(".ko")[0] == name]
    if not found:
        return f"{name} absent"
    source = found[0]
    data = source.read_bytes()
    if source.name.endswith(".ko.xz"):
        data = lzma.decompress(data)
    elif not source.name.endswith(".ko"):
        raise ImageError(f"{source}: cannot decompress this module format")
    _write_readable(destination / f"{name}.ko", data)
    return f"{name} {source.relative_to(root)}"


def _is_builtin(root: Path, name: str) -> bool:
    builtin = root / "modules.builtin"
    if not builtin.is_file():
        return False
    names = {Path(line.strip()).name.split(".ko")[0].replace("-", "_") for line in builtin.open()}
    return name in names


def _loadable_modules(kernel_dir: Path) -> tuple[str, ...]:
    lines = (kernel_dir / "modules.list").read_text().splitlines()
    return tuple(
        name
        for name, where in (line.split(" ", 1) for line in lines)
        if where not in ("builtin", "absent")
    )


def _initrd(kernel_dir: Path, modules: tuple[str, ...], progress: Progress) -> Path:
    """The initramfs for these inputs, built when no file carries their hash yet."""
    files = _initrd_files(kernel_dir, modules)
    digest = hashlib.sha256(INITRD_FORMAT.encode())
    for name, (_mode, data) in sorted(files.items()):
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    path = kernel_dir / f"initrd-{digest.hexdigest()[:16]}.gz"
    if not path.is_file():
        progress(f"building {path}")
        _write_readable(path, gzip.compress(_cpio(files), compresslevel=6, mtime=0))
    return path


def _initrd_files(kernel_dir: Path, modules: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    """Regular files of the initramfs: path -> (permission bits, content)."""
    files = {
        "init": (0o755, INIT_SCRIPT.read_bytes()),
        "lease.sh": (0o755, LEASE_SCRIPT.read_bytes()),
        "bin/busybox": (0o755, BUSYBOX.read_bytes()),
        "etc/modules": (0o644, "".join(f"{name}\n" for name in modules).encode()),
    }
    for name in modules:
        files[f"lib/modules/{name}.ko"] = (
            0o644,
            (kernel_dir / "modules" / f"{name}.ko").read_bytes(),
        )
    return files


DIRECTORIES = (
    "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
    "etc", "lib", "lib/modules", "root", "var",
)  # fmt: skip


def _cpio(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A newc ("070701") archive: the directories, /dev/console, /bin/sh and ``files``."""
    out = bytearray()
    inode = iter(range(1, 1 << 20))
    for directory in DIRECTORIES:
        out += _cpio_entry(directory, stat.S_IFDIR | 0o755, b"", next(inode), nlink=2)
    # The kernel opens /dev/console for /init before anything is mounted.
    out += _cpio_entry("dev/console", stat.S_IFCHR | 0o600, b"", next(inode), rdev=(5, 1))
    out += _cpio_entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox", next(inode))
    for name, (mode, data) in sorted(files.items()):
        out += _cpio_entry(name, stat.S_IFREG | mode, data, next(inode))
    out += _cpio_entry("TRAILER!!!", 0, b"", 0, nlink=1)
    return bytes(out)


def _cpio_entry(
    name: str, mode: int, data: bytes, inode: int, nlink: int = 1, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    return _pad4(header + encoded) + _pad4(data)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
