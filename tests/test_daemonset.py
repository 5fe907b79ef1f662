"""deploy/libvirtd/: the libvirtd DaemonSet with the hook inside, for real.

The image is built from the shipped recipe by a dockerd of this tier's own (no registry:
its base is ``mmdebstrap bookworm - | docker import - debian:12``), and run as the shipped
manifest says: its mounts, privileges, environment, command and readiness probe are read
from ``deploy/libvirtd/daemonset.yaml`` and turned into ``docker run`` options. Only what
a test must own is moved: libvirt's run and state directories and the hook's state dir are
test directories on the host (the host's own libvirtd runs beside it), reached from here
with ``virsh -c qemu:///system?socket=...``. A guest is then started under the container's
libvirtd on a pod made after the container started (netns=, through /run/netns's
HostToContainer propagation), gets the pod's network, and the container is stopped as
kubelet would stop it; the pod must be as it was found.

The base and built images are kept in the tier's docker data root between runs, the built
one tagged with a hash of what the recipe copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from kubernetes_validate.utils import resources_from_file  # type: ignore[import-untyped]

from tests.conftest import REPO
from tests.guest import Guest, GuestImage, direct_interface_xml, random_mac
from tests.guest import podnets as pn
from tests.guest.image import CACHE_ROOT
from tests.guest.podnets import podnet_guard, podnets
from tests.guest.vm import Libvirt
from tests.test_deploy import KUBERNETES_VERSIONS
from tests.test_guest_network import (
    POD_TCP,
    Scene,
    assert_reach,
    placeholder,
    serve_in_guest,
)

__all__ = ["podnet_guard", "podnets"]

LIBVIRTD = REPO / "deploy" / "libvirtd"
MANIFEST = LIBVIRTD / "daemonset.yaml"
RECIPE = LIBVIRTD / "Containerfile"
WHEELS = LIBVIRTD / "wheels"  # deploy/fetch-wheels.sh puts them there before the build
DOCKER = "/usr/bin/docker"  # /usr/local/bin/docker is too new for Debian's dockerd
DOCKER_SOCKET = "/run/vmnet-test-docker-ds.sock"
DOCKER_ROOT = Path("/var/lib/vmnet-test-docker-ds")  # data root kept: the image cache
BASE_IMAGE = "debian:12"
IMAGE_REPOSITORY = "vmnet-hook-libvirtd"
# Host paths of the manifest that this test moves to directories of its own.
OWNED_HOST_PATHS = ("/run/libvirt", "/var/lib/libvirt", "/run/vmnet-hook")
GUEST_ROOT = Path("/var/lib/vmnet-test-ds-guests")  # guests' files, same path inside
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SHUTDOWN_TIMEOUT = "5"  # the busybox guest ignores ACPI: destroyed after this


# --- the manifest, as docker run options (pure) ---------------------------------------


def resources() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in resources_from_file(str(MANIFEST))}


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resources()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def the_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    assert isinstance(container, dict)
    return container


PROPAGATION = {"HostToContainer": "rslave", "Bidirectional": "rshared", "None": "rprivate"}
# What `privileged: true` is on this machine, where --privileged fails: its bounding set
# lacks CAP_SYS_RESOURCE. systempaths=unconfined: /proc/sys writable (the hook sets
# forwarding sysctls in pods) and nothing in /proc masked, as privileged gives.
PRIVILEGED = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--device-cgroup-rule", "a *:* rwm",
]  # fmt: skip


def mount_options(spec: dict[str, Any], sources: dict[str, str]) -> list[str]:
    """``-v`` options for the container's volumeMounts; ``sources`` gives each volume's
    path on this host (hostPath volumes default to their own path)."""
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    options = []
    for mount in the_container_of(spec)["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = sources.get(mount["name"]) or volume["hostPath"]["path"]
        modes = ["ro" if mount.get("readOnly") else "rw"]
        modes += [PROPAGATION[mount["mountPropagation"]]] if "mountPropagation" in mount else []
        options += ["-v", f"{source}:{mount['mountPath']}:{','.join(modes)}"]
    return options


def the_container_of(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = spec["containers"]
    assert isinstance(container, dict)
    return container


def run_options(spec: dict[str, Any], sources: dict[str, str]) -> list[str]:
    """``docker run`` options for the pod: namespaces, privileges, mounts, environment."""
    container = the_container_of(spec)
    options = ["--network", "host"] if spec.get("hostNetwork") else []
    options += ["--pid", "host"] if spec.get("hostPID") else []
    options += PRIVILEGED if container["securityContext"].get("privileged") else []
    options += mount_options(spec, sources)
    for item in container.get("env", []):
        options += ["-e", f"{item['name']}={item['value']}"]
    entrypoint, *args = container["command"]
    return [*options, "--entrypoint", entrypoint, *args]


def config_map_files() -> dict[str, str]:
    return dict(resources()["ConfigMap"]["data"])


# --- the manifest itself ----------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    found = resources()
    assert sorted(found) == ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"]
    for resource in found.values():
        kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.kernel  # a network namespace with nothing in it: no network at all
def test_validation_needs_no_network() -> None:
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "kubernetes_validate", "--strict", str(MANIFEST)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == 4, result.stdout


def test_strict_validation_catches_a_misspelt_field() -> None:
    daemonset = resources()["DaemonSet"]
    daemonset["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_pod_has_what_libvirtd_and_the_hook_need() -> None:
    spec, container = pod_spec(), the_container()
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert container["securityContext"]["privileged"] is True
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    host_path = {path: volumes[mount["name"]].get("hostPath", {}).get("path")
                 for path, mount in mounts.items()}  # fmt: skip
    assert host_path["/dev"] == "/dev"  # a macvtap's /dev/tapN appears only there
    assert mounts["/var/log/pods"]["readOnly"] is True
    assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    for path in OWNED_HOST_PATHS:
        assert host_path[path] == path
    config = volumes[mounts["/etc/vmnet-hook"]["name"]]["configMap"]["name"]
    assert config == resources()["ConfigMap"]["metadata"]["name"]
    assert "[vmnet-hook]" in config_map_files()["config"]
    assert "limits" not in container["resources"]  # the VMs run in this pod's cgroup


def test_the_grace_period_covers_the_guests_shutdown() -> None:
    env = {item["name"]: item["value"] for item in the_container()["env"]}
    assert pod_spec()["terminationGracePeriodSeconds"] >= int(env["SHUTDOWN_TIMEOUT"]) + 30


def test_the_probe_is_the_doctor_and_the_node_label_excludes_the_host_install() -> None:
    probe = the_container()["readinessProbe"]
    assert probe["exec"]["command"] == ["/usr/local/sbin/vmnet-hook", "doctor"]
    assert probe["timeoutSeconds"] >= 10
    host_install = (REPO / "deploy" / "daemonset.yaml").read_text()
    assert 'vmnet-hook/libvirtd: "true"' in host_install
    assert pod_spec()["nodeSelector"]["vmnet-hook/libvirtd"] == "pod"


def test_the_manifest_runs_what_the_image_holds() -> None:
    entrypoint = [line for line in RECIPE.read_text().splitlines()
                  if line.startswith("ENTRYPOINT ")]  # fmt: skip
    assert the_container()["command"] == json.loads(entrypoint[0].removeprefix("ENTRYPOINT "))


def test_run_options_follow_the_manifest() -> None:
    options = run_options(pod_spec(), {"libvirt-run": "/tmp/x/run", "config": "/tmp/x/config"})
    assert options[:4] == ["--network", "host", "--pid", "host"]
    assert "/tmp/x/run:/run/libvirt:rw" in options
    assert "/run/netns:/run/netns:rw,rslave" in options
    assert "/var/log/pods:/var/log/pods:ro" in options
    assert "/tmp/x/config:/etc/vmnet-hook:ro" in options
    assert "SHUTDOWN_TIMEOUT=60" in options
    assert options[-2:] == ["--entrypoint", "/usr/src/vmnet-hook/deploy/libvirtd/entrypoint.sh"]


def test_libvirtd_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (tests/setup-system.sh installs it)")
    scripts = [str(LIBVIRTD / "entrypoint.sh"), str(REPO / "tests" / "setup-daemonset.sh")]
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout


# --- docker -----------------------------------------------------------------------------


def docker(*args: str, timeout: float = 120, check: bool = True,
           stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        [DOCKER, "-H", f"unix://{DOCKER_SOCKET}", *args], capture_output=True, text=True,
        timeout=timeout, check=False, stdin=stdin,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}... failed:\n{result.stderr[-3000:]}")
    return result


def _stop_stale_dockerd(pidfile: Path) -> None:
    """A dockerd of this tier left by a killed run (its pid file and name say so)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd":
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[None]:
    """This tier's own dockerd: own data, exec root, pid file and socket; no bridge, no
    iptables, and the host's ip_forward left alone (the libvirtd container uses the host's
    network; new namespaces inherit ip_forward, and the pod networks of other tiers count
    on it staying as found: it is put back, should anything have changed it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    setup = subprocess.run(["bash", str(REPO / "tests" / "setup-daemonset.sh")],
                           capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert setup.returncode == 0, setup.stdout + setup.stderr
    pidfile = DOCKER_ROOT / "dockerd.pid"
    _stop_stale_dockerd(pidfile)
    ip_forward = IP_FORWARD.read_text()
    (DOCKER_ROOT / "data").mkdir(parents=True, exist_ok=True)
    log = open(DOCKER_ROOT / "dockerd.log", "ab")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        ["/usr/sbin/dockerd", "--data-root", str(DOCKER_ROOT / "data"),
         "--exec-root", str(DOCKER_ROOT / "exec"), "--pidfile", str(pidfile),
         "-H", f"unix://{DOCKER_SOCKET}", "--bridge=none", "--iptables=false",
         "--ip6tables=false", "--ip-forward=false", "--exec-opt", "native.cgroupdriver=cgroupfs",
         "--containerd-namespace", "vmnet-ds", "--containerd-plugins-namespace", "vmnet-ds-p"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while docker("version", check=False, timeout=10).returncode != 0:
            assert process.poll() is None, f"dockerd exited: see {DOCKER_ROOT}/dockerd.log"
            assert time.monotonic() < deadline, "dockerd does not answer after 60 s"
            time.sleep(0.2)
        for stale in docker("ps", "-aq", "--filter", "name=vmnet-ds-").stdout.split():
            docker("rm", "-f", stale, check=False)  # left by a killed run
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if IP_FORWARD.read_text() != ip_forward:
            IP_FORWARD.write_text(ip_forward)


def make_base() -> None:
    """``mmdebstrap bookworm - | docker import - debian:12``."""
    with subprocess.Popen(["mmdebstrap", "--quiet", "bookworm", "-"], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL) as base:  # fmt: skip
        imported = docker("import", "-", BASE_IMAGE, stdin=base.stdout, timeout=900, check=False)
        assert base.stdout is not None
        base.stdout.close()
        assert base.wait(timeout=60) == 0, "mmdebstrap bookworm failed (see its stderr above)"
    assert imported.returncode == 0, imported.stderr


def fetch_wheels() -> None:
    """The recipe's first step, as the README says, again when setup.cfg changed."""
    stamp = WHEELS / ".setup.cfg.sha256"
    wanted = hashlib.sha256((REPO / "setup.cfg").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    shutil.rmtree(WHEELS, ignore_errors=True)
    fetch = subprocess.run([str(REPO / "deploy" / "fetch-wheels.sh"), str(WHEELS), "3.11"],
                           capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    stamp.write_text(wanted)


def recipe_hash() -> str:
    """A hash of the recipe and of everything its COPY lines take from the checkout."""
    digest = hashlib.sha256()
    paths = [RECIPE]
    for line in RECIPE.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                found = REPO / source
                paths += sorted(found.rglob("*")) if found.is_dir() else [found]
    for path in paths:
        if path.is_file() and not {"__pycache__", "wheels"} & set(path.parts):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _progress(message: str) -> None:
    print(f"daemonset tier: {message}", flush=True)


@pytest.fixture(scope="module")
def image(dockerd: None) -> str:
    """The image built from deploy/libvirtd/Containerfile, reused when nothing it copies
    changed; its base made with mmdebstrap when this dockerd has none."""
    tag = f"{IMAGE_REPOSITORY}:test-{recipe_hash()}"
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        _progress(f"making {BASE_IMAGE} with mmdebstrap")
        make_base()
    fetch_wheels()
    _progress(f"docker build -f {RECIPE.relative_to(REPO)} -t {tag}")
    docker("build", "--network", "host", "-f", str(RECIPE), "-t", tag, str(REPO), timeout=1200)
    for old in docker(
        "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPOSITORY
    ).stdout.split():
        if old != tag:  # one built image kept: the cache stays the size of one
            docker("rmi", old, check=False)
    docker("image", "prune", "--force", check=False)
    return tag


# --- the container ----------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """The running libvirtd container and where its host-side directories are."""

    name: str
    root: Path  # the test's stand-ins for OWNED_HOST_PATHS are below it
    libvirt: Libvirt

    def exec(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *argv, timeout=timeout, check=False)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    @property
    def hook_state(self) -> Path:
        return self.root / "run" / "vmnet-hook"


def _owned_sources(root: Path) -> dict[str, str]:
    """The manifest's volumes to move (by volume name) and the ConfigMap's directory."""
    spec = pod_spec()
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    sources = {}
    for name, volume in volumes.items():
        path = volume.get("hostPath", {}).get("path")
        if path in OWNED_HOST_PATHS:
            sources[name] = str(root / path.lstrip("/"))
        elif "configMap" in volume:
            sources[name] = str(root / "configmap" / name)
    for source in sources.values():
        Path(source).mkdir(parents=True, exist_ok=True)
    (config_dir,) = [Path(sources[n]) for n, v in volumes.items() if "configMap" in v]
    for key, text in config_map_files().items():
        (config_dir / key).write_text(text)
    return sources


def wait_ready(node: Node, timeout: float = 180) -> str:
    """Run the manifest's readiness probe until it passes; its output."""
    command = the_container()["readinessProbe"]["exec"]["command"]
    deadline = time.monotonic() + timeout
    while True:
        result = node.exec(*command, timeout=60)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout} s:\n{result.stdout}\n{node.logs()}")
        time.sleep(1)


@pytest.fixture(scope="module")
def node(image: str, podnet_guard: str) -> Iterator[Node]:
    root = Path(f"/run/vmnet-test-ds-{secrets.token_hex(4)}")
    root.mkdir(mode=0o755)
    GUEST_ROOT.mkdir(mode=0o755, exist_ok=True)
    run_dir = root / "run" / "libvirt"
    libvirt = Libvirt(f"qemu:///system?socket={run_dir}/libvirt-sock", run_dir, GUEST_ROOT)
    node = Node(f"vmnet-ds-{secrets.token_hex(4)}", root, libvirt)
    options = run_options(pod_spec(), _owned_sources(root))
    entrypoint_at = options.index("--entrypoint")
    # A cgroup namespace of its own, as Kubernetes gives on cgroup v2 nodes (docker's
    # default here, on a cgroup v1 host, would be the host's).
    extra = ["--cgroupns", "private","-e", f"SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}",
             "-v", f"{CACHE_ROOT}:{CACHE_ROOT}:ro", "-v", f"{GUEST_ROOT}:{GUEST_ROOT}:rw"]  # fmt: skip
    argv = [*options[:entrypoint_at], *extra, "--name", node.name, "-d",
            options[entrypoint_at], options[entrypoint_at + 1], image, *options[entrypoint_at + 2:]]  # fmt: skip
    docker("run", *argv)
    try:
        yield node
    finally:
        logs = node.logs()
        docker("rm", "-f", node.name, check=False, timeout=180)
        shutil.rmtree(root, ignore_errors=True)
        print(f"container log:\n{logs}")


# --- the tests --------------------------------------------------------------------------


def netns_annotation(mac: str, netns: str, **extra: str) -> str:
    attributes = " ".join(f'{key}="{value}"' for key, value in extra.items())
    return (
        '<vmnet:interfaces xmlns:vmnet="urn:vmnet-hook:1">'
        f'<vmnet:interface mac="{mac}" netns="{netns}" dev="eth0" {attributes}/>'
        "</vmnet:interfaces>"
    )


@pytest.mark.daemonset
def test_the_image_installs_the_hook_and_the_probe_passes(node: Node) -> None:
    report = wait_ready(node)
    assert "0 failed" in report, report
    doctor = json.loads(node.exec("/usr/local/sbin/vmnet-hook", "doctor", "--json").stdout)
    checks = {check["name"]: check for check in doctor["checks"]}
    assert "own cgroup namespace" in checks["container"]["detail"], checks["container"]


@pytest.mark.daemonset
def test_the_probe_fails_while_the_hook_cannot_run(node: Node) -> None:
    wait_ready(node)
    command = the_container()["readinessProbe"]["exec"]["command"]
    hook = "/etc/libvirt/hooks/qemu"
    assert node.exec("chmod", "0644", hook).returncode == 0
    try:
        result = node.exec(*command)
        assert result.returncode == 1
        assert "FAIL  hook-runs" in result.stdout and f"{hook} is not executable" in result.stdout
    finally:
        node.exec("chmod", "0755", hook)
    wait_ready(node)


@pytest.mark.daemonset
def test_install_sh_in_the_container_signals_its_own_libvirtd(node: Node) -> None:
    wait_ready(node)
    own = node.exec("cat", "/run/libvirtd.pid").stdout.strip()
    result = node.exec(
        "env", "PIP_CONFIG_FILE=/dev/null", "PIP_NO_INDEX=1",
        "PIP_FIND_LINKS=/usr/src/vmnet-hook/deploy/libvirtd/wheels", "/usr/src/vmnet-hook/install.sh",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"install.sh: libvirtd (pid {own}): sent SIGHUP" in result.stdout, result.stdout
    host = Path("/run/libvirtd.pid")
    if host.exists():  # the host's libvirtd, visible in the container's /proc (hostPID)
        assert host.read_text().strip() != own
    wait_ready(node)


@pytest.mark.daemonset
def test_a_guest_under_the_containers_libvirtd_gets_its_pods_network_and_stop_releases_it(
    node: Node, podnets: pn.Podnets, guest_image: GuestImage
) -> None:
    wait_ready(node)
    # Made after the container started: its netns reaches the container by propagation.
    pod, peer = podnets.network("routed").pods(2)
    pn.serve_tcp(pod, POD_TCP, "pod")
    pn.serve_udp(pod, POD_TCP, "pod-udp")
    before = pn.snapshot(pod.netns)
    mac, source = random_mac(), placeholder()
    metadata = netns_annotation(mac, pod.netns, **{"pod-ports": f"tcp/{POD_TCP} udp/{POD_TCP}"})
    guest = Guest(guest_image, [direct_interface_xml(mac, source)], metadata, libvirt=node.libvirt)
    try:
        guest.define()
        guest.start()
        lease = guest.wait_for_lease("eth0")
        assert (lease["ip"], lease["mask"], lease["router"]) == ("10.0.2.2", "30", "10.0.2.1")
        serve_in_guest(guest)
        assert_reach(Scene(pod, peer, guest, source, before))
        assert list(node.hook_state.glob(f"{guest.uuid}*")), "the container's hook kept no record"

        guest.close()
        stopped = docker("stop", "-t", str(pod_spec()["terminationGracePeriodSeconds"]),
                         node.name, timeout=300)  # fmt: skip
        assert stopped.returncode == 0
    finally:
        with contextlib.suppress(AssertionError):
            guest.remove()
    logs = node.logs()
    assert f"entrypoint.sh: domain {guest.name}: shutdown requested" in logs, logs
    assert (
        f"entrypoint.sh: domain {guest.name}: destroyed (not off after {SHUTDOWN_TIMEOUT} s)"
        in logs
    ), logs
    assert "entrypoint.sh: every domain is off; the hook released their pods" in logs, logs
    said = docker("logs", node.name).stdout  # the entry point's own lines (libvirtd's: stderr)
    assert said.rstrip().endswith("entrypoint.sh: stopped"), said
    assert pn.snapshot(pod.netns) == before
    assert not Path(f"/sys/class/net/{source}").exists()
    assert not list(node.hook_state.glob(f"{guest.uuid}*"))
