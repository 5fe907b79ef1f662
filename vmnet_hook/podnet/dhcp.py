"""The guest NIC's DHCP server: one dnsmasq in the pod's namespace. ``argv`` is pure."""

from __future__ import annotations

import os

from vmnet_hook.podnet.plan import GuestNic

DNSMASQ = "dnsmasq"


def files(state_dir: str, nic: GuestNic) -> tuple[str, str]:
    """Its pid file and lease file, under the state dir."""
    base = os.path.join(state_dir, f"{nic.domain_uuid}.{nic.pod_end}")
    return f"{base}.pid", f"{base}.leases"


def argv(nic: GuestNic, state_dir: str, program: str = DNSMASQ) -> list[str]:
    """Only the guest's MAC gets an answer: its address for ever, the gateway (on the
    domain's first NIC only), the pod NIC's MTU and the pod's DNS. Replies are broadcast:
    a unicast reply would teach the pod's neighbour table before the guest has its address.
    No DNS service of its own (``--port=0``)."""
    pid_file, lease_file = files(state_dir, nic)
    options = [
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        f"--interface={nic.pod_end}",
        "--except-interface=lo",
        f"--dhcp-range={nic.guest},static,255.255.255.252",
        f"--dhcp-host={nic.mac},{nic.guest},infinite",
        "--dhcp-ignore=tag:!known",
        "--dhcp-authoritative",
        "--dhcp-broadcast",
        f"--dhcp-option=option:router,{nic.gateway}" if nic.default_route else "--dhcp-option=3",
        f"--dhcp-option=option:mtu,{nic.mtu}",
        f"--pid-file={pid_file}",
        f"--dhcp-leasefile={lease_file}",
    ]
    if nic.dns.servers:
        options.append("--dhcp-option=option:dns-server," + ",".join(nic.dns.servers))
    if nic.dns.search:
        options.append("--dhcp-option=option:domain-search," + ",".join(nic.dns.search))
    return [program, *options]
