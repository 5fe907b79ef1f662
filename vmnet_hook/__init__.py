"""vmnet-hook: connect a libvirt domain's macvtap to the NIC of its Kubernetes pod."""

__version__ = "0.1.0"

import os

NAMESPACE_URI = "urn:vmnet-hook:1"
MAX_STATE_BYTES = 1 << 20  # a state file larger than this is not read (host.state, expiry)


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in libvirt's form, lower case (8-4-4-4-12 hex digits).

    Here, without ``re``, because the gate and the annotation parser both check it."""
    parts = text.split("-")
    return [len(part) for part in parts] == [8, 4, 4, 4, 12] and all(
        c in "0123456789abcdef" for part in parts for c in part
    )


def temporary_of(path: str) -> str:
    """Where ``files.write_whole`` writes ``path`` before renaming it: ``.NAME.tmp`` beside
    it. One name per file, so that the gate can see with one stat that a killed writer left
    one (release end then removes it)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp")
