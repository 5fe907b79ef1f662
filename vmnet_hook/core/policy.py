"""``allowed_namespaces``: which Kubernetes namespaces a domain may claim pods from."""

from __future__ import annotations

from vmnet_hook.config import Config
from vmnet_hook.core.annotation import Selector
from vmnet_hook.errors import PodNotFound, PolicyRefused
from vmnet_hook.host.kubelet import namespace_of


def check(selector: Selector, config: Config) -> None:
    """Refuse pods outside ``allowed_namespaces``; pods whose namespace cannot be known
    (named by pid, netns or container) are refused too while the policy is set."""
    allowed = config.allowed_namespaces
    if not allowed:
        return
    if selector.kind == "pod":
        namespace = selector.value.split("/", 1)[0]
    elif selector.kind == "pod-uid":
        namespace = _namespace_of_uid(config.pod_log_dir, selector.value)
    else:
        raise PolicyRefused(
            f"{selector}: allowed_namespaces is set, so name the pod with pod= or pod-uid= "
            "so that its namespace can be checked"
        )
    if namespace not in allowed:
        raise PolicyRefused(
            f"{selector}: namespace {namespace!r} is not in allowed_namespaces "
            f"({', '.join(allowed)})"
        )


def _namespace_of_uid(pod_log_dir: str, uid: str) -> str:
    namespace = namespace_of(pod_log_dir, uid)
    if namespace is None:
        raise PodNotFound(
            f"pod-uid={uid}: no kubelet log directory in {pod_log_dir}, so its namespace "
            "cannot be checked against allowed_namespaces"
        )
    return namespace
