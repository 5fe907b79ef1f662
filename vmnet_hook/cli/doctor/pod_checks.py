"""The doctor's checks of how pods are found from where the hook runs: cgroups, kubelet's
pod logs, and the container the doctor may itself be in. Pure functions of the facts."""

from __future__ import annotations

from vmnet_hook.cli.doctor.check import Check, fail, ok
from vmnet_hook.cli.doctor.facts import Facts


def check_cgroups(facts: Facts) -> Check:
    mounts_file = f"{facts.settings.proc_root}/self/mounts"
    if not facts.cgroup_mounts:
        return fail(
            "cgroups",
            f"no cgroup or cgroup2 mount in {mounts_file}: pod, pod-uid and container "
            "selectors cannot find a pod's processes",
            "mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup), or set proc_root to "
            "a /proc that sees the host's mounts",
        )
    v2 = [point for kind, point in facts.cgroup_mounts if kind == "cgroup2"]
    v1 = [point for kind, point in facts.cgroup_mounts if kind == "cgroup"]
    parts = [f"cgroup2 at {', '.join(v2)}"] if v2 else []
    parts += [f"{len(v1)} cgroup v1 hierarchies"] if v1 else []
    return ok("cgroups", f"{'; '.join(parts)} (from {mounts_file})")


def check_pod_discovery(facts: Facts) -> Check:
    found, walked = facts.pod_discovery, f"all {facts.pod_discovery.processes} processes"
    if found.kubepods_cgroups:
        roots = found.kubepods_cgroups
        more = f" and {len(roots) - 1} more" if len(roots) > 1 else ""
        return ok(
            "pod-discovery",
            f"pods are found through their cgroups ({roots[0]}{more}): a start reads its "
            "own pod's cgroup.procs, whatever else the host runs",
        )
    if found.pods_in_proc:
        return fail(
            "pod-discovery",
            f"no kubepods cgroup is visible in {facts.settings.proc_root}/self/mounts' cgroup "
            f"mounts, yet {found.pods_in_proc} pods' processes are in /proc (a private cgroup "
            f"namespace?): each start walks /proc, {walked} now",
            "run libvirtd (and so the hook) in the host's cgroup namespace, with the host's "
            "cgroup mounts",
            severity="warning",
        )
    return ok(
        "pod-discovery",
        "no pod here yet (no kubepods cgroup, no pod process): a start looks for its pod's "
        f"cgroup first, and walks /proc ({walked} now) only when none is visible",
    )


def check_pod_logs(facts: Facts) -> Check:
    directory = facts.settings.pod_log_dir
    if facts.pod_log_dirs is None:
        return fail(
            "pod-logs",
            f"{directory} does not exist (no kubelet here?): pod=NAMESPACE/NAME cannot "
            "be resolved; pod-uid, container, pid and netns still work",
            f"on a Kubernetes node, set pod_log_dir in {facts.paths.config_path} to "
            "kubelet's pod log directory; elsewhere, nothing to do",
            severity="warning",
        )
    return ok("pod-logs", f"{directory}: {facts.pod_log_dirs} pod directories")


NO_HOST_PID_CONFIG = "deploy/libvirtd/config-no-host-pid"
NETNS_MOUNTS = {  # the propagation of the mount at netns_dir: what it means for netns=
    "slave": "from the host, with propagation",
    "shared": "from the host, shared",
    "private": "WITHOUT propagation: namespaces pinned after the start stay invisible",
    "": "not a mount: only this container's pinned namespaces",
}


def check_container(facts: Facts) -> Check:
    """In a container: how pods can be found from there, and what to mount or set."""
    place, settings = facts.place, facts.settings
    if not place.in_container:
        return ok("container", "not in a container: the host's processes, cgroups and /run/netns")
    where = f"in a container ({', '.join(place.signs)})"
    if not place.sees_host_init:
        return fail(
            "container",
            f"{where}, and {settings.proc_root} shows only its own processes: pod=, pod-uid=, "
            "container= and pid= cannot find any pod (netns= still can)",
            "run it in the host's PID namespace (hostPID: true), or mount the host's /proc at "
            f"/host/proc and set proc_root, pod_log_dir and netns_dir as in {NO_HOST_PID_CONFIG}",
        )
    found, fixes = _how_pods_are_found(facts), _container_fixes(facts)
    detail = f"{where}; {found}"
    if fixes:
        return fail("container", detail, "; ".join(fixes), severity="warning")
    return ok("container", detail)


def _how_pods_are_found(facts: Facts) -> str:
    place, proc_root = facts.place, facts.settings.proc_root
    if place.kubepods_cgroups:
        found = f"pods are found by their own cgroups ({place.kubepods_cgroups} kubepods cgroups)"
    elif place.own_cgroupns:
        found = (f"no kubepods cgroup is visible, so pods are found by walking every process "
                 f"of {proc_root} (the cost grows with the host, not the pod)")  # fmt: skip
    else:
        found = f"no kubepods cgroup (no kubelet here?): pods are found in {proc_root}"
    netns = NETNS_MOUNTS[place.netns_mount]
    return f"{found}; {facts.settings.netns_dir}: {netns}"


def _container_fixes(facts: Facts) -> list[str]:
    place, netns_dir = facts.place, facts.settings.netns_dir
    fixes = []
    if place.own_cgroupns and not place.kubepods_cgroups:
        fixes.append("mount the host's /sys/fs/cgroup read-only (hostPath) at "
                     "/host/sys/fs/cgroup, as deploy/libvirtd/daemonset.yaml does")  # fmt: skip
    if place.netns_mount not in ("slave", "shared"):
        fixes.append(f"mount the host's /run/netns at {netns_dir} with mountPropagation: "
                     "HostToContainer (docker: -v /run/netns:/run/netns:rslave)")  # fmt: skip
    return fixes
