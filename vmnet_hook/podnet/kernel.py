"""Read a pod's namespace for a plan, and run the tools (nft) inside it."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess

from vmnet_hook import files
from vmnet_hook.errors import PodNetError
from vmnet_hook.host.netlink import PodSession
from vmnet_hook.host.netns import run_in_netns
from vmnet_hook.podnet.plan import Dns, PodFacts, parse_owner

NFT = "nft"
TOOL_SECONDS = 5
MAX_RESOLV_CONF = 65536
# Searched after PATH: libvirtd may give its hooks a PATH without the sbin directories.
SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
GUEST_LINK = re.compile(r"vg[0-9a-f]{12}")  # a pod end's name (``vg`` + ``plan.tag_of``)


class MissingTool(PodNetError):
    """A program the pod side needs is not installed."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        super().__init__(f"{tool} is not installed")


def read_facts(inside: PodSession, pod_dev: str) -> PodFacts:
    """The pod NIC's address and MTU, and what the pod's addresses, routes and the guest
    links of other domains take of the address space."""
    links = {link.index: link for link in inside.links()}
    ours = {index for index, link in links.items() if parse_owner(link.alias or "")}
    pod_link = next((link for link in links.values() if link.name == pod_dev), None)
    if pod_link is None:
        names = ", ".join(sorted(link.name for link in links.values()))
        raise PodNetError(f"the pod has no NIC {pod_dev!r}; it has: {names}")
    addresses = [(i, ipaddress.IPv4Interface(a)) for i, a in inside.ipv4_addresses()]
    return PodFacts(
        pod_dev=pod_dev,
        pod_ip=next((a for i, a in addresses if i == pod_link.index), None),
        mtu=pod_link.mtu,
        addresses=tuple(a for i, a in addresses if i not in ours),
        routes=tuple(
            ipaddress.IPv4Network(dst) for dst, oif in inside.ipv4_routes() if oif not in ours
        ),
        held=tuple(a.network for i, a in addresses if i in ours),
    )


def read_dns(pids: tuple[int, ...], proc_root: str, fallback: str = "/etc/resolv.conf") -> Dns:
    """The pod's own resolv.conf, through a pod process's root, its links resolved inside
    the pod as the pod's resolver does; the host's (its own, links followed) when no pod
    process has one that reads: a FIFO, a device or a huge file is never read."""
    for pid in pids:
        root = f"{proc_root}/{pid}/root"
        with contextlib.suppress(OSError, ValueError):
            if found := files.read_in_root(root, "/etc/resolv.conf", MAX_RESOLV_CONF):
                return parse_resolv_conf(found[0].decode(), f"{root}/etc/resolv.conf")
    with contextlib.suppress(OSError, ValueError):
        if found := files.read_regular(fallback, MAX_RESOLV_CONF, follow=True):
            return parse_resolv_conf(found[0].decode(), fallback)
    return Dns((), (), "none")


def parse_resolv_conf(text: str, source: str) -> Dns:
    servers: list[str] = []
    search: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            with contextlib.suppress(ValueError):
                servers.append(str(ipaddress.IPv4Address(words[1])))
        elif words and words[0] in ("search", "domain"):
            search = tuple(words[1:])  # the last one wins, as in the resolver
    return Dns(tuple(servers[:3]), search, source)


def holders(inside: PodSession, netns_path: str) -> list[dict[str, str]]:
    """vmnet-hook's pieces in a pod: the guest links' and nft tables' owner tags. Without
    nft installed no table of ours can exist (an ``l2``-only host need not have it)."""
    found = [parse_owner(link.alias or "") for link in inside.links()]
    if has_nft():
        found += [parse_owner(comment) for comment in nft_comments(netns_path).values()]
    return [owner for owner in found if owner is not None]


def untagged_guest_links(inside: PodSession) -> list[str]:
    """Veths named as vmnet-hook names a guest link's pod end but without its owner tag
    (lost, or killed before it was set): whose they are, only an nft table could tell."""
    return sorted(
        link.name
        for link in inside.links()
        if link.kind == "veth" and GUEST_LINK.fullmatch(link.name) and not parse_owner(
            link.alias or "")
    )  # fmt: skip


def tool_path(name: str) -> str | None:
    """Where the program ``name`` is: the absolute directories of PATH, then the system's
    (the one place tools are looked up: a short PATH must not hide them)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(d)]
    return shutil.which(name, path=os.pathsep.join([*dirs, *SYSTEM_DIRS]))


def has_nft() -> bool:
    return tool_path(NFT) is not None


def nft_comments(netns_path: str) -> dict[str, str]:
    """The comment of each ``ip vmnet_*`` table in the namespace."""
    listing = run_tool(netns_path, [NFT, "list", "tables", "ip"])
    names = [
        w for line in listing.splitlines() for w in line.split()[2:3] if w.startswith("vmnet_")
    ]
    comments = {}
    for name in names:
        text = run_tool(netns_path, [NFT, "list", "table", "ip", name])
        line = next(
            (ln.strip() for ln in text.splitlines() if ln.strip().startswith("comment ")), ""
        )
        comments[name] = line.removeprefix("comment ").strip('"')
    return comments


def run_tool(netns_path: str, argv: list[str], stdin: str = "") -> str:
    """Run ``argv`` in the namespace (a thread enters it, the child inherits it); its
    output, or PodNetError with its first line of complaint (MissingTool when the program
    is not installed: ``tool_path``)."""
    program = tool_path(argv[0])
    if program is None:
        raise MissingTool(argv[0])

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, executable=program, input=stdin, capture_output=True, text=True,
            timeout=TOOL_SECONDS, close_fds=True, check=False,
        )  # fmt: skip

    try:
        done = run_in_netns(netns_path, run)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PodNetError(f"{argv[0]}: {error}") from None
    if done.returncode != 0:
        complaint = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise PodNetError(f"{' '.join(argv[:3])}: {complaint}")
    return done.stdout
