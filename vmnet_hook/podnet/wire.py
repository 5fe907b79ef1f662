"""Connect a masqueraded NIC in its pod, and disconnect it from its record."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable

import psutil

from vmnet_hook import files
from vmnet_hook.errors import PodNetError, VmnetError
from vmnet_hook.host.netlink import Link, PodNetlink, PodSession
from vmnet_hook.host.netns import HOST_NETNS, run_in_netns
from vmnet_hook.host.state import directory_error
from vmnet_hook.podnet import dhcp, kernel, nft
from vmnet_hook.podnet.plan import GuestNic, parse_owner
from vmnet_hook.podnet.record import GuestRecord, Note

CONF = "/proc/sys/net/ipv4/conf"
MISSING_TOOL = "{tool} is not installed: apt-get install {package} (network='masquerade' needs it)"


def connect(
    record: GuestRecord, pod_path: str, netlink: PodNetlink, save: Callable[[GuestRecord], None]
) -> GuestRecord:
    """Make every piece of ``record`` in the pod open at ``pod_path`` (its namespace checked
    by the caller). The record is already saved; the dnsmasq pid is saved once known."""
    nic = record.nic
    _make_link(nic, pod_path, netlink)
    write_sysctls(pod_path, {f"{nic.pod_end}/forwarding": "1",
                             f"{nic.pod_end}/send_redirects": "0",
                             f"{nic.pod_dev}/forwarding": "1"})  # fmt: skip
    _tool(pod_path, [kernel.NFT, "-f", "-"], nft.ruleset(nic), "nftables")
    pid, started = start_dnsmasq(record, pod_path)
    record = record.started(pid, started)
    save(record)
    return record


def disconnect(record: GuestRecord, netlink: PodNetlink) -> list[str]:
    """Undo ``record``: what is already gone is fine; what cannot be undone is returned,
    and (as ``Note``) what is left alone because it is not provably this record's."""
    problems: list[str] = []
    fd = open_pod_netns(record)
    try:
        if fd is not None:
            problems += _clear_pod(record, f"/proc/self/fd/{fd}", netlink)
        if not problems:
            problems += _host_end_left(record, netlink, pod_found=fd is not None)
        stop_dnsmasq(record)
    finally:
        if fd is not None:
            os.close(fd)
    return problems + remove_own_files(record)


def remove_own_files(record: GuestRecord) -> list[str]:
    """The record's pid and lease files removed; a line for each that cannot be, naming
    the state directory and what is wrong with it (the record then stays)."""
    problems = []
    for path in record.own_files():
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            directory = os.path.dirname(path)
            problems.append(str(directory_error(directory, error, f"{path} stays")))
    return problems


def open_pod_netns(record: GuestRecord) -> int | None:
    """An fd of the recorded namespace, if it still exists and some path still reaches it."""
    candidates = [*record.netns_paths]
    for pid in (record.dnsmasq_pid, _pid_in(record.pid_file)):
        if pid is not None:
            candidates.append(f"/proc/{pid}/ns/net")
    for path in candidates:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            info = os.fstat(fd)  # a FIFO or device a record names opens without waiting
            if (info.st_dev, info.st_ino) == (record.netns_dev, record.netns_ino):
                return fd
            os.close(fd)
    return None


def _make_link(nic: GuestNic, pod_path: str, netlink: PodNetlink) -> None:
    fd = os.open(pod_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netlink.host() as host:
            host.add_veth(nic.placeholder, nic.pod_end, fd, nic.gateway_mac, nic.mtu)
    finally:
        os.close(fd)
    with netlink.netns(pod_path) as inside:
        pod_end = inside.link_by_name(nic.pod_end)
        if pod_end is None:
            raise PodNetError(f"the guest's link {nic.pod_end} vanished from the pod")
        inside.set_link(pod_end.index, alias=nic.owner)
        inside.add_address(pod_end.index, nic.gateway, 30)
        inside.set_link(pod_end.index, up=True)
    with netlink.host() as host:
        host_end = host.link_by_name(nic.placeholder)
        if host_end is None:
            raise PodNetError(f"the guest's link {nic.placeholder} vanished from the host")
        host.set_link(host_end.index, up=True)


def read_sysctl(pod_path: str, name: str) -> str:
    def read() -> str:
        with open(f"{CONF}/{name}", encoding="ascii") as handle:
            return handle.read().strip()

    return run_in_netns(pod_path, read)


def write_sysctls(pod_path: str, values: dict[str, str]) -> None:
    def write() -> None:
        for name, value in values.items():
            with open(f"{CONF}/{name}", "w", encoding="ascii") as handle:
                handle.write(value)

    try:
        run_in_netns(pod_path, write)
    except OSError as error:
        raise PodNetError(f"cannot set net.ipv4.conf sysctls in the pod: {error}") from None


def _tool(pod_path: str, argv: list[str], stdin: str, package: str) -> str:
    try:
        return kernel.run_tool(pod_path, argv, stdin)
    except kernel.MissingTool:
        raise PodNetError(MISSING_TOOL.format(tool=argv[0], package=package)) from None


def start_dnsmasq(record: GuestRecord, pod_path: str) -> tuple[int, float]:
    nic = record.nic
    state_dir = os.path.dirname(record.pid_file)
    program = kernel.tool_path(dhcp.DNSMASQ)
    if program is None:
        raise PodNetError(MISSING_TOOL.format(tool=dhcp.DNSMASQ, package="dnsmasq-base"))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.pid_file)
        complaints = tempfile.TemporaryFile(dir=state_dir)  # noqa: SIM115 (`with` below)
    except OSError as error:
        raise directory_error(state_dir, error) from None
    with complaints:

        def start() -> int:
            return subprocess.run(
                dhcp.argv(nic, state_dir), executable=program, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=complaints, timeout=kernel.TOOL_SECONDS,
                close_fds=True, check=False,
            ).returncode  # fmt: skip

        try:
            status = run_in_netns(pod_path, start)
        except OSError as error:
            raise PodNetError(f"cannot run {program}: {error.strerror}") from None
        complaints.seek(0)
        said = complaints.read(4096).decode("utf-8", "replace").strip().splitlines()
    pid = _pid_in(record.pid_file)
    if status != 0 or pid is None:
        raise PodNetError(
            f"dnsmasq for {nic.pod_end} did not start: {(said or ['no message'])[-1]}"
        )
    try:
        return pid, psutil.Process(pid).create_time()
    except psutil.Error:
        raise PodNetError(f"dnsmasq for {nic.pod_end} exited as it started") from None


def stop_dnsmasq(record: GuestRecord) -> None:
    """End the recorded dnsmasq: by recorded pid and start time, or (killed before they were
    recorded) by its pid file and a command line naming that pid file. A zombie is gone."""
    process = recorded_dnsmasq(record)
    if process is None:
        return
    with contextlib.suppress(psutil.Error):
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
            if time.monotonic() > deadline:
                process.kill()
                break
            time.sleep(0.01)


def recorded_dnsmasq(record: GuestRecord) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        if record.dnsmasq_pid is not None:
            process = psutil.Process(record.dnsmasq_pid)
            if process.create_time() == record.dnsmasq_started and _alive(process):
                return process
            return None
        pid = _pid_in(record.pid_file) if record.own_files() else None
        if pid is not None:
            process = psutil.Process(pid)
            if f"--pid-file={record.pid_file}" in process.cmdline() and _alive(process):
                return process
    return None


def _alive(process: psutil.Process) -> bool:
    return process.status() != psutil.STATUS_ZOMBIE


def _pid_in(path: str) -> int | None:
    """What dnsmasq wrote in its pid file (vmnet_hook.files: never a FIFO or a link)."""
    with contextlib.suppress(OSError, ValueError):
        found = files.read_regular(path, 32)
        return int(found[0].decode("ascii").strip()) if found is not None else None
    return None


def _clear_pod(record: GuestRecord, pod_path: str, netlink: PodNetlink) -> list[str]:
    nic, problems = record.nic, []
    try:
        comment = kernel.nft_comments(pod_path).get(nic.table)
        if comment is not None and parse_owner(comment) == parse_owner(nic.owner):
            kernel.run_tool(pod_path, [kernel.NFT, "-f", "-"], nft.delete(nic.table))
    except (VmnetError, FileNotFoundError) as error:
        problems.append(f"nft table {nic.table}: {error}")
    try:
        with netlink.netns(pod_path) as inside:
            pod_end = inside.link_by_name(nic.pod_end)
            if pod_end is not None and _our_pod_end(record, pod_end, inside, netlink):
                inside.del_link(pod_end.index)  # and its host end, the other end of the pair
            if inside.link_by_name(nic.pod_dev) is not None:
                write_sysctls(pod_path, {f"{nic.pod_dev}/forwarding": record.forwarding_before})
    except VmnetError as error:
        problems.append(f"guest link {nic.pod_end}: {error}")
    return problems


def _our_pod_end(
    record: GuestRecord, pod_end: Link, inside: PodSession, netlink: PodNetlink
) -> bool:
    """The recorded pod end is this record's if it carries its owner tag; untagged (killed
    before it was tagged), only if it is paired with the host link of the placeholder."""
    nic = record.nic
    if pod_end.kind != "veth" or pod_end.alias not in (None, nic.owner):
        return False
    if pod_end.alias == nic.owner:
        return True
    if pod_end.peer_nsid is None or pod_end.peer_nsid != inside.nsid_of(HOST_NETNS):
        return False
    with netlink.host() as host:
        host_end = host.link_by_index(pod_end.peer_index or 0)
    return host_end is not None and host_end.name == nic.placeholder


def _host_end_left(record: GuestRecord, netlink: PodNetlink, pod_found: bool) -> list[str]:
    """The host end goes with its pod end, or with the pod's namespace. A host link that
    still bears the placeholder is not the guest link this record made (the name was
    free to be taken since): it is left alone, and said."""
    placeholder = record.nic.placeholder
    try:
        with netlink.host() as host:
            link = host.link_by_name(placeholder)
    except VmnetError as error:
        return [f"guest link {placeholder}: {error}"]
    if link is None:
        return []
    why = (
        f"its peer is not the guest link {record.nic.pod_end} of this record's pod"
        if pod_found
        else "this record's pod namespace is gone, and the guest link with it"
    )
    named = "is named" if link.name == placeholder else "has the altname"
    return [Note(
        f"host link {link.name} (ifindex {link.index}) {named} {placeholder} but is not "
        f"the host end of the guest link this record made ({why}): left in place, as "
        "another's (`vmnet-hook status` shows which domain holds it)"
    )]  # fmt: skip
