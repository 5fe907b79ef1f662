"""The nftables table of one masqueraded NIC, as an ``nft -f -`` script. Pure.

- DNAT: TCP and UDP to the pod's IP go to the guest, except ``pod-ports``; ICMP and other
  protocols stay with the pod. From the network and from the guest itself (NAT loopback).
- SNAT: what the guest sends leaves as the pod's IP; looped-back traffic is SNATed too, so
  the guest's answer comes back through the pod.
- No ICMP redirects to the guest: looped-back packets leave by the link they came in on.
"""

from __future__ import annotations

from vmnet_hook.core.annotation import PortRange
from vmnet_hook.podnet.plan import GuestNic

PROTOCOLS = ("tcp", "udp")


def ruleset(nic: GuestNic) -> str:
    """The whole table, created fresh (``destroy``-free: nft 1.0.6 lacks it, and the
    table is known to be absent, or ours and removed, before this runs)."""
    return "\n".join(
        [
            f"table ip {nic.table} {{",
            f'  comment "{nic.owner}"',
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            *(f"    {rule}" for rule in _dnat_rules(nic)),
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f"    ip saddr {nic.guest} ip daddr {nic.guest} snat to {nic.pod_ip}",
            f'    ip saddr {nic.guest} oifname != "{nic.pod_end}" snat to {nic.pod_ip}',
            "  }",
            "  chain output {",
            "    type filter hook output priority filter; policy accept;",
            f'    oifname "{nic.pod_end}" icmp type redirect drop',
            "  }",
            "}",
            "",
        ]
    )


def delete(table: str) -> str:
    return f"delete table ip {table}\n"


def _dnat_rules(nic: GuestNic) -> list[str]:
    rules = []
    for proto in PROTOCOLS:
        kept = [port for port in nic.pod_ports if port.proto == proto]
        match = f"{proto} dport != {{ {_ports(kept)} }}" if kept else f"meta l4proto {proto}"
        rules.append(f"ip daddr {nic.pod_ip} {match} dnat to {nic.guest}")
    return rules


def _ports(ports: list[PortRange]) -> str:
    return ", ".join(str(p.first) if p.first == p.last else f"{p.first}-{p.last}" for p in ports)
