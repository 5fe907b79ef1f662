"""CI fault-injection loop (issue 11): a two-NIC domain, one NIC ``masquerade`` and one
``l2``, both on one pod, is prepared by the real hooks/qemu, run as libvirt runs it, and
SIGKILLed at a step chosen uniformly over the whole prepare (gate, config, resolving, the
lock, the state file, the altname, the pod side: link, sysctls, nft, dnsmasq). Then, as
libvirt may, the round runs ``release end``, or a new ``prepare begin`` (which must succeed
with both NICs, each held once) and its ``release end``. Some rounds kill that release too
and run it again. After every round the host and the pod must be exactly as found.

Steps are counted by tests/killpoint.py (its docstring says what a step is and why):
one unkilled calibration run of each operation gives its total T; each round draws its
kill point N uniformly in 1..T from a ``random.Random`` seeded from VMNET_FAULT_LOOP_SEED,
or at random (printed, and named in every failure with N, T and the function the kill
landed in: rerun with it to replay the same kills).

Runtime on the 2-core development machine: about 60 s for the 100 rounds.
"""

from __future__ import annotations

import difflib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import HOOK, REPO
from tests.guest import podnets as pn
from tests.guest.podnets import podnet_guard, podnets
from tests.test_hook_kernel import altnames, link_exists

__all__ = ["podnet_guard", "podnets"]

pytestmark = pytest.mark.kernel

ROUNDS = 100
RELEASE_KILL_SHARE = 0.25  # rounds whose last release is killed too, then run again
SEED_VARIABLE = "VMNET_FAULT_LOOP_SEED"
KILLPOINT = REPO / "tests" / "killpoint.py"
DOMAIN = "vm-fault-loop"
MASQ_MAC, L2_MAC = "52:54:00:00:0f:01", "52:54:00:00:0f:02"
Next = Literal["release", "prepare"]


@dataclass(frozen=True)
class Setup:
    """The pod (its ``eth0`` masqueraded, its ``eth1`` bound ``l2``) and the domain."""

    pod: pn.Pod
    l2_host_veth: str  # eth1's host end, which the l2 placeholder becomes an altname of
    uuid: str
    masq_placeholder: str
    l2_placeholder: str
    state_dir: Path

    @property
    def xml(self) -> str:
        return f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <uuid>{self.uuid}</uuid>
  <metadata>
    <vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">
      <vmnet:interface network="masquerade" mac="{MASQ_MAC}" pid="{self.pod.pid}" dev="eth0"/>
      <vmnet:interface network="l2" mac="{L2_MAC}" pid="{self.pod.pid}" dev="eth1"/>
    </vmnet:interfaces>
  </metadata>
  <devices>
    <interface type='direct'>
      <mac address='{MASQ_MAC}'/><source dev='{self.masq_placeholder}' mode='bridge'/>
    </interface>
    <interface type='direct'>
      <mac address='{L2_MAC}'/><source dev='{self.l2_placeholder}' mode='bridge'/>
    </interface>
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str
    report: str  # killpoint's last line: "total T", or the step it died at; "" if run plainly
    group: int  # its process group, which the children it started (nft, dnsmasq) share

    def shown(self) -> str:
        return f"exit {self.status}, stderr {self.stderr.strip()!r}, killpoint {self.report!r}"


@dataclass(frozen=True)
class Round:
    number: int
    prepare_at: int  # N: the step of the first prepare that kills it
    then: Next
    release_at: int  # the step of the last release that kills it; 0: not killed


@dataclass(frozen=True)
class Hook:
    """hooks/qemu for one domain, run as libvirt does; under tests/killpoint.py when a
    kill point is given."""

    setup: Setup
    env: dict[str, str]
    report: Path

    def run(self, operation: str, subop: str, kill_at: int | None = None) -> Outcome:
        argv = [sys.executable, str(HOOK), DOMAIN, operation, subop, "-"]
        env = self.env
        if kill_at is not None:
            argv.insert(1, str(KILLPOINT))
            env = {**env, "KILLPOINT_AT": str(kill_at), "KILLPOINT_REPORT": str(self.report)}
            self.report.unlink(missing_ok=True)
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) as hook:  # fmt: skip
            stdout, stderr = hook.communicate(self.setup.xml, timeout=60)
        report = ""
        if kill_at is not None and self.report.exists():
            report = self.report.read_text().strip()
        return Outcome(hook.returncode, stdout, stderr, report, hook.pid)

    def total(self, operation: str, subop: str) -> int:
        """Calibration: the steps of one unkilled run."""
        done = self.run(operation, subop, kill_at=0)
        assert done.status == 0 and done.report.startswith("total "), done.shown()
        return int(done.report.split()[1])


# -- what must hold -------------------------------------------------------------------------


def world(setup: Setup) -> dict[str, str]:
    """Everything a round must leave as found: the pod's namespace (links, addresses,
    routes, rules, neighbours, forwarding sysctls, nft ruleset, processes) and, on the host,
    the placeholders, the l2 veth's altnames, the state dir and live dnsmasqs of it."""
    found = pn.snapshot(setup.pod.netns)
    found["host altnames"] = f"{setup.l2_host_veth}: {altnames(setup.l2_host_veth)}\n"
    found["host placeholders"] = "".join(
        f"{name} names a host link\n"
        for name in (setup.masq_placeholder, setup.l2_placeholder)
        if link_exists(name)
    )
    found["state dir"] = "".join(f"{name}\n" for name in state_files(setup.state_dir))
    found["dnsmasq of the state dir"] = "".join(
        f"{pid} {cmdline}\n" for pid, cmdline in live_dnsmasqs(setup.state_dir)
    )
    return found


def state_files(state_dir: Path) -> list[str]:
    """What the state dir holds besides its lock: state, temporary, pid and lease files."""
    try:
        return sorted(name for name in os.listdir(state_dir) if name != ".lock")
    except FileNotFoundError:
        return []


def processes() -> Iterator[tuple[int, list[str], str]]:
    """Each process: its pid, its /proc/PID/stat fields after the name (state, ppid, pgrp,
    ...) and its command line."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # gone meanwhile
        yield int(entry), fields, cmdline.decode(errors="replace").strip()


def live_dnsmasqs(state_dir: Path) -> list[tuple[int, str]]:
    """Live dnsmasqs naming ``state_dir`` (a zombie is gone: PID 1 does not reap here)."""
    return sorted(
        (pid, cmdline)
        for pid, fields, cmdline in processes()
        if fields[0] != "Z"
        and str(state_dir) in cmdline
        and os.path.basename(cmdline.split(" ", 1)[0]) == "dnsmasq"
    )


def stragglers(group: int, seconds: float = 6) -> list[str]:
    """Waits for what a killed hook's process group still runs (a child started just before
    the kill runs on, as under libvirt); what is still alive after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [f"{pid} {cmdline}" for pid, fields, cmdline in processes()
                 if fields[2] == str(group) and fields[0] != "Z"]  # fmt: skip
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def differences(before: dict[str, str], after: dict[str, str]) -> str:
    """A unified diff of each part that changed; empty when none did."""
    parts = []
    for name in before:
        if before[name] != after[name]:
            diff = difflib.unified_diff(before[name].splitlines(), after[name].splitlines(),
                                        "as found", "after the round", lineterm="", n=1)  # fmt: skip
            parts.append(f"[{name}]\n" + "\n".join(list(diff)[2:42]))
    return "\n".join(parts)


def held_once(setup: Setup, prepared: Outcome) -> list[str]:
    """After a prepare that succeeded: both NICs given, each pod NIC held exactly once."""
    inside = pn.snapshot(setup.pod.netns)
    tag = f"uuid={setup.uuid}"
    checks = {
        "rewritten l2 <source dev>": f'<source dev="{setup.l2_host_veth}"' in prepared.stdout,
        "rewritten masquerade <source dev>":
            f'<source dev="{setup.masq_placeholder}"' in prepared.stdout,
        "one altname on the l2 veth": altnames(setup.l2_host_veth) == [setup.l2_placeholder],
        "the guest link's host end": link_exists(setup.masq_placeholder),
        "one guest link in the pod": inside["links"].count(tag) == 1,
        "one nft table in the pod": inside["nftables"].count(tag) == 1,
        "one dnsmasq": len(live_dnsmasqs(setup.state_dir)) == 1,
        "one state file": [n for n in state_files(setup.state_dir) if n.endswith(".json")]
        == [f"{setup.uuid}.json"],
    }  # fmt: skip
    return [what for what, holds in checks.items() if not holds]


# -- the loop -------------------------------------------------------------------------------


def plan_rounds(rng: random.Random, prepare_total: int, release_total: int) -> list[Round]:
    """Each kill point is drawn as a fraction of the run, then scaled to its T: a replay on
    a host where T differs by a few steps (polling loops, listings) kills at the same place
    to within those steps."""
    rounds = []
    for number in range(1, ROUNDS + 1):
        prepare_at = 1 + int(rng.random() * prepare_total)
        then: Next = rng.choice(["release", "prepare"])
        killed, where = rng.random() < RELEASE_KILL_SHARE, rng.random()
        release_at = 1 + int(where * release_total) if killed else 0
        rounds.append(Round(number, prepare_at, then, release_at))
    return rounds


@dataclass
class Played:
    """What a round did (for the failure message), what went wrong, where the kill landed."""

    log: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    landed: str = "nowhere: the prepare ran to its end"


def play(hook: Hook, plan: Round) -> Played:
    played = Played()
    killed = hook.run("prepare", "begin", kill_at=plan.prepare_at)
    played.log.append(f"prepare killed at N={plan.prepare_at}: {killed.shown()}")
    if killed.status == -signal.SIGKILL and not killed.report.startswith("total"):
        played.landed = killed.report.split()[2].removeprefix("vmnet_hook.")
    killed_groups = [expect_killed_or_done(played, killed)]
    if plan.then == "prepare":
        prepare_again(hook, played)
    if plan.release_at:
        cut = hook.run("release", "end", kill_at=plan.release_at)
        played.log.append(f"release killed at N={plan.release_at}: {cut.shown()}")
        killed_groups.append(expect_killed_or_done(played, cut))
    released = hook.run("release", "end")
    played.log.append(f"release: {released.shown()}")
    if (released.status, released.stderr) != (0, ""):
        played.wrong.append("release end failed")
    for group in killed_groups:  # their children's late work must be undone too: wait for it
        played.wrong += [f"still running after 6 s, from a killed hook: {process}"
                         for process in stragglers(group)]  # fmt: skip
    return played


def expect_killed_or_done(played: Played, run: Outcome) -> int:
    """A run under killpoint dies by SIGKILL at its step, or ends well (N past its end)."""
    killed = run.status == -signal.SIGKILL and not run.report.startswith("total ")
    done = (run.status, run.stderr) == (0, "") and run.report.startswith("total ")
    if not (killed or done):
        played.wrong.append("a run under killpoint ended otherwise than at its kill point")
    return run.group


def prepare_again(hook: Hook, played: Played) -> None:
    prepared = hook.run("prepare", "begin")
    played.log.append(f"prepare again: {prepared.shown()}")
    if (prepared.status, prepared.stderr) != (0, ""):
        played.wrong.append("the prepare after the kill failed")
    else:
        missing = held_once(hook.setup, prepared)
        played.wrong += [f"after the prepare again, not so: {what}" for what in missing]


@pytest.fixture
def setup(podnets: pn.Podnets, hook_env: dict[str, str]) -> Iterator[Setup]:
    """A routed pod with a second veth NIC, ``eth1``, and a domain with random names; its
    state dir (hook_env's) is emptied of dnsmasqs at teardown, pass or fail."""
    pod = podnets.routed().pod()
    l2_host_veth = pn.link_name()
    pod.stack.callback(pn.quietly, "ip", "link", "del", l2_host_veth)
    pn.ip("link", "add", l2_host_veth, "type", "veth", "peer", "name", "eth1", "netns", pod.netns)
    pn.ip("link", "set", l2_host_veth, "up")
    pn.ip("-n", pod.netns, "link", "set", "eth1", "up")
    state_dir = Path(hook_env["VMNET_HOOK_STATE_DIR"])
    made = Setup(pod, l2_host_veth, str(uuidlib.uuid4()), f"vn{secrets.token_hex(6)}",
                 f"vn{secrets.token_hex(6)}", state_dir)  # fmt: skip
    try:
        yield made
    finally:
        subprocess.run([sys.executable, str(HOOK), DOMAIN, "release", "end", "-"], input=made.xml,
                       capture_output=True, text=True, env=hook_env, timeout=60, check=False)  # fmt: skip
        for pid, _cmdline in live_dnsmasqs(state_dir):
            os.kill(pid, signal.SIGKILL)
        pn.quietly("ip", "link", "del", made.masq_placeholder)


def test_killed_prepares_and_releases_leave_nothing_behind(
    setup: Setup, hook_env: dict[str, str], tmp_path: Path
) -> None:
    seed = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**32))
    print(f"fault loop: {SEED_VARIABLE}={seed}")
    hook = Hook(setup, hook_env, tmp_path / "killpoint")
    as_found = world(setup)
    prepare_total = hook.total("prepare", "begin")
    release_total = hook.total("release", "end")
    left = differences(as_found, world(setup))
    assert left == "", f"an unkilled prepare and release left something behind:\n{left}"
    print(f"fault loop: T={prepare_total} steps per prepare, {release_total} per release")
    landed: Counter[str] = Counter()
    for plan in plan_rounds(random.Random(seed), prepare_total, release_total):
        played = play(hook, plan)
        landed[played.landed] += 1
        changed = differences(as_found, world(setup))
        wrong = played.wrong + (["not as found after the round:\n" + changed] if changed else [])
        assert not wrong, (
            f"round {plan.number} of {ROUNDS}, prepare killed at N={plan.prepare_at} of "
            f"T={prepare_total}, then {plan.then}, release killed at N={plan.release_at} of "
            f"T={release_total} (0: not killed), {SEED_VARIABLE}={seed}\n"
            + "\n".join(played.log + wrong)
        )
    print(
        "fault loop: prepares killed in " + ", ".join(f"{m} {n}" for m, n in landed.most_common())
    )
