"""The real thing: install.sh into /opt/vmnet-hook and /etc/libvirt/hooks, a running
libvirtd, real pods (netns + veth + processes) and diskless ``type='qemu'`` domains.

What a user would check by hand: ``virsh start`` puts the macvtap on the pod's host veth,
frames from the pod reach the VM's macvtap, ``virsh destroy`` takes the placeholder back
off the veth, and a start whose pod is missing fails with the hook's one line.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.conftest import DATA, REPO, MakePod, domain_xml
from vmnet_hook.demo import sandbox

pytestmark = pytest.mark.libvirt

VIRSH = ("virsh", "-c", "qemu:///system")
HOOKS_DIR = Path("/etc/libvirt/hooks")
MARKER = "# vmnet-hook: installed by install.sh; remove with install.sh --uninstall"
STATE_DIR = Path("/run/vmnet-hook")  # the default: install.sh writes no config file
HOOK_PICKUP_SECONDS = 60

# Sent from inside the pod: raw Ethernet frames, IEEE local experimental EtherType.
SEND_FRAMES = """
import socket, sys
dev, dst, count = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
    sock.bind((dev, 0))
    src = sock.getsockname()[4]
    frame = dst + src + b"\\x88\\xb5" + b"vmnet-hook test frame".ljust(46, b"\\0")
    for _ in range(count):
        sock.send(frame)
"""


def run(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def virsh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run(*VIRSH, *args, timeout=timeout)


@dataclass(frozen=True)
class Vm:
    name: str
    uuid: str
    mac: str
    placeholder: str  # the <source dev> that the hook binds as an altname

    @staticmethod
    def random() -> Vm:
        return Vm(
            name=sandbox.random_name("vmnt-test-"),
            uuid=str(uuidlib.uuid4()),
            mac="52:54:00:" + ":".join(secrets.token_hex(1) for _ in range(3)),
            placeholder=sandbox.random_name("vn", 12),
        )

    def xml(self, selector: str) -> str:
        """tests/data/one-nic.xml for this VM, its pod named by ``selector`` (``netns="…"``)."""
        return domain_xml(
            **{
                "<name>vm1</name>": f"<name>{self.name}</name>",
                "6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6": self.uuid,
                "52:54:00:12:34:56": self.mac,
                "vn3f9a0c1d2e4b": self.placeholder,
                'netns="NETNS"': selector,
            }
        )

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.uuid}.json"


Define = Callable[[Vm, str], None]


def define(vm: Vm, selector: str, tmp_dir: Path) -> None:
    path = tmp_dir / f"{vm.name}.xml"
    path.write_text(vm.xml(selector))
    result = virsh("define", str(path))
    assert result.returncode == 0, result.stderr


def remove_domain(name: str) -> None:
    virsh("destroy", name)  # fails when it is not running: fine
    virsh("undefine", name)


def wait_for_hook(tmp_dir: Path) -> None:
    """Until libvirtd runs the hook: a start whose pod is missing fails with its line."""
    probe = Vm.random()
    define(probe, f'netns="{sandbox.random_name("vmnt-missing-")}"', tmp_dir)
    try:
        deadline = time.monotonic() + HOOK_PICKUP_SECONDS
        while True:
            result = virsh("start", probe.name)
            assert result.returncode != 0, "the probe domain started: is the hook installed?"
            if f"vmnet-hook: domain '{probe.name}'" in result.stderr:
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"libvirtd did not run the hook within {HOOK_PICKUP_SECONDS}s; "
                    f"last virsh start said: {result.stderr.strip()}"
                )
            time.sleep(0.5)
    finally:
        remove_domain(probe.name)


@pytest.fixture(scope="session")
def installed_hook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real install.sh (default PREFIX, real hooks dir), picked up by libvirtd."""
    setup = run("bash", str(REPO / "tests" / "setup-system.sh"), timeout=1200)
    assert setup.returncode == 0, f"tests/setup-system.sh failed:\n{setup.stdout}{setup.stderr}"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFIX", "HOOKS_DIR", "CONFIG_DIR")}
    install = subprocess.run(
        ["bash", str(REPO / "install.sh")], capture_output=True, text=True, timeout=600,
        check=False, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert install.returncode == 0, f"install.sh failed:\n{install.stdout}{install.stderr}"
    assert "install.sh: libvirtd (pid " in install.stdout, install.stdout
    hooks = [
        path
        for path in (HOOKS_DIR / "qemu", HOOKS_DIR / "qemu.d" / "vmnet-hook")
        if path.is_file() and MARKER in path.read_text().splitlines()
    ]
    assert len(hooks) == 1, f"expected one installed hook, found {hooks}"
    wait_for_hook(tmp_path_factory.mktemp("probe"))
    return hooks[0]


@pytest.fixture
def domains(make_pod: MakePod, tmp_path: Path, installed_hook: Path) -> Iterator[Define]:
    """Define domains; each is destroyed and undefined at teardown, before its pod goes."""
    names: list[str] = []

    def define_domain(vm: Vm, selector: str) -> None:
        names.append(vm.name)
        define(vm, selector, tmp_path)

    yield define_domain
    for name in names:
        remove_domain(name)


def selector_for(pod: sandbox.Pod, kind: str) -> str:
    return f'netns="{pod.name}"' if kind == "netns" else f'pid="{pod.pids[0]}"'


def start(vm: Vm) -> str:
    """``virsh start``, then the name of the domain's macvtap."""
    result = virsh("start", vm.name)
    assert result.returncode == 0, f"virsh start {vm.name}: {result.stderr.strip()}"
    live = etree.fromstring(virsh("dumpxml", vm.name).stdout.encode())
    targets = [
        target.get("dev", "")
        for target in live.iterfind("devices/interface[@type='direct']/target")
    ]
    assert len(targets) == 1 and targets[0], etree.tostring(live).decode()
    return targets[0]


def link(name: str) -> dict[str, Any]:
    result = run("ip", "-j", "-d", "link", "show", "dev", name)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found[0]


def sysfs(link_name: str, attribute: str) -> int:
    return int(Path(f"/sys/class/net/{link_name}/{attribute}").read_text())


def send_frames(pod: sandbox.Pod, dst_mac: str, count: int) -> None:
    result = run(
        "nsenter", f"--net={pod.netns_path}", "--",
        sys.executable, "-c", SEND_FRAMES, pod.pod_dev, dst_mac, str(count),
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def rx_after(tap: str, before: int, at_least: int, seconds: float = 5) -> int:
    """The macvtap's rx_packets gain since ``before``, once it reaches ``at_least`` or time
    runs out."""
    deadline = time.monotonic() + seconds
    while True:
        gained = sysfs(tap, "statistics/rx_packets") - before
        if gained >= at_least or time.monotonic() > deadline:
            return gained
        time.sleep(0.1)


@pytest.mark.parametrize("kind", ["netns", "pid"])
def test_start_puts_the_macvtap_on_the_pods_host_veth(
    make_pod: MakePod, domains: Define, kind: str
) -> None:
    pod = make_pod()
    vm = Vm.random()
    domains(vm, selector_for(pod, kind))

    tap = start(vm)

    veth_index = sysfs(pod.host_veth, "ifindex")
    assert sysfs(tap, "iflink") == veth_index  # IFLA_LINK: the macvtap's lower link
    assert Path(f"/sys/class/net/{tap}/lower_{pod.host_veth}").is_symlink()
    shown = link(tap)
    assert shown["link"] == pod.host_veth  # what `ip link` prints as macvtapN@vmv...
    assert shown["linkinfo"]["info_kind"] == "macvtap"
    assert shown["linkinfo"]["info_data"]["mode"] == "bridge"  # as written in the XML
    assert shown["address"] == vm.mac
    # While it runs, the placeholder is an altname of the veth, recorded for release.
    assert vm.placeholder in link(pod.host_veth).get("altnames", [])
    state = json.loads(vm.state_file.read_text())
    assert state["domain"] == vm.name
    assert [(b["placeholder"], b["host_veth"]) for b in state["bindings"]] == [
        (vm.placeholder, pod.host_veth)
    ]


def test_frames_from_the_pod_reach_the_vms_macvtap(make_pod: MakePod, domains: Define) -> None:
    pod = make_pod()
    vm = Vm.random()
    domains(vm, selector_for(pod, "netns"))
    tap = start(vm)
    count = 50

    # Control: frames for another MAC are not the VM's, and are not counted on its macvtap.
    before = sysfs(tap, "statistics/rx_packets")
    send_frames(pod, "52:54:00:ff:ff:fe", count)
    assert rx_after(tap, before, count, seconds=1) < count

    before = sysfs(tap, "statistics/rx_packets")
    bytes_before = sysfs(tap, "statistics/rx_bytes")
    send_frames(pod, vm.mac, count)
    assert rx_after(tap, before, count) >= count
    assert sysfs(tap, "statistics/rx_bytes") - bytes_before >= count * 60


def test_destroy_takes_the_placeholder_off_the_veth(make_pod: MakePod, domains: Define) -> None:
    pod = make_pod()
    vm = Vm.random()
    domains(vm, selector_for(pod, "netns"))
    tap = start(vm)
    assert vm.placeholder in link(pod.host_veth).get("altnames", [])
    assert vm.state_file.exists()

    result = virsh("destroy", vm.name)

    assert result.returncode == 0, result.stderr
    assert virsh("domstate", vm.name).stdout.strip() == "shut off"
    shown = link(pod.host_veth)  # the pod's veth itself stays
    assert vm.placeholder not in shown.get("altnames", [])
    assert run("ip", "link", "show", "dev", vm.placeholder).returncode != 0
    assert not vm.state_file.exists()
    assert not Path(f"/sys/class/net/{tap}").exists()


def test_start_fails_with_the_hooks_line_when_the_pod_is_missing(domains: Define) -> None:
    vm = Vm.random()
    missing = sandbox.random_name("vmnt-gone-")
    domains(vm, f'netns="{missing}"')

    result = virsh("start", vm.name)

    assert result.returncode != 0
    assert f"vmnet-hook: domain '{vm.name}', interface {vm.mac}: netns={missing}" in result.stderr
    assert "Traceback" not in result.stderr
    assert virsh("domstate", vm.name).stdout.strip() == "shut off"
    assert run("ip", "link", "show", "dev", vm.placeholder).returncode != 0
    assert not vm.state_file.exists()


# --- beyond start and destroy: restore, a libvirtd restart, two NICs, the commands ---

VMNET_HOOK = "/opt/vmnet-hook/bin/vmnet-hook"  # where install.sh put the command


def taps_of(name: str) -> list[str]:
    live = etree.fromstring(virsh("dumpxml", name).stdout.encode())
    return [t.get("dev", "") for t in live.iterfind("devices/interface[@type='direct']/target")]


def lower_of(tap: str) -> str:
    return str(link(tap)["link"])


def new_host_veth(pod: sandbox.Pod) -> str:
    """Re-create the pod's veth pair, as a CNI plugin does on a pod restart: same pod
    namespace and eth0, a new host-side name."""
    run("ip", "link", "del", pod.host_veth)
    pod.host_veth = sandbox.random_name("vmv", 10)
    made = run("ip", "link", "add", pod.host_veth, "type", "veth", "peer", "name", pod.pod_dev,
               "netns", pod.name)  # fmt: skip
    assert made.returncode == 0, made.stderr
    run("ip", "link", "set", pod.host_veth, "up")
    run("ip", "-n", pod.name, "link", "set", pod.pod_dev, "up")
    return pod.host_veth


def test_restore_lands_on_the_pods_new_veth(
    make_pod: MakePod,
    domains: Define,
    tmp_path: Path,
) -> None:
    pod = make_pod()
    vm = Vm.random()
    domains(vm, f'netns="{pod.name}"')
    old_veth = pod.host_veth
    assert lower_of(start(vm)) == old_veth
    saved = tmp_path / "vm.save"
    assert virsh("save", vm.name, str(saved), timeout=300).returncode == 0
    assert vm.placeholder not in link(old_veth).get("altnames", [])  # release end ran

    veth = new_host_veth(pod)
    restored = virsh("restore", str(saved), timeout=300)

    assert restored.returncode == 0, restored.stderr
    assert [lower_of(tap) for tap in taps_of(vm.name)] == [veth]
    assert virsh("domstate", vm.name).stdout.strip() == "running"


def restart_libvirtd() -> None:
    pid = int(Path("/run/libvirtd.pid").read_text())
    run("kill", "-TERM", str(pid))
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "libvirtd did not stop within 60s"
        time.sleep(0.1)
    assert run("libvirtd", "-d").returncode == 0
    while virsh("version", timeout=10).returncode != 0:
        assert time.monotonic() < deadline + 60, "libvirtd did not come back within 60s"
        time.sleep(0.2)


def test_a_libvirtd_restart_keeps_the_vm_running_on_its_veth(
    make_pod: MakePod,
    domains: Define,
) -> None:
    pod = make_pod()
    vm = Vm.random()
    domains(vm, f'netns="{pod.name}"')
    tap = start(vm)

    restart_libvirtd()  # libvirtd runs `reconnect begin`, which must not fail

    assert virsh("domstate", vm.name).stdout.strip() == "running"
    assert taps_of(vm.name) == [tap] and lower_of(tap) == pod.host_veth
    assert vm.placeholder in link(pod.host_veth).get("altnames", [])


def test_two_nics_from_two_pods(make_pod: MakePod, domains: Define, tmp_path: Path) -> None:
    first, second = make_pod(), make_pod()
    vm = Vm.random()
    xml = domain_xml("two-nics.xml", NETNS1=first.name, NETNS2=second.name)
    xml = xml.replace("<name>vm2</name>", f"<name>{vm.name}</name>").replace(
        "0d7a2f34-5b61-4c8e-9a1d-2e3f4a5b6c7d", vm.uuid)  # fmt: skip
    path = tmp_path / "two.xml"
    path.write_text(xml)
    assert virsh("define", str(path)).returncode == 0
    try:
        started = virsh("start", vm.name)
        assert started.returncode == 0, started.stderr
        assert sorted(lower_of(tap) for tap in taps_of(vm.name)) == sorted(
            [first.host_veth, second.host_veth])  # fmt: skip
    finally:
        virsh("destroy", vm.name)
        virsh("undefine", vm.name)
    assert link(first.host_veth).get("altnames", []) == []
    assert link(second.host_veth).get("altnames", []) == []


def test_annotate_define_start_then_status_and_doctor(
    make_pod: MakePod,
    installed_hook: Path,
    tmp_path: Path,
) -> None:
    pod = make_pod()
    name = sandbox.random_name("vmnt-test-")
    plain = (DATA / "one-nic.xml").read_text()
    plain = plain[: plain.index("<metadata>")] + plain[plain.index("</metadata>") + 12 :]
    plain = plain.replace("<name>vm1</name>", f"<name>{name}</name>").replace(
        "<uuid>6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6</uuid>", "")  # fmt: skip
    annotated = subprocess.run([VMNET_HOOK, "annotate", "-", "--netns", pod.name, "--dev", "eth0", "--network", "l2"],
                               input=plain, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert annotated.returncode == 0, annotated.stderr
    path = tmp_path / "annotated.xml"
    path.write_text(annotated.stdout)
    assert virsh("define", str(path)).returncode == 0
    try:
        started = virsh("start", name)
        assert started.returncode == 0, started.stderr
        assert [lower_of(tap) for tap in taps_of(name)] == [pod.host_veth]
        status = run(VMNET_HOOK, "status", name)
        assert status.returncode == 0 and status.stdout.endswith(f"-> {pod.host_veth}  ok\n")
        doctor = run(VMNET_HOOK, "doctor")
        assert doctor.returncode == 0, doctor.stdout
    finally:
        virsh("destroy", name)
        virsh("undefine", name)
    assert run(VMNET_HOOK, "status", name).stdout == f"no bindings for {name}\n"
