"""Each click option defined once, shared by the commands that take it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vmnet_hook.core.annotation import SELECTORS, Selector, parse_selector
from vmnet_hook.errors import AnnotationError

F = TypeVar("F", bound=Callable[..., Any])

_SELECTOR_HELP = {
    "pod": "the pod as NAMESPACE/NAME (needs kubelet's pod log directories)",
    "pod-uid": "the pod's UID",
    "container": "a container of the pod: full id or a unique prefix of 12+ hex digits",
    "pid": "any process in the pod's network namespace",
    "netns": "a network namespace pinned under netns_dir (as `ip netns add` makes)",
}


def selector_options(function: F) -> F:
    """--pod, --pod-uid, --container, --pid, --netns: exactly one is required."""
    for kind in reversed(SELECTORS):
        function = click.option(f"--{kind}", kind.replace("-", "_"), help=_SELECTOR_HELP[kind])(
            function
        )
    return function


def selector_from(values: dict[str, str | None]) -> Selector:
    given = [(kind, values[kind.replace("-", "_")]) for kind in SELECTORS]
    chosen = [(kind, value) for kind, value in given if value is not None]
    if len(chosen) != 1:
        raise click.UsageError(
            "name the pod with exactly one of " + ", ".join(f"--{k}" for k in SELECTORS)
        )
    try:
        return parse_selector(*chosen[0])
    except AnnotationError as error:
        raise click.BadParameter(str(error), param_hint=f"--{chosen[0][0]}") from None


dev_option = click.option(
    "--dev", "pod_dev", required=True, help="the NIC's name inside the pod, like eth0"
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")
xml_argument = click.argument("xml_file", type=click.File("rb"), default="-")
prune_option = click.option(
    "--prune",
    is_flag=True,
    help="release what domains libvirt does not run still hold, as their release end would",
)
connect_option = click.option(
    "--connect",
    "libvirt_uri",
    default="qemu:///system",
    show_default=True,
    help="the libvirt URI that `virsh -c` asks which domains run",
)
