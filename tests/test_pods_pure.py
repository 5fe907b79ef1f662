"""Pure tier: pod lookup over a fake host, a directory tree shaped like /proc and cgroupfs.

A process is ``proc/PID/{cgroup,ns/net}``; a network namespace is a file, and a process is
in it when its ``ns/net`` is a hard link to that file (same device and inode, as nsfs
gives). Cgroup hierarchies are directories named in ``proc/self/mounts``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmnet_hook.config import Config
from vmnet_hook.core.annotation import parse_selector
from vmnet_hook.demo.sandbox import PodLayout
from vmnet_hook.errors import PodNotFound
from vmnet_hook.host.kubelet import names_by_uid
from vmnet_hook.host.pods import PodNetns, find_pod, place_of
from vmnet_hook.host.procfs import NetnsId, ProcFs

UID_A = "1d2c3b4a-0000-4000-8000-00000000000a"
UID_B = "1d2c3b4a-0000-4000-8000-00000000000b"
ID_A = "a1" * 32
ID_B = "b2" * 32


class FakeHost:
    def __init__(self, root: Path, *, v1: bool = True) -> None:
        self.root = root
        self.proc = root / "proc"
        self.v2 = root / "cgroup v2"  # a space, escaped as \040 in mounts
        self.v1 = root / "pids"
        for directory in (self.proc / "self" / "ns", self.v2, self.v1, root / "ns", root / "logs"):
            directory.mkdir(parents=True)
        mounts = [f"cgroup2 {str(self.v2).replace(' ', chr(92) + '040')} cgroup2 rw 0 0"]
        if v1:
            mounts.append(f"cgroup {self.v1} cgroup rw,pids 0 0")
        (self.proc / "self" / "mounts").write_text("\n".join(mounts) + "\n")
        os.link(self.netns("host"), self.proc / "self" / "ns" / "net")
        self.next_pid = 100

    def netns(self, name: str) -> Path:
        path = self.root / "ns" / name
        if not path.exists():
            path.write_text(name)
        return path

    def netns_id(self, name: str) -> NetnsId:
        info = os.stat(self.netns(name))
        return NetnsId(info.st_dev, info.st_ino)

    def process(self, netns: str, cgroup: str = "", *, hierarchy: str = "v2") -> int:
        """A process in ``netns``, placed in ``cgroup`` (relative to the hierarchy)."""
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        (self.proc / str(pid) / "ns").mkdir(parents=True)
        os.link(self.netns(netns), self.proc / str(pid) / "ns" / "net")
        mount = self.v2 if hierarchy == "v2" else self.v1
        line = f"0::/{cgroup}" if hierarchy == "v2" else f"1:pids:/{cgroup}"
        (self.proc / str(pid) / "cgroup").write_text(line + "\n")
        if cgroup:
            (mount / cgroup).mkdir(parents=True, exist_ok=True)
            with open(mount / cgroup / "cgroup.procs", "a", encoding="ascii") as procs:
                procs.write(f"{pid}\n")
        return pid

    def container(self, layout: PodLayout, uid: str, container_id: str) -> str:
        return f"{layout.pod_dir(uid)}/{layout.container_dir(container_id)}"

    def conmon(self, layout: PodLayout, uid: str, container_id: str) -> str:
        return f"{layout.pod_dir(uid)}/crio-conmon-{container_id}.scope"

    def log_dir(self, namespace: str, name: str, uid: str) -> None:
        (self.root / "logs" / f"{namespace}_{name}_{uid}").mkdir()

    def find(self, kind: str, value: str, proc: ProcFs | None = None) -> PodNetns:
        config = Config(proc_root=str(self.proc), pod_log_dir=str(self.root / "logs"),
                        netns_dir=str(self.root / "pinned"))  # fmt: skip
        return find_pod(parse_selector(kind, value), config, proc or ProcFs(str(self.proc)))

    def refusal(self, kind: str, value: str) -> str:
        with pytest.raises(PodNotFound) as refused:
            self.find(kind, value)
        return str(refused.value)


class ProcFsThatMustNotWalk(ProcFs):
    def pids(self) -> Iterator[int]:
        raise AssertionError("read every process although the pod's cgroup was at hand")


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


LAYOUTS = [
    PodLayout(driver, runtime, qos)
    for driver in ("systemd", "cgroupfs")
    for runtime in ("containerd", "crio", "docker")
    for qos in ("besteffort", "burstable", "guaranteed")
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: "-".join(vars(lay).values()))
def test_each_kubelet_layout_by_uid_and_container_reads_only_the_pods_cgroup(
    host: FakeHost, layout: PodLayout
) -> None:
    first = host.process("pod-a", host.container(layout, UID_A, ID_A))
    second = host.process("pod-a", host.container(layout, UID_A, ID_A))
    host.process("pod-b", host.container(layout, UID_B, ID_B))
    host.process("host", "system.slice/sshd.service")
    no_walk = ProcFsThatMustNotWalk(str(host.proc))
    expected = PodNetns(f"{host.proc}/{first}/ns/net", host.netns_id("pod-a"), (first, second))
    assert host.find("pod-uid", UID_A, no_walk) == expected
    assert host.find("container", ID_A[:12], no_walk) == expected
    assert host.find("container", ID_A, no_walk) == expected


def test_crio_conmon_in_the_host_netns_is_dropped_not_a_second_netns(host: FakeHost) -> None:
    crio = PodLayout("systemd", "crio", "burstable")
    host.process("host", host.conmon(crio, UID_A, ID_A))
    pid = host.process("pod-a", host.container(crio, UID_A, ID_A))
    assert host.find("pod-uid", UID_A).pids == (pid,)


def test_a_crio_pod_whose_containers_exited_has_no_process_not_the_host_network(
    host: FakeHost,
) -> None:
    crio = PodLayout("systemd", "crio", "burstable")
    host.process("host", host.conmon(crio, UID_A, ID_A))
    (host.v2 / host.container(crio, UID_A, ID_A)).mkdir(parents=True)
    assert host.refusal("pod-uid", UID_A) == (
        f"pod-uid={UID_A}: no running process found (its cgroup {host.v2}/"
        f"{crio.pod_dir(UID_A)} is empty); is the pod running on this host?"
    )


def test_a_host_network_pod_is_refused_saying_so(host: FakeHost) -> None:
    host.process("host", host.container(PodLayout(), UID_A, ID_A))
    assert host.refusal("pod-uid", UID_A) == (
        f"pod-uid={UID_A} uses the host network (its processes are in the host's network "
        "namespace); only a pod with its own network namespace has a NIC to give"
    )


def test_a_pod_across_two_netns_is_refused_naming_both(host: FakeHost) -> None:
    one = host.process("pod-a", host.container(PodLayout(), UID_A, ID_A))
    two = host.process("pod-b", host.container(PodLayout(), UID_A, ID_B))
    first, second = sorted(
        [(host.netns_id("pod-a"), one), (host.netns_id("pod-b"), two)], key=lambda p: str(p[0])
    )
    assert host.refusal("pod-uid", UID_A) == (
        f"pod-uid={UID_A} spans 2 network namespaces: {first[0]} (pids {first[1]}); "
        f"{second[0]} (pids {second[1]}); refused, not guessed"
    )


def test_no_such_pod_names_where_it_looked(host: FakeHost) -> None:
    host.process("pod-b", host.container(PodLayout(), UID_B, ID_B))
    assert host.refusal("pod-uid", UID_A) == (
        f"pod-uid={UID_A}: no such pod on this host (no cgroup for it under "
        f"{host.v2}/kubepods.slice)"
    )
    assert host.refusal("pod", "default/web") == (
        f"pod=default/web: no such pod on this host (no default_web_<uid> directory in "
        f"{host.root}/logs)"
    )


def test_pod_by_name_in_two_namespaces_and_a_name_reused(host: FakeHost) -> None:
    uid_old = "1d2c3b4a-0000-4000-8000-0000000000ff"
    for namespace, uid, netns in (("prod", UID_A, "pod-a"), ("dev", UID_B, "pod-b")):
        host.log_dir(namespace, "web", uid)
        host.process(netns, host.container(PodLayout(), uid, container_id_for(uid)))
    host.log_dir("prod", "web", uid_old)  # an earlier pod of that name, long gone
    assert host.find("pod", "prod/web").netns == host.netns_id("pod-a")
    assert host.find("pod", "dev/web").netns == host.netns_id("pod-b")
    host.log_dir("dev", "web", uid_old.replace("ff", "ee"))
    host.process("pod-c", host.container(PodLayout(), uid_old.replace("ff", "ee"), ID_A))
    assert host.refusal("pod", "dev/web") == (
        f"pod=dev/web: 2 running pods have that name (uids {UID_B}, "
        f"{uid_old.replace('ff', 'ee')}); name one with pod-uid="
    )


def test_pod_by_name_known_to_kubelet_but_not_running(host: FakeHost) -> None:
    host.log_dir("prod", "web", UID_A)
    host.process("pod-b", host.container(PodLayout(), UID_B, ID_B))
    assert host.refusal("pod", "prod/web") == (
        f"pod=prod/web (uid {UID_A}): no running process found (kubelet's log directory is "
        "there, but no cgroup); is the pod running on this host?"
    )


def test_a_container_prefix_shared_by_two_containers_lists_both(host: FakeHost) -> None:
    shared = "c0ffee" * 2
    one, two = shared + "1" * 52, shared + "2" * 52
    host.process("pod-a", host.container(PodLayout(), UID_A, one))
    host.process("pod-b", host.container(PodLayout("cgroupfs"), UID_B, two))
    assert host.refusal("container", shared) == (
        f"container={shared} matches 2 containers: {one}, {two}; give more digits"
    )
    assert host.find("container", shared + "2").netns == host.netns_id("pod-b")


def test_a_pod_only_in_a_cgroup_v1_hierarchy_is_found(host: FakeHost) -> None:
    host.process("pod-b", host.container(PodLayout(), UID_B, ID_B))  # v2 has kubepods too
    pid = host.process("pod-a", host.container(PodLayout("cgroupfs"), UID_A, ID_A),
                       hierarchy="v1")  # fmt: skip
    assert host.find("pod-uid", UID_A).pids == (pid,)
    assert host.find("container", ID_A[:12]).pids == (pid,)


def test_without_kubepods_cgroups_every_process_is_read_once(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, v1=False)
    layout = PodLayout("systemd", "crio", "guaranteed")
    pid = host.process("pod-a", host.container(layout, UID_A, ID_A))
    host.process("host", host.conmon(layout, UID_A, ID_A))
    host.process("host", "user.slice")
    for path in host.v2.rglob("cgroup.procs"):
        path.unlink()
    for path in sorted(host.v2.rglob("*"), reverse=True):
        path.rmdir()  # cgroup mounted elsewhere: only /proc/PID/cgroup tells
    assert host.find("pod-uid", UID_A).pids == (pid,)
    assert host.find("container", ID_A[:14]).pids == (pid,)
    assert host.refusal("pod-uid", UID_B) == (
        f"pod-uid={UID_B}: no such pod on this host (no kubepods cgroup in {host.v2}, "
        "and no process in one)"
    )


def test_pid_selector(host: FakeHost) -> None:
    pid = host.process("pod-a")
    in_host = host.process("host")
    assert host.find("pid", str(pid)).netns == host.netns_id("pod-a")
    assert host.refusal("pid", "99999") == "pid=99999: no such process on this host"
    assert host.refusal("pid", str(in_host)).startswith(f"pid={in_host} uses the host network")


@pytest.mark.parametrize(
    ("text", "uid", "container", "conmon"),
    [
        (b"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
         + UID_A.replace("-", "_").encode() + b".slice/cri-containerd-" + ID_A.encode()
         + b".scope\n", UID_A, ID_A, False),
        (b"12:pids:/kubepods/besteffort/pod" + UID_A.encode() + b"/" + ID_A.encode()
         + b"\n1:name=systemd:/kubepods/besteffort/pod" + UID_A.encode() + b"/"
         + ID_A.encode() + b"\n", UID_A, ID_A, False),
        (b"0::/kubepods.slice/kubepods-pod" + UID_A.replace("-", "_").encode()
         + b".slice/crio-conmon-" + ID_A.encode() + b".scope\n", UID_A, None, True),
        (b"0::/system.slice/docker-" + ID_A.encode() + b".scope\n", None, ID_A, False),
        (b"0::/user.slice/user-0.slice/session-1.scope\n", None, None, False),
    ],
)  # fmt: skip
def test_place_of_reads_pod_and_container_from_cgroup_lines(
    text: bytes, uid: str | None, container: str | None, conmon: bool
) -> None:
    place = place_of(text)
    assert (place.pod_uid, place.container_id, place.conmon) == (uid, container, conmon)


def test_pod_names_from_kubelet_log_dirs(host: FakeHost) -> None:
    host.log_dir("prod", "web", UID_A)
    host.log_dir("kube-system", "etcd-node1", "0123456789abcdef0123456789abcdef")
    (host.root / "logs" / "not_a_pod").mkdir()
    assert names_by_uid(str(host.root / "logs")) == {
        UID_A: ("prod", "web"),
        "0123456789abcdef0123456789abcdef": ("kube-system", "etcd-node1"),
    }


def container_id_for(uid: str) -> str:
    return (uid.replace("-", "") * 2)[:64]
