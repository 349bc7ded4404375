"""Container images without a registry: OCI image archives written from local files, for the real node.

The node has no registry to pull from (this machine reaches none), so every image it runs is made here
from a few files: the static busybox of Debian's `busybox-static` for test Pods, the pause program for Pod
sandboxes, CoreDNS and the NetworkPolicy enforcer. An image is one uncompressed layer tar, a config, a
manifest and an index whose entry carries the `io.containerd.image.name` annotation, packed as an OCI
image layout in a tar; `ctr -n k8s.io images import` loads it into the node's containerd, where the CRI
plugin (and so the kubelet) finds it by that name. Pods use them with `imagePullPolicy: Never`.

Everything is deterministic (sorted entries, zero timestamps and owners), so the same files make the same
image digest on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

BUSYBOX_IMAGE = "baseline.test/busybox:1"
"""Static busybox (sh, wget, nc, nslookup, timeout...) at /bin, running as root unless a Pod says not."""
PAUSE_IMAGE = "baseline.test/pause:1"
"""The sandbox image containerd is pinned to."""
COREDNS_IMAGE = "baseline.test/coredns:v1.15.0"
KUBE_NETWORK_POLICIES_IMAGE = "baseline.test/kube-network-policies:v0.8.0"
BUSYBOX_PATH = Path("/bin/busybox")
"""Debian's busybox-static installs a statically linked busybox here."""

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_INDEX = "application/vnd.oci.image.index.v1+json"
_EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Entry:
    """One file, folder or symbolic link of an image's only layer."""

    path: str
    """Absolute path inside the image."""
    source: Path | None = None
    """A file on this machine whose bytes the entry holds."""
    content: bytes | None = None
    """Or the bytes themselves."""
    link: str | None = None
    """Or the target of a symbolic link."""
    mode: int = 0o644
    directory: bool = False


@dataclass(frozen=True)
class Image:
    """What an image is made of and how its process starts."""

    name: str
    """Reference the node's containerd stores it under, e.g. `baseline.test/busybox:1`."""
    entries: tuple[Entry, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def _layer(entries: tuple[Entry, ...]) -> bytes:
    # Parent folders first, each once, so that the tar unpacks the same everywhere.
    folders: set[str] = set()
    for entry in entries:
        folders.update(str(parent) for parent in PurePosixPath(entry.path).parents if str(parent) != "/")
    explicit = {entry.path: entry for entry in entries}
    all_entries = [explicit.get(folder, Entry(folder, directory=True, mode=0o755)) for folder in folders]
    all_entries += [entry for entry in entries if entry.path not in folders]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(all_entries, key=lambda item: item.path):
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mtime = 0
            info.mode = entry.mode
            if entry.directory:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
            else:
                data = entry.content if entry.content is not None else _read(entry)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(entry: Entry) -> bytes:
    if entry.source is None:
        raise ValueError(f"image entry {entry.path} has neither a source, content, a link nor is a folder")
    return entry.source.read_bytes()


def _descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob), **extra}


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_oci_archive(image: Image, archive: Path) -> str:
    """Write `image` as an OCI image layout in a tar at `archive`; return the manifest digest."""
    layer = _layer(image.entries)
    config: dict[str, Any] = {
        "created": _EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": list(image.env), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created": _EPOCH, "created_by": "localcluster.images"}],
    }
    if image.entrypoint:
        config["config"]["Entrypoint"] = list(image.entrypoint)
    if image.cmd:
        config["config"]["Cmd"] = list(image.cmd)
    if image.user:
        config["config"]["User"] = image.user
    if image.labels:
        config["config"]["Labels"] = dict(image.labels)
    config_blob = _json(config)
    manifest_blob = _json(
        {
            "schemaVersion": 2,
            "mediaType": _MANIFEST,
            "config": _descriptor(_CONFIG, config_blob),
            "layers": [_descriptor(_LAYER, layer)],
        }
    )
    tag = image.name.rsplit(":", 1)[1] if ":" in image.name.rsplit("/", 1)[-1] else "latest"
    index_blob = _json(
        {
            "schemaVersion": 2,
            "mediaType": _INDEX,
            "manifests": [
                _descriptor(
                    _MANIFEST,
                    manifest_blob,
                    annotations={
                        "io.containerd.image.name": image.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                    platform={"architecture": "amd64", "os": "linux"},
                )
            ],
        }
    )
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index_blob,
        **{
            f"blobs/sha256/{_digest(blob).split(':', 1)[1]}": blob
            for blob in (layer, config_blob, manifest_blob)
        },
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return _digest(manifest_blob)


def import_archives(ctr: Path, address: Path, archives: list[Path], *, namespace: str = "k8s.io") -> None:
    """Load archives into a containerd (`ctr images import`), in the namespace the CRI plugin reads."""
    for archive in archives:
        subprocess.run(
            [str(ctr), "--address", str(address), "--namespace", namespace, "images", "import", str(archive)],
            check=True,
            capture_output=True,
        )


# -- the node's images --------------------------------------------------------------------------------


def _etc_files() -> tuple[Entry, ...]:
    # Names for the two users a test Pod may run as (root, or nobody for Pod Security `restricted`).
    return (
        Entry(
            "/etc/passwd", content=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        ),
        Entry("/etc/group", content=b"root:x:0:\nnogroup:x:65534:\n"),
        Entry("/tmp", directory=True, mode=0o1777),  # noqa: S108 - the image's own /tmp
        Entry("/root", directory=True, mode=0o700),
    )


def busybox_image(busybox: Path = BUSYBOX_PATH) -> Image:
    """The test Pods' image: static busybox with a link in /bin for every applet it has."""
    applets = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    links = tuple(
        Entry(f"/{applet}", link="/bin/busybox")
        for applet in sorted(set(applets))
        if applet.rsplit("/", 1)[-1] != "busybox"
    )
    return Image(
        name=BUSYBOX_IMAGE,
        entries=(Entry("/bin/busybox", source=busybox, mode=0o755), *links, *_etc_files()),
        cmd=("/bin/sh",),
    )


def binary_image(name: str, binary: Path, *, path: str, args: tuple[str, ...] = ()) -> Image:
    """An image of one static binary, run as its entrypoint."""
    return Image(
        name=name,
        entries=(Entry(path, source=binary, mode=0o755), *_etc_files()),
        entrypoint=(path, *args),
    )


def node_images(binaries: dict[str, Path], busybox: Path = BUSYBOX_PATH) -> list[Image]:
    """Every image the node needs: the sandbox, CoreDNS, the enforcer and busybox for tests."""
    return [
        binary_image(PAUSE_IMAGE, binaries["pause"], path="/pause"),
        binary_image(COREDNS_IMAGE, binaries["coredns"], path="/coredns"),
        binary_image(
            KUBE_NETWORK_POLICIES_IMAGE, binaries["kube-network-policies"], path="/bin/kube-network-policies"
        ),
        busybox_image(busybox),
    ]
