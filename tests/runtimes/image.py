"""The pods' image, made offline from busybox-static: a root filesystem tar (``/bin/busybox``
and its applets as symlinks) for ``docker import``, and the same layer as an OCI image
layout tar for ``ctr images import``."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "cat", "ip", "nc", "ls")
DIRECTORIES = ("bin", "dev", "etc", "proc", "sys", "tmp")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def rootfs_tar() -> bytes:
    """A root filesystem: ``/bin/busybox``, its applets as symlinks, empty system dirs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in DIRECTORIES:
            tar.addfile(_entry(directory, tarfile.DIRTYPE, mode=0o755))
        with open(BUSYBOX, "rb") as binary:
            data = binary.read()
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, size=len(data)), io.BytesIO(data))
        for applet in APPLETS:
            tar.addfile(_entry(f"bin/{applet}", tarfile.SYMTYPE, link="busybox"))
    return buffer.getvalue()


def oci_archive(layer: bytes, reference: str) -> bytes:
    """An OCI image layout tar holding one image, ``reference``, of one layer."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        layer_digest = _blob(tar, layer)
        config = {
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }  # fmt: skip
        config_json = _json(config)
        manifest = _json({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _descriptor("application/vnd.oci.image.config.v1+json",
                                  _blob(tar, config_json), config_json),
            "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer_digest, layer)],
        })  # fmt: skip
        index = {"schemaVersion": 2, "manifests": [{
            **_descriptor(OCI_MANIFEST, _blob(tar, manifest), manifest),
            "annotations": {"org.opencontainers.image.ref.name": reference,
                            "io.containerd.image.name": reference},
        }]}  # fmt: skip
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", _json(index))
    return buffer.getvalue()


def _entry(
    name: str, kind: bytes, *, mode: int = 0o755, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    return info


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _descriptor(media_type: str, digest: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    _add(tar, f"blobs/sha256/{digest.split(':')[1]}", data)
    return digest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_entry(name, tarfile.REGTYPE, mode=0o644, size=len(data)), io.BytesIO(data))
