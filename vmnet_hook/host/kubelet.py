"""Kubernetes' names on a node: pod UIDs, and kubelet's log directories
``<pod_log_dir>/<namespace>_<name>_<uid>/``, the only place a pod's name meets its UID.
Names cannot hold ``_``, so the split is exact.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

UID = r"[0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12}|[0-9a-f]{32}"  # 32: static pods
_UID_TEXT = re.compile(UID)


@dataclass(frozen=True)
class PodLogDir:
    namespace: str
    name: str
    uid: str


def is_pod_uid(text: str) -> bool:
    return _UID_TEXT.fullmatch(text) is not None


def normal_uid(uid: str) -> str:
    """A pod UID as Kubernetes writes it (the systemd driver turns its ``-`` into ``_``)."""
    return uid.replace("_", "-")


def pod_log_dirs(pod_log_dir: str) -> Iterator[PodLogDir]:
    """Every kubelet pod log directory; ``OSError`` when ``pod_log_dir`` cannot be read."""
    with os.scandir(pod_log_dir) as entries:
        for entry in entries:
            parts = entry.name.split("_", 2)
            if len(parts) == 3 and is_pod_uid(parts[2]) and entry.is_dir():
                yield PodLogDir(parts[0], parts[1], normal_uid(parts[2]))


def uids_named(pod_log_dir: str, namespace: str, name: str) -> list[str]:
    """The UIDs of the pods called ``namespace/name`` (several when a name was reused)."""
    found = pod_log_dirs(pod_log_dir)
    return sorted(d.uid for d in found if (d.namespace, d.name) == (namespace, name))


def names_by_uid(pod_log_dir: str) -> dict[str, tuple[str, str]]:
    """UID to ``(namespace, name)``; empty where there is no kubelet."""
    try:
        return {d.uid: (d.namespace, d.name) for d in pod_log_dirs(pod_log_dir)}
    except OSError:
        return {}


def namespace_of(pod_log_dir: str, uid: str) -> str | None:
    """The namespace of the pod ``uid``, when a log directory names it."""
    found = names_by_uid(pod_log_dir).get(normal_uid(uid))
    return found[0] if found else None
