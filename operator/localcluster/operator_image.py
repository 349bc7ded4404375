"""The operator's image, built on this machine without Docker: `make image`.

No Docker engine runs here and no image registry is reachable, so the Dockerfile's pinned base
(python:3.11-slim) cannot be pulled, nor `docker build` run. The same Dockerfile is built instead with
daemonless tools from Debian:

1. A base image made of Debian's own packages: `mmdebstrap` installs bookworm's python3.11 (and what the
   Dockerfile's steps use: `useradd` from passwd, CA certificates) into a tar, and a hook gives it the
   interface of the official image the Dockerfile is written for: `python` in /usr/local/bin, pip
   installed by pip (from Debian's own pip wheel, which is then purged) so that the runtime stage can
   uninstall it, and no PEP 668 `EXTERNALLY-MANAGED` marker (an image's only interpreter is not the
   distribution's to protect; the official image has none either). It becomes a one-layer OCI archive,
   cached by a digest of everything that went into it (`ensure_base`).
2. `buildah bud` builds the Dockerfile with that base as its BASE_IMAGE argument: overlay storage (vfs
   where overlay is not available; see `Storage`), chroot isolation (no OCI runtime, no network namespace
   to set up), nothing pulled (`--pull=never`), the project's own labels only (`--identity-label=false`).
3. The image goes to an OCI archive (`.dev/image/baseline-operator.oci.tar`, never committed), with its
   SBOM (`localcluster.sbom`) and a report of its size, layers and user next to it.

The build is skipped when the archive is there and none of its inputs changed (the files the
.dockerignore lets into the context, the Dockerfile, the base, the build arguments); after a change to the
operator's code, buildah's layer cache redoes only the steps from the wheel on.

Measured on 2 cores: the base 32-40 s (mostly downloading and unpacking Debian packages), then the image
about 55 s cold (mostly pip fetching and installing the locked dependencies), about 25 s after a change
to the operator's code, 10 s for a new commit alone (its labels), a fraction of a second when nothing
changed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, cast

from localcluster import binaries, images, sbom

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO_ROOT / ".dev" / "image"
IMAGE_REPOSITORY = "baseline.test/baseline-operator"
"""Where the node's containerd finds the image; `.test` is reserved (RFC 2606), so nothing is ever pulled
from it by mistake."""
ARCHIVE_NAME = "baseline-operator.oci.tar"
BUILDER_CACHE = "localhost/baseline-operator-builder:cache"
SBOM_NAME = "baseline-operator.cdx.json"
REPORT_NAME = "baseline-operator.report.json"

BASE_SUITE = "bookworm"
BASE_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_PACKAGES = (
    "python3.11",
    # Only for the hook, which installs pip from it and then purges it.
    "python3-pip-whl",
    # The runtime stage's `groupadd`/`useradd`.
    "passwd",
    # What the official image has besides Python: TLS roots, /etc/services and /etc/protocols, zones.
    "ca-certificates",
    "netbase",
    "tzdata",
)
BASE_DPKG_OPTIONS = (
    # As in debian:bookworm-slim: no manuals, documentation or translations, but the licences.
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
)
# Runs on the host after the packages are installed, with the new root as $1.
BASE_HOOK = r"""#!/bin/sh
set -eu
root="$1"
# The image's only interpreter: pip may install into it and uninstall from it, as in the official image.
rm -f "$root/usr/lib/python3.11/EXTERNALLY-MANAGED"
wheel=$(cd "$root" && ls usr/share/python-wheels/pip-*.whl)
chroot "$root" /usr/bin/python3.11 "/$wheel/pip" install --no-index --no-cache-dir --no-compile \
    --root-user-action=ignore --disable-pip-version-check --quiet "/$wheel"
chroot "$root" dpkg --purge python3-pip-whl
ln -s /usr/bin/python3.11 "$root/usr/local/bin/python3"
ln -s python3 "$root/usr/local/bin/python"
"""
BASE_FORMAT = "2"
"""Bumped when the way the base is made changes in a way the inputs above do not show."""

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_CONTEXT_FILES = ("pyproject.toml", "README.md", "requirements/runtime.txt")
_CONTEXT_FOLDERS = ("operator",)
_CONTEXT_SKIPPED = ("__pycache__", ".pyc", ".egg-info")
"""What the .dockerignore lets into the build context (tests/packaging holds the two equal)."""

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says which step failed and how."""


def _say(message: str) -> None:
    binaries._say(message)  # noqa: SLF001 - one voice for the whole package


def missing_prerequisites() -> list[str]:
    """What this machine lacks to build the image (root, Debian packages); empty when it can."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (mmdebstrap's chroot and buildah's chroot isolation need it)")
    missing += [
        f"the `{command}` command (Debian package {command}; `hack/install-image-packages.sh` installs it)"
        for command in ("mmdebstrap", "buildah")
        if shutil.which(command) is None
    ]
    return missing


# -- reading an OCI archive ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer of an image, as its manifest lists it, with its size unpacked."""

    digest: str
    media_type: str
    size: int
    """Bytes as stored (compressed when the media type says so)."""
    uncompressed_size: int


class OciArchive:
    """An OCI image layout in a tar, with one image in its index: its manifest, config and layers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path)  # noqa: SIM115 - closed by close() / the context manager
        self.index: dict[str, Any] = json.loads(self._read("index.json"))
        (entry,) = self.index["manifests"]
        self.digest: str = entry["digest"]
        self.reference: str = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        self.manifest: dict[str, Any] = json.loads(self.blob(self.digest))
        self.config: dict[str, Any] = json.loads(self.blob(self.manifest["config"]["digest"]))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    def _read(self, name: str) -> bytes:
        member = self._tar.extractfile(name)
        if member is None:
            raise ImageBuildError(f"{self.path}: {name} is not a file")
        return member.read()

    def blob(self, digest: str) -> bytes:
        return self._read(f"blobs/sha256/{digest.removeprefix('sha256:')}")

    def _layer_stream(self, descriptor: dict[str, Any]) -> IO[bytes]:
        """A layer's bytes unpacked, as a stream (gzip-compressed or not, as its media type says)."""
        name = f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"
        raw = self._tar.extractfile(name)
        if raw is None:
            raise ImageBuildError(f"{self.path}: layer {name} is missing")
        if descriptor["mediaType"].endswith("gzip"):
            return cast("IO[bytes]", gzip.GzipFile(fileobj=raw))
        return raw

    @contextlib.contextmanager
    def layer_tar(self, descriptor: dict[str, Any]) -> Iterator[tarfile.TarFile]:
        """One layer's tar, read as a stream."""
        with tarfile.open(fileobj=self._layer_stream(descriptor), mode="r|") as layer:
            yield layer

    def layers(self) -> list[Layer]:
        found = []
        for descriptor in self.manifest["layers"]:
            stream = self._layer_stream(descriptor)
            uncompressed = 0
            while chunk := stream.read(1 << 20):
                uncompressed += len(chunk)
            found.append(
                Layer(descriptor["digest"], descriptor["mediaType"], descriptor["size"], uncompressed)
            )
        return found


# -- the base -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A base image made of Debian packages, as an OCI archive in the cache."""

    key: str
    """Digest of everything that went into it; names the archive and the image."""
    archive: Path

    @property
    def name(self) -> str:
        return f"localhost/baseline-operator-base:{BASE_SUITE}-{self.key[:12]}"


def base_key() -> str:
    mmdebstrap = subprocess.run(
        ["mmdebstrap", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    inputs = {
        "format": BASE_FORMAT,
        "suite": BASE_SUITE,
        "sources": BASE_SOURCES,
        "packages": BASE_PACKAGES,
        "dpkg": BASE_DPKG_OPTIONS,
        "hook": BASE_HOOK,
        "mmdebstrap": mmdebstrap,
        "architecture": os.uname().machine,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def ensure_base(*, refresh: bool = False) -> Base:
    """The cached base image, made first when the cache lacks it (or `refresh` asks for newer packages)."""
    key = base_key()
    folder = binaries.cache_root() / "image"
    base = Base(key, folder / f"base-{BASE_SUITE}-{key[:12]}.oci.tar")
    if base.archive.is_file() and not refresh:
        return base
    with binaries._exclusive(binaries.cache_root() / "locks" / "image-base.lock"):  # noqa: SLF001
        if base.archive.is_file() and not refresh:
            return base
        started = time.monotonic()
        _say(f"making the base image: Debian {BASE_SUITE} with {', '.join(BASE_PACKAGES)} (mmdebstrap)")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="base-", dir=folder) as scratch:
            rootfs = Path(scratch) / "rootfs.tar"
            hook = Path(scratch) / "hook.sh"
            hook.write_text(BASE_HOOK)
            hook.chmod(0o755)
            command = [
                "mmdebstrap",
                "--mode=root",
                "--variant=essential",
                # usr-is-merged instead of usrmerge, which would bring perl.
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                f"--include={','.join(BASE_PACKAGES)}",
                *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
                # Container runtimes provide /dev: no device nodes in a layer.
                "--skip=output/dev",
                f'--customize-hook={hook} "$1"',
                BASE_SUITE,
                str(rootfs),
                *BASE_SOURCES,
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ImageBuildError(
                    f"mmdebstrap failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-4000:]}"
                )
            partial = Path(scratch) / "base.oci.tar"
            _write_single_layer_archive(rootfs, partial, key=key)
            partial.replace(base.archive)
        _say(f"base image made in {time.monotonic() - started:.0f} s: {base.archive}")
    return base


def _write_single_layer_archive(rootfs: Path, archive: Path, *, key: str) -> str:
    """An OCI archive of one uncompressed layer (the root file system tar as it is); its manifest digest."""
    layer = hashlib.sha256()
    with rootfs.open("rb") as source:
        while chunk := source.read(1 << 20):
            layer.update(chunk)
    layer_digest = f"sha256:{layer.hexdigest()}"
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = _json(
        {
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
                "Cmd": ["python3"],
            },
            # No labels: the image built on it inherits them, and carries the project's own only.
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            # buildah refuses a base whose history does not account for its layers.
            "history": [{"created": created, "created_by": f"mmdebstrap {BASE_SUITE} ({key[:12]})"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": {"mediaType": _OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": _OCI_LAYER, "digest": layer_digest, "size": rootfs.stat().st_size}],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [{"mediaType": _OCI_MANIFEST, "digest": _digest(manifest), "size": len(manifest)}],
        }
    )
    with tarfile.open(archive, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            _add_bytes(tar, name, data)
        for blob in (config, manifest):
            _add_bytes(tar, f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}", blob)
        tar.add(rootfs, arcname=f"blobs/sha256/{layer_digest.removeprefix('sha256:')}")
    return _digest(manifest)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# -- the image ----------------------------------------------------------------------------------------


def context_files(root: Path = REPO_ROOT) -> list[str]:
    """The files of the build context, relative to `root`, as the .dockerignore lets them in."""
    found = [name for name in _CONTEXT_FILES if (root / name).is_file()]
    for folder in _CONTEXT_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not any(
                part == "__pycache__" or part.endswith(_CONTEXT_SKIPPED) for part in relative.split("/")
            ):
                found.append(relative)
    return sorted(found)


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def build_arguments() -> dict[str, str]:
    """REVISION and SOURCE_URL for the image's labels, from git (a changed work tree says `-dirty`)."""
    revision = _git("rev-parse", "HEAD")
    if revision and _git("status", "--porcelain", "--", *_CONTEXT_FILES, *_CONTEXT_FOLDERS, "Dockerfile"):
        revision += "-dirty"
    return {"REVISION": revision, "SOURCE_URL": _git("remote", "get-url", "origin")}


def inputs_digest(base: Base, arguments: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in ("Dockerfile", ".dockerignore", *context_files()):
        digest.update(f"{name}\0".encode())
        digest.update((REPO_ROOT / name).read_bytes())
        digest.update(b"\0")
    digest.update(json.dumps({"base": base.key, "arguments": arguments}, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageReport:
    """What was built: what the README and the tests quote."""

    reference: str
    """`baseline.test/baseline-operator:<version>`, the name inside the archive."""
    digest: str
    """The manifest digest: the Deployment pins `<repository>@<digest>`."""
    archive: str
    archive_bytes: int
    uncompressed_bytes: int
    layers: list[dict[str, Any]]
    user: str
    entrypoint: list[str]
    base: str
    storage_driver: str
    inputs: str
    """Digest of the build inputs; the build is skipped while it stays the same."""
    build_seconds: float
    timings: dict[str, float]
    """Seconds per phase of the last build (base import, builder stage, image, archive, prune, SBOM)."""
    sbom: str
    sbom_components: dict[str, int]

    @property
    def pinned(self) -> str:
        return f"{IMAGE_REPOSITORY}@{self.digest}"


@dataclass(frozen=True)
class Storage:
    """buildah's own image store for this checkout, under .dev, in a folder per storage driver.

    overlay where the kernel and the folder's file system allow it (measured here: a cold build 42 s
    instead of 72 s, a rebuild for a new commit 9 s instead of 62 s, 0.6 GB on disk instead of 2 GB, since
    vfs copies the whole file system for every layer); vfs, which works everywhere, otherwise. Every
    buildah command runs in a private mount namespace, so that no overlay mount outlives it, even if it is
    killed.
    """

    root: Path
    driver: str

    @classmethod
    def in_folder(cls, output: Path) -> Storage:
        overlay = cls(output, "overlay")
        probe = subprocess.run(overlay.command("info"), capture_output=True, check=False)
        return overlay if probe.returncode == 0 else cls(output, "vfs")

    def command(self, *args: str) -> list[str]:
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "buildah",
            "--root",
            str(self.root / f"storage-{self.driver}"),
            "--runroot",
            str(self.root / f"run-{self.driver}"),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def run(self, *args: str, what: str) -> str:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImageBuildError(
                f"{what}: `{' '.join(self.command(*args))}` failed ({result.returncode}):\n"
                f"{result.stderr[-4000:]}"
            )
        return result.stdout

    def has_image(self, name: str) -> bool:
        result = subprocess.run(
            self.command("inspect", "--type", "image", name), capture_output=True, check=False
        )
        return result.returncode == 0


def project_version() -> str:
    for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise ImageBuildError("pyproject.toml has no version")


def ensure_image(
    output: Path = DEFAULT_OUTPUT, *, force: bool = False, refresh_base: bool = False
) -> ImageReport:
    """The image's archive, SBOM and report in `output`, built first unless they are current."""
    missing = missing_prerequisites()
    if missing:
        raise ImageBuildError("this machine cannot build the image; it lacks: " + "; ".join(missing))
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    with binaries._exclusive(output / ".lock"):  # noqa: SLF001 - the same lock helper as the binaries
        base = ensure_base(refresh=refresh_base)
        arguments = build_arguments()
        inputs = inputs_digest(base, arguments)
        report_path = output / REPORT_NAME
        if not force and (output / ARCHIVE_NAME).is_file():
            previous = _read_report(report_path)
            if previous is not None and previous.inputs == inputs:
                return previous
        return _build(output, base, arguments, inputs)


def last_build(output: Path = DEFAULT_OUTPUT) -> ImageReport | None:
    """What the last build in `output` wrote, without checking that it is current; None when nothing."""
    if not (output / ARCHIVE_NAME).is_file():
        return None
    return _read_report(output / REPORT_NAME)


def _read_report(path: Path) -> ImageReport | None:
    """The report of the last build; None when there is none, or one this version cannot read."""
    try:
        return ImageReport(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _build(output: Path, base: Base, arguments: dict[str, str], inputs: str) -> ImageReport:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(phase: str, since: float) -> float:
        now = time.monotonic()
        timings[phase] = round(now - since, 1)
        return now

    storage = Storage.in_folder(output)
    if not storage.has_image(base.name):
        image_id = storage.run("pull", "--quiet", f"oci-archive:{base.archive}", what="importing the base")
        storage.run("tag", image_id.strip(), base.name, what="naming the base")
    phase = lap("base import", started)
    reference = f"{IMAGE_REPOSITORY}:{project_version()}"
    build = [
        "bud",
        "--isolation=chroot",
        "--pull=never",
        "--layers",
        "--identity-label=false",
        "--format=oci",
        f"--build-arg=BASE_IMAGE={base.name}",
        *(f"--build-arg={key}={value}" for key, value in sorted(arguments.items())),
        f"--file={REPO_ROOT / 'Dockerfile'}",
    ]
    if HOST_CA_BUNDLE.is_file():
        # The RUN steps download from PyPI and trust what this machine trusts (a machine may reach PyPI
        # through a proxy of its own CA). Mounted only while a step runs: no layer holds it.
        build.append(f"--volume={HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro")
    _say(f"building {reference} with buildah (base {base.name}; log {output / 'build.log'})")
    log = output / "build.log"
    with log.open("w") as sink:
        # The builder stage first, under a name of its own: pruning would otherwise take its steps (no
        # image names them once the build is done) and with them the cache of the locked dependencies.
        # The full build then finds every builder step in the cache.
        for name, target in (
            ("builder stage", ("--target=builder", f"--tag={BUILDER_CACHE}")),
            ("image", (f"--tag={reference}",)),
        ):
            result = subprocess.run(
                storage.command(*build, *target, str(REPO_ROOT)),
                stdout=sink,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if result.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                raise ImageBuildError(f"buildah bud failed ({result.returncode}); {log} ends with:\n{tail}")
            phase = lap(name, phase)
    archive = output / ARCHIVE_NAME
    partial = output / f".{ARCHIVE_NAME}.partial"
    partial.unlink(missing_ok=True)
    storage.run(
        "push", "--quiet", reference, f"oci-archive:{partial}:{reference}", what="writing the archive"
    )
    partial.replace(archive)
    phase = lap("archive", phase)
    # Keep the store to the base, the image and the cache of the steps that made it: each build leaves the
    # previous one's steps behind (with vfs, each a full copy of the file system).
    storage.run("rm", "--all", what="removing working containers")
    names = storage.run("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}", what="listing images")
    for name in names.split():
        if name.startswith(f"{base.name.rsplit(':', 1)[0]}:") and name != base.name:
            storage.run("rmi", name, what="removing an earlier base")
    storage.run("rmi", "--prune", what="removing images no build step uses")
    phase = lap("prune", phase)
    report = _report(archive, base, inputs, timings, sbom_path=output / SBOM_NAME, driver=storage.driver)
    lap("report and SBOM", phase)
    report = replace(report, build_seconds=round(time.monotonic() - started, 1), timings=timings)
    (output / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _report(
    archive: Path, base: Base, inputs: str, timings: dict[str, float], *, sbom_path: Path, driver: str
) -> ImageReport:
    with OciArchive(archive) as image:
        layers = image.layers()
        bom = sbom.cyclonedx(image)
        config = image.config["config"]
        sbom_path.write_text(json.dumps(bom, indent=2) + "\n")
        counts = sbom.component_counts(bom)
        return ImageReport(
            reference=image.reference,
            digest=image.digest,
            archive=str(archive),
            archive_bytes=archive.stat().st_size,
            uncompressed_bytes=sum(layer.uncompressed_size for layer in layers),
            layers=[asdict(layer) for layer in layers],
            user=config.get("User", ""),
            entrypoint=config.get("Entrypoint", []),
            base=base.name,
            storage_driver=driver,
            inputs=inputs,
            build_seconds=sum(timings.values()),
            timings=timings,
            sbom=str(sbom_path),
            sbom_components=counts,
        )


def import_into_containerd(report: ImageReport, ctr: Path, address: Path) -> str:
    """Load the image into a containerd's CRI namespace; return the reference a Pod names it by.

    That reference is by digest, as the manifests pin it. The CRI plugin finds `repository@digest` only
    through an image record of that name, which a pull writes and `ctr images import` does not (the Pod
    then fails with ErrImageNeverPull): the record is added here.
    """
    images.import_archives(ctr, address, [Path(report.archive)])
    subprocess.run(
        [
            str(ctr),
            "--address",
            str(address),
            "--namespace",
            "k8s.io",
            "images",
            "tag",
            "--force",
            report.reference,
            report.pinned,
        ],
        check=True,
        capture_output=True,
    )
    return report.pinned


def describe(report: ImageReport) -> str:
    mib = 1 << 20
    lines = [
        f"image    {report.reference}  ({report.pinned})",
        (
            f"archive  {report.archive}: {report.archive_bytes / mib:.1f} MiB compressed, "
            f"{report.uncompressed_bytes / mib:.1f} MiB unpacked"
        ),
        f"layers   {len(report.layers)}: "
        + ", ".join(f"{layer['uncompressed_size'] / mib:.1f} MiB" for layer in report.layers),
        f"user     {report.user}   entrypoint {report.entrypoint}",
        f"base     {report.base} (buildah storage: {report.storage_driver})",
        f"sbom     {report.sbom}: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(report.sbom_components.items())),
        f"built in {report.build_seconds:.0f} s: "
        + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in report.timings.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster.operator_image", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder of the archive and SBOM")
    parser.add_argument("--force", action="store_true", help="build even when the inputs did not change")
    parser.add_argument("--refresh-base", action="store_true", help="make the base again (newer packages)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        report = ensure_image(args.output, force=args.force, refresh_base=args.refresh_base)
    except ImageBuildError as error:
        _say(str(error))
        return 1
    sys.stdout.write(describe(report) + "\n")
    _say(f"image ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
