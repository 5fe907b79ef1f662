"""The doctor's checks: each a small pure function of the ``Facts``, so that every
failure text is tested with made-up facts; and the two ways of showing them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from vmnet_hook.cli.doctor.check import Check, fail, ok
from vmnet_hook.cli.doctor.facts import DAEMONS, LIBVIRT_HOOKS_DIR, MASQUERADE_TOOLS, Facts
from vmnet_hook.cli.doctor.pod_checks import (
    check_cgroups,
    check_container,
    check_pod_discovery,
    check_pod_logs,
)

__all__ = ["CHECKS", "Check", "fail", "ok", "render", "report"]

QEMU_D_SINCE = (6, 5)  # libvirt runs hooks/qemu.d/* since 6.5
PYROUTE2_SINCE = (0, 9)  # setup.cfg's floor: the netns and altname calls netlink.py makes


# --- the checks ------------------------------------------------------------------------


def check_config(facts: Facts) -> Check:
    path = facts.paths.config_path
    if facts.config is None:
        return fail(
            "config",
            facts.config_error,
            f"correct what the message names in {path} (or the variable), or remove "
            "the key to get its default",
        )
    where = f"{path}: valid" if os.path.exists(path) else f"{path} absent: the defaults apply"
    if facts.overrides:
        where += f" (overridden here by {', '.join(facts.overrides)}; libvirtd passes none)"
    return ok("config", where)


def check_trust(facts: Facts) -> Check:
    """The hook runs as root on every domain: it trusts only root's configuration."""
    if not facts.untrusted:
        return ok(
            "trust",
            f"{facts.paths.config_path} and the state dir {facts.settings.state_dir}: root's, "
            "writable by no one else",
        )
    details = [f"{what} {path}: {why}" for what, path, why, _fix in facts.untrusted]
    fixes = [fix for _what, _path, _why, fix in facts.untrusted]
    return fail(
        "trust",
        "; ".join(details) + " (the hook refuses it: only root's configuration is trusted)",
        "; ".join(dict.fromkeys(fixes)),
    )


def check_kernel_altname(facts: Facts) -> Check:
    release = facts.kernel_release
    if not facts.altname_error:
        return ok(
            "kernel-altname",
            f"Linux {release}: bound, looked up and unbound an altname on a veth",
        )
    if "Operation not permitted" in facts.altname_error:
        fix = (
            "run the doctor as root, with its capabilities: it tries altnames in a "
            "throwaway network namespace"
        )
    else:
        fix = (
            "the hook binds placeholders as altnames: it needs Linux >= 5.5 "
            "(RTM_NEWLINKPROP, IFLA_ALT_IFNAME) with veth support"
        )
    return fail("kernel-altname", f"Linux {release}: {facts.altname_error}", fix)


def check_libvirt_version(facts: Facts) -> Check:
    found = facts.libvirt_version
    if not found:
        return fail(
            "libvirt-version",
            f"neither libvirtd nor virsh found in {facts.paths.search_path}",
            "install libvirt (Debian: apt-get install libvirt-daemon-system)",
        )
    since = ".".join(map(str, QEMU_D_SINCE))
    if _version(found) >= QEMU_D_SINCE:
        return ok("libvirt-version", f"libvirt {found} (>= {since}: runs qemu.d hooks)")
    hook = facts.hook
    if hook is not None and hook.path == facts.paths.dropin_hook:
        return fail(
            "libvirt-version",
            f"libvirt {found} does not run {hook.path}: qemu.d hooks need >= {since}",
            f"upgrade libvirt, or make {facts.paths.main_hook} run {hook.path} "
            "with the same arguments and stdin",
        )
    return ok(
        "libvirt-version",
        f"libvirt {found} (< {since}: only {facts.paths.main_hook} runs, which is ours)",
    )


def check_hook_layout(facts: Facts) -> Check:
    main, dropin = facts.main_hook, facts.dropin_hook
    if main.ours and dropin.ours:
        return fail(
            "hook-layout",
            f"installed twice, as {main.path} and {dropin.path}: libvirt runs it twice",
            "run install.sh again: it keeps one copy",
        )
    if main.ours:
        return ok("hook-layout", f"{main.path} (installed by install.sh)")
    if dropin.ours:
        beside = "another program's hook" if main.exists else "absent"
        return ok("hook-layout", f"{dropin.path} (installed by install.sh); {main.path}: {beside}")
    if main.exists:
        return fail(
            "hook-layout",
            f"{main.path} is another program's hook and {dropin.path} is missing",
            f"run install.sh as root: it installs {dropin.path} and leaves {main.path} as it is",
        )
    return fail(
        "hook-layout",
        f"no vmnet-hook hook in {facts.paths.hooks_dir}",
        "run install.sh as root",
    )


def check_hook_runs(facts: Facts) -> Check:
    hook, interpreter = facts.hook, facts.interpreter
    rerun = "run install.sh again: it writes its environment's interpreter into the hook"
    if hook is None:
        return fail("hook-runs", "no hook of ours to run", "run install.sh as root")
    if not hook.executable:
        return fail(
            "hook-runs",
            f"{hook.path} is not executable",
            f"chmod 0755 {hook.path}, or run install.sh again",
        )
    if not hook.interpreter.startswith("/") or os.path.basename(hook.interpreter) == "env":
        return fail(
            "hook-runs",
            f"{hook.path} starts with #!{hook.shebang}: libvirtd runs hooks with a "
            "bare PATH and no virtual environment",
            rerun,
        )
    if interpreter is None or not interpreter.versions:
        error = interpreter.error if interpreter else "not run"
        return fail(
            "hook-runs",
            f"{hook.interpreter} (from {hook.path}) cannot import vmnet_hook: {error}",
            rerun,
        )
    version = interpreter.versions.get("vmnet_hook", "?")
    return ok(
        "hook-runs",
        f"{hook.path} runs {hook.interpreter}, which imports vmnet_hook {version}",
    )


def check_libvirtd(facts: Facts) -> Check:
    daemon, hook = facts.daemon, facts.hook
    if daemon is None:
        return fail(
            "libvirtd",
            f"no {' or '.join(DAEMONS)} process running",
            "start libvirtd (libvirtd -d, or its service): it finds the hook when it starts",
        )
    running = f"{daemon.name} (pid {daemon.pid}) started {_when(daemon.started_at)}"
    if hook is None:
        return fail(
            "libvirtd",
            f"{running}; no hook of ours installed for it to run",
            "run install.sh as root",
        )
    if facts.paths.hooks_dir != LIBVIRT_HOOKS_DIR:
        running += f" (it reads {LIBVIRT_HOOKS_DIR}, not {facts.paths.hooks_dir})"
    if daemon.started_at >= hook.mtime:
        return ok("libvirtd", f"{running}, after {hook.path} was written")
    if facts.hup_pid == daemon.pid and facts.hup_at >= hook.mtime:
        return ok(
            "libvirtd",
            f"{running}; install.sh sent it SIGHUP {_when(facts.hup_at)}, after "
            f"{hook.path} was written",
        )
    return fail(
        "libvirtd",
        f"{running}, before {hook.path} was written {_when(hook.mtime)}: it does not "
        "run the hook until it reloads",
        f"kill -HUP {daemon.pid} (or restart {daemon.name}) so that it rescans "
        f"{LIBVIRT_HOOKS_DIR}",
    )


def check_pyroute2(facts: Facts) -> Check:
    since = ".".join(map(str, PYROUTE2_SINCE))
    interpreter = facts.interpreter
    if interpreter is not None and "pyroute2" in interpreter.versions:
        found, where = interpreter.versions["pyroute2"], f"the hook's {interpreter.path}"
    else:
        found, where = facts.own_pyroute2, f"this doctor's {sys.executable} (not the hook's)"
    if not found:
        return fail(
            "pyroute2",
            f"not importable by {where}",
            "run install.sh again: it installs pyroute2 with the package",
        )
    if _version(found) < PYROUTE2_SINCE:
        return fail(
            "pyroute2",
            f"pyroute2 {found} in {where}: vmnet-hook needs >= {since}",
            "run install.sh again: it installs pyroute2 >= " + since,
        )
    return ok("pyroute2", f"pyroute2 {found} in {where}")


def check_selinux(facts: Facts) -> Check:
    selinux = facts.selinux
    if not selinux.enforcing:
        state = "permissive" if selinux.enforcing is False else "not enforcing"
        return ok("selinux", f"SELinux {state}")
    if selinux.hooks_unconfined:
        return ok("selinux", "SELinux enforcing; virt_hooks_unconfined is on")
    if selinux.hooks_unconfined is None:
        return fail(
            "selinux",
            "SELinux enforcing and the policy has no virt_hooks_unconfined boolean: "
            "the hook runs confined, and may not enter pods' network namespaces",
            "look for the hook's denials (ausearch -m avc -ts recent) and allow them "
            "in a local policy module",
        )
    return fail(
        "selinux",
        "SELinux enforcing and virt_hooks_unconfined is off: the hook runs confined, "
        "and may not enter pods' network namespaces",
        "setsebool -P virt_hooks_unconfined on",
    )


def check_masquerade_tools(facts: Facts) -> Check:
    if not facts.missing_tools:
        return ok("masquerade", "dnsmasq and nft found: network='masquerade' can build pods' side")
    packages = " ".join(MASQUERADE_TOOLS[tool] for tool in facts.missing_tools)
    return fail(
        "masquerade",
        f"{' and '.join(facts.missing_tools)} not found: network='masquerade' (the default) "
        "cannot start; network='l2' still works",
        f"apt-get install {packages}",
    )


CHECKS: tuple[Callable[[Facts], Check], ...] = (
    check_config,
    check_trust,
    check_kernel_altname,
    check_libvirt_version,
    check_hook_layout,
    check_hook_runs,
    check_libvirtd,
    check_pyroute2,
    check_cgroups,
    check_pod_discovery,
    check_pod_logs,
    check_selinux,
    check_masquerade_tools,
    check_container,
)


def render(checks: list[Check]) -> str:
    """One table, one line per check; then what to fix for each that did not pass."""
    width = max((len(check.name) for check in checks), default=0)
    lines = [f"{check.status:<4}  {check.name:<{width}}  {check.detail}" for check in checks]
    fixes = [check for check in checks if not check.ok]
    if fixes:
        lines += ["", "To fix:"]
        lines += [f"  {check.name}: {check.fix}" for check in fixes]
    failed = sum(check.failed for check in checks)
    warned = sum(not check.ok and not check.failed for check in checks)
    passed = len(checks) - failed - warned
    lines += [
        "",
        f"{len(checks)} checks: {passed} ok, {failed} failed, {warned} "
        + ("warning" if warned == 1 else "warnings"),
    ]
    return "\n".join(lines)


def report(checks: list[Check]) -> dict[str, object]:
    """The JSON form: ``ok`` is false when any check failed (warnings do not count)."""
    return {
        "ok": not any(check.failed for check in checks),
        "checks": [check.as_dict() for check in checks],
    }


def _version(text: str) -> tuple[int, ...]:
    numbers: list[int] = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
