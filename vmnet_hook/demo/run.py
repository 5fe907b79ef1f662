"""``vmnet-hook demo``: the whole job on a machine with no Kubernetes.

Builds a throwaway pod from kernel objects, runs the hook on a domain annotated for it,
and, where libvirtd runs with the hook installed, starts a real diskless domain and shows
its macvtap on the pod's veth. Everything is removed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import textwrap
import uuid as uuidlib
from collections.abc import Callable

from vmnet_hook.core.annotation import placeholder_for
from vmnet_hook.demo import sandbox
from vmnet_hook.errors import DemoError
from vmnet_hook.hook.gate import main as hook_main

VIRSH = ["virsh", "-q", "-c", "qemu:///system"]
Echo = Callable[[str], None]

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">
      <vmnet:interface mac="{mac}" pod-uid="{pod_uid}" dev="eth0" network="l2"/>
    </vmnet:interfaces>
  </metadata>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='direct'>
      <mac address='{mac}'/>
      <source dev='{placeholder}' mode='bridge'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def run(echo: Echo, with_libvirt: bool = True) -> None:
    if os.geteuid() != 0:
        raise DemoError("the demo builds namespaces and veths: run it as root")
    cgroup_root = f"{sandbox.cgroup2_mount()}/{sandbox.random_name('vmnet-demo-')}"
    os.mkdir(cgroup_root)
    pod: sandbox.Pod | None = None
    xml = ""
    try:
        pod = sandbox.make_pod(cgroup_root=cgroup_root)
        sandbox.unpin(pod)  # like a real pod: reachable only through its processes
        _show_pod(echo, pod)
        xml = _domain_xml(pod)
        _run_hook_by_hand(echo, xml, pod)
        if with_libvirt:
            _start_domain(echo, xml, pod)
    finally:  # also on Ctrl-C, wherever it comes
        if xml:
            _forget_domain(xml, with_libvirt)
        if pod is not None:
            sandbox.remove_pod(pod)
        with contextlib.suppress(OSError):
            os.rmdir(cgroup_root)
        echo("\nCleaned up: pod processes, namespace, veth, cgroups and bindings are gone.")


def _show_pod(echo: Echo, pod: sandbox.Pod) -> None:
    echo("A throwaway pod, built from kernel objects:")
    echo(f"  pod UID        {pod.uid}")
    echo(f"  process        pid {pod.pids[0]} in a kubelet-shaped cgroup (systemd driver)")
    echo(f"  its NIC        {pod.pod_dev}, one end of a veth pair")
    echo(f"  host end       {pod.host_veth}  (what the hook has to find)\n")


def _domain_xml(pod: sandbox.Pod) -> str:
    uuid = str(uuidlib.uuid4())
    mac = "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))
    name = f"vmnet-demo-{uuid[:8]}"
    return DOMAIN_XML.format(name=name, uuid=uuid, mac=mac, pod_uid=pod.uid,
                             placeholder=placeholder_for(uuid, mac))  # fmt: skip


def _name_of(xml: str) -> str:
    return xml.split("<name>")[1].split("</name>")[0]


def _forget_domain(xml: str, with_libvirt: bool) -> None:
    """Destroy the transient domain if it runs, and release its bindings if any remain."""
    if with_libvirt and shutil.which("virsh"):
        subprocess.run([*VIRSH, "destroy", _name_of(xml)], capture_output=True, timeout=60)
    hook_main([_name_of(xml), "release", "end", "-"], io.BytesIO(xml.encode()),
              io.StringIO(), io.StringIO())  # fmt: skip


def _run_hook_by_hand(echo: Echo, xml: str, pod: sandbox.Pod) -> None:
    name = _name_of(xml)
    echo("The domain's interface as written (pod named in <metadata>, placeholder source):")
    echo(_interface_of(xml))
    out, err = io.StringIO(), io.StringIO()
    status = hook_main([name, "prepare", "begin", "-"], io.BytesIO(xml.encode()), out, err)
    if status != 0:
        raise DemoError(err.getvalue().strip())
    echo("After `hooks/qemu NAME prepare begin -` (what libvirt will wire up):")
    echo(_interface_of(out.getvalue()))
    link = subprocess.run(["ip", "link", "show", pod.host_veth], capture_output=True,
                          text=True).stdout  # fmt: skip
    bound = [line.strip() for line in link.splitlines() if "altname" in line]
    echo(f"  kernel: {bound[0] if bound else 'no altname?'} on the pod's host veth")
    hook_main([name, "release", "end", "-"], io.BytesIO(xml.encode()), out, err)
    echo("  and `release end` removed it again.\n")


def _interface_of(xml: str) -> str:
    start = xml.rindex("\n", 0, xml.index("<interface type")) + 1
    end = xml.index("</interface>", start) + len("</interface>")
    return textwrap.indent(textwrap.dedent(xml[start:end]), "    ")


def _start_domain(echo: Echo, xml: str, pod: sandbox.Pod) -> None:
    reason = _libvirt_missing()
    if reason:
        echo(f"Skipping the real VM: {reason}.")
        return
    name = _name_of(xml)
    started = subprocess.run([*VIRSH, "create", "/dev/stdin"], input=xml, text=True,
                             capture_output=True, timeout=120)  # fmt: skip
    if started.returncode != 0:
        raise DemoError(
            f"virsh create failed: {started.stderr.strip()}; `vmnet-hook doctor` checks "
            "libvirt's set-up (or run the demo with --no-libvirt)"
        )
    links = subprocess.run(["ip", "-o", "link", "show", "type", "macvtap"],
                           capture_output=True, text=True).stdout  # fmt: skip
    lines = [line.split(":")[1].strip() for line in links.splitlines() if pod.host_veth in line]
    echo(f"`virsh create` started {name}; its macvtap: {lines[0] if lines else 'NOT FOUND'}")
    subprocess.run([*VIRSH, "destroy", name], capture_output=True, timeout=60)
    altnames = subprocess.run(["ip", "link", "show", pod.host_veth], capture_output=True,
                              text=True).stdout  # fmt: skip
    echo(f"`virsh destroy`: altname {'still there!' if 'altname' in altnames else 'removed'}.")


def _libvirt_missing() -> str:
    if shutil.which("virsh") is None:
        return "virsh is not installed"
    version = subprocess.run([*VIRSH, "version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0:
        return "libvirtd is not running (scripts/setup-libvirt.sh starts it)"
    hooks = ("/etc/libvirt/hooks/qemu", "/etc/libvirt/hooks/qemu.d/vmnet-hook")
    if not any(os.path.exists(path) for path in hooks):
        return "the hook is not installed in /etc/libvirt/hooks (run install.sh)"
    return ""
