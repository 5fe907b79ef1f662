"""``vmnet-hook doctor``: can this host run the hook? One check per thing that can be
missing, each saying what to fix.

The side effects are gathered once, up front, into ``Facts`` (files, /proc, the hook's
interpreter run with ``-c``, ``libvirtd --version``, and a real altname bound in a throwaway
network namespace); each check is then a small pure function of the facts, so every
failure text is tested with made-up facts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from vmnet_hook.cli.doctor.checks import CHECKS, Check, render, report
from vmnet_hook.cli.doctor.facts import (
    Daemon,
    Facts,
    HookFile,
    Interpreter,
    Paths,
    PodDiscovery,
    SELinux,
)
from vmnet_hook.cli.doctor.probes import gather, probe_altnames

__all__ = [
    "CHECKS",
    "Check",
    "Daemon",
    "Facts",
    "HookFile",
    "Interpreter",
    "Paths",
    "PodDiscovery",
    "SELinux",
    "probe_altnames",
    "render",
    "report",
    "run_checks",
]


def run_checks(paths: Paths | None = None, environ: Mapping[str, str] = os.environ) -> list[Check]:
    """Gather the facts of this host (as ``paths`` says where to look), then check them."""
    facts = gather(paths or Paths(), environ)
    return [check(facts) for check in CHECKS]
