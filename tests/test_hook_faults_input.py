"""Kernel tier: ``release end`` needs the UUID and nothing else (issue 11, rule 1), so a
domain whose UUID release could not read is never prepared, and a domain XML of any size
is released. Real ``l2`` prepares on real pods; each asserts the line and that nothing is
left bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MakePod
from tests.test_hook_faults import altnames, hook, nothing_left, vm_on
from vmnet_hook.hook import gate

pytestmark = pytest.mark.kernel

PLAIN = "write the UUID as plain text, as libvirt does"
HUGE = "<description>" + "x" * (gate.MAX_STDIN_BYTES + 4096) + "</description>"


def written(uuid: str, how: str) -> str:
    if how == "cdata":
        return f"<uuid><![CDATA[{uuid}]]></uuid>"
    if how == "references":
        return "<uuid>" + "".join(f"&#{ord(char)};" for char in uuid[:4]) + uuid[4:] + "</uuid>"
    return f"<uuid>{uuid[:8]}<!-- a comment -->{uuid[8:]}</uuid>"


@pytest.mark.parametrize("how", ["cdata", "references", "comment"])
def test_a_uuid_release_could_not_read_is_refused_by_prepare(
    make_pod: MakePod, hook_env: dict[str, str], how: str
) -> None:
    pod = make_pod()
    vm = vm_on(pod)
    xml = vm.xml.replace(f"<uuid>{vm.uuid}</uuid>", written(vm.uuid, how))
    done = hook(hook_env, "prepare", "begin", xml=xml)
    assert (done.returncode, done.stdout) == (1, "")
    if how == "comment":  # lxml reads only the text before the comment: not a UUID
        assert done.stderr.startswith("vmnet-hook: domain <uuid> '")
    else:
        assert done.stderr == (
            "vmnet-hook: domain <uuid> is not plain text (CDATA, character references or "
            f"markup in it); {PLAIN}\n"
        )
    nothing_left(pod, vm, Path(hook_env["VMNET_HOOK_STATE_DIR"]))


@pytest.mark.parametrize("step", [("release", "end"), ("reconnect", "begin")])
def test_a_domain_xml_over_the_stdin_cap_is_still_released(
    make_pod: MakePod, hook_env: dict[str, str], step: tuple[str, str]
) -> None:
    """The UUID is near the top, in the part kept: release undoes the binding; reconnect
    checks it and never fails."""
    pod = make_pod()
    vm = vm_on(pod)
    assert hook(hook_env, "prepare", "begin", xml=vm.xml).returncode == 0
    huge = vm.xml.replace("</metadata>", f"</metadata>{HUGE}")
    done = hook(hook_env, *step, xml=huge)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    if step == ("reconnect", "begin"):
        assert altnames(pod.host_veth) == [vm.placeholder]
        assert hook(hook_env, "release", "end", xml=huge).returncode == 0
    nothing_left(pod, vm, Path(hook_env["VMNET_HOOK_STATE_DIR"]))


def test_a_prepare_over_the_stdin_cap_is_refused_only_when_annotated(
    make_pod: MakePod, hook_env: dict[str, str]
) -> None:
    pod = make_pod()
    vm = vm_on(pod)
    huge = vm.xml.replace("<name>vm1</name>", f"<name>vm1</name>{HUGE}")  # annotation after
    done = hook(hook_env, "prepare", "begin", xml=huge)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vmnet-hook: domain 'vm1': the domain XML on stdin is larger than "
        f"{gate.MAX_STDIN_BYTES} bytes\n"
    )
    nothing_left(pod, vm, Path(hook_env["VMNET_HOOK_STATE_DIR"]))
    plain = huge.replace("urn:vmnet-hook:1", "urn:someone-else:1")
    done = hook(hook_env, "prepare", "begin", xml=plain)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
