"""A real Linux guest under the machine's libvirtd: its domain XML, and a handle to talk to it.

Used by ``vmnet-hook demo``, the guest test tier and ``bench/guest.py``. The guest (see
``guestimage.py``, ``init.sh``) writes its console to a file (serial 0) and runs a
control channel on serial 1, a unix socket that QEMU binds: ``Guest.run`` sends a command
line, the guest answers with its output and exit status.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from xml.sax.saxutils import escape, quoteattr

from vmnet_hook.demo.guestimage import GuestImage
from vmnet_hook.errors import DemoError

LIBVIRT_URI = "qemu:///system"
# Per-domain files (console log, control socket). Not under pytest's 0700 tmp dirs: QEMU
# runs as libvirt-qemu. libvirtd itself binds the socket and virtlogd writes the console.
RUN_ROOT = Path("/var/lib/libvirt/vmnet-hook")
NAME_PREFIX = "vmnet-guest-"
LEASE_LINE = re.compile(r"^LEASE (.*)$", re.MULTILINE)


class GuestError(DemoError, AssertionError):
    """virsh or the guest did not do what was asked. Also an AssertionError: to the test
    tiers that drive guests, it is an expectation that failed."""


@dataclass(frozen=True)
class Libvirt:
    """Which libvirtd a guest runs under: its URI, its run directory (``/run/libvirt`` as
    seen from here) and, when set, where the guests' files go (the same path for QEMU and
    for us; the guest class's ``RUN_ROOT`` otherwise)."""

    uri: str = LIBVIRT_URI
    run_dir: Path = Path("/run/libvirt")
    run_root: Path | None = None


HOST_LIBVIRT = Libvirt()


def virsh(
    *args: str, check: bool = True, timeout: float = 60, uri: str = LIBVIRT_URI
) -> subprocess.CompletedProcess[str]:
    """``virsh -c qemu:///system ARGS``; with ``check``, a GuestError naming stderr."""
    result = subprocess.run(
        ["virsh", "-c", uri, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise GuestError(f"virsh {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def domain_xml(
    name: str,
    uuid: str,
    interfaces_xml: list[str],
    image: GuestImage | None,
    workdir: Path,
    metadata_xml: str = "",
) -> str:
    """A diskless ``type='qemu'`` domain booting ``image`` with these ``<interface>``s verbatim;
    with no image it boots nothing, which is enough to wire its NICs.

    ``metadata_xml`` is put inside ``<metadata>`` as is (its elements carry their namespace).
    """
    interfaces = "\n".join(f"    {xml.strip()}" for xml in interfaces_xml)
    metadata = f"  <metadata>\n    {metadata_xml.strip()}\n  </metadata>\n" if metadata_xml else ""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{escape(uuid)}</uuid>
{metadata}  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
{_boot_xml(image)}  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type='file'>
      <source path={quoteattr(str(workdir / "console.log"))}/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path={quoteattr(str(workdir / "control.sock"))}/>
      <target port='1'/>
    </serial>
{interfaces}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _boot_xml(image: GuestImage | None) -> str:
    if image is None:
        return ""
    return (
        f"    <kernel>{escape(str(image.kernel))}</kernel>\n"
        f"    <initrd>{escape(str(image.initrd))}</initrd>\n"
        f"    <cmdline>{escape(image.cmdline)}</cmdline>\n"
    )


def random_mac() -> str:
    """A random MAC in QEMU's 52:54:00 range."""
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))


def direct_interface_xml(mac: str, source_dev: str, mode: str = "bridge") -> str:
    """``<interface type='direct'>`` (macvtap on ``source_dev``) with a virtio NIC."""
    return (
        f"<interface type='direct'><mac address={quoteattr(mac)}/>"
        f"<source dev={quoteattr(source_dev)} mode={quoteattr(mode)}/>"
        "<model type='virtio'/></interface>"
    )


class Guest:
    """One domain: defined with ``define()``, run with ``start()``, gone after ``remove()``.
    Its name is ``NAME_PREFIX`` + random hex, its files under ``RUN_ROOT``/name."""

    NAME_PREFIX: ClassVar[str] = NAME_PREFIX
    RUN_ROOT: ClassVar[Path] = RUN_ROOT

    def __init__(
        self,
        image: GuestImage | None,
        interfaces_xml: list[str],
        metadata_xml: str = "",
        uuid: str | None = None,
        libvirt: Libvirt = HOST_LIBVIRT,
    ) -> None:
        self.name = self.NAME_PREFIX + secrets.token_hex(4)
        self.uuid = uuid or str(uuidlib.uuid4())
        self.libvirt = libvirt
        self.run_root = libvirt.run_root or self.RUN_ROOT
        self.workdir = self.run_root / self.name
        self.console_path = self.workdir / "console.log"
        self.control_path = self.workdir / "control.sock"
        self.xml = domain_xml(
            self.name, self.uuid, interfaces_xml, image, self.workdir, metadata_xml
        )
        self.started_at: float | None = None  # time.monotonic() of the last start()
        self._control: ControlChannel | None = None
        self._awake = False  # its control loop was seen ready since the last start()

    def _virsh(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return virsh(*args, check=check, timeout=timeout, uri=self.libvirt.uri)

    def define(self) -> None:
        """Make the work directory (0755, root: libvirtd binds the socket) and define."""
        for directory in (self.run_root, self.workdir):
            directory.mkdir(exist_ok=True)
            directory.chmod(0o755)
        xml_path = self.workdir / "domain.xml"
        xml_path.write_text(self.xml)
        self._virsh("define", str(xml_path))

    def start(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``virsh start``; with ``check=False`` the result, for tests that expect a refusal."""
        self.close()
        self.started_at = time.monotonic()
        self._awake = False
        return self._virsh("start", self.name, check=check, timeout=120)

    def destroy(self) -> None:
        """``virsh destroy``: QEMU ends, libvirt runs the hook's ``release end``."""
        self.close()
        self._virsh("destroy", self.name, timeout=60)

    def state(self) -> str:
        """``virsh domstate``: ``running``, ``shut off``, ..."""
        return self._virsh("domstate", self.name).stdout.strip()

    def is_running(self) -> bool:
        """Cheap: libvirt keeps a pid file while the QEMU process runs."""
        return (self.libvirt.run_dir / "qemu" / f"{self.name}.pid").exists()

    def live_xml(self) -> str:
        """The XML libvirt holds now (``virsh dumpxml``), e.g. the macvtap it made."""
        return self._virsh("dumpxml", self.name).stdout

    def console(self) -> str:
        """Everything on the guest's console (kernel and /init) so far."""
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first match of ``pattern`` (multiline) on the console, polled until ``timeout``."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.console())
            if match:
                return match
            running = self.is_running()
            if time.monotonic() > deadline or not running:
                why = f"timed out after {timeout:g} s" if running else "the domain is not running"
                raise GuestError(
                    f"{self.name}: {pattern!r} not on the console ({why}); console tail:\n"
                    f"{self.console_tail()}"
                )
            time.sleep(0.05)

    def leases(self) -> list[dict[str, str]]:
        """Every LEASE line so far, in order, as dicts (``iface``, ``ip``, ``mask``, ``router``,
        ``dns``, ``search`` (comma-separated), ``domain``, ``mtu``, ``serverid``, ``lease``,
        ``event``)."""
        return [_fields(match.group(1)) for match in LEASE_LINE.finditer(self.console())]

    def wait_for_lease(self, iface: str = "eth0", timeout: float = 60) -> dict[str, str]:
        """The lease of ``iface``, waiting for it: as the guest's lease script wrote it to
        /run/lease.IFACE (whole, where the console may interleave another writer's output)."""
        self.wait_for(rf"^LEASE iface={re.escape(iface)} ", timeout)
        match = LEASE_LINE.search(self.check(f"cat /run/lease.{iface}"))
        if match is None:
            raise GuestError(f"{self.name}: /run/lease.{iface} holds no LEASE line")
        return _fields(match.group(1))

    def run(self, command: str, timeout: float = 20) -> tuple[int, str]:
        """Run ``command`` with ``sh -c`` in the guest: (exit status, stdout and stderr).

        Its stdin is /dev/null; a command left in the background should redirect its output,
        or it lands in a later answer's discarded part. A guest restored from a save image
        is awake already (its console is new and will not say so again)."""
        if not self._awake:
            self.wait_for(r"^vmnet-guest: control ready", timeout)
            self._awake = True
        try:
            channel, request_id = self._send(command)
            return channel.wait(request_id, timeout)
        except (OSError, TimeoutError) as error:
            self.close()
            raise GuestError(
                f"{self.name}: {command!r} gave no answer ({error}); console tail:\n"
                f"{self.console_tail()}"
            ) from error

    def _send(self, command: str) -> tuple[ControlChannel, str]:
        """Send on the open connection, or on a new one when that one is gone (the domain was
        restarted): QEMU serves one client at a time, so this is the only one."""
        if self._control is not None:
            try:
                return self._control, self._control.send(command)
            except OSError:
                self.close()
        self._control = ControlChannel(self.control_path)
        return self._control, self._control.send(command)

    def check(self, command: str, timeout: float = 20) -> str:
        """``run`` that asserts exit status 0 and returns the output."""
        status, output = self.run(command, timeout)
        if status != 0:
            raise GuestError(f"{self.name}: {command!r} exited {status}:\n{output}")
        return output

    def poweroff(self, timeout: float = 30) -> None:
        """``poweroff -f`` in the guest, then wait until the domain is shut off."""
        self.wait_for(r"^vmnet-guest: control ready", timeout)
        self._send("poweroff -f")
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: still running after poweroff")
            time.sleep(0.1)
        self.close()

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def remove(self) -> None:
        """Destroy, undefine, remove the files; every step tried, whatever failed before."""
        self.close()
        problems = []
        if self.is_running() or self._virsh("domstate", self.name, check=False).returncode == 0:
            destroy = self._virsh("destroy", self.name, check=False)
            if destroy.returncode != 0 and "not running" not in destroy.stderr:
                problems.append(f"destroy: {destroy.stderr.strip()}")
            undefine = self._virsh("undefine", self.name, check=False)
            if undefine.returncode != 0 and "failed to get domain" not in undefine.stderr:
                problems.append(f"undefine: {undefine.stderr.strip()}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if problems:
            raise GuestError(f"{self.name}: cleanup failed: {'; '.join(problems)}")


def _fields(text: str) -> dict[str, str]:
    return dict(field.split("=", 1) for field in text.split() if "=" in field)


UART_PIECE, UART_PAUSE = 8, 0.002  # bytes, seconds: see ControlChannel.send


class ControlChannel:
    """A connection to the guest's control socket (serial 1)."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.connect(os.fspath(path))
        except OSError:
            self._socket.close()
            raise
        self._buffer = b""

    def close(self) -> None:
        self._socket.close()

    def send(self, command: str) -> str:
        """Send one request; its id. Paced in pieces smaller than the guest UART's 16-byte
        FIFO: under TCG on a loaded host the guest may service it late, and an overrun
        loses characters (seen: a request id arrived cut to its last 4 digits)."""
        request_id = secrets.token_hex(6)
        encoded = base64.b64encode(command.encode()).decode()
        # A blank line first: bytes that reach the guest's tty before its reader reopens it
        # are lost (seen: a request's first 8); the reader skips blank lines.
        line = f"{' ' * 15}\n{request_id} {encoded}\n".encode()
        for start in range(0, len(line), UART_PIECE):
            self._socket.sendall(line[start : start + UART_PIECE])
            time.sleep(UART_PAUSE)
        return request_id

    def wait(self, request_id: str, timeout: float) -> tuple[int, str]:
        """The answer to request ``request_id``: (exit status, output); what came before its
        begin marker (a timed-out request's late output) is dropped."""
        begin = f"@@BEGIN {request_id}@@\n".encode()
        end = re.compile(rb"\n@@END " + request_id.encode() + rb" (\d+)@@\n")
        deadline = time.monotonic() + timeout
        while True:
            start = self._buffer.find(begin)
            match = end.search(self._buffer, start + len(begin)) if start >= 0 else None
            if match:
                output = self._buffer[start + len(begin) : match.start()]
                self._buffer = self._buffer[match.end() :]
                return int(match.group(1)), output.decode(errors="replace")
            self._receive(deadline)

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no end marker; received {self._buffer[-500:]!r}")
        self._socket.settimeout(remaining)
        try:
            chunk = self._socket.recv(65536)
        except TimeoutError as error:
            raise TimeoutError(f"no end marker; received {self._buffer[-500:]!r}") from error
        if not chunk:
            raise ConnectionResetError("the control socket closed (QEMU gone?)")
        self._buffer += chunk
