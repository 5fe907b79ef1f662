"""Benchmark: does pod lookup cost follow the pod or the host? Not a test; run as root:

    .venv/bin/python bench/resolve.py [--sizes 20,200,1000] [--samples 25]

It builds fake pods from real kernel objects (a pinned netns, a veth pair with ``eth0`` in
the pod, two containers in kubelet-shaped cgroups under one private cgroup2 directory,
CRI-O pods with a conmon in the host netns, kubelet log directories), eight processes a pod
plus two host processes a pod in no pod at all: 1,000 pods make 10,000 processes or more.
Processes are cheap: one ``sh`` a container, spawned inside the pod's netns (by
``run_in_netns``), joins its cgroup and forks ``sleep`` children, then becomes a ``sleep`` itself.

For each size it prints the median latency of ``Resolver.host_veth`` (in-process) by each
selector, beside a naive lookup (psutil over every process, read its cgroup, group by
netns, then the same netlink work) and their ratio; then ``vmnet-hook pods`` at the
largest size, and each target, met or not. Everything it made is removed at the end, on
Ctrl-C, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import psutil

from vmnet_hook.config import Config
from vmnet_hook.core.annotation import parse_selector
from vmnet_hook.demo import sandbox
from vmnet_hook.demo.sandbox import PodLayout
from vmnet_hook.host.netlink import Pyroute2Netlink
from vmnet_hook.host.netns import libc, run_in_netns
from vmnet_hook.host.pods import PodNetns
from vmnet_hook.host.procfs import NetnsId
from vmnet_hook.host.resolve import Resolver, host_end

SELECTORS = ("pod", "pod-uid", "container", "pid", "netns")
APP_SLEEPS = 7  # the app container's processes; the pause container has one
HOST_PROCS_PER_POD = 2
HOST_PROCS_PER_SHELL = 100
LAYOUTS = [
    PodLayout(driver, runtime, qos)
    for driver in ("systemd", "cgroupfs")
    for runtime in ("containerd", "crio", "docker")
    for qos in sandbox.QOS_CLASSES
]
PR_SET_CHILD_SUBREAPER = 36
SETTLE_SECONDS = 180
TARGET_SCALING, TARGET_SPEEDUP, TARGET_PODS_SECONDS = 1.2, 5.0, 2.0


@dataclass(frozen=True)
class BenchPod:
    netns: str  # pinned under /run/netns
    host_veth: str
    uid: str
    name: str
    layout: PodLayout
    container_ids: tuple[str, str]  # pause, app


@dataclass
class Row:
    """Median seconds by selector, on the wall clock and in CPU time, at one host size."""

    pods: int
    procs: int
    wall: dict[str, float]
    cpu: dict[str, float]
    load: float  # 1-minute load average while measuring: other users of the 2 cores
    built: float = 0.0  # seconds to grow the host to this size


class Host:
    """Everything the bench makes; ``close`` removes it all, whatever state it is in."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.cgroup = f"{sandbox.cgroup2_mount()}/vmnt-bench-{self.tag}"
        self.logs = tempfile.mkdtemp(prefix=f"vmnt-bench-{self.tag}-")
        self.pods: list[BenchPod] = []
        self.pids: dict[str, int] = {}  # pod netns -> the pause container's process
        self.netns: list[str] = []
        self.host_procs = 0
        self.expected_procs = 0
        os.mkdir(self.cgroup)
        os.mkdir(f"{self.cgroup}/host")

    def grow(self, pods: int) -> None:
        new = [self._describe(index) for index in range(len(self.pods), pods)]
        self._plug(new)
        for pod in new:
            self._cgroups_and_logs(pod)
        self.pods += new
        self._spawn_pods(new)
        self._spawn_host_procs(HOST_PROCS_PER_POD * pods - self.host_procs)
        self._settle()

    def close(self) -> None:
        self._kill_all()
        for directory, _subdirs, _files in sorted(os.walk(self.cgroup), key=lambda w: -len(w[0])):
            _rmdir_patiently(directory)
        _ip_batch([f"netns delete {name}" for name in self.netns])
        for pod in self.pods:
            with contextlib.suppress(OSError):
                os.rmdir(f"{self.logs}/{_log_name(pod)}")
        with contextlib.suppress(OSError):
            os.rmdir(self.logs)

    def _describe(self, index: int) -> BenchPod:
        return BenchPod(
            netns=f"vmnt-b{self.tag}-{index}",
            host_veth=f"vbv{self.tag}{index:04d}",
            uid=str(uuid.uuid4()),
            name=f"virt-launcher-vm{index}-{secrets.token_hex(3)}",
            layout=LAYOUTS[index % len(LAYOUTS)],
            container_ids=(secrets.token_hex(32), secrets.token_hex(32)),
        )

    def _plug(self, pods: list[BenchPod]) -> None:
        """Pinned netns and veth pairs for ``pods``, in one `ip -batch`."""
        self.netns += [pod.netns for pod in pods]  # recorded first: removed even if half made
        _ip_batch(
            [f"netns add {pod.netns}" for pod in pods]
            + [
                f"link add {pod.host_veth} type veth peer name eth0 netns {pod.netns}"
                for pod in pods
            ]
            + [f"link set {pod.host_veth} up" for pod in pods],
            force=False,
        )

    def _cgroups_and_logs(self, pod: BenchPod) -> None:
        for container_id in pod.container_ids:
            os.makedirs(self._container_cgroup(pod, container_id))
        if pod.layout.runtime == "crio":
            os.makedirs(self._conmon_cgroup(pod))
        os.mkdir(f"{self.logs}/{_log_name(pod)}")

    def _container_cgroup(self, pod: BenchPod, container_id: str) -> str:
        container = pod.layout.container_dir(container_id)
        return f"{self.cgroup}/{pod.layout.pod_dir(pod.uid)}/{container}"

    def _conmon_cgroup(self, pod: BenchPod) -> str:
        scope = ".scope" if pod.layout.driver == "systemd" else ""
        conmon = f"crio-conmon-{pod.container_ids[1]}{scope}"
        return f"{self.cgroup}/{pod.layout.pod_dir(pod.uid)}/{conmon}"

    def _spawn_pods(self, pods: list[BenchPod]) -> None:
        """Containers from inside each pod's netns; conmons from here, in the host's."""
        for pod in pods:
            path = f"/run/netns/{pod.netns}"
            self.pids[pod.netns] = run_in_netns(path, functools.partial(self._containers, pod))
            self.expected_procs += 1 + APP_SLEEPS
            if pod.layout.runtime == "crio":
                _spawn_sleeps(self._conmon_cgroup(pod), 1)
                self.expected_procs += 1

    def _containers(self, pod: BenchPod) -> int:
        """The pod's two containers, spawned from the calling thread's netns; the pause
        container's process."""
        pause, app = (self._container_cgroup(pod, c) for c in pod.container_ids)
        pid = _spawn_sleeps(pause, 1)
        _spawn_sleeps(app, APP_SLEEPS)
        return pid

    def _spawn_host_procs(self, count: int) -> None:
        while count > 0:
            batch = min(count, HOST_PROCS_PER_SHELL)
            _spawn_sleeps(f"{self.cgroup}/host", batch)
            self.host_procs += batch
            self.expected_procs += batch
            count -= batch

    def _settle(self) -> None:
        """Wait until every shell has joined its cgroup and forked its sleeps."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while len(self._pids_in_cgroup()) < self.expected_procs:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(self._pids_in_cgroup())} of {self.expected_procs} "
                    f"processes started within {SETTLE_SECONDS} s"
                )
            time.sleep(0.1)

    def _pids_in_cgroup(self) -> list[int]:
        pids: list[int] = []
        for directory, _subdirs, _files in os.walk(self.cgroup):
            with contextlib.suppress(OSError), open(f"{directory}/cgroup.procs", "rb") as procs:
                pids += [int(pid) for pid in procs.read().split()]
        return pids

    def _kill_all(self) -> None:
        """SIGKILL every process in the bench's cgroup (all started here), by pid."""
        for _ in range(200):
            pids = self._pids_in_cgroup()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _reap()
            time.sleep(0.05)
        _reap()


def _log_name(pod: BenchPod) -> str:
    return f"default_{pod.name}_{pod.uid}"


def _spawn_sleeps(cgroup: str, sleeps: int) -> int:
    """One shell joins ``cgroup``, forks ``sleeps - 1`` sleeps, and becomes the last one."""
    background = "sleep infinity & " * (sleeps - 1)
    script = f"echo $$ > {cgroup}/cgroup.procs && {{ {background}exec sleep infinity; }}"
    devnull = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(
        "/bin/sh",
        ["sh", "-c", script],
        {"PATH": "/usr/bin:/bin"},
        file_actions=devnull,
        setsid=True,
    )


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _rmdir_patiently(directory: str) -> None:
    for _ in range(100):  # a killed process leaves its cgroup a moment after it dies
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:
            _reap()
            time.sleep(0.02)


def _ip_batch(commands: list[str], *, force: bool = True) -> None:
    if not commands:
        return
    flags = ["-force"] if force else []
    result = subprocess.run(
        ["ip", *flags, "-batch", "-"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and not force:
        raise RuntimeError(f"ip -batch: {result.stderr.strip()}")


# --- measuring ---------------------------------------------------------------------------


def selector_value(host: Host, pod: BenchPod, kind: str) -> str:
    return {
        "pod": f"default/{pod.name}",
        "pod-uid": pod.uid,
        "container": pod.container_ids[1][:12],
        "pid": str(host.pids[pod.netns]),
        "netns": pod.netns,
    }[kind]


def measure(host: Host, resolver: Resolver, samples: int, naive_samples: int) -> Row:
    """Selectors interleaved, each on a random pod; wall clock and CPU time of each call."""
    times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in SELECTORS}
    for kind in SELECTORS:  # warm: imports, first sockets
        _timed_resolve(host, resolver, host.pods[0], kind)
    for _ in range(samples):
        for kind in SELECTORS:
            times[kind].append(_timed_resolve(host, resolver, random.choice(host.pods), kind))
    times["naive"] = [_timed_naive(random.choice(host.pods)) for _ in range(naive_samples)]
    return Row(
        len(host.pods),
        len(psutil.pids()),
        {kind: statistics.median(wall for wall, _ in t) for kind, t in times.items()},
        {kind: statistics.median(cpu for _, cpu in t) for kind, t in times.items()},
        os.getloadavg()[0],
    )


def _timed_resolve(
    host: Host, resolver: Resolver, pod: BenchPod, kind: str
) -> tuple[float, float]:
    selector = parse_selector(kind, selector_value(host, pod, kind))
    wall, cpu = time.perf_counter(), time.process_time()
    veth = resolver.host_veth(selector, "eth0")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if veth.name != pod.host_veth:
        raise RuntimeError(f"{selector} resolved to {veth.name}, not {pod.host_veth}")
    return wall, cpu


def _timed_naive(pod: BenchPod) -> tuple[float, float]:
    psutil.process_iter.cache_clear()  # as in the hook: a fresh process every call
    wall, cpu = time.perf_counter(), time.process_time()
    veth = host_end(naive_find(pod.uid), "eth0", Pyroute2Netlink())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if veth.name != pod.host_veth:
        raise RuntimeError(f"naive lookup of {pod.uid} gave {veth.name}, not {pod.host_veth}")
    return wall, cpu


def naive_find(uid: str) -> PodNetns:
    """The obvious way: every process through psutil, its cgroup read, grouped by netns."""
    markers = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    host = os.stat("/proc/self/ns/net")
    groups: dict[NetnsId, list[int]] = {}
    for process in psutil.process_iter():
        try:
            with open(f"/proc/{process.pid}/cgroup", encoding="utf-8") as cgroup:
                text = cgroup.read()
            if "crio-conmon-" in text or not any(marker in text for marker in markers):
                continue
            netns = os.stat(f"/proc/{process.pid}/ns/net")
        except OSError:
            continue
        if (netns.st_dev, netns.st_ino) != (host.st_dev, host.st_ino):
            groups.setdefault(NetnsId(netns.st_dev, netns.st_ino), []).append(process.pid)
    ((netns_id, pids),) = groups.items()
    return PodNetns(f"/proc/{pids[0]}/ns/net", netns_id, tuple(pids))


def time_pods_command(host: Host, runs: int = 3) -> tuple[float, int]:
    """Median wall time of `vmnet-hook pods`, and how many bench pods it listed."""
    script = os.path.join(os.path.dirname(sys.executable), "vmnet-hook")
    command = (
        [script]
        if os.path.exists(script)
        else [sys.executable, "-c", "from vmnet_hook.cli.main import main; main()"]
    )
    env = {**os.environ, "VMNET_HOOK_POD_LOG_DIR": host.logs, "VMNET_HOOK_CONFIG": "/nonexistent"}
    walls, listed = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "pods"], env=env, capture_output=True, text=True, check=True
        )
        walls.append(time.perf_counter() - start)
        lines = done.stdout.splitlines()
        listed = sum(1 for pod in host.pods if any(pod.host_veth in line for line in lines))
    return statistics.median(walls), listed


# --- report ------------------------------------------------------------------------------


COLUMNS = (*SELECTORS, "naive")
HEADER = (
    f"{'pods':>5} {'procs':>6} {'':>4} "
    + " ".join(f"{kind:>9}" for kind in COLUMNS)
    + f" {'naive/uid':>9} {'load':>5} {'built':>6}"
)


def print_row(row: Row) -> None:
    for clock, medians in (("wall", row.wall), ("cpu", row.cpu)):
        cells = " ".join(f"{medians[kind] * 1000:>9.2f}" for kind in COLUMNS)
        speedup = f"{medians['naive'] / medians['pod-uid']:>8.1f}x"
        if clock == "wall":
            size, tail = f"{row.pods:>5} {row.procs:>6}", f" {row.load:>5.1f} {row.built:>5.1f}s"
        else:
            size, tail = " " * 12, ""
        print(f"{size} {clock:>4} {cells} {speedup}{tail}", flush=True)


def print_targets(rows: list[Row], pods_seconds: float, listed: int, pods: int) -> None:
    by_size = {row.pods: row for row in rows}
    top = rows[-1]
    print()
    if 200 in by_size and top.pods > 200:
        base = by_size[200]
        for kind in SELECTORS:
            wall, cpu = top.wall[kind] / base.wall[kind], top.cpu[kind] / base.cpu[kind]
            verdicts = f"wall {wall:.2f}x, cpu {cpu:.2f}x (no target)"
            if kind in ("pod-uid", "pod"):
                verdicts = (
                    f"wall {wall:.2f}x ({_verdict(wall <= TARGET_SCALING)}), "
                    f"cpu {cpu:.2f}x ({_verdict(cpu <= TARGET_SCALING)}); "
                    f"target <= {TARGET_SCALING}x"
                )
            print(f"{kind:>9} at {top.procs} procs / at {base.procs} procs: {verdicts}")
    for kind in ("pod-uid", "pod"):
        wall, cpu = top.wall["naive"] / top.wall[kind], top.cpu["naive"] / top.cpu[kind]
        print(
            f"naive / {kind} at {top.procs} procs: wall {wall:.0f}x "
            f"({_verdict(wall >= TARGET_SPEEDUP)}), cpu {cpu:.0f}x "
            f"({_verdict(cpu >= TARGET_SPEEDUP)}); target >= {TARGET_SPEEDUP:.0f}x"
        )
    print(
        f"vmnet-hook pods at {pods} pods: {pods_seconds:.2f} s wall, median of 3, listed "
        f"{listed}/{pods} bench pods (target < {TARGET_PODS_SECONDS:.0f} s: "
        f"{_verdict(pods_seconds < TARGET_PODS_SECONDS and listed == pods)})"
    )


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so cleanup runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int | None] = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="20,200,1000", help="pod counts, growing")
    parser.add_argument("--samples", type=int, default=40, help="lookups per selector")
    parser.add_argument("--naive-samples", type=int, default=5, help="naive lookups a size")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "bench/resolve.py: run as root: it builds namespaces, veths and cgroups",
            file=sys.stderr,
        )
        return 1
    sizes = sorted(int(size) for size in args.sizes.split(","))
    libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphaned sleeps come back to be reaped
    with interrupts_raise():
        host = Host()
        try:
            return run(host, sizes, args.samples, args.naive_samples)
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let cleanup finish
            host.close()


def run(host: Host, sizes: list[int], samples: int, naive_samples: int) -> int:
    resolver = Resolver(Config(pod_log_dir=host.logs), Pyroute2Netlink())
    print(
        f"resolve latency in ms: median of {samples} in-process Resolver.host_veth calls a "
        f"selector, of {naive_samples} for naive (psutil over every process); on the wall "
        "clock, and in this process's CPU time (less moved by other users of the machine, "
        "though a VM's stolen time still counts)"
    )
    print(HEADER, flush=True)
    rows = []
    for size in sizes:
        started = time.perf_counter()
        host.grow(size)
        built = time.perf_counter() - started
        rows.append(measure(host, resolver, samples, naive_samples))
        rows[-1].built = built
        print_row(rows[-1])
    pods_seconds, listed = time_pods_command(host)
    print_targets(rows, pods_seconds, listed, len(host.pods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
