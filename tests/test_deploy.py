"""deploy/: the DaemonSet manifest against Kubernetes' own schemas (offline), the image laid
out as deploy/Containerfile says (no container engine here), and node-install.sh run for
real on this machine from that layout, into temporary directories (root)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from kubernetes_validate.utils import resources_from_file  # type: ignore[import-untyped]

from tests.conftest import REPO, InstallLayout

DEPLOY = REPO / "deploy"
MANIFEST = DEPLOY / "daemonset.yaml"
CONTAINERFILE = DEPLOY / "Containerfile"
MARKER = "# vmnet-hook: installed by install.sh; remove with install.sh --uninstall"
# Kubernetes releases the manifest must be valid for: still supported ones, and the newest
# whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0", "1.33.0", kubernetes_validate.latest_version())

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="node-install.sh runs as root")


def resources() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in resources_from_file(str(MANIFEST))}


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resources()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    found = resources()
    assert sorted(found) == ["DaemonSet", "Namespace", "ServiceAccount"]
    for resource in found.values():
        # strict: a misspelt field is an error, not silently dropped by the API server
        kubernetes_validate.validate(resource, version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    daemonset = copy.deepcopy(resources()["DaemonSet"])
    daemonset["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostPid"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.kernel  # a network namespace with nothing in it: no network at all
def test_validation_needs_no_network() -> None:
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "kubernetes_validate", "--strict", str(MANIFEST)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == 3, result.stdout


def test_the_pod_can_reach_the_host_and_has_nothing_else() -> None:
    found = resources()
    spec = pod_spec()
    (container,) = spec["containers"]
    namespace = found["Namespace"]["metadata"]["name"]
    assert found["DaemonSet"]["metadata"]["namespace"] == namespace
    assert found["ServiceAccount"]["metadata"]["namespace"] == namespace
    # nsenter --target 1 into the host: the host's PID 1, and the privilege to enter it.
    assert spec["hostPID"] is True
    assert container["securityContext"]["privileged"] is True
    labels = found["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    # No API access: its own service account, and no token mounted.
    assert spec["serviceAccountName"] == found["ServiceAccount"]["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False
    assert found["ServiceAccount"]["automountServiceAccountToken"] is False
    # Time to uninstall when the pod is deleted.
    assert spec["terminationGracePeriodSeconds"] >= 30


def test_the_stage_directory_is_the_same_path_on_the_host_and_in_the_container() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert env["STAGE"] == mount["mountPath"] == volume["hostPath"]["path"]
    assert volume["hostPath"]["type"] == "DirectoryOrCreate"
    assert env["UNINSTALL_ON_STOP"] == "true"


def test_the_manifest_runs_what_the_image_holds() -> None:
    (container,) = pod_spec()["containers"]
    assert container["command"] == [*json.loads(_instruction("ENTRYPOINT")), "run"]
    assert json.loads(_instruction("CMD")) == ["run"]
    assert container["command"][0] == "/usr/src/vmnet-hook/deploy/node-install.sh"


def test_the_header_says_how_to_label_the_nodes_it_selects() -> None:
    selector = pod_spec()["nodeSelector"]
    label = [key for key in selector if key.startswith("vmnet-hook/")]
    assert label == ["vmnet-hook/libvirtd"]
    assert f"kubectl label node NODE vmnet-hook/libvirtd={selector['vmnet-hook/libvirtd']}" in (
        MANIFEST.read_text()
    )


def test_the_image_carries_wheels_for_this_hosts_python() -> None:
    host_python = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    script, _dest, *versions = shlex.split(_instruction("RUN"))
    assert script == "/usr/src/vmnet-hook/deploy/fetch-wheels.sh"
    assert host_python in versions


# --- the image's tree, and node-install.sh from it -------------------------------------


def _instruction(name: str) -> str:
    lines = [
        line for line in CONTAINERFILE.read_text().splitlines() if line.startswith(name + " ")
    ]
    assert len(lines) == 1, f"one {name} in {CONTAINERFILE}"
    return lines[0].removeprefix(name + " ")


def lay_out_image(root: Path) -> Path:
    """What the Containerfile's COPY lines put in the image, under ``root``; then its RUN
    (fetch-wheels.sh) for this host's Python only. Returns the checkout's place in it."""
    for line in CONTAINERFILE.read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, destination = shlex.split(line.removeprefix("COPY "))
        target = root / destination.lstrip("/")
        for source in sources:
            if (REPO / source).is_dir():  # COPY dir dest/: its contents into dest/
                shutil.copytree(REPO / source, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, target)
    script, dest, *_versions = shlex.split(_instruction("RUN"))
    version = "{}.{}".format(*sys.version_info[:2])
    subprocess.run(
        [str(root / script.lstrip("/")), str(root / dest.lstrip("/")), version],
        env={**os.environ, "PIP": f"{sys.executable} -m pip"}, capture_output=True, text=True,
        timeout=600, check=True,
    )  # fmt: skip
    return root / "usr" / "src" / "vmnet-hook"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("node-install.sh runs as root")
    return lay_out_image(tmp_path_factory.mktemp("image"))


@dataclass(frozen=True)
class Node(InstallLayout):
    """A node's directories, all below one temporary root; the 'host' is this machine."""

    image: Path

    @property
    def stage(self) -> Path:
        return self.root / "var" / "lib" / "vmnet-hook"

    @property
    def hook(self) -> Path:
        return self.hooks / "qemu"

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(STAGE=str(self.stage), HOST_EXEC="", **extra)  # "" : this machine

    @property
    def script(self) -> str:
        return str(self.image / "deploy" / "node-install.sh")

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.script, *args], env=self.env(**extra), capture_output=True, text=True,
            timeout=600, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def lines(self, *args: str) -> list[str]:
        result = self.run(*args)
        assert result.returncode == 0, f"node-install.sh {args}:\n{result.stdout}{result.stderr}"
        return result.stdout.splitlines()

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self.script, "run"], env=self.env(**extra), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, bufsize=0, start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def node(image: Path, tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path / "root", image)
    yield node
    if node.prefix.exists():  # a failed test: leave no hook behind
        node.run("uninstall")


def stop_all(process: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a node-install.sh run (its sleep too), after a failure."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def read_until(process: subprocess.Popen[bytes], text: str, timeout: float = 300) -> list[str]:
    """The lines a running node-install.sh printed, up to the one that holds ``text``
    (read unbuffered: nothing is kept from ``communicate`` that comes after)."""
    assert process.stdout is not None
    fd, output = process.stdout.fileno(), b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while text.encode() not in output:
            if not selector.select(timeout):
                raise AssertionError(f"no {text!r} after {timeout}s:\n{output.decode()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"ended before {text!r}:\n{output.decode()}")
            output += chunk
    return output.decode().splitlines()


@needs_root
def test_install_copies_to_the_stage_and_installs_offline_then_uninstall_removes_all(
    node: Node,
) -> None:
    lines = node.lines("install")

    staged = node.stage / "source"
    assert lines[0] == f"node-install.sh: copied {node.image} to {staged} on the host"
    assert (
        f"install.sh: package vmnet-hook 0.1.0: installed into {node.prefix} from {staged}"
        in lines
    )
    assert f"install.sh: hook {node.hook}: installed" in lines
    assert lines[-1] == "node-install.sh: installed"
    assert (staged / "install.sh").is_file() and (staged / "wheels").is_dir()
    assert node.hook.read_text().splitlines()[:2] == [f"#!{node.prefix}/bin/python3", MARKER]
    imported = subprocess.run(
        [str(node.prefix / "bin" / "python3"), "-c", "import vmnet_hook.hook.handlers, pyroute2"],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr

    lines = node.lines("uninstall")

    assert f"install.sh: removed hook {node.hook}" in lines
    assert f"install.sh: removed virtual environment {node.prefix}" in lines
    assert lines[-3:] == [f"node-install.sh: removed {staged}",
                          f"node-install.sh: removed {node.stage}",
                          "node-install.sh: uninstalled"]  # fmt: skip
    # Left: the stage's parents, which kubelet makes for the hostPath on a real node.
    assert sorted(str(p.relative_to(node.root)) for p in node.root.rglob("*")) == [
        "var",
        "var/lib",
    ]


@needs_root
def test_without_the_wheels_it_needs_pip_never_falls_back_to_an_index(
    image: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "image"
    shutil.copytree(image, bare, symlinks=True)
    for wheel in (bare / "wheels").glob("lxml-*.whl"):
        wheel.unlink()
    node = Node(tmp_path / "root", bare)

    result = node.run("install")

    assert result.returncode == 1
    assert "install.sh: error: pip could not install vmnet-hook" in result.stderr
    assert result.stderr.rstrip().endswith(
        "node-install.sh: error: install.sh failed on the host: see its lines above"
    )
    assert not node.hook.exists()
    node.run("uninstall")


@needs_root
def test_an_image_without_wheels_is_refused_before_touching_the_host(
    image: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "image"
    shutil.copytree(image, bare, symlinks=True, ignore=shutil.ignore_patterns("wheels"))
    node = Node(tmp_path / "root", bare)

    result = node.run("install")

    assert result.returncode == 1
    assert result.stderr == (
        f"node-install.sh: error: {bare}/wheels is missing: build the image with deploy/Containerfile\n"
    )
    assert not node.root.exists()


@needs_root
def test_run_installs_waits_and_uninstalls_on_sigterm(node: Node) -> None:
    process = node.start()
    try:
        lines = read_until(process, "waiting;")
        assert lines[-1] == (
            "node-install.sh: waiting; stopping this pod uninstalls vmnet-hook from the host"
        )
        assert node.hook.is_file()

        process.send_signal(signal.SIGTERM)  # what kubelet sends when the pod is deleted
        rest, _ = process.communicate(timeout=300)
    finally:
        stop_all(process)

    assert process.returncode == 0
    rest_lines = rest.decode().splitlines()
    assert rest_lines[0] == "node-install.sh: stopping: uninstalling"
    assert f"install.sh: removed hook {node.hook}" in rest_lines
    assert rest_lines[-1] == "node-install.sh: uninstalled"
    assert not node.hook.exists() and not node.prefix.exists() and not node.stage.exists()


@needs_root
def test_run_can_leave_the_hook_installed_when_stopped(node: Node) -> None:
    process = node.start(UNINSTALL_ON_STOP="false")
    try:
        lines = read_until(process, "waiting;")
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        stop_all(process)

    assert lines[-1] == (
        "node-install.sh: waiting; stopping this pod leaves vmnet-hook installed "
        "(UNINSTALL_ON_STOP=false)"
    )
    assert (process.returncode, rest) == (0, b"")
    assert node.hook.read_text().splitlines()[1] == MARKER


def test_bad_arguments_print_usage() -> None:
    result = subprocess.run(
        [str(DEPLOY / "node-install.sh"), "--frobnicate"], env={**os.environ, "HOST_EXEC": ""},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("usage: node-install.sh run|install|uninstall")


def test_deploy_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (tests/setup-system.sh installs it)")
    scripts = sorted(str(path) for path in DEPLOY.glob("*.sh"))
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout
