"""A real guest's time to the network: the hook in masquerade vs the same set-up made by hand.

Not a test: run as root from the checkout, with the hook installed (``./install.sh``) and
libvirtd running: ``.venv/bin/python bench/guest.py [--rounds N]``.

Each run times ``virsh define`` + ``virsh start`` + the guest's first successful ping of a
peer pod (the guest boots, asks DHCP, pings in a loop from its /init-started shell):

- hook: the domain is annotated for its pod (network masquerade, the default); libvirtd
  runs the installed hook at ``prepare begin``, which builds the guest's link, the
  addresses, sysctls, the nft table and dnsmasq in the pod.
- by hand: a domain with no annotation whose ``<source dev>`` is a veth the bench made
  before the clock starts, its other end in an identical pod, with the same addresses and
  sysctls, the same nft table (``vmnet_hook.podnet.nft.ruleset``) and the same dnsmasq
  command line (``vmnet_hook.podnet.dhcp.argv``), both from ``vmnet_hook.podnet.plan``.

Both guests boot the same kernel and initramfs and get their address by DHCP. Rounds
interleave the two (alternating which goes first); medians and their ratio are printed.
Everything is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

from vmnet_hook.core.annotation import placeholder_for
from vmnet_hook.demo import guest as guests
from vmnet_hook.demo import network, sandbox
from vmnet_hook.demo.guestimage import GuestImage, guest_image
from vmnet_hook.podnet import dhcp, nft, plan

TARGET_RATIO, AIM_RATIO = 1.15, 1.10
VM_CIDR = ipaddress.IPv4Network("10.0.2.0/24")
PING_LOOP = "until ping -c1 -W1 {peer} >/dev/null 2>&1; do sleep 0.02; done"


class BenchGuest(guests.Guest):
    NAME_PREFIX: ClassVar[str] = "vmnet-bench-"
    RUN_ROOT: ClassVar[Path] = Path("/var/lib/libvirt/vmnet-hook-bench")


Timing = tuple[float, float]  # (define + start, define to first ping), seconds


def time_to_ping(guest: guests.Guest, peer_ip: str) -> Timing:
    """Define, start, and wait for the guest's first echo reply from ``peer_ip``."""
    started = time.monotonic()
    guest.define()
    guest.start()
    booted = time.monotonic()
    guest.check(PING_LOOP.format(peer=peer_ip), timeout=90)
    return booted - started, time.monotonic() - started


def hook_run(image: GuestImage, net: network.PodNetwork) -> Timing:
    mac, uuid = guests.random_mac(), str(uuidlib.uuid4())
    metadata = (
        '<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">'
        f'<vmnet:interface mac="{mac}" pod-uid="{net.pod.uid}" dev="eth0"/></vmnet:interfaces>'
    )
    interface = guests.direct_interface_xml(mac, placeholder_for(uuid, mac))
    guest = BenchGuest(image, [interface], metadata, uuid)
    try:
        return time_to_ping(guest, net.peer_ip)
    finally:
        guest.remove()


def by_hand_run(image: GuestImage, net: network.PodNetwork, state_dir: str) -> Timing:
    mac, uuid = guests.random_mac(), str(uuidlib.uuid4())
    nic = guest_nic(uuid, mac, net)
    with contextlib.ExitStack() as stack:
        stack.callback(subprocess.run, ["ip", "link", "del", nic.placeholder], check=False,
                       capture_output=True)  # fmt: skip
        build_pod_side(nic, net.pod_pid, state_dir, stack)
        guest = BenchGuest(image, [guests.direct_interface_xml(mac, nic.placeholder)], "", uuid)
        stack.callback(guest.remove)
        return time_to_ping(guest, net.peer_ip)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


def guest_nic(uuid: str, mac: str, net: network.PodNetwork) -> plan.GuestNic:
    """What the hook's plan gives this NIC in this pod (read as the hook would read it)."""
    pod_ip = ipaddress.IPv4Interface(f"{net.pod_ip}/24")
    facts = plan.PodFacts("eth0", pod_ip, 1500, (pod_ip,), (pod_ip.network,), ())
    dns = plan.Dns(network.DNS_SERVERS, network.DNS_SEARCH, "bench")
    wanted = plan.Wanted(mac, placeholder_for(uuid, mac), "eth0", ())
    return plan.plan(uuid, [wanted], {mac: facts}, {mac: dns}, VM_CIDR)[0]


def build_pod_side(
    nic: plan.GuestNic, pid: int, state_dir: str, stack: contextlib.ExitStack
) -> None:
    """The guest's link, addresses, sysctls, nft table and dnsmasq, as the hook makes them."""
    pod = ["nsenter", "-t", str(pid), "-n"]
    peer = [
        "name",
        nic.pod_end,
        "address",
        nic.gateway_mac,
        "mtu",
        str(nic.mtu),
        "netns",
        str(pid),
    ]
    run(["ip", "link", "add", nic.placeholder, "mtu", str(nic.mtu), "type", "veth", "peer", *peer])
    run(["ip", "link", "set", nic.placeholder, "up"])
    run([*pod, "ip", "addr", "add", f"{nic.gateway}/30", "dev", nic.pod_end])
    run([*pod, "ip", "link", "set", nic.pod_end, "up"])
    sysctls = [f"net.ipv4.conf.{nic.pod_end}.forwarding=1",
               f"net.ipv4.conf.{nic.pod_end}.send_redirects=0",
               f"net.ipv4.conf.{nic.pod_dev}.forwarding=1"]  # fmt: skip
    run([*pod, "sysctl", "-q", *sysctls])
    stack.callback(run, [*pod, "sysctl", "-q", f"net.ipv4.conf.{nic.pod_dev}.forwarding=0"])
    run([*pod, "nft", "-f", "-"], stdin=nft.ruleset(nic))
    stack.callback(run, [*pod, "nft", "-f", "-"], stdin=nft.delete(nic.table))
    run([*pod, *dhcp.argv(nic, state_dir)])
    stack.callback(stop_dnsmasq, dhcp.files(state_dir, nic)[0])


def stop_dnsmasq(pid_file: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(Path(pid_file).read_text().strip()), signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.unlink(pid_file)


def run(argv: list[str], stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def interleaved(rounds: int, runs: dict[str, Callable[[], Timing]]) -> dict[str, list[Timing]]:
    results: dict[str, list[Timing]] = {name: [] for name in runs}
    for index in range(rounds):
        order = list(runs) if index % 2 == 0 else list(reversed(runs))
        for name in order:
            results[name].append(runs[name]())
        print(f"  round {index + 1}/{rounds}: " + "  ".join(
            f"{name} {results[name][-1][1]:.2f} s" for name in runs), flush=True)  # fmt: skip
    return results


def report(results: dict[str, list[Timing]]) -> None:
    medians = {
        name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for name, runs in results.items()
    }
    print("\nmedians          define+start   define to first ping   runs")
    for name, (start, total) in medians.items():
        print(f"  {name:<14} {start * 1000:9.0f} ms   {total:15.2f} s   {len(results[name]):6}")
    hook, hand = medians["hook"], medians["by hand"]
    ratio = hook[1] / hand[1]
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    aim = "and the aim" if ratio <= AIM_RATIO else f"but not the aim ({AIM_RATIO:.2f}x)"
    print(f"  hook / by hand: {ratio:.3f}x to the first ping ({hook[0] / hand[0]:.2f}x for "
          f"define+start): {verdict} the {TARGET_RATIO:.2f}x target {aim if verdict == 'meets' else ''}")  # noqa: E501 # fmt: skip


@contextlib.contextmanager
def pods() -> Iterator[tuple[network.PodNetwork, network.PodNetwork]]:
    """Two identical networks (a pod and its peer on a bridge), one per variant."""
    roots = [f"{sandbox.cgroup2_mount()}/{sandbox.random_name('vmnet-bench-')}" for _ in "ab"]
    with contextlib.ExitStack() as stack:
        for root in roots:
            os.mkdir(root)
            stack.callback(os.rmdir, root)
        yield (stack.enter_context(network.pod_network(roots[0])),
               stack.enter_context(network.pod_network(roots[1])))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/guest.py: run as root", file=sys.stderr)
        return 1
    image = guest_image()
    hook = Path("/etc/libvirt/hooks/qemu")
    print(f"hook: {hook} -> {hook.read_text().splitlines()[0][2:]}; image {image.package}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    with pods() as (hook_net, hand_net), tempfile.TemporaryDirectory() as state_dir:
        results = interleaved(args.rounds, {
            "hook": lambda: hook_run(image, hook_net),
            "by hand": lambda: by_hand_run(image, hand_net, state_dir),
        })  # fmt: skip
    report(results)
    print(f"\n{time.monotonic() - started:.0f} s in all; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
